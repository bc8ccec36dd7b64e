"""`mmkg train --config` / `mmkg evaluate --config` on real shards, and config errors."""
from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from mmkg.jobs.cli import cli


def _write(path, command, job):
    path.write_text(yaml.safe_dump({"metadata": {"command": command, "title": "test"}, "job": job}))
    return path


def test_train_then_evaluate_from_config_files(real_shards, data_dir, tmp_path):
    out = tmp_path / "run"
    train_cfg = _write(tmp_path / "train.yaml", "train", {
        "kg": str(real_shards["kg"]), "output_dir": str(out), "device": "cpu", "amp": "off",
        "model_kwargs": {"backbone": "tiny-llama", "vision": None, "gnn_layer": "gat", "kg_hidden": 16},
        "stages": [{"name": "finetune", "task": "mars", "shards": str(real_shards["mars/dev"]), "batch_size": 4,
                    "epochs": 1, "limit": 4}]})
    res = CliRunner().invoke(cli, ["train", "--config", str(train_cfg), "--set", "seed=7", "--set", "max_triples=5"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["global_step"] == 1
    assert json.loads((out / "job.json").read_text())["seed"] == 7
    eval_cfg = _write(tmp_path / "eval.yaml", "evaluate", {
        "kg": str(real_shards["kg"]), "task": "mars", "shards": str(real_shards["mars/dev"]),
        "checkpoint": str(out / "final"), "limit": 2, "device": "cpu", "amp": "off",
        "candidates": str(data_dir / "markg" / "MARS" / "analogy_entities.txt"),
        "predictions": str(tmp_path / "preds.jsonl")})
    res = CliRunner().invoke(cli, ["evaluate", "--config", str(eval_cfg)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    assert metrics["count"] == 2 and 0 <= metrics["mrr"] <= 1
    assert len((tmp_path / "preds.jsonl").read_text().splitlines()) == 2


def test_unknown_job_key_is_a_one_line_error(tmp_path):
    cfg = _write(tmp_path / "bad.yaml", "train", {"kg": "x", "output_dir": "y", "stages": [], "learning_rate": 1})
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg)])
    assert res.exit_code != 0 and "learning_rate" in res.output


def test_config_without_job_block_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("metadata: {}\n")
    res = CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "c.yaml")])
    assert res.exit_code != 0 and "job" in str(res.exception or res.output)


def test_max_steps_kg_and_limit_options_print_progress_on_stderr(real_shards, data_dir, tmp_path):
    """Issue 29: `--kg` replaces the config's KG, `--max-steps N` caps every stage, loss,
    throughput and ETA go to stderr; `evaluate --limit N` shows s/query and ETA."""
    out = tmp_path / "run"
    train_cfg = _write(tmp_path / "train.yaml", "train", {
        "kg": "build/no-such-kg", "output_dir": str(out), "device": "cpu", "amp": "off", "log_every": 1,
        "model_kwargs": {"backbone": "tiny-llama", "vision": None, "gnn_layer": "gat", "kg_hidden": 16},
        "stages": [{"name": "finetune", "task": "mars", "shards": str(real_shards["mars/dev"]), "batch_size": 2,
                    "epochs": 1, "limit": 8}]})
    res = CliRunner().invoke(cli, ["train", "--config", str(train_cfg), "--kg", str(real_shards["kg"]),
                                   "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["global_step"] == 2  # 4 batches, capped at 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("train finetune step")]
    assert [ln.split()[3] for ln in lines] == ["1/2", "2/2"]
    assert all(" loss " in ln and "s/step" in ln and "ex/s" in ln and "ETA" in ln for ln in lines)
    eval_cfg = _write(tmp_path / "eval.yaml", "evaluate", {
        "kg": "build/no-such-kg", "task": "mars", "shards": str(real_shards["mars/dev"]),
        "checkpoint": str(out / "final"), "device": "cpu", "amp": "off",
        "candidates": str(data_dir / "markg" / "MARS" / "analogy_entities.txt")})
    res = CliRunner().invoke(cli, ["evaluate", "--config", str(eval_cfg), "--kg", str(real_shards["kg"]),
                                   "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["count"] == 2
    assert "evaluate 2/2 queries" in res.stderr and "s/query" in res.stderr and "ETA" in res.stderr
