"""Embedded MarKG stores shared by the embed/search tests (built once per test session).

Embedding is the expensive part (MiniLM on 2 shared cores), so each variant is built once in
pytest's session temp dir and reused by every module that asks for it.
"""
from __future__ import annotations

from pathlib import Path

from mmkg.kg_store import KGStore
from tests.stores import build_markg_store

#: all 11,292 entities and 192 relations, the first 4,096 of the 33,301 triples
MINILM_TRIPLES = 4096


def markg_minilm_store(data_dir: Path, tmp_path_factory) -> KGStore:
    """MarKG with minilm vectors (entities, relations, 4,096 triples) and auto indexes."""
    from mmkg.pipeline.embed import embed_store
    from mmkg.retrieval.index import build_store_indexes
    root = tmp_path_factory.getbasetemp() / "markg-minilm"
    if not (root / "indexes" / "minilm" / "triple.faiss").exists():
        build_markg_store(data_dir, root)
        # every core: pytest runs one test at a time, and this is the default tier's longest setup
        embed_store(root, "minilm", limit={"triple": MINILM_TRIPLES}, progress=False)
        build_store_indexes(root, "minilm")
    return KGStore(root)
