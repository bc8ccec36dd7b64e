"""The TransE embedding behind the reranker's kge features (mmkg.model.kge), on real MarKG triples."""
from __future__ import annotations

import numpy as np
import pytest

from mmkg.model.kge import KGEParams, KGEmbedding, load_kge, save_kge, train_kge


@pytest.fixture(scope="module")
def triples(data_dir):
    """The first 3,000 triples of MarKG's wiki_tuple_ids.txt as (h, r, t) ids of their own."""
    lines = (data_dir / "markg" / "MarKG" / "wiki_tuple_ids.txt").read_text().splitlines()[:3000]
    rows = [line.split("\t") for line in lines]
    ents = {k: i for i, k in enumerate(sorted({x for h, _, t in rows for x in (h, t)}))}
    rels = {k: i for i, k in enumerate(sorted({r for _, r, _ in rows}))}
    return np.array([(ents[h], rels[r], ents[t]) for h, r, t in rows]), len(ents), len(rels)


PARAMS = KGEParams(dim=16, epochs=3, negatives=4, batch=512)


def test_training_is_seeded_learns_and_round_trips_as_safetensors(triples, tmp_path):
    t, n, r = triples
    a, b = train_kge(t, n, r, PARAMS, threads=1), train_kge(t, n, r, PARAMS, threads=1)
    np.testing.assert_array_equal(a.entity, b.entity)
    assert a.entity.shape == (n, 16) and a.relation.shape == (r, 16)
    assert np.linalg.norm(a.entity, axis=1).max() <= 1.0 + 1e-5  # renormalised to the unit ball
    # trained triples sit closer than the same heads and relations with shuffled tails
    pos = np.linalg.norm(a.entity[t[:, 0]] + a.relation[t[:, 1]] - a.entity[t[:, 2]], axis=1)
    neg = np.linalg.norm(a.entity[t[:, 0]] + a.relation[t[:, 1]] - a.entity[np.random.default_rng(0).permutation(
        t[:, 2])], axis=1)
    assert pos.mean() < neg.mean()
    save_kge(tmp_path / "kge.safetensors", a)
    back = load_kge(tmp_path / "kge.safetensors")
    np.testing.assert_array_equal(back.entity, a.entity)
    np.testing.assert_array_equal(back.relation, a.relation)
    assert back.meta["params"] == a.meta["params"]
    assert tmp_path.joinpath("kge.safetensors").read_bytes()[8:9] == b"{"  # a safetensors JSON header, no pickle


def test_analogy_and_link_scores_are_the_transe_distances():
    rng = np.random.default_rng(0)
    emb = KGEmbedding(rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32), {})
    e, rel = emb.entity, emb.relation
    cands = np.array([0, 5, 7, -1])
    got = emb.analogy_scores(1, 2, 3, cands)
    want = -np.linalg.norm(e[1] + e[3] - e[2] - np.vstack([e[[0, 5, 7]], np.zeros(4)]), axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    link = emb.link_scores(1, cands[:3])
    brute = [-min(min(np.linalg.norm(e[1] + rel[k] - e[c]), np.linalg.norm(e[c] + rel[k] - e[1])) for k in range(3))
             for c in (0, 5, 7)]
    np.testing.assert_allclose(link, brute, rtol=1e-4, atol=1e-5)
    assert not emb.analogy_scores(-1, 2, 3, cands).any() and not emb.link_scores(-1, cands).any()
