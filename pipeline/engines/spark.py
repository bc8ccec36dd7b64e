"""The Spark engine: the same reader functions, run by `mapInArrow` on any master.

Tuning from measurements on 2 cores (DESIGN.md, benchmarks/ingest.py): few shuffle partitions
(2 for small inputs, up to 8 for ~10M triples instead of the default 200); key occurrences and
the key → id mapping done in Arrow inside the workers (the id tables travel with the function),
so Spark shuffles only integers and the triple dedupe runs on integer ids. Work is split by byte
ranges planned in the driver, so workers need the input paths (local files, or a shared
filesystem on a cluster).
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.engines.base import TRIPLE_STATS, Engine, engine_registry
from pipeline.assemble import occurrences
from pipeline.engines.arrow_ops import TRIPLE_COLUMNS, TripleIdMap, triple_key_occurrences
from pipeline.engines.plan import Plan, locate, run_task
from pipeline.readers import records as R

log = logging.getLogger(__name__)

#: bytes of line input per shuffle partition when `shuffle_partitions` is not given
BYTES_PER_PARTITION = 64 << 20


def get_or_create_session(master: str | None = "local[*]", app_name: str = "mmkg", shuffle_partitions: int = 2,
                          conf: dict[str, str] | None = None):
    """A SparkSession configured for this pipeline (reuses the active one if any).

    `master=None` leaves the master to spark-submit (or PySpark's default, local[*]).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    settings = {
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": os.environ.get("MMKG_SPARK_DRIVER_MEMORY", "4g"),
        "spark.sql.autoBroadcastJoinThreshold": str(256 << 20),
        "spark.python.worker.reuse": "true",
        # bind the driver to loopback only where we start a local JVM (never under spark-submit)
        **({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
           if (master or "local").startswith("local") and "PYSPARK_GATEWAY_PORT" not in os.environ else {}),
        **(conf or {}),
    }
    for k, v in settings.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    # getOrCreate returns an existing session unchanged: the SQL settings can still be applied
    session.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    return session


@contextmanager
def spark_session(master: str | None = None, *, app_name: str = "mmkg", shuffle_partitions: int = 2,
                  conf: dict[str, str] | None = None) -> Iterator[Any]:
    """The one way a stage gets Spark: the active session (spark-submit's, or the one `mmkg run`
    started for the whole DAG) is borrowed as it is; otherwise a local session is started here
    and stopped on exit."""
    from pyspark.sql import SparkSession
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    session = get_or_create_session(master or "local[*]", app_name, shuffle_partitions, conf)
    try:
        yield session
    finally:
        session.stop()


#: pass-1 rows carrying one partition's first occurrence of a key (s = key, pos = order)
OCC_ENTITY, OCC_RELATION = "occurrence:entity", "occurrence:relation"


def _task_records(batch, plan_parts):
    """Records of every task named in one input batch (column 0 = task index)."""
    tasks, readers, contexts = plan_parts
    for i in batch.column(0).to_pylist():
        t = tasks[i]
        yield run_task(t, readers[t.src], contexts[t.src])


def _first_pass(plan_parts):
    """mapInArrow: parse; yield the non-triple records and, per partition, the triples' keys
    reduced to their first occurrence. The triples themselves are not kept (pass 2 re-reads)."""
    def run(batches):
        triples = []
        for batch in batches:
            for rec in _task_records(batch, plan_parts):
                is_triple = pc.equal(rec["kind"], R.TRIPLE)
                small = rec.filter(pc.invert(is_triple))
                if small.num_rows:
                    yield small
                triples.append(_triples_of(rec, is_triple))
        if triples:
            ents, rels = triple_key_occurrences(pa.concat_tables(triples))
            for kind, occ in ((OCC_ENTITY, ents), (OCC_RELATION, rels)):
                yield from _occurrence_records(kind, occ).to_batches(max_chunksize=1 << 17)
    return run


def _second_pass(plan_parts, id_map: TripleIdMap):
    """mapInArrow: parse again, keep the triples, map their keys to integer ids (per partition)."""
    def run(batches):
        triples = [_triples_of(rec) for batch in batches for rec in _task_records(batch, plan_parts)]
        if triples:
            yield from _integer_triples(id_map, pa.concat_tables(triples)).to_batches(max_chunksize=1 << 17)
    return run


def _triples_of(rec: pa.RecordBatch, is_triple: pa.Array | None = None) -> pa.Table:
    if is_triple is None:
        is_triple = pc.equal(rec["kind"], R.TRIPLE)
    return pa.Table.from_batches([rec.filter(is_triple)]).select(TRIPLE_COLUMNS.names)


def _integer_triples(id_map: TripleIdMap, t: pa.Table) -> pa.Table:
    """TRIPLE_COLUMNS rows → `_IDS` rows: key ids (per-source distinct) and merged ids."""
    k = id_map.key_ids(t)
    h, r, tail = id_map.entity_ids(k["hk"], k["rk"], k["tk"])
    return pa.table({"src": k["src"], "hk": k["hk"], "r": r, "tk": k["tk"], "h": h, "t": tail, "pos": k["pos"]},
                    schema=_IDS)


def _occurrence_records(kind: str, occ: pa.Table) -> pa.Table:
    n = occ.num_rows
    cols = {f.name: pa.nulls(n, f.type) for f in R.LOCATED}
    cols.update(kind=pa.array([kind] * n, pa.string()), s=occ["key"], pos=occ["order"])
    return pa.table(cols, schema=R.LOCATED)


@engine_registry.register("spark")
class SparkEngine(Engine):
    name = "spark"

    def __init__(self, *, master: str | None = None, shuffle_partitions: int | None = None,
                 conf: dict[str, str] | None = None, app_name: str = "mmkg-ingest", **_ignored: Any):
        self.master, self.conf, self.app_name = master, conf, app_name
        self.shuffle_partitions = shuffle_partitions
        self.spark = None
        self._owned = False
        self._plan: Plan | None = None
        self._small = self._occ = self._whole_triples = None

    def start(self, plan: Plan) -> None:
        if self.spark is not None:
            return
        from pyspark.sql import SparkSession
        line_bytes = sum(t.end - t.start for t in plan.tasks)
        parts = self.shuffle_partitions or int(min(8, max(2, line_bytes // BYTES_PER_PARTITION)))
        active = SparkSession.getActiveSession()
        self._owned = active is None
        self.spark = get_or_create_session(self.master, self.app_name, parts, self.conf)

    def parse(self, plan: Plan) -> None:
        # pass 1 of 2: Spark never holds the string triples; see `final_triples` for pass 2
        self.start(plan)
        self._plan = plan
        whole = [locate(plan.readers[src].parse_file(path, role, plan.contexts[src]), src, seq)
                 for src, seq, path, role in plan.whole]  # whole documents (RDF/XML, Turtle) parse in the driver
        records = pa.Table.from_batches(whole, R.LOCATED)
        if plan.tasks:
            collected = self._over_tasks(_first_pass(self._plan_parts()), _spark_schema()).toArrow()
            if collected.num_rows:
                records = pa.concat_tables([collected.cast(R.LOCATED), records])
        kind = records["kind"]
        is_triple = pc.equal(kind, R.TRIPLE)
        is_occ = pc.is_in(kind, value_set=pa.array([OCC_ENTITY, OCC_RELATION]))
        self._whole_triples = records.filter(is_triple).select(TRIPLE_COLUMNS.names)
        self._occ = records.filter(is_occ)
        self._small = records.filter(pc.invert(pc.or_(is_triple, is_occ)))

    def _plan_parts(self):
        return self._plan.tasks, self._plan.readers, self._plan.contexts

    def _over_tasks(self, fn, schema):
        from pyspark.sql import functions as F
        n = len(self._plan.tasks)
        slices = max(1, min(n, self.spark.sparkContext.defaultParallelism * 2))
        tasks = self.spark.range(n, numPartitions=slices).select(F.col("id").cast("int").alias("task"))
        return tasks.mapInArrow(fn, schema)

    def small_records(self) -> pa.Table:
        return self._small

    def triple_occurrences(self) -> tuple[pa.Table, pa.Table]:
        # the partitions' partials plus the driver-parsed documents, merged to the first occurrence
        w_ents, w_rels = triple_key_occurrences(self._whole_triples)
        out = []
        for kind, whole in ((OCC_ENTITY, w_ents), (OCC_RELATION, w_rels)):
            part = self._occ.filter(pc.equal(self._occ["kind"], kind))
            out.append(occurrences(pa.chunked_array(part["s"].chunks + whole["key"].chunks, pa.string()),
                                   pa.chunked_array(part["pos"].chunks + whole["order"].chunks, pa.int64())))
        return out[0], out[1]

    def final_triples(self, key_map: pa.Table, rel_map: pa.Table) -> tuple[pa.Table, pa.Table]:
        from pyspark.sql import functions as F
        # pass 2: re-read and re-parse each byte range (cheap next to caching strings in the JVM),
        # map keys → ids in Arrow inside the workers, so Spark shuffles and dedupes integers only
        id_map = TripleIdMap(key_map, rel_map)
        frames = []
        if self._plan.tasks:
            frames.append(self._over_tasks(_second_pass(self._plan_parts(), id_map), _spark_schema(_IDS)))
        if self._whole_triples.num_rows:
            frames.append(self.spark.createDataFrame(_integer_triples(id_map, self._whole_triples)))
        if not frames:
            return pa.table({"h": [], "r": [], "t": [], "pos": []}, schema=_FINAL), TRIPLE_STATS.empty_table()
        ids = frames[0]
        for f in frames[1:]:
            ids = ids.unionByName(f)
        # per-source distinct on key ids (the README counts), then on merged entity ids
        per_src = ids.groupBy("src", "hk", "r", "tk", "h", "t").agg(F.min("pos").alias("pos"),
                                                                      F.count(F.lit(1)).alias("n"))
        per_src = per_src.persist()
        stats = per_src.groupBy("src").agg(F.sum("n").alias("lines"), F.count(F.lit(1)).alias("distinct"))
        st = _arrow(stats, ["src", "lines", "distinct"])
        injective = pc.count_distinct(key_map["entity_id"]).as_py() == key_map.num_rows
        if injective and st.num_rows <= 1:
            # one triple source and no merged keys: key-level groups are already the (h, r, t) groups
            final = per_src.select("h", "r", "t", "pos")
        else:
            final = per_src.groupBy("h", "r", "t").agg(F.min("pos").alias("pos"))
        out = _arrow(final, ["h", "r", "t", "pos"]).sort_by("pos")
        per_src.unpersist()
        stats = pa.table({c: st[c].cast(TRIPLE_STATS.field(c).type) for c in TRIPLE_STATS.names}, schema=TRIPLE_STATS)
        return out, stats

    def close(self) -> None:
        self._small = self._occ = self._whole_triples = None
        if self.spark is not None and self._owned:
            self.spark.stop()
        self.spark = None


_FINAL = pa.schema([("h", pa.int64()), ("r", pa.int64()), ("t", pa.int64()), ("pos", pa.int64())])
_IDS = pa.schema([("src", pa.int32()), ("hk", pa.int64()), ("r", pa.int64()), ("tk", pa.int64()), ("h", pa.int64()),
                  ("t", pa.int64()), ("pos", pa.int64())])


def _arrow(df, columns: list[str]) -> pa.Table:
    t = df.select(*columns).toArrow()
    return pa.table({c: t[c] for c in columns})


def _spark_schema(schema: pa.Schema = R.LOCATED):
    from pyspark.sql.types import BooleanType, IntegerType, LongType, StringType, StructField, StructType
    types = {pa.string(): StringType(), pa.int64(): LongType(), pa.int32(): IntegerType(), pa.bool_(): BooleanType()}
    return StructType([StructField(f.name, types[f.type], True) for f in schema])
