"""Which entities have images, counted the way SPARQL sees them (issue 30).

The store's images are `foaf:depiction` statements in the RDF view (kg_store/rdf.py), and some
sources also use `foaf:depiction` as a relation between entities (DB15K has two such triples). An
entity "has images" when either says so, and is counted once: `mmkg stats`, the web view and
`SELECT (COUNT(DISTINCT ?e) AS ?n) WHERE { ?e foaf:depiction ?img }` give the same number.
"""
from __future__ import annotations

import numpy as np

from mmkg.kg_store.store import KGStore

FOAF_DEPICTION = "http://xmlns.com/foaf/0.1/depiction"
#: relation keys that export as foaf:depiction (an absolute URI key, with or without <…>)
DEPICTION_KEYS = (FOAF_DEPICTION, f"<{FOAF_DEPICTION}>")


def depiction_triples(store: KGStore) -> np.ndarray:
    """Ids of the relational triples whose relation is foaf:depiction."""
    rel = store.relation_ids(DEPICTION_KEYS)
    rel = rel[rel >= 0]
    if rel.size == 0:
        return np.empty(0, np.int64)
    r = store.table("triples", ["r"])["r"].to_numpy()
    return np.flatnonzero(np.isin(r, rel))


def entities_with_images(store: KGStore) -> np.ndarray:
    """Sorted ids of the entities with a stored image or a foaf:depiction triple (each once)."""
    stored = store.table("images", ["entity_id"])["entity_id"].to_numpy()
    tids = depiction_triples(store)
    heads = store.table("triples", ["h"])["h"].to_numpy()[tids] if tids.size else np.empty(0, np.int64)
    return np.union1d(stored.astype(np.int64), heads.astype(np.int64))
