"""mmkg.kg_store.vectors: committed vector matrices on a real MarKG store (numpy only, no encoder)."""
from __future__ import annotations

import numpy as np
import pytest

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.vectors import encoder_slug, load_vectors, vector_meta, write_vectors
from tests.stores import build_markg_store


@pytest.fixture(scope="module")
def store_with_vectors(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vectors") / "markg"
    store = build_markg_store(data_dir, root)
    rng = np.random.default_rng(0)
    ent = rng.normal(size=(store.num_entities, 8)).astype(np.float32)
    ent /= np.linalg.norm(ent, axis=1, keepdims=True)
    tri = rng.normal(size=(50, 8)).astype(np.float16)
    with KGStore.writer(root) as w:
        write_vectors(w, "open_clip:ViT-B-32:openai", {
            "entity": (ent, np.arange(len(ent))),
            "triple": (tri, np.arange(100, 150)),
        }, {"encoder": "open_clip:ViT-B-32:openai", "dim": 8})
        w.commit()
    return KGStore(root), ent, tri


def test_slug_replaces_separators():
    assert encoder_slug("open_clip:ViT-B-32:openai") == "open_clip__ViT-B-32__openai"
    assert encoder_slug("hf/org:model") == "hf__org__model"
    assert encoder_slug("minilm") == "minilm"


def test_roundtrip_mmap_and_ids(store_with_vectors):
    store, ent, tri = store_with_vectors
    matrix, ids = load_vectors(store, "open_clip:ViT-B-32:openai", "entity")
    assert isinstance(matrix, np.memmap)
    assert matrix.shape == (11_292, 8) and np.array_equal(matrix, ent)
    assert ids.dtype == np.int64 and np.array_equal(ids, np.arange(11_292))
    matrix, ids = load_vectors(store, "open_clip__ViT-B-32__openai", "triple")  # a slug works too
    assert matrix.dtype == np.float16 and np.array_equal(matrix, tri)
    assert ids.tolist() == list(range(100, 150))


def test_meta_and_manifest(store_with_vectors):
    store = store_with_vectors[0]
    meta = vector_meta(store, "open_clip:ViT-B-32:openai")
    assert meta["kinds"] == {"entity": {"count": 11_292, "dim": 8, "dtype": "float32"},
                             "triple": {"count": 50, "dim": 8, "dtype": "float16"}}
    files = store.manifest["files"]
    assert "vectors/open_clip__ViT-B-32__openai/entity.npy" in files
    assert "vectors/open_clip__ViT-B-32__openai/meta.json" in files
    assert store.verify() == []


def test_errors_name_the_problem(store_with_vectors):
    store = store_with_vectors[0]
    with pytest.raises(KGStoreError, match="no vectors for encoder 'minilm'.*open_clip__ViT-B-32__openai"):
        load_vectors(store, "minilm", "entity")
    with pytest.raises(KGStoreError, match="no image vectors"):
        load_vectors(store, "open_clip:ViT-B-32:openai", "image")
    with pytest.raises(ConfigError, match="unknown vector kind"):
        load_vectors(store, "open_clip:ViT-B-32:openai", "entities")


def test_truncated_file_is_detected(store_with_vectors, tmp_path):
    import shutil
    store = store_with_vectors[0]
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)
    rel = "vectors/open_clip__ViT-B-32__openai/entity.npy"
    with open(copy / rel, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(KGStoreError, match="bytes, manifest says"):
        load_vectors(KGStore(copy), "open_clip:ViT-B-32:openai", "entity")
