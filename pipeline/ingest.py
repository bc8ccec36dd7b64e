"""The ingest stage: sources → one committed KG version (entities, relations, triples, literals,
same_as, images, rejects, CSR graph) with per-source input accounting in the manifest.

The engine (`local` or `spark`) parses and does the work that grows with the KG (entity ids,
triples, the entity and triple rows: Spark writes those as part files appended to the old
version's parts); this module assembles the small tables in the driver. Both engines follow the
same id rules, so they give identical stores. Ids are stable: what the store already holds keeps
its id, new entities/relations/triples/images are appended in input order.
For every source: lines read = accepted + rejected + duplicates (blank/header lines are `skipped`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmkg.kg_store import KGStore, schema
from mmkg.kg_store.store import check_new_store_dir
from mmkg.kg_store.errors import KGStoreError
from mmkg.pipeline import assemble as A
from mmkg.pipeline import engines
from mmkg.pipeline.engines.base import NewRows
from mmkg.pipeline.engines.plan import DEFAULT_CHUNK_BYTES, Plan, make_plan
from mmkg.pipeline.image_stage import ImagePrefetch, run_image_stage
from mmkg.pipeline.linking import merge_entities
from mmkg.pipeline.readers import SourceSpec
from mmkg.pipeline.readers import records as R

log = logging.getLogger(__name__)


class IngestRejectedError(KGStoreError):
    """`strict=True` and some input records were rejected; nothing was committed."""


@dataclass
class IngestResult:
    store: KGStore
    counts: dict[str, Any]
    inputs: list[dict[str, Any]]
    seconds: float
    #: wall seconds per phase (plan, engine_start, parse, ids, triples, images, write), in order
    phases: dict[str, float]
    #: this process's peak RSS (MiB) at the end of each phase: where the driver's memory went
    phase_peak_rss_mib: dict[str, float]


class _Phases:
    """Wall seconds and the peak RSS so far per ingest phase, logged as each one ends (the
    progress report of a long ingest)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mib: dict[str, float] = {}
        self._t = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 3)
        self.peak_rss_mib[name] = peak_rss_mib()
        log.info("ingest: %s done in %.1f s (peak RSS %.0f MiB)", name, self.seconds[name], self.peak_rss_mib[name])
        self._t = now


def peak_rss_mib() -> float:
    """This process's peak resident set so far, MiB (Linux: ru_maxrss is KiB)."""
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def ingest(kg: str | Path, sources: list[str | SourceSpec], *, engine: str = "local", master: str | None = None,
           shuffle_partitions: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES, image_limits=None,
           image_threads: int = 4, strict: bool = False, spark_conf: dict[str, str] | None = None,
           force: bool = False, base: str | None = None) -> IngestResult:
    """Ingest `sources` (`FORMAT:PATH` strings) into the store at `kg` as a new KG version.

    `kg` must be a store, a new or empty directory, or `force=True` (NotAStoreError otherwise).
    `base`: the base IRI of relative IRIs in RDF sources that do not give their own."""
    t0 = time.perf_counter()
    phases = _Phases()
    if not force:
        check_new_store_dir(kg)  # before reading any source: a wrong --kg fails at once
    plan = make_plan(sources, chunk_bytes=chunk_bytes, base=base)  # validates sources before any engine starts
    phases.done("plan")
    eng = engines.resolve_engine(engine, master=master, shuffle_partitions=shuffle_partitions, conf=spark_conf)
    prefetch = None
    try:
        with KGStore.writer(kg, force=force) as w:
            plan.name_sources(w.store.inputs)  # unique by path against what the store holds
            # image decoding overlaps the engine's work (Spark start-up, parsing)
            prefetch = ImagePrefetch(plan.image_files(), limits=image_limits, threads=image_threads)
            try:
                counts, inputs, outputs = _assemble(w, plan, eng, prefetch=prefetch, strict=strict, phases=phases)
                if strict and counts["rejects_added"]:
                    raise IngestRejectedError(f"{counts['rejects_added']} input record(s) rejected (--strict); "
                                              "nothing committed")
                seconds = round(time.perf_counter() - t0, 3)
                config = {"sources": [str(s) for s in plan.specs], "engine": engine, "master": master,
                          "shuffle_partitions": shuffle_partitions}
                w.add_inputs(inputs)
                w.record_stage("ingest", config=config, counts=counts, outputs=outputs, seconds=seconds,
                               inputs={f["path"]: f["sha256"] for i in inputs for f in i["files"]},
                               bumps_version=True, phase_seconds=phases.seconds)
                store = w.commit(bump_version=True)
            except BaseException:
                if not w.committed:
                    eng.discard()  # part files the engine wrote for this version (never committed)
                raise
    finally:
        if prefetch is not None:
            prefetch.close()
        eng.close()
    return IngestResult(store=store, counts=counts, inputs=inputs, seconds=seconds, phases=phases.seconds,
                        phase_peak_rss_mib=phases.peak_rss_mib)


#: rejects listed in the --strict error (the rest are counted)
STRICT_LIST_MAX = 50


def strict_message(rejects: pa.Table) -> str:
    """The --strict failure: how many, then `location: reason` per reject (the first 50)."""
    rows = rejects.select(["location", "reason"]).to_pylist()
    shown = "\n".join(f"  {r['location']}: {r['reason']}" for r in rows[:STRICT_LIST_MAX])
    more = f"\n  … and {len(rows) - STRICT_LIST_MAX} more" if len(rows) > STRICT_LIST_MAX else ""
    return f"{len(rows)} input record(s) rejected (--strict); nothing committed:\n{shown}{more}"


def _assemble(w, plan: Plan, eng, *, prefetch: ImagePrefetch, phases: _Phases, strict: bool = False
              ) -> tuple[dict, list[dict], list[str]]:
    """Parse with the engine, build every table of the new version, write them; returns (counts, inputs, outputs)."""
    store = w.store
    names, n_src = plan.names, len(plan.specs)
    eng.start(plan)
    phases.done("engine_start")
    eng.parse(plan)
    small = eng.small_records()
    dups = _small_duplicates(small, n_src)
    phases.done("parse")

    t_rel = eng.relation_occurrences()
    small = A.relation_annotations(small, pa.chunked_array(
        t_rel["key"].chunks + store.table("relations", ["key"])["key"].chunks, pa.string()),
        A.existing_entity_keys(store)["key"])
    ents, hints, rels = A.of_kind(small, R.ENTITY), A.of_kind(small, R.ENTITY_HINT), A.of_kind(small, R.RELATION)
    lits, links, rejs = A.of_kind(small, R.LITERAL), A.of_kind(small, R.LINK), A.of_kind(small, R.REJECT)
    imgs = A.of_kind(small, R.IMAGE)
    imgs = imgs.filter(pc.is_in(imgs["pos"], value_set=dups.first_pos))   # a repeated mapping line: once

    n_old_entities = store.count("entities")
    rmerged = _relation_ids(store, t_rel, rels)
    rel_map = pa.table({"key": rmerged.key_map["key"], "relation_id": rmerged.key_map["entity_id"]})
    data = pa.concat_tables([ents, lits, imgs]).select(["s", "pos"])
    data_occ = pa.table({"key": data["s"], "order": pc.multiply(data["pos"], 4)})
    link_tbl = pa.table({"s": links["s"], "o": links["o"], "p": pc.take(pa.array(names), links["src"])})
    lookup_keys = pc.unique(pa.chunked_array(ents["s"].chunks + hints["s"].chunks + lits["s"].chunks
                                             + imgs["s"].chunks, pa.string()))
    eids = eng.assign_entity_ids(store, data_occ, link_tbl, lookup_keys)
    km = eids.lookup  # key → id of the keys the small records name (never one row per triple key)
    phases.done("ids")

    tri = eng.new_triples(w, rel_map, plan)
    tstats = tri.stats
    distinct_keys = int(pc.sum(tstats["distinct"]).as_py() or 0)
    # distinct within each source but equal after merging entities, or given by two sources
    collapsed = distinct_keys - tri.distinct
    tri_counts = {"triples_collapsed": collapsed, "triples_already_in_store": distinct_keys - collapsed - tri.rows.num_rows}
    phases.done("triples")
    old_imgs = store.table("images", ["entity_id", "sha256"])
    img_eids = pc.take(km["entity_id"], pc.index_in(imgs["s"], value_set=km["key"]))
    images = run_image_stage(imgs, img_eids.to_pylist(), store_root=w.root, names=names,
                             file_paths=[f.path for f in plan.files], prefetch=prefetch,
                             existing_pairs=set(zip(old_imgs["entity_id"].to_pylist(), old_imgs["sha256"].to_pylist())))
    n_old_img = store.count("images")
    phases.done("images")
    new_images = images.rows.add_column(0, "id", pa.array(np.arange(n_old_img, n_old_img + images.rows.num_rows,
                                                                    dtype=np.int64)))
    new_rejects = pa.concat_tables([A.reject_rows(rejs, names, [f.path for f in plan.files]),
                                    pa.Table.from_pylist(images.rejects, schema=schema.REJECTS)])
    if strict and new_rejects.num_rows:  # before any table file is written (engines write lazily)
        raise IngestRejectedError(strict_message(new_rejects))

    inputs, totals = _accounting(plan, small, rejs, imgs, dups, tstats, images)

    file_src = np.asarray(plan.file_src, dtype=np.int64)
    new_ents = eng.new_entity_rows(w, A.first_text(A.of_kind(ents, R.ENTITY, "label"), km), A.first_text(hints, km),
                                   A.first_text(A.of_kind(ents, R.ENTITY, "description"), km), names, file_src)
    rkm = rmerged.key_map
    new_rels = A.labelled_rows(rmerged.new_entities, A.first_text(A.of_kind(rels, R.RELATION, "label"), rkm), None,
                               A.first_text(A.of_kind(rels, R.RELATION, "description"), rkm), names, file_src)
    new_lits = A.literal_rows(lits, km, store.table("literals"), names)
    same_as = pa.table({"key": eids.new_same_as["key"], "entity_id": eids.new_same_as["entity_id"],
                        "source": eids.new_same_as["link"]})

    outputs, sizes = [], {}
    for name, new in (("entities", new_ents), ("relations", NewRows(new_rels.num_rows, table=new_rels)),
                      ("triples", tri.rows), ("literals", NewRows(new_lits.num_rows, table=new_lits)),
                      ("same_as", NewRows(same_as.num_rows, table=same_as)),
                      ("images", NewRows(new_images.num_rows, table=new_images)),
                      ("rejects", NewRows(new_rejects.num_rows, table=new_rejects))):
        written, sizes[name] = _publish(w, store, name, new)
        outputs += written
    for rel in images.blobs:
        w.register_file(rel)
    outputs.append(eng.write_graph(w, [w.root / rel for rel in w.store.table_parts("triples")],
                                   sizes["entities"]))
    phases.done("write")
    counts = {
        "sources": n_src,
        "entities": sizes["entities"], "entities_added": eids.added,
        "merged_keys": eids.merged_keys, "merged_entities": eids.merged_entities,
        "merge_conflicts": eids.conflicts,
        "relations": sizes["relations"], "relations_added": new_rels.num_rows,
        "triples": sizes["triples"], "triples_added": tri.rows.num_rows, **tri_counts,
        "literals": sizes["literals"], "literals_added": new_lits.num_rows,
        "same_as": sizes["same_as"], "same_as_added": same_as.num_rows,
        "images": sizes["images"], "images_added": new_images.num_rows, "image_blobs": len(images.blobs),
        "rejects": sizes["rejects"], "rejects_added": new_rejects.num_rows, **totals,
    }
    if sizes["entities"] != n_old_entities + eids.added or new_ents.num_rows != eids.added:
        raise RuntimeError("ingest bug: entity rows disagree with the ids assigned; nothing committed")
    return counts, inputs, outputs


#: tables whose row i has id i
ID_TABLES = ("entities", "relations", "triples", "images")


def _publish(w, store, name: str, new: NewRows) -> tuple[list[str], int]:
    """Stage table `name` of the new version: old rows + `new`. Driver-side rows are appended and
    written as one file; executor-written parts are appended to the old version's parts (reused).
    Returns (files written, rows in the table)."""
    if new.write is None:
        table = pa.concat_tables([store.table(name), schema.conform(name, new.table)])
        if name in ID_TABLES:
            _check_dense_ids(name, table)
        return [w.write_table(name, table)], table.num_rows
    written = new.write()
    parts = store.table_parts(name) + written
    if not parts:  # no rows in the store nor in the input: an empty table of one file
        return [w.write_table(name, schema.empty(name))], 0
    n = _check_dense_parts(name, w.root, parts) if name in ID_TABLES else \
        sum(pq.ParquetFile(w.root / rel).metadata.num_rows for rel in parts)
    if n != store.count(name) + new.num_rows:
        raise RuntimeError(f"ingest bug: {name} parts hold {n} rows, expected {store.count(name) + new.num_rows}")
    w.register_table(name, parts)
    return written, n


def _check_dense_parts(name: str, root: Path, parts: list[str]) -> int:
    """Row i must have id i across the parts, checked from each row group's Parquet statistics
    (row counts, id min/max) without reading the data; returns the row count."""
    n = 0
    for rel in parts:
        meta = pq.ParquetFile(root / rel).metadata
        col = meta.schema.to_arrow_schema().get_field_index("id")
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            if rg.num_rows == 0:
                continue
            st = rg.column(col).statistics
            if st is None or not st.has_min_max or (st.min, st.max) != (n, n + rg.num_rows - 1) or st.null_count:
                got = (st.min, st.max) if st is not None and st.has_min_max else "no statistics"
                raise RuntimeError(f"ingest bug: {name} part {rel} row group {g} holds ids {got}, expected "
                                   f"{n}..{n + rg.num_rows - 1}; nothing committed")
            n += rg.num_rows
    return n


def _check_dense_ids(name: str, table: pa.Table) -> None:
    """Row i must have id i: a violation is a bug here, and must never reach a committed store."""
    ids = table["id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise RuntimeError(f"ingest bug: {name} ids are not dense 0..{len(ids) - 1}; nothing committed")


@dataclass
class _SmallDuplicates:
    first_pos: pa.Array       # pos of the first line of each distinct record
    per_source: np.ndarray    # exact duplicate lines per source


def _small_duplicates(small: pa.Table, n_src: int) -> _SmallDuplicates:
    """Exact duplicate lines within a source among the non-triple records (the engine counts triples)."""
    skip = pa.array([R.REJECT, R.HEADER])
    prim = small.filter(pc.and_(small["primary"], pc.invert(pc.is_in(small["kind"], value_set=skip))))
    groups = prim.group_by(["src", "kind", "s", "p", "o", "dt"]).aggregate([("pos", "min")])
    return _SmallDuplicates(groups["pos_min"].combine_chunks(),
                            A.count_by_source(prim["src"], n_src) - A.count_by_source(groups["src"], n_src))


def _relation_ids(store, t_rel: pa.Table, rels: pa.Table):
    """Relation ids (few: assigned in the driver), keeping those the store already has; `t_rel`:
    the engine's relation occurrences in the triples."""
    rel_occ = A.occurrences(pa.chunked_array(t_rel["key"].chunks + rels["s"].chunks, pa.string()),
                            pa.chunked_array(t_rel["order"].chunks + pc.multiply(rels["pos"], 4).chunks, pa.int64()))
    old_rel = store.table("relations", ["id", "key"])
    no_links = pa.table({"s": pa.array([], pa.string()), "o": pa.array([], pa.string()), "p": pa.array([], pa.string())})
    return merge_entities(rel_occ, no_links, pa.table({"key": old_rel["key"], "entity_id": old_rel["id"]}))


def _accounting(plan: Plan, small, rejs, imgs, dups: _SmallDuplicates, tstats, images) -> tuple[list[dict], dict]:
    """Manifest `inputs` entries: per source, read = accepted + rejected + duplicates (+ skipped lines)."""
    n_src = len(plan.specs)
    tri_lines, tri_dups = np.zeros(n_src, np.int64), np.zeros(n_src, np.int64)
    for s, lines, distinct in zip(*(tstats[c].to_pylist() for c in ("src", "lines", "distinct"))):
        tri_lines[s] += lines
        tri_dups[s] += lines - distinct
    img_rej, img_dup = np.zeros(n_src, np.int64), np.zeros(n_src, np.int64)
    pos_src = dict(zip(imgs["pos"].to_pylist(), imgs["src"].to_pylist()))
    for pos, outcome in images.line_outcome.items():
        if outcome == "rejected":
            img_rej[pos_src[pos]] += 1
        elif outcome == "duplicate":
            img_dup[pos_src[pos]] += 1
    read_small = A.count_by_source(
        small.filter(pc.and_(small["primary"], pc.not_equal(small["kind"], R.HEADER)))["src"], n_src)
    read = read_small + tri_lines
    rejected = A.count_by_source(rejs["src"], n_src) + img_rej
    duplicates = dups.per_source + tri_dups + img_dup
    headers = A.of_kind(small, R.HEADER)
    inputs = []
    for i, entry in enumerate(plan.inputs):
        reasons = headers.filter(pc.equal(headers["src"], i))["reason"].fill_null("header").to_pylist()
        skipped = {r: reasons.count(r) for r in sorted(set(reasons))}
        r, j, d = int(read[i]), int(rejected[i]), int(duplicates[i])
        inputs.append({**entry, "counts": {"read": r, "accepted": r - j - d, "rejected": j, "duplicates": d,
                                           "skipped": skipped}})
    return inputs, {"lines_read": int(read.sum()), "duplicates": int(duplicates.sum())}
