"""Nearest entities / triples / images of the store to one text or image (`mmkg search`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mmkg.kg_store import KGStore, open_store
from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.vectors import vector_meta
from mmkg.retrieval.index import load_index

WHAT_TO_KIND = {"entities": "entity", "triples": "triple", "images": "image"}


def _rows(table: pa.Table, ids: np.ndarray) -> list[dict[str, Any]]:
    # Entity, relation and triple ids are dense: row i has id i (docs/ARCHITECTURE.md).
    return table.take(pa.array(ids, pa.int64())).to_pylist() if len(ids) else []


def describe_hits(store: KGStore, what: str, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """Keys and labels of each hit (ids from one query's row of `VectorIndex.search`)."""
    keep = ids >= 0
    ids, scores = ids[keep], scores[keep]
    ents = store.table("entities", ["id", "key", "label"])
    if what == "entities":
        rows = _rows(ents, ids)
    elif what == "triples":
        tri = _rows(store.table("triples", ["id", "h", "r", "t"]), ids)
        rels = store.table("relations", ["id", "key", "label"])
        heads = _rows(ents, np.array([t["h"] for t in tri], np.int64))
        tails = _rows(ents, np.array([t["t"] for t in tri], np.int64))
        relr = _rows(rels, np.array([t["r"] for t in tri], np.int64))
        rows = [{"id": t["id"], "key": f"{h['key']} {r['key']} {tl['key']}",
                 "label": f"{h['label']}, {r['label']}, {tl['label']}",
                 "head": h, "relation": r, "tail": tl} for t, h, r, tl in zip(tri, heads, relr, tails)]
    else:
        imgs = store.table("images", ["id", "entity_id", "blob"])
        pos = {int(i): n for n, i in enumerate(imgs["id"].to_numpy())}
        rows = []
        for i in ids:
            im = imgs.slice(pos[int(i)], 1).to_pylist()[0]
            ent = _rows(ents, np.array([im["entity_id"]], np.int64))[0]
            rows.append({"id": im["id"], "key": ent["key"], "label": ent["label"], "entity_id": im["entity_id"],
                         "blob": im["blob"]})
    return [{"rank": n + 1, "score": round(float(s), 6), **row} for n, (row, s) in enumerate(zip(rows, scores))]


def ensure_vectors(kg: str | Path, encoder: str, kind: str) -> KGStore:
    """The store with `kind` vectors of `encoder` and their index: a configuration that did not need
    them (the anchored retriever embeds no triples) gets them now, from the same vector cache (only
    texts it has never seen are encoded), the kinds already there kept. Returns the current store."""
    from mmkg.pipeline.embed import embed_store
    from mmkg.retrieval.index import build_store_indexes
    store = open_store(kg)
    meta = vector_meta(store, encoder)
    if kind in meta.get("kinds", {}):
        return store
    import logging
    logging.getLogger(__name__).info("%s has no %s vectors for %s: embedding them now", kg, kind, encoder)
    embed_store(kg, encoder, dtype=meta.get("dtype", "float32"), batch_size=meta.get("batch_size", 64),
                chunk_size=meta.get("chunk_size", 8192), kinds={*meta.get("kinds", {}), kind}, progress=False)
    build_store_indexes(kg, encoder)  # the unchanged kinds' indexes are kept (append plan), the new one built
    return open_store(kg)


def search_store(kg: str | Path, encoder: str, *, text: str | None = None, image: str | Path | None = None,
                 what: str = "entities", k: int = 10, device: str = "cpu") -> dict[str, Any]:
    """Encode the query with the index's own encoder and return the top-k hits with keys and labels."""
    from mmkg.pipeline.encoders import resolve_encoder
    if what not in WHAT_TO_KIND:
        raise ConfigError(f"unknown --what {what!r}; choose one of: {', '.join(WHAT_TO_KIND)}")
    pixels = None
    if image is not None:  # the guarded loader `retrieve` uses: no FIFO, bounded bytes, pixel bombs refused
        from mmkg.pipeline.images import load_image_rgb
        pixels = load_image_rgb(image)
    store = open_store(kg)
    name = vector_meta(store, encoder)["encoder"]  # the full name, even when given a slug
    if what == "triples":
        store = ensure_vectors(kg, name, "triple")
    index = load_index(store, name, WHAT_TO_KIND[what])
    enc = resolve_encoder(name, device=device)
    if pixels is not None:
        q = enc.encode_images([pixels])
    else:
        q = enc.encode_text([text or ""])
    scores, ids = index.search(q, k)
    return {"encoder": name, "what": what, "query": {"text": text, "image": str(image) if image else None},
            "index": index.meta.get("factory"), "hits": describe_hits(store, what, ids[0], scores[0])}


class EntitySearcher:
    """Text → nearest entities, with the encoder the store's vectors were made with: through the
    FAISS entity index when one is built, else by exact search over the entity vectors."""

    def __init__(self, store: KGStore, encoder: str):
        import logging
        from mmkg.kg_store.vectors import load_vectors
        from mmkg.pipeline.encoders import resolve_encoder
        self.encoder = resolve_encoder(encoder)
        self.index = self.vectors = self.ids = None
        try:
            self.index = load_index(store, encoder, "entity")
        except KGStoreError as e:  # no index yet: exact search below
            logging.getLogger(__name__).info("no FAISS entity index (%s); searching the vectors exactly", e)
            self.vectors, self.ids = load_vectors(store, encoder, "entity")

    def search(self, text: str, k: int = 20) -> list[tuple[int, float]]:
        """[(entity id, cosine)], best first."""
        q = np.ascontiguousarray(self.encoder.encode_text([text]), dtype=np.float32)
        if self.index is not None:
            scores, found = self.index.search(q, k)
            return [(int(i), float(s)) for i, s in zip(found[0], scores[0]) if i >= 0]
        sims = np.asarray(self.vectors, dtype=np.float32) @ q[0]
        top = np.argsort(-sims, kind="stable")[:k]
        return [(int(self.ids[i]), float(sims[i])) for i in top]
