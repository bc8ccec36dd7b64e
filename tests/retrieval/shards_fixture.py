"""Real subgraph shards for a handful of MARS / ScienceQA queries, for tests of retrieval and model.

`build_test_shards(data_dir, root)` builds a MarKG sub-store (the real triples around the first
MARS dev queries plus every 32nd triple as distractors, ~1.6k triples), embeds it with the real
`minilm` encoder, builds its FAISS indexes and retrieves a few queries of MARS dev and ScienceQA
test. The sub-store keeps the suite inside its time budget on 2 shared cores: embedding all
33k MarKG triples takes minutes there. Call it once per session or module and share the result.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmkg.kg_store import KGStore, open_store
from mmkg.kg_store.graph import build_csr

ENCODER = "minilm"
#: 8 MARS dev queries; the first 8 ScienceQA test problems include pid 23 (the one real image)
N_MARS, N_SCIENCEQA = 8, 8
#: the sub-store holds the 1-hop neighbourhood of the entities of this many MARS dev queries
SUBSTORE_QUERIES = 24
DISTRACTOR_STRIDE = 32


def build_markg_substore(data_dir: Path, root: Path, *, n_queries: int = SUBSTORE_QUERIES) -> KGStore:
    """A committed store of real MarKG triples: those touching the entities (example, question,
    answer) of the first `n_queries` MARS dev queries, plus every 32nd other triple."""
    from tests.stores import build_markg_store

    root = Path(root)
    full_root = root.with_name(root.name + "-full")
    exists = (full_root / "manifest.json").exists()
    full = open_store(full_root) if exists else build_markg_store(Path(data_dir), full_root)
    rows = [json.loads(line) for line in (Path(data_dir) / "markg/MARS/dev.json").read_text().splitlines()]
    keys = sorted({k for r in rows[:n_queries] for k in (*r["example"], r["question"], r["answer"])})
    seeds = full.entity_ids(keys)
    triples = full.triples_array()
    keep = np.zeros(len(triples), bool)
    keep[full.graph.incident_triples(seeds)] = True
    keep[::DISTRACTOR_STRIDE] = True
    tri = triples[keep]
    old_ents = np.unique(np.concatenate([tri[:, 0], tri[:, 2], seeds[seeds >= 0]]))
    old_rels = np.unique(tri[:, 1])
    ent_new = np.full(full.num_entities, -1, np.int64)
    ent_new[old_ents] = np.arange(len(old_ents))
    rel_new = np.full(full.num_relations, -1, np.int64)
    rel_new[old_rels] = np.arange(len(old_rels))
    h, r, t = ent_new[tri[:, 0]], rel_new[tri[:, 1]], ent_new[tri[:, 2]]
    ents = full.table("entities").take(pa.array(old_ents))
    rels = full.table("relations").take(pa.array(old_rels))
    with KGStore.writer(root) as w:
        w.write_table("entities", ents.set_column(0, "id", pa.array(np.arange(len(old_ents)))))
        w.write_table("relations", rels.set_column(0, "id", pa.array(np.arange(len(old_rels)))))
        w.write_table("triples", pa.table({"id": np.arange(len(tri)), "h": h, "r": r, "t": t,
                                           "source": ["markg"] * len(tri)}))
        w.write_graph(build_csr(h, r, t, num_nodes=len(old_ents)))
        w.record_stage("ingest", config={"sources": ["markg-substore"], "queries": n_queries},
                       counts={"triples": len(tri)}, bumps_version=True)
        return w.commit(bump_version=True)


def build_retrieval_store(data_dir: Path, root: Path, *, encoder: str = ENCODER) -> KGStore:
    """MarKG sub-store + `encoder` vectors + triple/entity indexes (idempotent: reuses what is there)."""
    from mmkg.pipeline.embed import embed_store
    from mmkg.retrieval.index import build_store_indexes

    root = Path(root)
    if not (root / "manifest.json").exists():
        build_markg_substore(Path(data_dir), root)
    store = open_store(root)
    slug = encoder.replace("/", "__").replace(":", "__")
    if store.artifact(f"vectors/{slug}") is None:
        embed_store(root, encoder, progress=False)
    if open_store(root).artifact(f"indexes/{slug}") is None:
        build_store_indexes(root, encoder)
    return open_store(root)


def build_test_shards(data_dir: Path, root: Path, *, top_N: int = 10) -> dict[str, Path]:
    """{"kg": store root, "mars/dev": shard dir, "scienceqa/test": shard dir} of real shards."""
    from mmkg.retrieval.batch import retrieve_dataset
    from mmkg.retrieval.retriever import RetrievalConfig

    data_dir, root = Path(data_dir), Path(root)
    build_retrieval_store(data_dir, root)
    config = RetrievalConfig(encoder=ENCODER, top_N=top_N)
    mars = retrieve_dataset(root, f"mars:{data_dir / 'markg' / 'MARS'}", config, split="dev", limit=N_MARS)
    sqa = retrieve_dataset(root, f"scienceqa:{data_dir / 'scienceqa'}", config, split="test", limit=N_SCIENCEQA)
    return {"kg": root, "mars/dev": mars.shard_dir, "scienceqa/test": sqa.shard_dir}


def shared_root(tmp_path_factory) -> Path:
    """One sub-store per pytest session: every module's fixture builds it once, the rest reuse it.

    `MMKG_TEST_SHARDS_ROOT=<dir>` keeps it across sessions (the builders are idempotent).
    """
    if root := os.environ.get("MMKG_TEST_SHARDS_ROOT"):
        return Path(root)
    return Path(tmp_path_factory.getbasetemp()) / "retrieval-kg" / "kg"
