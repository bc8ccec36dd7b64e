"""The on-disk KG store: Parquet tables, manifest, CSR graph, vectors, shards.

The leaf layer: pyarrow, numpy, rdflib, networkx only; no torch, no Spark (DESIGN.md).
"""
from kg_store.errors import KGStoreError, CorruptFileError, LockedError
from kg_store.store import KGStore, open_store

__all__ = ["KGStore", "open_store", "KGStoreError", "CorruptFileError", "LockedError"]
