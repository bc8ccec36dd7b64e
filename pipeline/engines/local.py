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

from pipeline.engines.arrow_ops import TRIPLE_COLUMNS, TripleIdMap, first_occurrences, triple_key_occurrences
from pipeline.engines.base import TRIPLE_STATS, Engine, engine_registry
from pipeline.engines.plan import Plan, locate, run_task
from pipeline.readers import records as R


@engine_registry.register("local")
class LocalEngine(Engine):
    name = "local"

    def __init__(self, *, threads: int | None = None, **_ignored):
        self.threads = threads or min(4, os.cpu_count() or 1)
        self._triples: pa.Table | None = None
        self._small: pa.Table | None = None

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

    def triple_occurrences(self) -> tuple[pa.Table, pa.Table]:
        return triple_key_occurrences(self._triples)

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
