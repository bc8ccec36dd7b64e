"""Real subgraph shards for a handful of MARS / ScienceQA queries, for tests of retrieval and model.

`build_test_shards(data_dir, root)` builds the MarKG store (tests/stores.py), embeds it with the
real `minilm` encoder, builds its FAISS indexes and retrieves a few queries of MARS dev and
ScienceQA test. Embedding the 33k triples takes about a minute on 2 cores: call it once per
session or module and share the result.
"""
from __future__ import annotations

from pathlib import Path

from kg_store import KGStore, open_store

ENCODER = "minilm"
#: 8 MARS dev queries; the first 8 ScienceQA test problems include pid 23 (the one real image)
N_MARS, N_SCIENCEQA = 8, 8


def build_retrieval_store(data_dir: Path, root: Path, *, encoder: str = ENCODER) -> KGStore:
    """MarKG store + `encoder` vectors + triple/entity indexes (idempotent: reuses what is there)."""
    from pipeline.embed import embed_store
    from retrieval.index import build_indexes
    from tests.stores import build_markg_store

    root = Path(root)
    if not (root / "manifest.json").exists():
        build_markg_store(Path(data_dir), root)
    store = open_store(root)
    slug = encoder.replace("/", "__").replace(":", "__")
    if store.artifact(f"vectors/{slug}") is None:
        embed_store(root, encoder, progress=False)
    if open_store(root).artifact(f"indexes/{slug}") is None:
        build_indexes(root, encoder)
    return open_store(root)


def build_test_shards(data_dir: Path, root: Path, *, top_N: int = 10) -> dict[str, Path]:
    """{"kg": store root, "mars/dev": shard dir, "scienceqa/test": shard dir} of real shards."""
    from retrieval.batch import retrieve_dataset
    from retrieval.retriever import RetrievalConfig

    data_dir, root = Path(data_dir), Path(root)
    build_retrieval_store(data_dir, root)
    config = RetrievalConfig(encoder=ENCODER, top_N=top_N)
    mars = retrieve_dataset(root, f"mars:{data_dir / 'markg' / 'MARS'}", config, split="dev", limit=N_MARS)
    sqa = retrieve_dataset(root, f"scienceqa:{data_dir / 'scienceqa'}", config, split="test", limit=N_SCIENCEQA)
    return {"kg": root, "mars/dev": mars.shard_dir, "scienceqa/test": sqa.shard_dir}
