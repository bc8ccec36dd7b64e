"""The ingest stage: sources → one committed KG version (entities, relations, triples, literals,
same_as, images, rejects, CSR graph) with per-source input accounting in the manifest.

The engine (`local` or `spark`) parses and does the triple-sized work; this module assembles the
small tables in the driver, so both engines give identical stores. Ids are stable: what the store
already holds keeps its id, new entities/relations/triples/images are appended in input order.
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

from kg_store import KGStore, schema
from kg_store.errors import KGStoreError
from kg_store.graph import build_csr
from pipeline import engines
from pipeline.engines.plan import DEFAULT_CHUNK_BYTES, Plan, make_plan
from pipeline.image_stage import ImagePrefetch, run_image_stage
from pipeline.linking import merge_entities
from pipeline.readers import SourceSpec
from pipeline.readers import records as R

log = logging.getLogger(__name__)


class IngestRejectedError(KGStoreError):
    """`strict=True` and some input records were rejected; nothing was committed."""


@dataclass
class IngestResult:
    store: KGStore
    counts: dict[str, Any]
    inputs: list[dict[str, Any]]
    seconds: float


def ingest(kg: str | Path, sources: list[str | SourceSpec], *, engine: str = "local", master: str | None = None,
           shuffle_partitions: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES, image_limits=None,
           image_threads: int = 4, strict: bool = False, spark_conf: dict[str, str] | None = None) -> IngestResult:
    """Ingest `sources` (`FORMAT:PATH` strings) into the store at `kg` as a new KG version."""
    t0 = time.perf_counter()
    plan = make_plan(sources, chunk_bytes=chunk_bytes)  # validates sources before any engine starts
    eng = engines.resolve_engine(engine, master=master, shuffle_partitions=shuffle_partitions, conf=spark_conf)
    prefetch = None
    try:
        with KGStore.writer(kg) as w:
            # image decoding overlaps the engine's work (Spark start-up, parsing)
            prefetch = ImagePrefetch(plan.image_files(), limits=image_limits, threads=image_threads)
            counts, inputs, outputs = _assemble(w, plan, eng, prefetch=prefetch)
            if strict and counts["rejects_added"]:
                raise IngestRejectedError(f"{counts['rejects_added']} input record(s) rejected (--strict); "
                                          "nothing committed")
            seconds = round(time.perf_counter() - t0, 3)
            config = {"sources": [str(s) for s in plan.specs], "engine": engine, "master": master,
                      "shuffle_partitions": shuffle_partitions}
            w.manifest["inputs"].extend(inputs)
            w.record_stage("ingest", config=config, counts=counts, outputs=outputs, seconds=seconds,
                           inputs={f["path"]: f["sha256"] for i in inputs for f in i["files"]}, bumps_version=True)
            store = w.commit(bump_version=True)
    finally:
        if prefetch is not None:
            prefetch.close()
        eng.close()
    return IngestResult(store=store, counts=counts, inputs=inputs, seconds=seconds)


def _assemble(w, plan: Plan, eng, *, prefetch: ImagePrefetch) -> tuple[dict, list[dict], list[str]]:
    store = w.store
    names, n_src = plan.names, len(plan.specs)
    file_src = np.asarray(plan.file_src, dtype=np.int64)
    paths = [f.path for f in plan.files]
    eng.parse(plan)
    small = eng.small_records()

    # exact duplicate lines within a source (triples are counted by the engine)
    prim = small.filter(pc.and_(small["primary"], pc.invert(pc.is_in(small["kind"], pa.array([R.REJECT, R.HEADER])))))
    groups = prim.group_by(["src", "kind", "s", "p", "o", "dt"]).aggregate([("pos", "min")])
    first_pos = groups["pos_min"].combine_chunks()
    dup_small = count_by_source(prim["src"], n_src) - count_by_source(groups["src"], n_src)
    read_small = count_by_source(small.filter(pc.and_(small["primary"], pc.not_equal(small["kind"], R.HEADER)))["src"], n_src)

    ents, hints, rels = of_kind(small, R.ENTITY), of_kind(small, R.ENTITY_HINT), of_kind(small, R.RELATION)
    lits, links, rejs = of_kind(small, R.LITERAL), of_kind(small, R.LINK), of_kind(small, R.REJECT)
    imgs = of_kind(small, R.IMAGE)
    imgs = imgs.filter(pc.is_in(imgs["pos"], value_set=first_pos))
    headers = of_kind(small, R.HEADER)

    # ids: entities (merged over links) and relations; existing ids are kept
    t_ent, t_rel = eng.triple_occurrences()
    data = pa.concat_tables([ents, lits, imgs]).select(["s", "pos"])
    occ = occurrences(pa.chunked_array(t_ent["key"].chunks + data["s"].chunks, pa.string()),
               pa.chunked_array(t_ent["order"].chunks + pc.multiply(data["pos"], 4).chunks, pa.int64()))
    existing = store.table("entities", ["id", "key"])
    alias = store.table("same_as", ["entity_id", "key"])
    existing_keys = pa.table({"key": pa.chunked_array(existing["key"].chunks + alias["key"].chunks, pa.string()),
                              "entity_id": pa.chunked_array(existing["id"].chunks + alias["entity_id"].chunks,
                                                            pa.int64())})
    link_tbl = pa.table({"s": links["s"], "o": links["o"], "p": pc.take(pa.array(names), links["src"])})
    merged = merge_entities(occ, link_tbl, existing_keys)
    rel_occ = occurrences(pa.chunked_array(t_rel["key"].chunks + rels["s"].chunks, pa.string()),
                   pa.chunked_array(t_rel["order"].chunks + pc.multiply(rels["pos"], 4).chunks, pa.int64()))
    old_rel = store.table("relations", ["id", "key"])
    rmerged = merge_entities(rel_occ, link_tbl.slice(0, 0), pa.table({"key": old_rel["key"], "entity_id": old_rel["id"]}))
    rel_map = pa.table({"key": rmerged.key_map["key"], "relation_id": rmerged.key_map["entity_id"]})

    # triples
    final, tstats = eng.final_triples(merged.key_map, rel_map)
    distinct_keys = int(pc.sum(tstats["distinct"]).as_py() or 0)
    # distinct within each source but equal after merging entities, or given by two sources
    collapsed = distinct_keys - final.num_rows
    old_tri = store.table("triples", ["h", "r", "t"])
    if old_tri.num_rows and final.num_rows:
        seen = final.join(old_tri.append_column("old", pa.array(np.ones(old_tri.num_rows, bool))), ["h", "r", "t"])
        final = seen.filter(pc.is_null(seen["old"])).drop_columns(["old"]).sort_by("pos")
    n_old_tri = old_tri.num_rows
    tri_src = file_src[final["pos"].to_numpy() >> R.LINE_BITS] if final.num_rows else np.array([], np.int64)
    new_triples = pa.table({
        "id": np.arange(n_old_tri, n_old_tri + final.num_rows, dtype=np.int64), "h": final["h"], "r": final["r"],
        "t": final["t"],
        "source": pc.take(pa.array(names), pa.array(tri_src, pa.int64())) if final.num_rows else pa.array([], pa.string()),
    })

    # entity and relation rows
    new_ents = labelled_rows(merged.new_entities, first_text(of_kind(ents, R.ENTITY, "label"), merged.key_map),
                         first_text(hints, merged.key_map), first_text(of_kind(ents, R.ENTITY, "description"),
                                                                         merged.key_map), names, file_src)
    new_rels = labelled_rows(rmerged.new_entities, first_text(of_kind(rels, R.RELATION, "label"),
                                                                            rmerged.key_map),
                         None, first_text(of_kind(rels, R.RELATION, "description"), rmerged.key_map), names, file_src)

    # literals: exact duplicates (after merging) kept once, in input order
    lit = pa.table({"key": lits["s"], "attribute": lits["p"], "value": lits["o"], "datatype": lits["dt"],
                    "pos": lits["pos"], "src": lits["src"]}).join(merged.key_map, "key")
    lit_first = lit.group_by(["entity_id", "attribute", "value", "datatype"]).aggregate([("pos", "min")])
    lit_keys = ["entity_id", "attribute", "value", "datatype"]
    lit_first = pa.table({**{k: lit_first[k] for k in lit_keys}, "pos": lit_first["pos_min"]})
    lit = lit.join(lit_first, [*lit_keys, "pos"], join_type="inner").sort_by("pos")
    old_lit = store.table("literals")
    if old_lit.num_rows and lit.num_rows:
        marker = old_lit.select(["entity_id", "attribute", "value", "datatype"]).append_column(
            "old", pa.array(np.ones(old_lit.num_rows, bool)))
        lit = lit.join(marker, ["entity_id", "attribute", "value", "datatype"])
        lit = lit.filter(pc.is_null(lit["old"])).sort_by("pos")
    new_lits = pa.table({"entity_id": lit["entity_id"], "attribute": lit["attribute"], "value": lit["value"],
                         "datatype": lit["datatype"], "source": pc.take(pa.array(names), lit["src"])})

    same_as = pa.table({"key": merged.new_same_as["key"], "entity_id": merged.new_same_as["entity_id"],
                        "source": merged.new_same_as["link"]})

    # images
    old_imgs = store.table("images", ["entity_id", "sha256"])
    img_eids = pc.take(merged.key_map["entity_id"], pc.index_in(imgs["s"], value_set=merged.key_map["key"]))
    images = run_image_stage(imgs, img_eids.to_pylist(), store_root=w.root, names=names, file_paths=paths,
                             existing_pairs=set(zip(old_imgs["entity_id"].to_pylist(), old_imgs["sha256"].to_pylist())),
                             prefetch=prefetch)
    n_old_img = store.count("images")
    new_images = images.rows
    new_images = new_images.add_column(0, "id", pa.array(np.arange(n_old_img, n_old_img + new_images.num_rows,
                                                                   dtype=np.int64)))

    new_rejects = pa.concat_tables([reject_rows(rejs, names, paths),
                                    pa.Table.from_pylist(images.rejects, schema=schema.REJECTS)])

    # per-source accounting
    tri_lines = np.zeros(n_src, np.int64)
    tri_dups = np.zeros(n_src, np.int64)
    for s, lines, distinct in zip(*(tstats[c].to_pylist() for c in ("src", "lines", "distinct"))):
        tri_lines[s] += lines
        tri_dups[s] += lines - distinct
    img_rej, img_dup = np.zeros(n_src, np.int64), np.zeros(n_src, np.int64)
    pos_src = {p: s for p, s in zip(imgs["pos"].to_pylist(), imgs["src"].to_pylist())}
    for pos, outcome in images.line_outcome.items():
        if outcome == "rejected":
            img_rej[pos_src[pos]] += 1
        elif outcome == "duplicate":
            img_dup[pos_src[pos]] += 1
    rej_by_src = count_by_source(rejs["src"], n_src) + img_rej
    dup_by_src = dup_small + tri_dups + img_dup
    read_by_src = read_small + tri_lines
    inputs = []
    for i, entry in enumerate(plan.inputs):
        hdr = headers.filter(pc.equal(headers["src"], i))
        skipped = {str(k): int(v) for k, v in zip(*np.unique(np.asarray(hdr["reason"].fill_null("header")
                                                                          .to_pylist(), dtype=object),
                                                             return_counts=True))} if hdr.num_rows else {}
        read, rej, dup = int(read_by_src[i]), int(rej_by_src[i]), int(dup_by_src[i])
        entry = dict(entry)
        entry["counts"] = {"read": read, "accepted": read - rej - dup, "rejected": rej, "duplicates": dup,
                           "skipped": skipped}
        inputs.append(entry)

    # write the new version
    def cat(name: str, new: pa.Table) -> pa.Table:
        return pa.concat_tables([store.table(name), schema.conform(name, new)])

    tables = {
        "entities": cat("entities", new_ents), "relations": cat("relations", new_rels),
        "triples": cat("triples", new_triples), "literals": cat("literals", new_lits),
        "same_as": cat("same_as", same_as), "images": cat("images", new_images),
        "rejects": cat("rejects", new_rejects),
    }
    outputs = [w.write_table(name, t) for name, t in tables.items()]
    for rel in images.blobs:
        w.register_file(rel)
    tri = tables["triples"]
    outputs.append(w.write_graph(build_csr(tri["h"].to_numpy(), tri["r"].to_numpy(), tri["t"].to_numpy(),
                                           num_nodes=tables["entities"].num_rows)))
    counts = {
        "sources": n_src,
        "entities": tables["entities"].num_rows, "entities_added": new_ents.num_rows,
        "merged_keys": merged.merged_keys, "merged_entities": merged.merged_entities,
        "merge_conflicts": merged.conflicts,
        "relations": tables["relations"].num_rows, "relations_added": new_rels.num_rows,
        "triples": tri.num_rows, "triples_added": new_triples.num_rows,
        "triples_collapsed": collapsed, "triples_already_in_store": distinct_keys - collapsed - final.num_rows,
        "literals": tables["literals"].num_rows, "literals_added": new_lits.num_rows,
        "same_as": tables["same_as"].num_rows, "same_as_added": same_as.num_rows,
        "images": tables["images"].num_rows, "images_added": new_images.num_rows, "image_blobs": len(images.blobs),
        "rejects": tables["rejects"].num_rows, "rejects_added": new_rejects.num_rows,
        "lines_read": int(read_by_src.sum()), "duplicates": int(dup_by_src.sum()),
    }
    return counts, inputs, outputs
