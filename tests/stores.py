"""Small real stores for tests of the layers above ingestion.

`build_markg_store` ingests MarKG (entity2text/long, relation2text/long, wiki_tuple_ids) with the
local engine into a committed store: 11,292 entities (id = line of entity2text), 192 relations,
33,301 triples.
"""
from __future__ import annotations

from pathlib import Path

from mmkg.kg_store import KGStore


def build_markg_store(data_dir: Path, root: Path) -> KGStore:
    from mmkg.pipeline.ingest import ingest
    return ingest(root, [f"markg:{Path(data_dir) / 'markg' / 'MarKG'}"], engine="local").store
