"""`train` and `evaluate` end to end on real shards with tiny backbones: checkpoints, resume,
metrics and predictions."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mmkg.model.evaluation import evaluate
from mmkg.model.scoring import read_candidates
from mmkg.model.mrmkg import MRMKG
from mmkg.model.training import epoch_batches, train

TINY = {"backbone": "tiny-t5", "vision": "tiny-clip", "gnn_layer": "gat", "kg_hidden": 16, "kg_dropout": 0.0,
        "max_text_length": 64}


def _job(real_shards, out, **extra):
    shards = str(real_shards["mars/dev"])
    return dict(kg=str(real_shards["kg"]), output_dir=str(out), model="mrmkg", model_kwargs=TINY, seed=3,
                device="cpu", amp="off", checkpoint_every=1, log_every=1,
                stages=[{"name": "pretrain", "task": ["kg-triple", "kg-image"], "shards": shards, "batch_size": 4,
                         "epochs": 1, "lr": 1e-3, "limit": 6},
                        {"name": "finetune", "task": "mars", "shards": shards, "batch_size": 2, "epochs": 1,
                         "lr": 1e-3, "limit": 6}], **extra)


def test_epoch_batches_are_a_seeded_partition_split_across_ranks():
    a = epoch_batches(10, 3, seed=1, stage=0, epoch=0)
    assert a == epoch_batches(10, 3, seed=1, stage=0, epoch=0)
    assert a != epoch_batches(10, 3, seed=1, stage=0, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(10))
    ranks = [epoch_batches(10, 3, seed=1, stage=0, epoch=0, rank=r, world_size=2) for r in range(2)]
    assert sorted(i for rb in ranks for b in rb for i in b) == list(range(10))


def test_epoch_batches_give_every_ddp_rank_the_same_number_of_steps():
    for n, world, size in [(10, 3, 2), (7, 4, 3), (8, 3, 1), (5, 8, 1)]:
        ranks = [epoch_batches(n, size, seed=0, stage=0, epoch=0, rank=r, world_size=world) for r in range(world)]
        assert len({len(rb) for rb in ranks}) == 1, (n, world, size)  # or the last all-reduce never returns
        assert {i for rb in ranks for b in rb for i in b} == set(range(n))


def test_two_stage_training_then_interrupted_run_resumes_to_the_same_weights(real_shards, tmp_path, monkeypatch):
    full = train(**_job(real_shards, tmp_path / "full"))
    assert full["global_step"] > 3
    log = [json.loads(line) for line in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {"pretrain", "finetune"}
    assert all(r["loss"] == r["loss"] for r in log)  # no NaN
    weights = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    assert weights and not any(k.startswith("llm.") or k.startswith("vision.") for k in weights)

    calls = {"n": 0}
    original = MRMKG.forward

    def dying_forward(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch)

    monkeypatch.setattr(MRMKG, "forward", dying_forward)
    with pytest.raises(KeyboardInterrupt):
        train(**_job(real_shards, tmp_path / "resumed"))
    monkeypatch.setattr(MRMKG, "forward", original)
    assert (tmp_path / "resumed" / "checkpoints" / "latest.json").exists()
    resumed = train(**_job(real_shards, tmp_path / "resumed"))
    assert resumed["global_step"] == full["global_step"]
    again = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    for k in weights:
        assert torch.allclose(weights[k], again[k], atol=1e-6), k


def test_skipping_pretraining_and_top_n(real_shards, tmp_path):
    out = train(**_job(real_shards, tmp_path / "run", pretraining=False, max_triples=3))
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {"finetune"}
    assert json.loads((tmp_path / "run" / "job.json").read_text())["max_triples"] == 3
    assert out["global_step"] == log[-1]["step"]


def test_evaluate_mars_ranks_all_candidates_and_writes_predictions(real_shards, data_dir, tmp_path):
    candidates = data_dir / "markg" / "MARS" / "analogy_entities.txt"
    preds = tmp_path / "mars.jsonl"
    m = evaluate(kg=str(real_shards["kg"]), task="mars", shards=str(real_shards["mars/dev"]), model="mrmkg",
                 model_kwargs={**TINY, "backbone": "tiny-llama"}, candidates=str(candidates), predictions=str(preds),
                 device="cpu", amp="off", max_triples=5, limit=3)
    n = len(read_candidates(candidates))
    assert n == 2063
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert m["count"] == len(lines) == m["queries"] > 0
    for r in lines:
        assert 1 <= r["rank"] <= n + 1
        assert len(r["triples"]) <= 5 and all(len(t) == 3 for t in r["triples"])
        higher = sum(c["score"] > r["gold_score"] for c in r["top10"])
        assert higher == min(r["rank"] - 1, 10)
    ranks = [r["rank"] for r in lines]
    assert m["hits@10"] == pytest.approx(sum(x <= 10 for x in ranks) / len(ranks))
    assert m["mrr"] == pytest.approx(sum(1 / x for x in ranks) / len(ranks))


def test_evaluate_scienceqa_accuracy_by_category(real_shards, tmp_path):
    preds = tmp_path / "sqa.jsonl"
    m = evaluate(kg=str(real_shards["kg"]), task="scienceqa", shards=str(real_shards["scienceqa/test"]),
                 model="mrmkg", model_kwargs=TINY, predictions=str(preds), device="cpu", amp="off")
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert m["counts"]["overall"] == len(lines) > 0
    assert m["overall"] == pytest.approx(100 * sum(r["correct"] for r in lines) / len(lines))
    assert m["counts"]["IMG"] == sum(r["image"] is not None for r in lines)
    assert m["counts"]["NAT"] + m["counts"]["SOC"] + m["counts"]["LAN"] == len(lines)
    assert m["counts"]["G1-6"] + m["counts"]["G7-12"] == len(lines)
    for r in lines:
        assert 0 <= r["prediction"] < len(r["scores"]) and "triples" in r


def test_a_model_with_nothing_to_train_is_a_clear_error(real_shards, tmp_path):
    from mmkg.kg_store.errors import ConfigError
    job = {**_job(real_shards, tmp_path / "none"), "model_kwargs": {**TINY, "vision": None, "use_kg": False}}
    with pytest.raises(ConfigError, match="no trainable parameters"):
        train(**job)
