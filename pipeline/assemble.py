"""Table builders of the ingest stage: everything here works on driver-side Arrow tables.

Shared by both engines (which only deliver records, key occurrences and deduplicated triples), so
the rows they produce, and hence the stores, are identical.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmkg.kg_store import schema
from mmkg.pipeline.readers import records as R


def of_kind(small: pa.Table, kind: str, p: str | None = None) -> pa.Table:
    mask = pc.equal(small["kind"], kind)
    if p is not None:
        mask = pc.and_(mask, pc.fill_null(pc.equal(small["p"], p), False))
    return small.filter(mask)


def relation_annotations(small: pa.Table, relation_keys: pa.ChunkedArray, entity_keys: pa.ChunkedArray) -> pa.Table:
    """A label or description stated of a relation (`wdt:P31 rdfs:label "instance of"`) labels
    the relation instead of making an isolated entity of it: its LITERAL records become RELATION
    records and the entity label derived from them goes, for subjects that are relation keys (in
    this ingest's triples or the store) and no entity the store has."""
    if small.num_rows == 0 or len(relation_keys) == 0:
        return small
    rel_subject = pc.and_(pc.is_in(small["s"], value_set=pc.unique(relation_keys)),
                          pc.invert(pc.is_in(small["s"], value_set=pc.unique(entity_keys))))
    rel_subject = pc.fill_null(rel_subject, False)
    if not pc.any(rel_subject).as_py():
        return small
    attr = pc.fill_null(pc.is_in(small["p"], value_set=pa.array(list(R.ANNOTATIONS))), False)
    statement = pc.and_(pc.and_(rel_subject, pc.equal(small["kind"], R.LITERAL)), attr)
    derived = pc.and_(pc.and_(rel_subject, pc.equal(small["kind"], R.ENTITY)),
                      pc.and_(pc.invert(small["primary"]), pc.fill_null(pc.is_in(small["p"], value_set=pa.array(["label", "description"])), False)))
    small = small.filter(pc.invert(derived))
    statement = pc.filter(statement, pc.invert(derived))
    kind = pc.if_else(statement, pa.scalar(R.RELATION), small["kind"])
    which = pc.take(pa.array(list(R.ANNOTATIONS.values())),
                    pc.index_in(small["p"], value_set=pa.array(list(R.ANNOTATIONS))))
    p = pc.if_else(statement, which, small["p"])
    return small.set_column(small.schema.get_field_index("kind"), "kind", kind) \
        .set_column(small.schema.get_field_index("p"), "p", p)


def occurrences(keys: pa.ChunkedArray, order: pa.ChunkedArray) -> pa.Table:
    t = pa.table({"key": keys, "order": order}).group_by("key").aggregate([("order", "min")])
    return pa.table({"key": t["key"], "order": t["order_min"]})


def first_text(recs: pa.Table, key_map: pa.Table) -> pa.Table:
    """(id, text): per entity, the text of the record that came first in the input."""
    if recs.num_rows == 0:
        return pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())})
    # inner joins: pyarrow's default (left outer) would keep every candidate text
    t = pa.table({"key": recs["s"], "text": recs["o"], "pos": recs["pos"]}).join(key_map, "key", join_type="inner")
    first = t.group_by("entity_id").aggregate([("pos", "min")])
    t = t.join(pa.table({"entity_id": first["entity_id"], "pos": first["pos_min"]}), ["entity_id", "pos"],
               join_type="inner")
    return pa.table({"id": t["entity_id"], "text": t["text"]})


def tail_labels(keys: pa.Array) -> pa.Array:
    """Readable labels from URI tails (`…/resource/Wheaton_College_(Illinois)` → `Wheaton College (Illinois)`)."""
    if len(keys) == 0:
        return pa.array([], pa.string())
    tails = pc.struct_field(pc.extract_regex(keys, r"^(?:[a-z][a-z0-9+.-]*:|/[^m/]).*[/#](?P<t>[^/#]+)$"), "t")
    spaced = pc.replace_substring(tails, "_", " ")
    if pc.any(pc.fill_null(pc.match_substring(spaced, "%"), False)).as_py():
        from urllib.parse import unquote
        spaced = pa.array([unquote(x) if x is not None else None for x in spaced.to_pylist()], pa.string())
    return spaced


def labelled_rows(new: pa.Table, labels: pa.Table, hints: pa.Table | None, descs: pa.Table,
                  names: list[str], file_src: np.ndarray) -> pa.Table:
    """New entity/relation rows: label = explicit > hint > URI tail > key; source of first occurrence."""
    out = new
    for name, tbl in (("label", labels), ("hint", hints), ("description", descs)):
        if tbl is None:
            out = out.append_column(name, pa.nulls(out.num_rows, pa.string()))
            continue
        out = out.join(tbl.rename_columns(["id", name]), "id")
    return finish_labelled(out.sort_by("id"), names, file_src)


def finish_labelled(out: pa.Table | pa.RecordBatch, names: list[str], file_src: np.ndarray) -> pa.Table:
    """id, key, order, label, hint, description rows (in id order) → table rows (the Spark engine
    runs this per partition)."""
    keys = out["key"]
    label = pc.coalesce(out["label"], out["hint"],
                        tail_labels(keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys), keys)
    src = file_src[(out["order"].to_numpy() >> 2) >> R.LINE_BITS] if out.num_rows else np.array([], np.int64)
    return pa.table({"id": out["id"], "key": out["key"], "label": label, "description": out["description"],
                     "source": pa.array(np.array(names, dtype=object)[src] if len(src) else [], pa.string())})


def existing_entity_keys(store) -> pa.Table:
    """key, entity_id of every canonical key and alias the store has (driver-side)."""
    old = store.table("entities", ["id", "key"])
    alias = store.table("same_as", ["entity_id", "key"])
    return pa.table({"key": pa.chunked_array(old["key"].chunks + alias["key"].chunks, pa.string()),
                     "entity_id": pa.chunked_array(old["id"].chunks + alias["entity_id"].chunks, pa.int64())})


def triple_sources(pos: np.ndarray, plan) -> pa.Array:
    """Source name of each triple from the position of its first line."""
    file_src = np.asarray(plan.file_src, dtype=np.int64)
    src = file_src[pos >> R.LINE_BITS] if len(pos) else np.array([], np.int64)
    return pc.take(pa.array(plan.names, pa.string()), pa.array(src, pa.int64()))


def new_triple_rows(old: pa.Table, final: pa.Table, plan) -> pa.Table:
    """Triple rows to append (driver-side): those of `final` (h, r, t, pos; ascending pos) not in
    `old` (h, r, t), ids continuing the store's, in input order."""
    if old.num_rows and final.num_rows:
        seen = final.join(old.append_column("old", pa.array(np.ones(old.num_rows, bool))), ["h", "r", "t"])
        final = seen.filter(pc.is_null(seen["old"])).drop_columns(["old"]).sort_by("pos")
    return pa.table({"id": np.arange(old.num_rows, old.num_rows + final.num_rows, dtype=np.int64),
                     "h": final["h"], "r": final["r"], "t": final["t"],
                     "source": triple_sources(final["pos"].to_numpy(), plan)})


def reject_rows(recs: pa.Table, names: list[str], paths: list[str]) -> pa.Table:
    n = recs.num_rows
    if n == 0:
        return schema.empty("rejects")
    location = pc.binary_join_element_wise(pc.take(pa.array(paths, pa.string()), recs["file_seq"]),
                                           pc.cast(pc.fill_null(recs["line_no"], 0), pa.string()), ":")
    raw = pc.utf8_slice_codeunits(pc.fill_null(recs["raw"], ""), 0, schema.REJECT_RAW_MAX)
    return pa.table({"stage": pa.array(["ingest"] * n), "source": pc.take(pa.array(names), recs["src"]),
                     "location": location, "reason": recs["reason"], "raw": raw.cast(pa.binary())})


def count_by_source(values: pa.Array | pa.ChunkedArray, n_sources: int) -> np.ndarray:
    return np.bincount(np.asarray(values, dtype=np.int64), minlength=n_sources) if len(values) else \
        np.zeros(n_sources, np.int64)


def literal_rows(lits: pa.Table, key_map: pa.Table, old: pa.Table, names: list[str]) -> pa.Table:
    """New literal rows: exact duplicates (after merging, or already stored) kept once, in input order."""
    keys = ["entity_id", "attribute", "value", "datatype"]
    lit = pa.table({"key": lits["s"], "attribute": lits["p"], "value": lits["o"], "datatype": lits["dt"],
                    "pos": lits["pos"], "src": lits["src"]}).join(key_map, "key", join_type="inner")
    first = lit.group_by(keys).aggregate([("pos", "min")])
    first = pa.table({**{k: first[k] for k in keys}, "pos": first["pos_min"]})
    lit = lit.join(first, [*keys, "pos"], join_type="inner").sort_by("pos")
    if old.num_rows and lit.num_rows:
        marker = old.select(keys).append_column("old", pa.array(np.ones(old.num_rows, bool)))
        lit = lit.join(marker, keys)
        lit = lit.filter(pc.is_null(lit["old"])).sort_by("pos")
    return pa.table({"entity_id": lit["entity_id"], "attribute": lit["attribute"], "value": lit["value"],
                     "datatype": lit["datatype"], "source": pc.take(pa.array(names), lit["src"])})
