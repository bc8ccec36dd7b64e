"""Trainable-parameter share of the paper presets, counted on the meta device."""
from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from mmkg.model.params import count_preset

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "count_trainable_params.py"


@pytest.mark.parametrize("preset", ["flan-t5-3b", "llama-2-7b"])
def test_paper_presets_train_about_two_percent(preset):
    c = count_preset(preset)
    assert c["llm"] > 2.5e9 and c["vision"] > 3e8
    assert c["trainable"] == sum(c["trainable_by_part"].values())
    assert 1.0 < c["trainable_percent"] < 3.0  # the paper reports ≈ 2.25 %
    assert set(c["trainable_by_part"]) == {"kg_encoder", "knowledge_adapter", "visual_adapter"}


def test_script_prints_every_paper_preset(capsys):
    ns = runpy.run_path(str(SCRIPT))
    result = ns["main"](["--preset", "llama-2-7b"])
    assert [r["backbone"] for r in result["presets"]] == ["llama-2-7b"]
    assert '"trainable_percent"' in capsys.readouterr().out
