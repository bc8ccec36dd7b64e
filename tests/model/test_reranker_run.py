"""The learned MARS reranker as a model variant: `mmkg train` / `mmkg evaluate` with
configs/reranker/*.yaml on the real MarKG store and a sample of the MARS splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mmkg.jobs.cli import cli
from tests.stores import build_markg_store

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "reranker"


@pytest.fixture(scope="module")
def sample(data_dir, tmp_path_factory):
    """The MarKG store (no entity vectors) and a MARS folder: a random eighth of train, 60 dev and
    40 test rows, all 2,063 candidates."""
    root = tmp_path_factory.mktemp("reranker_run")
    build_markg_store(data_dir, root / "kg")
    mars, src = root / "mars", data_dir / "markg" / "MARS"
    mars.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", None), ("dev", 60), ("test", 40)):
        rows = (src / f"{name}.json").read_text().splitlines()
        keep = sorted(rng.choice(len(rows), n or len(rows) // 8, replace=False))  # the files are sorted
        (mars / f"{name}.json").write_text("".join(rows[i] + "\n" for i in keep))
    (mars / "analogy_entities.txt").write_text((src / "analogy_entities.txt").read_text())
    return root / "kg", mars


@pytest.mark.slow
def test_mmkg_train_then_evaluate_the_reranker(sample, tmp_path):
    """Train fits out of fold and writes the model, the KG embedding (also committed under the KG) and
    a summary; evaluate ranks every test row among all candidates with the rank fields of every MARS
    evaluation, the same ranks the registered `reranker` ranker gives from the run's files."""
    from mmkg.kg_store import open_store
    from mmkg.model.kge import KGE_DIR, load_kge
    from mmkg.model.rankers import MarsContext, rank_rows
    from mmkg.model.reranker import load_reranker
    from mmkg.retrieval.paths import read_mars_rows
    kg, mars = sample
    run = tmp_path / "run"
    common = ["--set", f"kg={kg}", "--set", f"data={mars}"]
    res = CliRunner().invoke(cli, ["train", "--config", str(CONFIGS / "mars.yaml"), *common, "--set",
                                   f"output_dir={run}", "--set", "k=30", "--set", "rounds=20", "--set",
                                   "kge={model: transe, dim: 16, epochs: 2, negatives: 4}"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["groups"] == ["kg", "memory", "degree", "kge"]  # this store has no minilm vectors
    assert {"kge_analogy", "kge_link", "memory", "prior"} <= set(summary["features"])
    assert summary["training_mixture"]["pair_rows"] == len(read_mars_rows(mars / "train.json"))
    assert summary["valid"]["queries"] == 60
    emb = load_kge(run / "kge.safetensors")
    assert emb.entity.shape == (11292, 16) and emb.relation.shape == (192, 16)
    assert open_store(kg).artifact(f"{KGE_DIR}/{summary['kge']}") is not None
    assert load_reranker(run / "reranker.lgb.txt").feature_name() == summary["features"]

    preds = tmp_path / "test.jsonl"
    res = CliRunner().invoke(cli, ["evaluate", "--config", str(CONFIGS / "mars.evaluate.yaml"), *common, "--set",
                                   f"checkpoint={run}", "--set", f"predictions={preds}"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    assert metrics["count"] == metrics["queries"] == 40 and metrics["ties"] == "realistic"
    records = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [r["query_id"] for r in records] == [f"test-{i}" for i in range(40)]
    for r in records:
        assert 1 <= r["rank_optimistic"] <= r["rank_realistic"] <= r["rank_pessimistic"] <= 2063
        assert r["rank"] == r["rank_realistic"] and r["in_shortlist"] == (r["rank_pessimistic"] <= 30)
    assert metrics["mrr"] == pytest.approx(np.mean([1 / r["rank"] for r in records]))
    ctx = MarsContext.from_files(kg, mars, folds=5)
    ctx.reranker, ctx.reranker_k, ctx.kge = load_reranker(run / "reranker.lgb.txt"), 30, emb
    assert rank_rows(ctx, "reranker", read_mars_rows(mars / "test.json")) == [r["rank"] for r in records]

    # --limit: the seeded random sample every `mmkg evaluate --limit` takes (not a prefix of a file
    # sorted by mode and relation), in line order, each rank as in the full run
    sampled = tmp_path / "limit.jsonl"
    res = CliRunner().invoke(cli, ["evaluate", "--config", str(CONFIGS / "mars.evaluate.yaml"), *common, "--set",
                                   f"checkpoint={run}", "--set", f"predictions={sampled}", "--limit", "10"])
    assert res.exit_code == 0, res.output
    got = [json.loads(x) for x in sampled.read_text().splitlines()]
    lines = [int(r["query_id"].split("-")[1]) for r in got]
    assert len(got) == 10 and lines == sorted(lines) and lines != list(range(10))
    assert [r["rank"] for r in got] == [records[i]["rank"] for i in lines]

    # the run as an LLM's shortlist (`evaluate(shortlist={"ranker": "reranker", "model": RUN})`): its
    # top k are the reranker's own best candidates, from the query's question and example pair only
    from types import SimpleNamespace

    from mmkg.model.rankers import top_positions
    from mmkg.model.scoring import Shortlist
    short = Shortlist(str(kg), ctx.candidates, {"ranker": "reranker", "model": str(run), "k": 10,
                                                "train": str(mars / "train.json"), "folds": 5})
    assert short.fingerprint["model"] and short.ctx.reranker_k == 30
    rows = read_mars_rows(mars / "test.json")
    for row, rec in list(zip(rows, records))[:5]:
        scores = short.scores(SimpleNamespace(meta={"question": row["question"], "example": row["example"]}))
        assert [ctx.candidates[j] for j in top_positions(scores, 10)] == [t["key"] for t in rec["top10"]]


def test_evaluate_without_a_trained_run_is_a_one_line_error(tmp_path, data_dir):
    """A ConfigError (`mmkg` prints its one line and exits 2), raised before any data is read."""
    from mmkg.jobs.cli import exit_code
    res = CliRunner().invoke(cli, ["evaluate", "--config", str(CONFIGS / "mars.evaluate.yaml"), "--set",
                                   f"checkpoint={tmp_path / 'nothing'}", "--set",
                                   f"data={data_dir / 'markg' / 'MARS'}"])
    assert exit_code(res.exception) == 2 and "not a reranker run" in str(res.exception)
    res = CliRunner().invoke(cli, ["train", "--config", str(CONFIGS / "mars.yaml"), "--set", f"data={tmp_path}",
                                   "--set", f"output_dir={tmp_path / 'run'}"])
    assert exit_code(res.exception) == 2 and "not a MARS folder" in str(res.exception)
    assert not (tmp_path / "run").exists()

    from mmkg.kg_store.errors import ConfigError
    from mmkg.model.reranker_run import attach_run
    with pytest.raises(ConfigError, match="not a reranker run"):
        attach_run(None, tmp_path / "nothing")  # an LLM shortlist naming a folder that holds no run
