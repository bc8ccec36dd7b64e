"""What changed between two KG versions (`mmkg diff A B`): rows added/removed per table, and the
added/removed triples with their labels.

Rows are compared by what they say, not by id (ids are dense per version): an entity by its key,
a triple by (head key, relation key, tail key), a literal by (entity key, attribute, value,
datatype), and so on. Each side is read from its version's own table files (`open_version`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmkg.kg_store.versions import open_version

#: the columns that identify a row of each table (keys of id columns are resolved first)
IDENTITY = {
    "entities": ("key",), "relations": ("key",), "triples": ("h_key", "r_key", "t_key"),
    "literals": ("entity_key", "attribute", "value", "datatype"), "same_as": ("key", "entity_key"),
    "images": ("entity_key", "sha256"), "rejects": ("stage", "source", "location", "reason"),
}
TRIPLE_COLUMNS = ("h_key", "h_label", "r_key", "r_label", "t_key", "t_label")


def _by_id(store, name: str) -> tuple[pa.Array, pa.Array]:
    """(keys, labels) with row i = id i of an id table."""
    from mmkg.kg_store.rdf import dense_by_id
    t = dense_by_id(store.table(name, ["id", "key", "label"]))
    return t["key"].combine_chunks(), t["label"].combine_chunks()


def _identity_table(store, name: str) -> pa.Table:
    """The table's rows as their identity columns (strings), distinct; triples carry labels too."""
    if name in ("entities", "relations"):
        return store.table(name, ["key"])
    ent_keys, ent_labels = _by_id(store, "entities") if name != "rejects" else (None, None)
    if name == "triples":
        t = store.table("triples", ["h", "r", "t"])
        rel_keys, rel_labels = _by_id(store, "relations")
        h, r, tt = (t[c].combine_chunks() for c in ("h", "r", "t"))
        return pa.table({"h_key": pc.take(ent_keys, h), "h_label": pc.take(ent_labels, h),
                         "r_key": pc.take(rel_keys, r), "r_label": pc.take(rel_labels, r),
                         "t_key": pc.take(ent_keys, tt), "t_label": pc.take(ent_labels, tt)})
    if name == "rejects":
        return store.table("rejects", list(IDENTITY["rejects"]))
    cols = [c for c in IDENTITY[name] if c != "entity_key"]
    t = store.table(name, ["entity_id", *cols])
    return pa.table({"entity_key": pc.take(ent_keys, t["entity_id"].combine_chunks()),
                     **{c: t[c].combine_chunks().cast(pa.string()) for c in cols}})


def _distinct(t: pa.Table) -> pa.Table:
    return t.group_by(t.column_names, use_threads=False).aggregate([]) if t.num_rows else t


def _minus(a: pa.Table, b: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Distinct rows of `a` whose identity is not in `b`."""
    if a.num_rows == 0 or b.num_rows == 0:
        return _distinct(a)
    # null keys never join: compare on filled copies
    fill = {k: pc.fill_null(a[k], "\x00") for k in keys}
    left = a.append_column("_row", pa.array(range(a.num_rows), pa.int64()))
    for k in keys:
        left = left.set_column(left.column_names.index(k), k, fill[k])
    right = b.select(list(keys))
    for k in keys:
        right = right.set_column(right.column_names.index(k), k, pc.fill_null(right[k], "\x00"))
    kept = left.join(_distinct(right), keys=list(keys), join_type="left anti", use_threads=False)
    rows = np.sort(kept["_row"].to_numpy())
    return _distinct(a.take(pa.array(rows, pa.int64())))


def diff_versions(kg: str | Path, a: int, b: int, *, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """Per-table counts of rows added (in B, not in A) and removed (in A, not in B), and one page
    (`offset`, `limit`) of the added and removed triples with labels, sorted by keys."""
    kg = Path(kg)
    sa, sb = open_version(kg, a), open_version(kg, b)
    tables, triples = {}, {}
    for name, keys in IDENTITY.items():
        ta, tb = _identity_table(sa, name), _identity_table(sb, name)
        added, removed = _minus(tb, ta, keys), _minus(ta, tb, keys)
        tables[name] = {"rows_a": ta.num_rows, "rows_b": tb.num_rows, "added": added.num_rows,
                        "removed": removed.num_rows}
        if name == "triples":
            for what, t in (("added", added), ("removed", removed)):
                order = pc.sort_indices(t, sort_keys=[(k, "ascending") for k in keys]) if t.num_rows else []
                page = t.take(order).slice(offset, limit) if t.num_rows else t
                triples[what] = page.select(list(TRIPLE_COLUMNS)).to_pylist() if t.num_rows else []
    return {"a": int(a), "b": int(b), "tables": tables, "triples": {**triples, "offset": offset, "limit": limit,
                                                                    "added_total": tables["triples"]["added"],
                                                                    "removed_total": tables["triples"]["removed"]}}


__all__ = ["IDENTITY", "diff_versions"]
