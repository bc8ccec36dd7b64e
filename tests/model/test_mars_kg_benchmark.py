"""benchmarks/mars_kg.py: stratified samples over all (mode, relation) strata, the paired statistics."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from benchmarks import mars_kg


def test_stratified_sample_covers_every_stratum_in_proportion(data_dir):
    rows = mars_kg.read_mars(data_dir / "markg" / "MARS" / "dev.json")
    strata = [(r["mode"], r["relation"]) for r in rows]
    pick = mars_kg.stratified_sample(strata, 300, np.random.default_rng(0))
    assert len(pick) == len(set(pick)) == 300
    got, total = Counter(strata[i] for i in pick), Counter(strata)
    assert set(got) == set(total)  # every stratum, not the first relations of the sorted file
    for s, n in total.items():
        assert abs(got[s] - n * 300 / len(rows)) <= 1.5
    assert pick == mars_kg.stratified_sample(strata, 300, np.random.default_rng(0))  # seeded
    sub = mars_kg.stratified_sample(strata, 100, np.random.default_rng(1), among=pick)
    assert len(sub) == 100 and set(sub) <= set(pick)


def test_plan_samples_are_disjoint_and_reused(data_dir, tmp_path):
    class Args:
        seed, train_queries, fit_queries, dev_queries, ablation_queries = 0, 120, 20, 30, 10
    plan = mars_kg.load_plan(tmp_path, data_dir, Args)
    assert not set(plan["train"]) & set(plan["fit"]) and set(plan["ablation"]) <= set(plan["main"])
    assert json.loads((tmp_path / "sample.json").read_text()) == plan
    Args.seed = 1
    with pytest.raises(SystemExit, match="another sample"):
        mars_kg.load_plan(tmp_path, data_dir, Args)


def test_sign_test_and_bootstrap_interval():
    a, b = [1, 1, 2, 5, 3, 3], [2, 4, 2, 9, 8, 3]
    s = mars_kg.sign_test(a, b)
    assert (s["better"], s["worse"], s["ties"]) == (4, 0, 2)
    assert s["sign_test_p"] == pytest.approx(2 * 1 / 16)
    diff, lo, hi = mars_kg.bootstrap_mrr_diff(a, b, n_boot=2000)
    assert diff == pytest.approx(np.mean(1 / np.array(a) - 1 / np.array(b)))
    assert lo <= diff <= hi and lo >= 0  # a is never worse
    assert mars_kg.summarize([1, 2, 4, 20])["median_rank"] == 3.0


def test_permutation_test_of_the_mrr_difference():
    a, b = [1, 1, 2, 5, 3, 3], [2, 4, 2, 9, 8, 3]
    # 4 non-zero differences, all in a's favour: only the all-+ and all-− sign patterns are as extreme
    assert mars_kg.permutation_mrr_p(a, b) == pytest.approx(2 / 16, abs=0.015)
    assert mars_kg.permutation_mrr_p(a, a) == 1.0
    rng = np.random.default_rng(3)
    worse = rng.integers(2, 50, size=200)
    assert mars_kg.permutation_mrr_p(np.ones(200), worse) < 0.001
    assert mars_kg.permutation_mrr_p(worse, rng.permutation(worse)) > 0.01


def test_carry_fills_lost_variants_from_an_earlier_output_and_checks_it_is_the_same_experiment(tmp_path):
    from argparse import Namespace
    args = Namespace(work="w", kg="k", data="d", seed=0, top_n=10, backbone="smollm2-135m", carry=None, out="o")
    plan = {"main": [3, 7, 9], "ablation": [7]}
    prev = {"queries": [3, 7, 9], "ablation_queries": [7], "config": {"seed": 0, "top_n": 10, "backbone": "smollm2-135m"},
            "ranks": {"kg": {"3": 1.0, "7": 4.5, "9": 2.0}, "control": {"3": 2.0, "7": 1.0, "9": 8.0},
                      "kg_only": {"3": 9.0, "7": 9.0, "9": 9.0}},
            "ranks_optimistic": {"kg": {"3": 1.0, "7": 4.0, "9": 2.0}, "control": {"3": 2.0, "7": 1.0, "9": 8.0},
                                 "kg_only": {"3": 1.0, "7": 1.0, "9": 1.0}}}
    path = tmp_path / "prev.json"
    path.write_text(json.dumps(prev))
    ranks, ranks_opt = {"control": {"7": 1.0, "3": 3.0}}, {"control": {"7": 1.0, "3": 3.0}}
    out = mars_kg.carry_ranks(path, plan, args, ranks, ranks_opt)
    assert out["variants"] == ["kg"]  # kg_only is derived: always recomputed, never carried
    assert ranks["kg"] == prev["ranks"]["kg"] and ranks_opt["kg"]["7"] == 4.0 and "kg_only" not in ranks
    assert ranks["control"] == {"7": 1.0, "3": 3.0}  # what was run here wins; the overlap is compared
    assert out["agreement"]["control"] == {"queries": 2, "same_rank": 1}
    with pytest.raises(SystemExit, match="samples differ"):
        mars_kg.carry_ranks(path, {"main": [3, 7, 10], "ablation": [7]}, args, {}, {})
    with pytest.raises(SystemExit, match="other settings.*top_n"):
        mars_kg.carry_ranks(path, plan, Namespace(**{**vars(args), "top_n": 20}), {}, {})


def test_a_sample_is_built_and_retrieved_as_in_its_full_split(data_dir, tmp_path):
    """The experiment's sample folders carry the candidate file and the full train split: a sampled
    query gets the same text, entities, answer space, prior (key and fold) as in the full split."""
    from mmkg.retrieval.paths import assign_prior_folds, prior_key
    from mmkg.retrieval.datasets import build_queries
    from tests.stores import build_markg_store

    class Args:
        seed, train_queries, fit_queries, dev_queries, ablation_queries = 0, 40, 10, 30, 10
    store = build_markg_store(data_dir, tmp_path / "kg")
    plan = mars_kg.load_plan(tmp_path / "work", data_dir, Args)
    dirs = mars_kg.write_subsets(tmp_path / "work", data_dir, plan)
    mars = f"mars:{data_dir / 'markg/MARS'}"
    for name, lines in (("dev", plan["main"]), ("train", plan["train"]), ("fit", plan["fit"])):
        split, source = mars_kg.SAMPLES[name]
        sample = build_queries(f"mars:{dirs[name]}", store=store, split=split)
        full = build_queries(mars, store=store, split=source)
        assert len(sample.queries) == len(lines)
        np.testing.assert_array_equal(sample.answer_space, full.answer_space)
        assert sample.train_file.read_bytes() == full.train_file.read_bytes()
        assert prior_key(store, sample.train_file, sample.answer_space) == \
            prior_key(store, full.train_file, full.answer_space)
        assert assign_prior_folds(sample.queries, sample.train_file, 5) == \
            (len(lines) if source == "train" else 0)
        assign_prior_folds(full.queries, full.train_file, 5)
        for q, line in zip(sample.queries, lines):
            f = full.queries[line]
            assert (q.text, q.entity_keys, q.example_keys, q.image_paths, q.row_digest, q.prior_fold) == \
                (f.text, f.entity_keys, f.example_keys, f.image_paths, f.row_digest, f.prior_fold)
    assert {q.prior_fold for q in build_queries(f"mars:{dirs['train']}", store=store, split="train_sample").queries} \
        == {-1}  # folds are the retrieve stage's to give, not the builder's
