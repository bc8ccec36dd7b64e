"""Read-only queries behind the analyst's view, shared by `mmkg entity/neighbors` and the web app.

Everything is looked up in the store (keys → ids through `store.entity_ids`, ids → rows by
index), so a key coming from a URL or the command line can never name a file.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.rdf import dense_by_id

#: a key or label as typed: printable, bounded (keys are store lookups, never paths)
_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,400}")
SHA256 = re.compile(r"[0-9a-f]{64}")


def check_text(value: str, what: str = "key") -> str:
    value = (value or "").strip()
    if not _TEXT.fullmatch(value):
        raise KGStoreError(f"invalid {what}: expected 1-400 printable characters")
    return value


@dataclass
class StoreView:
    """A store plus the few columns every page needs, read once per process (thread-safe)."""

    store: KGStore
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def entities(self) -> pa.Table:
        return dense_by_id(self.store.table("entities", ["id", "key", "label", "description", "source"]))

    @cached_property
    def relations(self) -> pa.Table:
        return dense_by_id(self.store.table("relations", ["id", "key", "label", "description"]))

    @cached_property
    def _lower_labels(self) -> pa.Array:
        return pc.utf8_lower(pc.fill_null(self.entities["label"].combine_chunks(), ""))

    @cached_property
    def degree(self) -> np.ndarray:
        if not self.store.graph_rel:
            return np.zeros(self.store.num_entities, np.int64)
        return np.asarray(self.store.graph.degree())

    # ---- rows ------------------------------------------------------------------------------
    def entity_rows(self, ids) -> list[dict]:
        ids = np.asarray(ids, dtype=np.int64)
        rows = self.entities.take(pa.array(ids)).to_pylist()
        for row in rows:
            row["degree"] = int(self.degree[row["id"]])
        return rows

    def relation_rows(self, ids) -> list[dict]:
        return self.relations.take(pa.array(np.asarray(ids, dtype=np.int64))).to_pylist()

    # ---- lookups ---------------------------------------------------------------------------
    def resolve(self, key_or_label: str) -> tuple[int, list[int]]:
        """Entity id for a key (canonical or merged alias) or else an exact label (any case).

        Several entities may share a label; the one with most triples wins and the others are
        returned so the caller can list them.
        """
        text = check_text(key_or_label, "key or label")
        with self._lock:
            eid = int(self.store.entity_ids([text])[0])
            if eid >= 0:
                return eid, []
            hits = np.flatnonzero(pc.equal(self._lower_labels, text.lower()).to_numpy(zero_copy_only=False))
        if hits.size == 0:
            raise KGStoreError(f"no entity with key or label {text!r}")
        order = hits[np.argsort(-self.degree[hits], kind="stable")]
        return int(order[0]), [int(i) for i in order[1:]]

    def search(self, query: str, *, limit: int = 20, offset: int = 0) -> tuple[list[dict], int]:
        """Entities whose label contains `query` (any case): exact, then prefix, then the rest;
        within each, most connected first. Returns (one page of rows, total matches)."""
        q = check_text(query, "search text").lower()
        labels = self._lower_labels
        hit = np.flatnonzero(pc.match_substring(labels, q).to_numpy(zero_copy_only=False))
        if hit.size == 0:
            return [], 0
        sub = labels.take(pa.array(hit))
        exact = pc.equal(sub, q).to_numpy(zero_copy_only=False)
        prefix = pc.starts_with(sub, q).to_numpy(zero_copy_only=False)
        rank = np.where(exact, 0, np.where(prefix, 1, 2))
        order = np.lexsort((hit, -self.degree[hit], rank))
        page = hit[order][offset:offset + limit]
        return self.entity_rows(page), int(hit.size)

    def card(self, eid: int) -> dict:
        """Label, description, sources, merged keys, images and literals of one entity."""
        (row,) = self.entity_rows([eid])
        same = self.store.table("same_as", ["key", "entity_id", "source"])
        if same.num_rows:
            same = same.filter(pc.equal(same["entity_id"], eid))
        images = self.store.table("images")
        if images.num_rows:
            images = images.filter(pc.equal(images["entity_id"], eid))
        lits = self.store.table("literals")
        if lits.num_rows:
            lits = lits.filter(pc.equal(lits["entity_id"], eid))
        sources = sorted({row["source"] or ""} | {s or "" for s in same["source"].to_pylist()}
                         | {s or "" for s in images["source"].to_pylist()} - {""})
        return {**row, "sources": [s for s in sources if s],
                "merged_keys": [{"key": k, "source": s} for k, s in zip(same["key"].to_pylist(),
                                                                       same["source"].to_pylist())],
                "images": images.select(["id", "sha256", "width", "height", "format", "source_uri",
                                         "source"]).to_pylist(),
                "literals": lits.select(["attribute", "value", "datatype"]).to_pylist()}

    def neighbours(self, eid: int) -> list[dict]:
        """1-hop neighbourhood grouped by (relation, direction), biggest group first.

        Each group: relation key/label, direction ("out": entity is the head), and its
        neighbours (id, key, label, triple id)."""
        nbr, rel, direc, tid = (np.asarray(a) for a in self.store.graph.neighbors(eid))
        if nbr.size == 0:
            return []
        ents = {r["id"]: r for r in self.entity_rows(np.unique(nbr))}
        rels = {r["id"]: r for r in self.relation_rows(np.unique(rel))}
        groups: dict[tuple[int, int], list[dict]] = {}
        for n, r, d, t in zip(nbr.tolist(), rel.tolist(), direc.tolist(), tid.tolist()):
            e = ents[n]
            groups.setdefault((r, d), []).append({"id": n, "key": e["key"], "label": e["label"] or e["key"],
                                                  "triple_id": t})
        out = []
        for (r, d), members in groups.items():
            members.sort(key=lambda m: (m["label"].lower(), m["id"]))
            out.append({"relation": rels[r]["key"], "relation_label": rels[r]["label"] or rels[r]["key"],
                        "direction": "out" if d > 0 else "in", "neighbours": members})
        out.sort(key=lambda g: (-len(g["neighbours"]), g["relation"], g["direction"]))
        return out

    def triple_rows(self, triple_ids, scores=None) -> list[dict]:
        """(head, relation, tail) rows with keys and labels, in the order given."""
        tids = np.asarray(triple_ids, dtype=np.int64)
        if tids.size == 0:
            return []
        tri = self.store.table("triples", ["h", "r", "t"]).take(pa.array(tids))
        h, r, t = (tri[c].to_numpy() for c in ("h", "r", "t"))
        ents = {e["id"]: e for e in self.entity_rows(np.union1d(h, t))}
        rels = {x["id"]: x for x in self.relation_rows(np.unique(r))}
        rows = []
        for i, (a, b, c) in enumerate(zip(h.tolist(), r.tolist(), t.tolist())):
            row = {"triple_id": int(tids[i]),
                   "head": ents[a]["key"], "head_label": ents[a]["label"] or ents[a]["key"], "head_id": a,
                   "relation": rels[b]["key"], "relation_label": rels[b]["label"] or rels[b]["key"],
                   "tail": ents[c]["key"], "tail_label": ents[c]["label"] or ents[c]["key"], "tail_id": c}
            if scores is not None:
                row["score"] = float(scores[i])
            rows.append(row)
        return rows

    def image_blob(self, sha256: str):
        """Path of the blob of an image row with this sha256 (None if the store has none).

        The path comes from the committed images table and must stay under `<kg>/blobs/`; the
        URL only ever supplies a validated hex digest."""
        if not SHA256.fullmatch(sha256 or ""):
            return None
        images = self.store.table("images", ["sha256", "blob", "format"])
        if images.num_rows == 0:
            return None
        hit = images.filter(pc.equal(images["sha256"], sha256))
        if hit.num_rows == 0:
            return None
        rel, fmt = hit["blob"][0].as_py(), (hit["format"][0].as_py() or "")
        blobs = (self.store.root / "blobs").resolve()
        path = (self.store.root / rel).resolve()
        if blobs not in path.parents or not path.is_file():
            return None
        return path, fmt
