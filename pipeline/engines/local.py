"""The in-process engine: the same reader functions, run by pyarrow in this process.

For one machine this is the fast path (a 10M-triple ingest is a few seconds of hash
aggregation); Spark is for inputs that do not fit one machine or for a cluster.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmkg.pipeline import assemble as A
from mmkg.pipeline.engines.arrow_ops import TRIPLE_COLUMNS, TripleIdMap, first_occurrences, triple_key_occurrences
from mmkg.pipeline.engines.base import TRIPLE_STATS, Engine, EntityIds, NewRows, TripleResult, engine_registry
from mmkg.pipeline.linking import merge_entities
from mmkg.pipeline.engines.plan import Plan, locate, run_task
from mmkg.pipeline.readers import records as R


@engine_registry.register("local")
class LocalEngine(Engine):
    name = "local"

    def __init__(self, *, threads: int | None = None, **_ignored):
        self.threads = threads or min(4, os.cpu_count() or 1)
        self._triples: pa.Table | None = None
        self._small: pa.Table | None = None
        self._occ: tuple[pa.Table, pa.Table] | None = None
        self._merged = None

    def parse(self, plan: Plan) -> None:
        with ThreadPoolExecutor(self.threads) as pool:
            batches = list(pool.map(lambda t: run_task(t, plan.readers[t.src], plan.contexts[t.src]), plan.tasks))
        for src, seq, path, role in plan.whole:
            batches.append(locate(plan.readers[src].parse_file(path, role, plan.contexts[src]), src, seq))
        records = pa.Table.from_batches(batches, R.LOCATED)
        is_triple = pc.equal(records["kind"], R.TRIPLE)
        self._triples = records.filter(is_triple).select(TRIPLE_COLUMNS.names)
        self._small = records.filter(pc.invert(is_triple))

    def small_records(self) -> pa.Table:
        return self._small

    def relation_occurrences(self) -> pa.Table:
        self._occ = triple_key_occurrences(self._triples)
        return self._occ[1]

    def assign_entity_ids(self, store, data_occ: pa.Table, links: pa.Table, lookup_keys: pa.Array) -> EntityIds:
        t_ent = self._occ[0] if self._occ is not None else triple_key_occurrences(self._triples)[0]
        occ = A.occurrences(pa.chunked_array(t_ent["key"].chunks + data_occ["key"].chunks, pa.string()),
                            pa.chunked_array(t_ent["order"].chunks + data_occ["order"].chunks, pa.int64()))
        self._merged = m = merge_entities(occ, links, A.existing_entity_keys(store))
        lookup = m.key_map.filter(pc.is_in(m.key_map["key"], value_set=lookup_keys))
        return EntityIds(lookup=lookup, new_same_as=m.new_same_as, added=m.new_entities.num_rows,
                         merged_keys=m.merged_keys, merged_entities=m.merged_entities, conflicts=m.conflicts)

    def new_triples(self, w, rel_map: pa.Table, plan: Plan) -> TripleResult:
        final, stats = self.final_triples(self._merged.key_map, rel_map)
        rows = A.new_triple_rows(w.store.table("triples", ["h", "r", "t"]), final, plan)
        return TripleResult(rows=NewRows(rows.num_rows, table=rows), stats=stats, distinct=final.num_rows)

    def new_entity_rows(self, w, labels, hints, descs, names, file_src) -> NewRows:
        rows = A.labelled_rows(self._merged.new_entities, labels, hints, descs, names, file_src)
        return NewRows(rows.num_rows, table=rows)

    def final_triples(self, key_map: pa.Table, rel_map: pa.Table) -> tuple[pa.Table, pa.Table]:
        id_map = TripleIdMap(key_map, rel_map)
        ids = id_map.key_ids(self._triples)
        if ids.num_rows == 0 or any(ids[c].null_count for c in ("hk", "rk", "tk")):
            return self._final_triples_group_by(id_map, ids)
        src, hk, rk, tk, pos = (ids[c].to_numpy() for c in ("src", "hk", "rk", "tk", "pos"))
        n_src, n_keys, n_rels = int(src.max()) + 1, len(id_map.keys), len(id_map.rkeys)
        # distinct (src, head key, relation key, tail key), each at its first line
        first = first_occurrences([src, rk, hk, tk], [n_src, n_rels, n_keys, n_keys], pos)
        lines = np.bincount(src, minlength=n_src)
        distinct = np.bincount(src[first], minlength=n_src)
        has = np.flatnonzero(lines)
        stats = pa.table({"src": pa.array(has, pa.int32()), "lines": pa.array(lines[has], pa.int64()),
                          "distinct": pa.array(distinct[has], pa.int64())}, schema=TRIPLE_STATS)
        # merged ids only for the distinct key triples (fewer rows than the input)
        eids, rids = id_map.eids.to_numpy(), id_map.rids.to_numpy()
        h, r, t, fpos = eids[hk[first]], rids[rk[first]], eids[tk[first]], pos[first]
        n_ent = int(max(h.max(), t.max())) + 1 if len(h) else 1
        keep = first_occurrences([r, h, t], [int(r.max()) + 1 if len(r) else 1, n_ent, n_ent], fpos)
        final = pa.table({"h": h[keep], "r": r[keep], "t": t[keep], "pos": fpos[keep]})  # ascending pos
        return final, stats

    def _final_triples_group_by(self, id_map: TripleIdMap, ids: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The same result through Arrow group_by (empty input, or keys missing from the maps)."""
        per_src = ids.group_by(["src", "hk", "rk", "tk"]).aggregate([("pos", "min")])
        lines = ids.group_by("src").aggregate([("pos", "count")])
        distinct = per_src.group_by("src").aggregate([("pos_min", "count")])
        stats = lines.join(distinct, "src").select(["src", "pos_count", "pos_min_count"])
        stats = pa.table({"src": stats["src"], "lines": stats["pos_count"], "distinct": stats["pos_min_count"]},
                         schema=TRIPLE_STATS)
        h, r, t = id_map.entity_ids(per_src["hk"], per_src["rk"], per_src["tk"])
        mapped = pa.table({"h": h, "r": r, "t": t, "pos": per_src["pos_min"]})
        final = mapped.group_by(["h", "r", "t"]).aggregate([("pos", "min")])
        final = pa.table({"h": final["h"], "r": final["r"], "t": final["t"], "pos": final["pos_min"]}).sort_by("pos")
        return final, stats
