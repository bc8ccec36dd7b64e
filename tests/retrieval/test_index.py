"""mmkg.retrieval.index: every registered index kind, auto's choices, persistence and the store layout."""
from __future__ import annotations

import numpy as np
import pytest

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.vectors import write_vectors
from mmkg.retrieval.index import (VectorIndex, auto_spec, build_index, build_store_indexes, estimate_memory,
                             exact_topk, index_registry, load_index, parse_memory, recall_at_k)
from tests.stores import build_markg_store

pytestmark = pytest.mark.faiss
KINDS = ["flat", "ivf", "hnsw", "ivfpq", "auto"]


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors near a low-dimensional cluster structure (what text/image embeddings look like)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, 8))
    latent = centers[rng.integers(0, 64, n)] + 0.4 * rng.normal(size=(n, 8))
    x = latent @ rng.normal(size=(8, d)) + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = clustered(4200, 32)  # the last 200 are held-out queries from the same distribution
    return x[:4000], np.arange(4000, dtype=np.int64) * 10 + 3, x[4000:]


def test_every_registered_kind_is_tested():
    assert sorted(index_registry.names()) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_index_kind(kind, data):
    x, ids, queries = data
    vi = build_index(x, kind=kind, ids=ids, check_queries=200, threads=1, encoder="test")
    m = vi.meta
    assert m["ntotal"] == vi.ntotal == 4000 and m["dim"] == 32 and m["encoder"] == "test"
    assert m["build_seconds"] >= 0 and m["memory_bytes"] > 0
    assert m["self_check"]["k"] == 10 and 0 <= m["self_check"]["recall"] <= 1
    scores, found = vi.search(queries, 10)
    assert scores.shape == found.shape == (200, 10)
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first
    assert set(np.unique(found)) <= set(ids.tolist())  # store ids, not row numbers
    truth = ids[exact_topk(x, queries, 10)]
    recall = recall_at_k(found, truth)
    if kind == "ivfpq":  # 4-byte codes for 32 dims: approximate by design, but far above chance
        assert recall > 0.3
    else:
        assert recall >= 0.9, (kind, m)
        # each stored vector finds itself first
        assert np.array_equal(vi.search(x[:50], 1)[1][:, 0], ids[:50])


def test_auto_by_size_and_memory():
    assert auto_spec(10_000, 512).factory == "Flat"
    assert auto_spec(1_000_000, 512).factory == "IVF4096,Flat"
    assert auto_spec(100_000, 512).factory == "IVF1024,Flat"
    assert auto_spec(1_000_000, 512, max_memory=parse_memory("1G")).factory == "IVF4096,SQ8"
    pq = auto_spec(1_000_000, 512, max_memory=parse_memory("200M"))
    assert pq.type == "ivfpq" and estimate_memory(pq, 1_000_000, 512) <= parse_memory("200M")
    with pytest.raises(ConfigError, match="too small"):
        auto_spec(1_000_000, 512, max_memory=parse_memory("5M"))


def test_parse_memory():
    assert parse_memory("4G") == 4 << 30 and parse_memory("512M") == 512 << 20
    assert parse_memory("2.5GB") == int(2.5 * (1 << 30)) and parse_memory("1000") == 1000
    assert parse_memory(None) is None
    with pytest.raises(ConfigError):
        parse_memory("lots")


def test_save_read_padding_and_dim_check(data, tmp_path):
    x, ids, queries = data
    vi = build_index(x[:5], kind="flat", ids=ids[:5])
    vi.save(tmp_path / "entity")
    back = VectorIndex.read(tmp_path / "entity")
    s1, i1 = vi.search(queries[:3], 8)
    s2, i2 = back.search(queries[:3], 8)
    assert np.array_equal(i1, i2) and np.allclose(s1, s2)
    assert (i1[:, 5:] == -1).all() and (i1[:, :5] >= 0).all()  # fewer vectors than k: -1 padding
    with pytest.raises(KGStoreError, match="query dim"):
        vi.search(np.zeros((1, 7), np.float32), 3)


def test_unknown_kind():
    with pytest.raises(ConfigError, match="unknown index 'annoy'"):
        build_index(np.zeros((3, 4), np.float32), kind="annoy")


@pytest.fixture(scope="module")
def store(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("index") / "markg"
    st = build_markg_store(data_dir, root)
    ent = clustered(st.num_entities, 16, seed=2)
    with KGStore.writer(root) as w:
        write_vectors(w, "tiny-clip", {"entity": (ent, np.arange(len(ent))),
                                      "triple": (ent[:500], np.arange(1000, 1500))},
                      {"encoder": "tiny-clip", "dim": 16})
        w.commit()
    build_store_indexes(root, "tiny-clip", threads=1)
    return KGStore(root), ent


def test_store_indexes_layout_and_load(store):
    st, ent = store
    art = st.artifact("indexes/tiny-clip")
    assert set(art["kinds"]) == {"entity", "triple"} and art["encoder"] == "tiny-clip"
    for kind in ("entity", "triple"):
        for suffix in (".faiss", ".ids.npy", ".meta.json"):
            assert f"indexes/tiny-clip/{kind}{suffix}" in st.manifest["files"]
    assert art["kinds"]["entity"]["type"] == "flat"  # 11,292 < auto's Flat limit
    assert st.verify() == []
    vi = load_index(st, "tiny-clip", "triple")
    scores, ids = vi.search(ent[:3], 1)
    assert ids[:, 0].tolist() == [1000, 1001, 1002] and np.allclose(scores[:, 0], 1, atol=1e-5)


def test_missing_and_stale_index(store, tmp_path):
    import shutil
    st, ent = store
    with pytest.raises(KGStoreError, match="no image index"):
        load_index(st, "tiny-clip", "image")
    with pytest.raises(KGStoreError, match="no entity index for encoder 'minilm'"):
        load_index(st, "minilm", "entity")
    copy = tmp_path / "kg"
    shutil.copytree(st.root, copy)
    with KGStore.writer(copy) as w:  # re-embedding changes the vectors: the old index is stale
        write_vectors(w, "tiny-clip", {"entity": (ent[::-1].copy(), np.arange(len(ent)))}, {"encoder": "tiny-clip"})
        w.commit()
    with pytest.raises(KGStoreError, match="stale"):
        load_index(copy, "tiny-clip", "entity")
