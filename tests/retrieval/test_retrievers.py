"""The retriever registry on real MarKG triples (the sub-store around MARS dev queries, real MiniLM
vectors) and real MARS queries: no peeking at answers, the paper's pool, anchored whole paths."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from mmkg.kg_store import open_store
from mmkg.kg_store.shards import read_shards
from mmkg.retrieval.batch import retrieve_dataset
from mmkg.retrieval.datasets import build_queries
from mmkg.retrieval.retriever import RetrievalConfig, SubgraphRetriever
from mmkg.retrieval.retrievers import neighbourhood_with_links
from tests.retrieval.shards_fixture import ENCODER, build_retrieval_store, shared_root

SUBGRAPH_COLUMNS = ("query_id", "query_text", "seed_entity_ids", "triple_ids", "head_ids", "relation_ids", "tail_ids",
                    "scores", "num_candidates")
N_QUERIES = 16


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return build_retrieval_store(data_dir, shared_root(tmp_path_factory))


@pytest.fixture(scope="module")
def mars_queries(kg, data_dir):
    return build_queries(f"mars:{data_dir / 'markg/MARS'}", store=kg, split="dev", limit=N_QUERIES)


def test_dev_answers_and_relations_never_reach_the_shards(kg, data_dir, tmp_path):
    """Every dev answer and relation replaced by constants: byte-identical subgraph columns."""
    store_copy = tmp_path / "kg"
    shutil.copytree(kg.root, store_copy, ignore=shutil.ignore_patterns("subgraphs"))
    mars = data_dir / "markg/MARS"
    blind = tmp_path / "MARS"
    blind.mkdir()
    for name in ("train.json", "analogy_entities.txt"):
        shutil.copy(mars / name, blind / name)
    rows = [json.loads(line) for line in (mars / "dev.json").read_text().splitlines()]
    (blind / "dev.json").write_text("".join(json.dumps({**r, "answer": "Q5", "relation": "P0"}) + "\n" for r in rows))

    config = RetrievalConfig(encoder=ENCODER)
    assert config.retriever == "anchored"
    seen = retrieve_dataset(store_copy, f"mars:{mars}", config, split="dev", limit=N_QUERIES)
    seen_table = read_shards(seen.shard_dir, list(SUBGRAPH_COLUMNS))
    blinded = retrieve_dataset(store_copy, f"mars:{blind}", config, split="dev", limit=N_QUERIES)
    assert not blinded.reused  # a different dataset file: really retrieved again
    blind_table = read_shards(blinded.shard_dir, list(SUBGRAPH_COLUMNS))
    assert sum(len(t) for t in seen_table["triple_ids"].to_pylist()) > 0
    for col in SUBGRAPH_COLUMNS:
        assert seen_table[col].equals(blind_table[col]), col
    assert read_shards(blinded.shard_dir, ["answer"])["answer"].to_pylist() == ["Q5"] * N_QUERIES


def test_paper_pool_includes_the_edges_between_neighbours(kg):
    triples = kg.triples_array()
    seeds = np.flatnonzero(kg.graph.degree() > 3)[:3]
    pool = neighbourhood_with_links(kg.graph, triples, seeds, 1)
    touching = np.flatnonzero(np.isin(triples[:, 0], seeds) | np.isin(triples[:, 2], seeds))
    g = np.union1d(seeds, triples[touching][:, [0, 2]].ravel())
    brute = np.flatnonzero(np.isin(triples[:, 0], g) & np.isin(triples[:, 2], g))
    np.testing.assert_array_equal(np.sort(pool), brute)
    between = np.setdiff1d(pool, touching)
    assert between.size > 0  # links between two neighbours, touching no seed
    assert not np.isin(triples[between][:, [0, 2]], seeds).any()


@pytest.mark.parametrize("n", [10, 20])
def test_anchored_keeps_whole_paths_from_the_question_entity(kg, mars_queries, n):
    from mmkg.retrieval.paths import load_or_fit_prior, paths_from
    prior, _ = load_or_fit_prior(kg.root, mars_queries.train_file, mars_queries.answer_space)
    store = open_store(kg.root)
    retriever = SubgraphRetriever(store, RetrievalConfig(encoder=ENCODER, top_N=n),
                                  answer_space=mars_queries.answer_space, prior=prior)
    outs = retriever.retrieve(mars_queries.queries)
    assert sum(not o.empty for o in outs) >= N_QUERIES // 2
    for q, o in zip(mars_queries.queries, outs):
        assert len(o) <= n and np.all(np.diff(o.scores) <= 1e-6)
        if o.empty:
            continue
        question = store.entity_ids([q.entity_keys[0]])
        if store.graph.degree(question).sum():  # the question entity is the anchor
            np.testing.assert_array_equal(o.seed_entities, question)
        # (an isolated question entity: anchored on the top-n entities by cosine)
        anchor = o.seed_entities
        first = np.isin(o.heads, anchor) | np.isin(o.tails, anchor)
        reached = np.union1d(o.heads[first], o.tails[first])
        # a triple not at the anchor is the second step of a kept path: it starts at a first step's end
        second = ~first
        assert np.all(np.isin(o.heads[second], reached) | np.isin(o.tails[second], reached))
        ends = np.setdiff1d(np.union1d(o.heads, o.tails), anchor)
        reachable = np.concatenate([paths_from(store.graph, int(a), store.num_relations).endpoint for a in anchor])
        if np.isin(reachable, mars_queries.answer_space).any():  # else the anchor's context is kept
            assert np.isin(ends, mars_queries.answer_space).any()  # paths end in the answer space


def test_unknown_retriever_is_a_usage_error():
    from mmkg.kg_store.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown retriever 'bm25'; choose one of: anchored, mrmkg, pcst"):
        RetrievalConfig(retriever="bm25")


def test_pcst_returns_a_connected_cut_of_the_neighbourhood(kg, mars_queries):
    retriever = SubgraphRetriever(open_store(kg.root), RetrievalConfig(encoder=ENCODER, retriever="pcst", top_N=10))
    outs = retriever.retrieve(mars_queries.queries[:6])
    for o in outs:
        assert 0 < len(o) <= 10 and np.all(np.diff(o.scores) <= 1e-6)
        assert len(np.unique(o.triple_ids)) == len(o)


@pytest.mark.parametrize("name", ["anchored", "mrmkg", "pcst"])
def test_retriever_template(kg, mars_queries, name):
    """What every registered retriever must give: ≤ N distinct store triples per query, scores
    descending in [-1, 1], seeds reported, the same output twice (deterministic)."""
    from mmkg.retrieval.paths import load_or_fit_prior
    prior, _ = load_or_fit_prior(kg.root, mars_queries.train_file, mars_queries.answer_space)
    store = open_store(kg.root)
    config = RetrievalConfig(encoder=ENCODER, retriever=name, top_N=10)
    retriever = SubgraphRetriever(store, config, answer_space=mars_queries.answer_space, prior=prior)
    first, again = retriever.retrieve(mars_queries.queries), retriever.retrieve(mars_queries.queries)
    triples = store.triples_array()
    assert sum(not o.empty for o in first) >= N_QUERIES // 2
    for o, p in zip(first, again):
        assert len(o) <= 10 and len(np.unique(o.triple_ids)) == len(o)
        np.testing.assert_array_equal(np.stack([o.heads, o.relations, o.tails], 1), triples[o.triple_ids])
        assert np.all(np.diff(o.scores) <= 1e-6) and np.all(np.abs(o.scores) <= 1 + 1e-6)
        assert o.seed_entities.size > 0 or o.empty
        np.testing.assert_array_equal(o.triple_ids, p.triple_ids)


def test_a_train_row_never_counts_in_its_own_prior(kg, data_dir, tmp_path):
    """A constructed split that is its own prior's train file: every query is ranked with the prior
    fitted on the other folds, and gets exactly what a prior fitted without its fold gives."""
    from mmkg.retrieval.paths import fit_mars_prior, mars_row_digest, read_mars_rows, row_fold
    mars = data_dir / "markg/MARS"
    folder = tmp_path / "MARS"
    folder.mkdir()
    shutil.copy(mars / "analogy_entities.txt", folder / "analogy_entities.txt")
    rows = (mars / "dev.json").read_text().splitlines()[:24]  # entities inside the sub-store
    (folder / "train.json").write_text("\n".join(rows) + "\n")
    qs = build_queries(f"mars:{folder}", store=kg, split="train")
    assert qs.train_file == folder / "train.json"
    store = open_store(kg.root)
    folds = 3
    prior = fit_mars_prior(store, qs.train_file, qs.answer_space, folds=folds)
    from mmkg.retrieval.paths import assign_prior_folds
    assert assign_prior_folds(qs.queries, qs.train_file, folds) == len(qs.queries)
    assert {q.prior_fold for q in qs.queries} == set(range(folds))
    config = RetrievalConfig(encoder=ENCODER, top_N=10, prior_folds=folds)
    oof = SubgraphRetriever(store, config, answer_space=qs.answer_space, prior=prior).retrieve(qs.queries)
    in_sample_prior = prior.for_fold(-1)
    changed = 0
    for k in range(folds):
        # the prior of the rows outside fold k, fitted from a file that lacks them
        others = [r for r in read_mars_rows(qs.train_file) if row_fold(mars_row_digest(r), folds) != k]
        (tmp_path / f"without{k}.json").write_text("".join(json.dumps(r) + "\n" for r in others))
        without = fit_mars_prior(store, tmp_path / f"without{k}.json", qs.answer_space, folds=1)
        for a, b in zip(prior.for_fold(k)._tables(), without.full._tables()):
            np.testing.assert_array_equal(a, b)
        mine = [q for q in qs.queries if q.prior_fold == k]
        alone = [dataclasses.replace(q, prior_fold=-1) for q in mine]
        ref = SubgraphRetriever(store, config, answer_space=qs.answer_space, prior=without).retrieve(alone)
        got = [o for q, o in zip(qs.queries, oof) if q.prior_fold == k]
        for o, r in zip(got, ref):
            np.testing.assert_array_equal(o.triple_ids, r.triple_ids)
            np.testing.assert_allclose(o.scores, r.scores)
        # the in-sample prior counts the answers of fold k's own rows; the out-of-fold one does not
        changed += int(in_sample_prior._tables()[1].sum() > prior.for_fold(k)._tables()[1].sum())
    assert changed == folds
    # another split (dev) is never ranked out of fold, whatever rows it shares with train
    dev = build_queries(f"mars:{mars}", store=kg, split="dev", limit=N_QUERIES)
    assert assign_prior_folds(dev.queries, dev.train_file, folds) == 0
    assert {q.prior_fold for q in dev.queries} == {-1}


@pytest.mark.parametrize("folds,group,hops,space", [(5, "row", 2, True), (1, "row", 2, False), (3, "pair", 1, True)])
def test_the_vectorised_prior_fit_counts_as_the_row_by_row_one(kg, mars_queries, folds, group, hops, space):
    """Every count of every fold (plain and conditioned tables, base rate, queries) and the stored
    bytes equal the row-by-row fit's, also when the questions are walked in small chunks."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mmkg.retrieval.paths import fit_mars_prior
    from tests.retrieval.reference_ranking import prior_reference
    answer_space = mars_queries.answer_space if space else None
    ref = prior_reference(kg, mars_queries.train_file, answer_space, hops, folds, group)
    assert ref.full.queries > 0 and len(ref.full._tables()[3]) > 0   # conditioned entries too

    def stored(prior):
        sink = pa.BufferOutputStream()
        pq.write_table(prior.to_table(), sink, compression="zstd")
        return sink.getvalue().to_pybytes()
    for chunk_walks in (1 << 22, 50):
        got = fit_mars_prior(kg, mars_queries.train_file, answer_space, hops, folds, group, chunk_walks=chunk_walks)
        for a, b in zip(got.parts, ref.parts):
            assert (a.queries, a.base_hits, a.base_seen) == (b.queries, b.base_hits, b.base_seen)
            for x, y in zip(a._tables(), b._tables()):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
        assert stored(got) == stored(ref)
