"""1-hop extraction and the composed retriever on a real MarKG sub-store with real minilm vectors."""
from __future__ import annotations

import numpy as np
import pytest

from mmkg.kg_store.errors import ConfigError
from mmkg.kg_store.vectors import load_vectors
from mmkg.retrieval.datasets import Query, build_queries
from mmkg.retrieval.retriever import RetrievalConfig, SubgraphRetriever, row_lookup
from mmkg.retrieval.subgraph import TripleScorer, expand_hops, random_one_hop, rank_pool
from tests.retrieval.shards_fixture import ENCODER, build_retrieval_store, shared_root


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return build_retrieval_store(data_dir, shared_root(tmp_path_factory))


@pytest.fixture(scope="module")
def retriever(kg):
    # the paper's scheme with the question entity added to E′ (the explicit option)
    return SubgraphRetriever(kg, RetrievalConfig(encoder=ENCODER, retriever="mrmkg", named_entities=True, top_n=5,
                                                 top_N=10))


#: the default config's hash (anchored retriever); a change renames every cached shard directory
GOLDEN_DEFAULT_HASH = "4c2f3bdeb9a3bc8c"  # since prior_folds (the out-of-fold path prior)


def _brute_incident(triples: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    mask = np.isin(triples[:, 0], nodes) | np.isin(triples[:, 2], nodes)
    return np.flatnonzero(mask)


def test_expand_hops_matches_brute_force(kg):
    triples = kg.triples_array()
    seeds = np.array([0, 5, 17], dtype=np.int64)
    hop1 = expand_hops(kg.graph, triples, seeds, 1)
    np.testing.assert_array_equal(hop1, _brute_incident(triples, seeds))
    frontier = np.unique(triples[hop1][:, [0, 2]])
    np.testing.assert_array_equal(expand_hops(kg.graph, triples, seeds, 2), _brute_incident(triples, frontier))


def test_one_hop_pool_ranked_by_cosine(kg):
    triples = kg.triples_array()
    tvec, tids = load_vectors(kg, ENCODER, "triple")
    evec, _ = load_vectors(kg, ENCODER, "entity")
    seeds = np.array([3, 11], dtype=np.int64)
    query = np.asarray(evec[3], np.float32)
    scorer = TripleScorer(tvec, row_lookup(tids, len(triples)))
    pool = expand_hops(kg.graph, triples, seeds, 1)
    out = rank_pool(scorer, triples, query, pool, seeds, 10)
    cands = _brute_incident(triples, seeds)
    scores = np.asarray(tvec, np.float32)[row_lookup(tids, len(triples))[cands]] @ query
    best = cands[np.lexsort((cands, -scores.astype(np.float64)))[:10]]
    np.testing.assert_array_equal(out.triple_ids, best)
    assert out.num_candidates == len(cands)
    assert np.all(np.diff(out.scores) <= 1e-6)
    np.testing.assert_array_equal(np.stack([out.heads, out.relations, out.tails], 1), triples[out.triple_ids])
    # N = 5 is the prefix of N = 10 (same tie-breaking)
    five = rank_pool(scorer, triples, query, pool, seeds, 5)
    np.testing.assert_array_equal(five.triple_ids, out.head(5).triple_ids)


def test_retriever_seeds_are_top_n_triple_ends_plus_named_entities(kg, retriever, data_dir):
    qs = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=kg, split="dev", limit=4)
    outs = retriever.retrieve(qs.queries)
    vecs = retriever.encoder.encode_text([q.text for q in qs.queries])
    tvec, tids = load_vectors(kg, ENCODER, "triple")
    exact = np.argsort(-(np.asarray(tvec, np.float32) @ vecs.T), axis=0, kind="stable")[:5].T
    triples = retriever.triples
    for q, out, top in zip(qs.queries, outs, exact):
        named = kg.entity_ids([q.fields["question"]])
        expected = np.unique(np.concatenate([triples[tids[top]][:, [0, 2]].ravel(), named[named >= 0]]))
        np.testing.assert_array_equal(out.seed_entities, expected)
        assert 0 < len(out) <= 10 and not out.empty
        # every kept triple links two nodes of G = E′ ∪ N(E′)
        g = np.union1d(out.seed_entities, triples[_brute_incident(triples, out.seed_entities)][:, [0, 2]].ravel())
        assert np.all(np.isin(out.heads, g) & np.isin(out.tails, g))
        assert np.all(np.diff(out.scores) <= 1e-6)


def test_entity_without_triples_gives_flagged_empty_subgraph(kg):
    isolated = np.flatnonzero(kg.graph.degree() == 0)
    assert isolated.size > 0, "the sub-store keeps MARS entities that have no triple"
    key = kg.table("entities", ["key"])["key"][int(isolated[0])].as_py()
    only_named = SubgraphRetriever(kg, RetrievalConfig(encoder=ENCODER, retriever="mrmkg", named_entities=True,
                                                       top_n=0, top_N=10))
    (out,) = only_named.retrieve([Query(query_id="q", text="anything", entity_keys=[key])])
    assert out.empty and len(out) == 0 and out.num_candidates == 0
    np.testing.assert_array_equal(out.seed_entities, isolated[:1])


def test_random_baseline_draws_from_the_same_pool(kg):
    triples = kg.triples_array()
    seeds = np.array([0, 5], dtype=np.int64)
    pool = expand_hops(kg.graph, triples, seeds, 1)
    pick = random_one_hop(kg.graph, triples, seeds, 3, rng=np.random.default_rng(0))
    assert len(pick) == min(3, len(pool)) and np.all(np.isin(pick, pool))


def test_config_hash_is_stable_and_covers_every_field():
    a = RetrievalConfig()
    assert a.config_hash == RetrievalConfig().config_hash
    # golden: a change here renames every shard directory users have cached (a format change)
    assert RetrievalConfig().config_hash == GOLDEN_DEFAULT_HASH
    assert len({a.config_hash, RetrievalConfig(top_N=20).config_hash, RetrievalConfig(top_n=5).config_hash,
                RetrievalConfig(hops=2).config_hash, RetrievalConfig(encoder="tiny-clip").config_hash,
                RetrievalConfig(retriever="mrmkg").config_hash}) == 6
    with pytest.raises(ConfigError):
        RetrievalConfig(top_N=0)
