"""Quality and leakage reports, checked against brute-force counts over the real files."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mmkg.jobs.cli import cli
from mmkg.kg_store import open_store
from mmkg.kg_store.shards import read_shards
from mmkg.retrieval.datasets import build_queries
from mmkg.retrieval.datasets.mars import mars_leakage
from mmkg.retrieval.datasets.scienceqa import scienceqa_leakage
from mmkg.retrieval.reports import quality_report
from tests.retrieval.shards_fixture import ENCODER, build_test_shards, shared_root


@pytest.fixture(scope="module")
def shards(data_dir, tmp_path_factory):
    return build_test_shards(data_dir, shared_root(tmp_path_factory))


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mars_quality_report_counts_answers_inside_subgraphs(shards):
    d = shards["mars/dev"]
    q = json.loads((d / "quality.json").read_text())
    rows = read_shards(d).to_pylist()
    hits = np.mean([r["answer_entity"] in set(r["head_ids"]) | set(r["tail_ids"]) for r in rows])
    assert q["hits"]["10"]["answer_in_subgraph"] == round(float(hits), 4)
    # the shards keep 10 triples, the report also ranks 20 (the top-10 is its prefix)
    assert set(q["hits"]) == {"10", "20"} and q["top_N"] == 10
    assert q["hits"]["10"]["answer_in_subgraph"] <= q["hits"]["20"]["answer_in_subgraph"]
    assert q["hits"]["20"]["answer_in_subgraph"] <= q["answer_in_candidate_pool"] <= 1
    for n in ("10", "20"):
        assert 0 <= q["hits"][n]["random_pool_baseline"] <= q["answer_in_candidate_pool"]
        assert 0 <= q["hits"][n]["random_question_entity"] <= 1
        strata = q["hits"][n]["pair_in_train"]
        assert strata["true"]["queries"] + strata["false"]["queries"] == q["queries"]
    assert q["queries"] == 8 and q["empty"] == 0


def test_quality_report_at_20_uses_the_ranked_prefix(shards, data_dir):
    """Retrieve the same 8 queries ranked to N = 20: the report's N = 20 figure is the brute-force
    answer coverage of those 20 triples, and its N = 10 figure that of their top-10 prefix."""
    from mmkg.retrieval.retriever import RetrievalConfig, SubgraphRetriever
    store = open_store(shards["kg"])
    qs = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=store, split="dev", limit=8)
    outs = SubgraphRetriever(store, RetrievalConfig(encoder=ENCODER, top_N=20)).retrieve(qs.queries)
    rep = quality_report(store, qs, outs, top_N=10, ranked_N=20)
    assert set(rep["hits"]) == {"10", "20"}

    def covered(n: int) -> float:
        return float(np.mean([q.fields["answer_entity"] in {*o.heads[:n].tolist(), *o.tails[:n].tolist()}
                              for q, o in zip(qs.queries, outs)]))
    assert rep["hits"]["20"]["answer_in_subgraph"] == pytest.approx(covered(20))
    assert rep["hits"]["10"]["answer_in_subgraph"] == pytest.approx(covered(10))
    assert max(len(o) for o in outs) > 10  # the 20-triple lists really are longer than the shards' 10


def test_mars_leakage_matches_brute_force(shards, data_dir):
    store = open_store(shards["kg"])
    mars = data_dir / "markg/MARS"
    qs = build_queries(f"mars:{mars}", store=store, split="dev")
    report, leaked = mars_leakage(store, qs)
    ekeys = store.table("entities", ["key"])["key"].to_pylist()
    rkeys = store.table("relations", ["key"])["key"].to_pylist()
    kg_facts = {(ekeys[h], rkeys[r], ekeys[t]) for h, r, t in store.triples_array()}
    dev, train = _jsonl(mars / "dev.json"), _jsonl(mars / "train.json")
    train_facts = {(r["question"], r["relation"], r["answer"]) for r in train} | \
        {(r["example"][0], r["relation"], r["example"][1]) for r in train}
    c = report["counts"]
    assert report["queries"] == 1020
    assert c["fact_in_kg"] == sum((r["question"], r["relation"], r["answer"]) in kg_facts for r in dev)
    assert c["fact_in_train"] == sum((r["question"], r["relation"], r["answer"]) in train_facts for r in dev)
    assert c["answer_entity_is_train_answer"] == sum(r["answer"] in {t["answer"] for t in train} for r in dev)
    assert c["any_fact_leak"] == int(leaked.sum()) >= max(c["fact_in_kg"], c["fact_in_train"])
    # the pair stratum: (question, answer) seen in train as a question–answer or example pair, any relation
    pairs = {(r["question"], r["answer"]) for r in train} | {(r["example"][0], r["example"][1]) for r in train}
    assert c["pair_in_train"] == sum((r["question"], r["answer"]) in pairs for r in dev) == 384  # 37.6 %
    # answer linked to the question only through A0–A18 triples, by brute force over the KG
    links: dict = {}
    for h, r, t in store.triples_array():
        for a, b in ((h, t), (t, h)):
            links.setdefault((ekeys[a], ekeys[b]), set()).add(rkeys[r])
    only_a = sum(bool(links.get((r["question"], r["answer"]))) and
                 all(k.startswith("A") and k[1:].isdigit() for k in links[(r["question"], r["answer"])]) for r in dev)
    assert c["linked_only_by_analogy_relations"] == only_a
    # the shard set's own leakage file also counts direct question-answer links in the subgraphs
    sl = json.loads((shards["mars/dev"] / "leakage.json").read_text())
    rows = read_shards(shards["mars/dev"]).to_pylist()
    direct = sum(any({h, t} == {r["question_entity"], r["answer_entity"]} for h, t in zip(r["head_ids"], r["tail_ids"]))
                 for r in rows)
    assert sl["counts"]["subgraph_links_question_to_answer"] == direct


def test_scienceqa_leakage_by_question_text_and_image(data_dir):
    qs = build_queries(f"scienceqa:{data_dir / 'scienceqa'}", split="test")
    report = scienceqa_leakage(qs)
    problems = json.loads((data_dir / "scienceqa/problems.subset150.json").read_text())
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    train_q = {norm(p["question"]) for p in problems.values() if p["split"] == "train"}
    expected = sum(norm(p["question"]) in train_q for p in problems.values() if p["split"] == "test")
    assert report["queries"] == 50 and report["counts"]["question_text_in_train"] == expected
    assert report["counts"]["image_sha256_in_train"] == 0  # only test/23's image is on disk
    assert report["images_on_disk"] == {"train": 0, "this_split": 1}


def test_cli_leakage_reports_every_split_and_shard_set(shards, data_dir, tmp_path):
    out = tmp_path / "leak.json"
    res = CliRunner().invoke(cli, ["leakage", "--kg", str(shards["kg"]), "--dataset",
                                   f"mars:{data_dir / 'markg/MARS'}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert set(rep["splits"]) == {"dev", "test"}
    assert rep["splits"]["dev"]["queries"] == 1020 and rep["splits"]["test"]["queries"] == 1362
    assert shards["mars/dev"].name in rep["splits"]["dev"]["shards"]
    assert rep["splits"]["dev"]["shards"][shards["mars/dev"].name]["queries"] == 8


@pytest.mark.parametrize("hops", [1, 2])
def test_pool_hits_equal_the_per_query_pools_and_draws(shards, data_dir, hops):
    """`pool_hits` (the reports' pool ceiling and random baselines for a whole run) against each
    query's own `expand_hops` pool: the same pool hit, and the draw is the n pool triples of
    smallest key, so it depends on the query's id only (not on the other queries of the run)."""
    from mmkg.kg_store.hashing import mix, string_keys
    from mmkg.retrieval.datasets.mars import pool_hits
    from mmkg.retrieval.subgraph import expand_hops
    store = open_store(shards["kg"])
    triples = store.triples_array()
    qs = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=store, split="dev", limit=40)
    seeds = [np.array([q.fields["question_entity"]]) for q in qs.queries]
    answers = np.array([q.fields["answer_entity"] for q in qs.queries])
    keys = string_keys([q.query_id for q in qs.queries])
    hit, drawn = pool_hits(store.graph, triples, seeds, answers, hops, (3, 10), keys)
    for i, (s, a) in enumerate(zip(seeds, answers)):
        pool = expand_hops(store.graph, triples, s, hops)
        assert hit[i] == (a >= 0 and a in triples[pool][:, [0, 2]])
        for n in (3, 10):
            pick = pool[np.argsort(mix(keys[i] + mix(pool.astype(np.uint64))) >> np.uint64(8), kind="stable")[:n]]
            assert drawn[n][i] == (a >= 0 and a in triples[pick][:, [0, 2]])
    assert 0 < hit.sum() < len(hit) and drawn[3].sum() <= drawn[10].sum() <= hit.sum()
    # one query alone draws the same triples as inside the run
    alone = pool_hits(store.graph, triples, seeds[5:6], answers[5:6], hops, (3,), keys[5:6])[1][3]
    assert alone[0] == drawn[3][5]


def test_smallest_draws_equal_one_sort_of_the_whole_pool():
    """The bounded sort of the pool draws (issue 31) picks exactly what one stable sort of every
    (owner, key) picks: large pools, small ones, equal keys, and pools whose bound leaves too few."""
    from mmkg.kg_store.hashing import mix
    from mmkg.retrieval.datasets.mars import _smallest_draws
    from mmkg.retrieval.ranking import rank_in_segment
    rng = np.random.default_rng(0)
    sizes = np.array([1, 5, 20, 79, 80, 81, 500, 3000, 0, 12000])
    owner = np.repeat(np.arange(len(sizes)), sizes)
    draw = mix(rng.integers(0, 1 << 62, len(owner), dtype=np.int64).astype(np.uint64)) >> np.uint64(8)
    draw[owner == 6] = draw[owner == 6] % np.uint64(7)                       # many equal keys
    draw[owner == 7] = draw[owner == 7] | np.uint64(1 << 55)                 # all above the bound
    for n in (1, 10, 20):
        full = np.argsort((owner.astype(np.uint64) << np.uint64(56)) | draw, kind="stable")
        want = full[rank_in_segment(owner[full]) < n]
        got = _smallest_draws(owner, draw, n)
        got = got[rank_in_segment(owner[got]) < n]
        assert got.tolist() == want.tolist()
