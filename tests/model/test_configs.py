"""Every shipped config loads and fits the function it configures (PyKEEN K3)."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mmkg.jobs.commands.model import job_function, load_job_config
from mmkg.model import backbone_registry, gnn_layer_registry, model_registry, task_registry
from mmkg.model.reranker_run import VARIANTS

def _model_configs() -> list[Path]:
    """Configs of `mmkg train` / `mmkg evaluate` (other commands' configs are tested by their owners)."""
    import yaml
    out = []
    for p in sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml")):
        meta = (yaml.safe_load(p.read_text()) or {}).get("metadata") or {}
        if meta.get("command") in ("train", "evaluate"):
            out.append(p)
    return out


CONFIGS = _model_configs()


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS if p.parent.name == "mrmkg"}
    assert {"scienceqa_flan-t5-3b.yaml", "scienceqa_flan-t5-11b.yaml", "mars_llama-2-7b.yaml",
            "mars_smollm2-135m.yaml"} <= names
    assert {"mars.yaml", "mars.evaluate.yaml"} <= {p.name for p in CONFIGS if p.parent.name == "reranker"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_fits_its_function(path):
    import yaml
    meta = yaml.safe_load(path.read_text())["metadata"]
    job = load_job_config(path)
    fn = job_function({"train": "mmkg.model.training.train", "evaluate": "mmkg.model.evaluation.evaluate"}[meta["command"]],
                      job)
    inspect.signature(fn).bind(**job)  # unknown or missing keys raise TypeError
    if job.get("model") in VARIANTS:  # a learned ranker: no LLM, no shards (mmkg.model.reranker_run)
        assert fn.__module__ == "mmkg.model.reranker_run"
        return
    kwargs = job.get("model_kwargs", {})
    assert job.get("model", "mrmkg") in model_registry
    if "backbone" in kwargs:
        assert kwargs["backbone"] in backbone_registry
    if "gnn_layer" in kwargs:
        assert kwargs["gnn_layer"] in gnn_layer_registry
    tasks = [job["task"]] if "task" in job else [t for s in job["stages"] for t in
                                                  ([s["task"]] if isinstance(s["task"], str) else s["task"])]
    assert all(t in task_registry for t in tasks)
    if meta["command"] == "train":
        assert job.get("weight_decay") == 0.01


def test_configs_read_the_demo_kg_and_the_demo_writes_train_shards():
    """Issue 29: a first `mmkg train` after `make demo` finds its KG and its MARS train shards."""
    import yaml
    assert {load_job_config(p)["kg"] for p in CONFIGS} == {"build/demo-kg"}
    pipeline = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "pipeline.yaml").read_text())
    assert pipeline["job"]["kg"] == "build/demo-kg"
    retrieved = {(d["dataset"].split(":")[0], d["split"]) for d in pipeline["job"]["retrieve"]["datasets"]}
    assert {("mars", "train"), ("mars", "dev")} <= retrieved
    tiny = [p for p in CONFIGS if p.name.startswith("mars_tiny-t5")]
    assert {p.name for p in tiny} == {"mars_tiny-t5.yaml", "mars_tiny-t5.evaluate.yaml"}
