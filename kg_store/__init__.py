"""The on-disk KG store: Parquet tables, manifest, CSR graph, vectors, shards.

The leaf layer: pyarrow, numpy, rdflib, networkx only; no torch, no Spark (DESIGN.md).
"""
from mmkg.kg_store.errors import KGStoreError, CorruptFileError, LockedError


def open_store(root):
    """`mmkg.kg_store.store.open_store` (imported on first use: `mmkg --help` and `mmkg sparql` skip pyarrow)."""
    from mmkg.kg_store.store import open_store as _open_store
    return _open_store(root)


def __getattr__(name: str):
    if name == "KGStore":
        from mmkg.kg_store.store import KGStore
        return KGStore
    raise AttributeError(f"module 'kg_store' has no attribute {name!r}")

__all__ = ["KGStore", "open_store", "KGStoreError", "CorruptFileError", "LockedError"]
