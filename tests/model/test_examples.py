"""examples/train_on_shards.py (the Python API of docs/API.md) runs on real shards."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_on_shards.py"


def _load():
    spec = importlib.util.spec_from_file_location("train_on_shards", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_on_shards_example_reads_and_trains(real_shards):
    """pandas, Arrow and PyG views of the same shard rows, then two optimizer steps."""
    out = _load().main(["--kg", str(real_shards["kg"]), "--shards", str(real_shards["mars/dev"]), "--steps", "2",
                        "--batch-size", "4"])
    assert out["rows"] == out["arrow_rows"] == out["examples"] == 8
    assert out["columns"][0] == "query_id" and out["encoder"] == "minilm"
    assert out["pyg_batch"]["graphs"] == 4 and out["pyg_batch"]["node_dim"] == 384 and out["pyg_batch"]["edges"] > 0
    assert out["steps"] == 2 and all(x > 0 for x in out["losses"])


@pytest.mark.slow
def test_train_on_shards_example_as_a_script(real_shards, tmp_path):
    """As a user runs it: `python examples/train_on_shards.py` from another folder, no PYTHONPATH."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, str(SCRIPT), "--kg", str(real_shards["kg"]), "--shards",
                          str(real_shards["mars/dev"]), "--steps", "1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "step 1/1  loss" in res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"] == 1
