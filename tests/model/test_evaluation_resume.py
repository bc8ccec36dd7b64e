"""Issue 16: a killed `evaluate` continues where it stopped and gives the ranks an uninterrupted run gives."""
from __future__ import annotations

import json

import pytest

from mmkg.model import scoring
from mmkg.model.evaluation import evaluate

TINY = {"backbone": "tiny-llama", "vision": None, "gnn_layer": "gat", "kg_hidden": 16, "max_text_length": 96,
        "knowledge": "both"}


def _job(real_shards, data_dir, predictions, **extra):
    job = dict(kg=str(real_shards["kg"]), task="mars", shards=str(real_shards["mars/dev"]), model="mrmkg",
               model_kwargs=TINY, candidates=str(data_dir / "markg" / "MARS" / "analogy_entities.txt"),
               predictions=str(predictions), device="cpu", amp="off", max_triples=5, limit=3, ties="realistic",
               seed=1)
    return {**job, **extra}


def _ranks(path) -> dict[str, float]:
    return {r["query_id"]: r["rank"] for r in map(json.loads, path.read_text().splitlines())}


def _kill_at_the_second_query(monkeypatch) -> None:
    """The next evaluate dies while scoring its second query (undo with monkeypatch.undo())."""
    original, calls = scoring.MarsScorer.score, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(*args, **kwargs)

    monkeypatch.setattr(scoring.MarsScorer, "score", dying)


def test_resumed_evaluation_gives_the_same_ranks_as_an_uninterrupted_one(real_shards, data_dir, tmp_path,
                                                                         monkeypatch):
    full = evaluate(**_job(real_shards, data_dir, tmp_path / "full.jsonl"))
    assert full["complete"] and full["queries"] == 3
    expected = _ranks(tmp_path / "full.jsonl")

    _kill_at_the_second_query(monkeypatch)
    path = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate(**_job(real_shards, data_dir, path))
    monkeypatch.undo()
    assert len(path.read_text().splitlines()) == 1  # each finished query was on disk at once
    with path.open("a") as f:
        f.write('{"query_id": "dev-0000')  # a line torn by the kill
    again = evaluate(**_job(real_shards, data_dir, path))
    assert again["new_queries"] == 2 and again["complete"]
    assert _ranks(path) == expected
    assert again["mrr"] == pytest.approx(full["mrr"])
    for rec in map(json.loads, path.read_text().splitlines()):
        assert rec["rank_optimistic"] <= rec["rank_realistic"] <= rec["rank_pessimistic"]

    # a finished file is not scored again; another model starts it over
    assert evaluate(**_job(real_shards, data_dir, path))["new_queries"] == 0
    other = evaluate(**_job(real_shards, data_dir, path, limit=1, seed=2))
    assert other["new_queries"] == 1 and len(path.read_text().splitlines()) == 1


def test_a_budget_stops_the_evaluation_and_the_next_run_finishes_it(real_shards, data_dir, tmp_path):
    path = tmp_path / "budget.jsonl"
    first = evaluate(**_job(real_shards, data_dir, path, limit=1, budget_minutes=1e-9))
    assert not first["complete"] and first["remaining"] == 1 and first["queries"] == 0
    second = evaluate(**_job(real_shards, data_dir, path, limit=1))
    assert second["complete"] and second["queries"] == 1


def test_queries_are_scored_in_the_order_given_and_a_resume_may_list_them_in_another(real_shards, data_dir,
                                                                                   tmp_path, monkeypatch):
    evaluate(**_job(real_shards, data_dir, tmp_path / "all.jsonl"))
    expected = _ranks(tmp_path / "all.jsonl")
    ids = list(expected)
    assert len(ids) == 3
    wanted = [ids[2], ids[0]]  # not the shard order
    _kill_at_the_second_query(monkeypatch)
    path = tmp_path / "ordered.jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate(**_job(real_shards, data_dir, path, limit=None, query_ids=wanted))
    monkeypatch.undo()
    assert list(_ranks(path)) == [ids[2]]  # the one listed first was done first
    again = evaluate(**_job(real_shards, data_dir, path, limit=None, query_ids=wanted[::-1]))
    assert again["new_queries"] == 1 and again["complete"]
    assert _ranks(path) == {q: expected[q] for q in wanted}


def test_shortlist_evaluation_ranks_the_rankers_top_k_then_the_rest(real_shards, data_dir, tmp_path):
    """The LLM ranks only the top K of a no-LLM ranker; a gold outside them ranks below K, in the
    ranker's order; recall@K is reported and the shortlist is part of the resume fingerprint."""
    from mmkg.model.rankers import MarsContext, rank_rows
    from mmkg.retrieval.paths import read_mars_rows
    mars = data_dir / "markg" / "MARS"
    # a small train split: the memory ranker puts seen pairs first, unseen ones far down
    train = tmp_path / "train.json"
    train.write_text("".join(line + "\n" for line in (mars / "train.json").read_text().splitlines()[::16]))
    k = 20
    short = {"ranker": "memory", "k": k, "train": str(train), "folds": 5}
    out = evaluate(**_job(real_shards, data_dir, tmp_path / "short.jsonl", limit=8, shortlist=short))
    assert out["complete"] and out["queries"] == 8 and f"recall@{k}" in out
    recs = list(map(json.loads, (tmp_path / "short.jsonl").read_text().splitlines()))
    (tmp_path / "MARS").mkdir()
    (tmp_path / "MARS" / "train.json").write_text(train.read_text())
    (tmp_path / "MARS" / "analogy_entities.txt").write_text((mars / "analogy_entities.txt").read_text())
    ctx = MarsContext.from_files(real_shards["kg"], tmp_path / "MARS", folds=5)
    dev = read_mars_rows(mars / "dev.json")
    for rec in recs:
        line = int(rec["query_id"].split("-")[1])
        base = rank_rows(ctx, "memory", [dev[line]])[0]
        if rec["in_shortlist"]:
            assert rec["rank_realistic"] <= k
        else:
            assert rec["rank_realistic"] > k and base > k  # the ranker's own order below the shortlist
    assert out[f"recall@{k}"] == pytest.approx(sum(r["in_shortlist"] for r in recs) / 8)
    again = evaluate(**_job(real_shards, data_dir, tmp_path / "short.jsonl", limit=8,
                            shortlist={**short, "k": 10}))
    assert again["new_queries"] == 8  # another shortlist is another evaluation
