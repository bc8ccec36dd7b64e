"""The in-process engine: the same reader functions, run by pyarrow in this process.

For one machine this is the fast path (a 10M-triple ingest is a few seconds of hash
aggregation); Spark is for inputs that do not fit one machine or for a cluster.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.engines.base import TRIPLE_STATS, Engine, engine_registry
from pipeline.engines.plan import Plan, locate, run_task
from pipeline.readers import records as R


def occurrences(keys: pa.Array, order: pa.Array) -> pa.Table:
    """Distinct keys with their smallest order."""
    t = pa.table({"key": keys, "order": order}).group_by("key").aggregate([("order", "min")])
    return pa.table({"key": t["key"], "order": t["order_min"]})


def triple_key_occurrences(t: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(entity keys, relation keys) of triples `s, p, o, pos` with their first order (pos * 4 + slot)."""
    base = pc.multiply(t["pos"], 4)
    ents = occurrences(pa.chunked_array(t["s"].chunks + t["o"].chunks, pa.string()),
                       pa.chunked_array(base.chunks + pc.add(base, 2).chunks, pa.int64()))
    return ents, occurrences(t["p"], pc.add(base, 1))


def _key_ids(keys: pa.ChunkedArray | pa.Array, value_set: pa.Array) -> pa.Array:
    return pc.index_in(keys, value_set=value_set)


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
        self._triples = records.filter(is_triple).select(["s", "p", "o", "pos", "src"])
        self._small = records.filter(pc.invert(is_triple))

    def small_records(self) -> pa.Table:
        return self._small

    def triple_occurrences(self) -> tuple[pa.Table, pa.Table]:
        return triple_key_occurrences(self._triples)

    def final_triples(self, key_map: pa.Table, rel_map: pa.Table) -> tuple[pa.Table, pa.Table]:
        t = self._triples
        keys = key_map["key"].combine_chunks()
        hk, tk = _key_ids(t["s"], keys), _key_ids(t["o"], keys)
        rk = _key_ids(t["p"], rel_map["key"].combine_chunks())
        ids = pa.table({"src": t["src"], "hk": hk, "rk": rk, "tk": tk, "pos": t["pos"]})
        per_src = ids.group_by(["src", "hk", "rk", "tk"]).aggregate([("pos", "min")])
        lines = ids.group_by("src").aggregate([("pos", "count")])
        distinct = per_src.group_by("src").aggregate([("pos_min", "count")])
        stats = lines.join(distinct, "src").select(["src", "pos_count", "pos_min_count"])
        stats = pa.table({"src": stats["src"], "lines": stats["pos_count"], "distinct": stats["pos_min_count"]},
                         schema=TRIPLE_STATS)
        eid = key_map["entity_id"].combine_chunks()
        rid = rel_map["relation_id"].combine_chunks()
        mapped = pa.table({"h": pc.take(eid, per_src["hk"]), "r": pc.take(rid, per_src["rk"]),
                           "t": pc.take(eid, per_src["tk"]), "pos": per_src["pos_min"]})
        final = mapped.group_by(["h", "r", "t"]).aggregate([("pos", "min")])
        final = pa.table({"h": final["h"], "r": final["r"], "t": final["t"], "pos": final["pos_min"]}).sort_by("pos")
        return final, stats
