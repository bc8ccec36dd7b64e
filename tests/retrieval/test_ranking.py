"""Ranking in bulk (`mmkg.retrieval.ranking`) equals the per-query reference ranking
(`tests/retrieval/reference_ranking.py`) on real MarKG triples, real MiniLM vectors and real MARS and
ScienceQA queries: the same triples in the same order, the same scores, pools and seeds."""
from __future__ import annotations

import numpy as np
import pytest

from mmkg.kg_store import open_store
from mmkg.retrieval.paths import assign_prior_folds, load_or_fit_prior
from mmkg.retrieval.datasets import build_queries
from mmkg.retrieval.retriever import RetrievalConfig, SubgraphRetriever, encode_queries
from tests.retrieval.reference_ranking import anchored_reference, mrmkg_reference
from tests.retrieval.shards_fixture import ENCODER, build_retrieval_store, shared_root


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return build_retrieval_store(data_dir, shared_root(tmp_path_factory))


def assert_same(bulk, ref):
    assert len(bulk) == len(ref)
    for b, r in zip(bulk, ref):
        np.testing.assert_array_equal(b.triple_ids, r.triple_ids)
        np.testing.assert_allclose(b.scores, r.scores, atol=1e-6)
        np.testing.assert_array_equal(b.seed_entities, r.seed_entities)
        assert b.num_candidates == r.num_candidates


@pytest.mark.parametrize("split", ["dev", "train"])
@pytest.mark.parametrize("top_N", [1, 10, 20])
def test_bulk_anchored_ranking_equals_the_per_query_one(kg, data_dir, split, top_N):
    qs = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=kg, split=split, limit=48)
    prior, _ = load_or_fit_prior(kg.root, qs.train_file, qs.answer_space)
    if split == "train":  # train rows are ranked out of fold: several priors in one batch
        assert assign_prior_folds(qs.queries, qs.train_file, 5) == len(qs.queries)
    r = SubgraphRetriever(open_store(kg.root), RetrievalConfig(encoder=ENCODER, top_N=top_N),
                          answer_space=qs.answer_space, prior=prior)
    v = encode_queries(r.encoder, qs.queries)
    bulk = r.retrieve_vectors(qs.queries, v)
    assert sum(not o.empty for o in bulk) >= len(bulk) // 2
    assert_same(bulk, anchored_reference(r.retriever, qs.queries, v))


def test_bulk_anchored_without_prior_or_answer_space(kg, data_dir):
    """ScienceQA: anchors linked from the text, no prior (1-hop beats 2-hop), no answer space."""
    qs = build_queries(f"scienceqa:{data_dir / 'scienceqa'}", store=kg, split="test", limit=24)
    r = SubgraphRetriever(open_store(kg.root), RetrievalConfig(encoder=ENCODER, top_N=10))
    v = encode_queries(r.encoder, qs.queries)
    bulk = r.retrieve_vectors(qs.queries, v)
    assert any(not o.empty for o in bulk)
    assert_same(bulk, anchored_reference(r.retriever, qs.queries, v))


@pytest.mark.parametrize("hops,top_N", [(1, 10), (1, 20), (2, 10)])
def test_bulk_paper_pools_equal_the_per_query_ones(kg, data_dir, hops, top_N):
    qs = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=kg, split="dev", limit=32)
    r = SubgraphRetriever(open_store(kg.root), RetrievalConfig(encoder=ENCODER, retriever="mrmkg", hops=hops,
                                                               top_N=top_N))
    v = encode_queries(r.encoder, qs.queries)
    bulk = r.retrieve_vectors(qs.queries, v)
    assert all(0 < len(o) <= top_N for o in bulk)
    assert_same(bulk, mrmkg_reference(r.retriever.ctx, qs.queries, v))


@pytest.mark.parametrize("answer_space", [True, False])
def test_bulk_anchored_cuts_hub_anchors_as_the_per_query_walk_does(kg, data_dir, monkeypatch, answer_space):
    """With a tiny MAX_PATHS many anchors are hubs: the bulk walk (which reads only the walks into
    the answer space) cuts each at the same walks as `paths_from`, which walks them all."""
    import mmkg.retrieval.paths as paths_mod
    import mmkg.retrieval.ranking as ranking_mod
    qs = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=kg, split="dev", limit=32)
    prior, _ = load_or_fit_prior(kg.root, qs.train_file, qs.answer_space)  # fitted (and cached) uncut
    r = SubgraphRetriever(open_store(kg.root), RetrievalConfig(encoder=ENCODER, top_N=10),
                          answer_space=qs.answer_space if answer_space else None, prior=prior)
    v = encode_queries(r.encoder, qs.queries)
    g = r.retriever.ctx.graph
    anchors = np.concatenate(r.retriever.anchors(qs.queries, v))
    pos, owner = g.edge_positions(anchors)
    walks = np.bincount(owner, weights=g.degree(g.neighbor[pos]), minlength=len(anchors))
    cap = int(np.median(walks))
    assert (walks > cap).sum() >= 5                               # hubs under the cut
    monkeypatch.setattr(paths_mod, "MAX_PATHS", cap)
    monkeypatch.setattr(ranking_mod, "MAX_PATHS", cap)
    bulk = r.retrieve_vectors(qs.queries, v)
    assert sum(not o.empty for o in bulk) >= len(bulk) // 2
    assert_same(bulk, anchored_reference(r.retriever, qs.queries, v))


def test_paper_seeds_from_the_cosine_block_are_the_exact_index_search(kg, data_dir):
    """With a Flat triple index the seeds' top-n comes from the product the pool's cosines reuse: the
    same triples the index search returns (an index tie or a last-bit difference only where the two
    scores at the cut are equal to float32 precision)."""
    from mmkg.retrieval.ranking import mrmkg_seeds
    qs = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=kg, split="dev", limit=64)
    r = SubgraphRetriever(open_store(kg.root), RetrievalConfig(encoder=ENCODER, retriever="mrmkg", top_n=10))
    c = r.retriever.ctx
    assert c.seeds.exact_triples and c.pair_cosine.in_memory
    v = encode_queries(r.encoder, qs.queries)
    block = c.pair_cosine.block(v)
    ours = c.pair_cosine.top_ids(block, 10)
    scores, faiss_ids = c.seeds.triple_index.search(v, 10)
    rows = c.pair_cosine.row_of
    for i in range(len(v)):
        assert np.all(np.diff(block[i, rows[ours[i]]]) <= 0)               # best first
        differ = set(ours[i].tolist()) ^ set(faiss_ids[i].tolist())
        assert all(abs(block[i, rows[t]] - scores[i, -1]) < 1e-6 for t in differ), i
    named = [np.empty(0, np.int64)] * len(v)
    seeds, used = mrmkg_seeds(c, v, named)
    assert used is not None
    for s, hits in zip(seeds, ours):
        np.testing.assert_array_equal(s, np.unique(c.triples[hits][:, [0, 2]]))


def test_block_top_ids_break_ties_by_the_smaller_id():
    from mmkg.retrieval.ranking import PairCosine
    vectors = np.eye(4, dtype=np.float32)[[0, 1, 1, 1, 2, 1]]       # rows 1, 2, 3, 5 tie for query e1
    row_of = np.array([5, 4, 3, 2, 1, 0])                          # id i lives at row 5 - i
    cos = PairCosine(vectors, row_of)
    q = np.eye(4, dtype=np.float32)[[1, 0]]
    top = cos.top_ids(cos.block(q), 2)
    np.testing.assert_array_equal(top[0], [0, 2])     # rows 5 and 3 hold ids 0 and 2: the smallest tied ids
    np.testing.assert_array_equal(top[1], [5, 0])     # id 5 alone scores 1 for e0; the rest tie at 0
