"""Embedding matrices under `<kg>/vectors/<encoder-slug>/` (numpy only; no torch here).

Per kind (entity | relation | triple | image): `<kind>.npy` float16/float32 (n, d), rows
L2-normalised, and `<kind>.ids.npy` int64 store ids of each row; `meta.json` records the
encoder, dim, dtype, counts and text rules. The set is one manifest artifact
`vectors/<slug>`, so readers see all kinds of one embed run or none of them.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mmkg.kg_store import atomic
from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.graph import load_npy

VECTOR_KINDS = ("entity", "relation", "triple", "image")


def encoder_slug(name: str) -> str:
    """Directory-safe encoder name: '/' and ':' become '__' (docs/ARCHITECTURE.md)."""
    return name.replace("/", "__").replace(":", "__")


def vectors_dir(slug: str) -> str:
    return f"vectors/{encoder_slug(slug)}"


def vector_meta(store, encoder: str) -> dict[str, Any]:
    """The committed meta of an encoder's vectors (encoder name or slug); error if none."""
    slug = encoder_slug(encoder)
    meta = store.artifact(vectors_dir(slug))
    if meta is None:
        have = [k.split("/", 1)[1] for k in store.artifacts("vectors/")]
        raise KGStoreError(f"{store.root} has no vectors for encoder {encoder!r}; run `mmkg embed --encoder "
                           f"{encoder}` (vectors present: {', '.join(have) or 'none'})")
    return meta


def load_vectors(store, encoder: str, kind: str, *, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(matrix (n, d), ids (n,) int64) of one kind; the matrix is memory-mapped by default."""
    if kind not in VECTOR_KINDS:
        raise ConfigError(f"unknown vector kind {kind!r}; kinds: {', '.join(VECTOR_KINDS)}")
    meta = vector_meta(store, encoder)
    if kind not in meta.get("kinds", {}):
        raise KGStoreError(f"encoder {encoder!r} has no {kind} vectors in {store.root} "
                           f"(kinds: {', '.join(meta.get('kinds', {})) or 'none'})")
    base = vectors_dir(encoder)
    matrix = load_npy(store.checked_path(f"{base}/{kind}.npy"), mmap=mmap)
    ids = load_npy(store.checked_path(f"{base}/{kind}.ids.npy"), mmap=False)
    if len(ids) != len(matrix):
        raise KGStoreError(f"{base}/{kind}: {len(matrix)} vectors but {len(ids)} ids")
    return matrix, ids


def write_vectors(writer, encoder: str, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  meta: dict[str, Any]) -> list[str]:
    """Write every kind atomically inside a `StoreWriter` transaction and record the artifact.

    Returns the relative paths written. Kinds not in `arrays` are dropped from the artifact.
    """
    base = vectors_dir(encoder)
    files, kinds = [], {}
    for kind, (matrix, ids) in arrays.items():
        if kind not in VECTOR_KINDS:
            raise ConfigError(f"unknown vector kind {kind!r}")
        if matrix.ndim != 2 or len(matrix) != len(ids):
            raise KGStoreError(f"{kind}: matrix {matrix.shape} does not match {len(ids)} ids")
        atomic.write_npy(writer.root / f"{base}/{kind}.npy", matrix)
        atomic.write_npy(writer.root / f"{base}/{kind}.ids.npy", np.asarray(ids, dtype=np.int64))
        files += [f"{base}/{kind}.npy", f"{base}/{kind}.ids.npy"]
        kinds[kind] = {"count": int(len(ids)), "dim": int(matrix.shape[1]), "dtype": str(matrix.dtype)}
    meta = {**meta, "kinds": kinds}
    atomic.write_json(writer.root / f"{base}/meta.json", meta)
    files.append(f"{base}/meta.json")
    writer.set_artifact(base, meta, files=files)
    return files
