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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.engines.base import TRIPLE_STATS, Engine, engine_registry
from pipeline.engines.local import occurrences, triple_key_occurrences
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


def _parse_partition(tasks, readers, contexts):
    """mapInArrow function: each input row names a task; yields its records."""
    def run(batches):
        for batch in batches:
            for i in batch.column(0).to_pylist():
                t = tasks[i]
                out = run_task(t, readers[t.src], contexts[t.src])
                if out.num_rows:
                    yield out
    return run


@engine_registry.register("spark")
class SparkEngine(Engine):
    name = "spark"

    def __init__(self, *, master: str | None = None, shuffle_partitions: int | None = None,
                 conf: dict[str, str] | None = None, app_name: str = "mmkg-ingest", **_ignored: Any):
        self.master, self.conf, self.app_name = master, conf, app_name
        self.shuffle_partitions = shuffle_partitions
        self.spark = None
        self._owned = False
        self._records = None
        self._triples = None

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
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        self.start(plan)
        spark = self.spark
        n = len(plan.tasks)
        schema = _spark_schema()
        frames = []
        if n:
            slices = max(1, min(n, spark.sparkContext.defaultParallelism * 2))
            tasks = spark.range(n, numPartitions=slices).select(F.col("id").cast("int").alias("task"))
            frames.append(tasks.mapInArrow(_parse_partition(plan.tasks, plan.readers, plan.contexts), schema))
        for src, seq, path, role in plan.whole:  # whole documents (RDF/XML, Turtle) parse in the driver
            batch = locate(plan.readers[src].parse_file(path, role, plan.contexts[src]), src, seq)
            frames.append(spark.createDataFrame(pa.Table.from_batches([batch], R.LOCATED)))
        records = frames[0]
        for f in frames[1:]:
            records = records.unionByName(f)
        self._records = records.persist(StorageLevel.MEMORY_AND_DISK)
        self._triples = self._records.filter(F.col("kind") == R.TRIPLE).select("s", "p", "o", "pos", "src")

    def small_records(self) -> pa.Table:
        from pyspark.sql import functions as F
        t = self._records.filter(F.col("kind") != R.TRIPLE).toArrow()
        return t.cast(R.LOCATED) if t.num_rows else R.LOCATED.empty_table()

    def triple_occurrences(self) -> tuple[pa.Table, pa.Table]:
        # each partition reduces its keys to (key, first order) in Arrow; the driver merges the
        # partials (it assigns the ids anyway). Cheaper than a JVM shuffle of 3 string rows per triple.
        both = _arrow(self._triples.mapInArrow(_partition_occurrences, _spark_schema(_OCC)), ["is_rel", "key", "order"])
        is_rel = both["is_rel"]
        return (occurrences(pc.filter(both["key"], pc.invert(is_rel)), pc.filter(both["order"], pc.invert(is_rel))),
                occurrences(pc.filter(both["key"], is_rel), pc.filter(both["order"], is_rel)))

    def final_triples(self, key_map: pa.Table, rel_map: pa.Table) -> tuple[pa.Table, pa.Table]:
        from pyspark.sql import functions as F
        # keys → ids in Arrow inside the workers (one hash table per partition), so Spark only
        # shuffles integers; the id tables travel with the function (a broadcast of its own)
        ids = self._triples.mapInArrow(_id_mapper(key_map, rel_map), _spark_schema(_IDS))
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
        if self._records is not None:
            self._records.unpersist()
            self._records = None
        if self.spark is not None and self._owned:
            self.spark.stop()
        self.spark = None


_TRIPLE_COLUMNS = pa.schema([("s", pa.string()), ("p", pa.string()), ("o", pa.string()), ("pos", pa.int64()),
                             ("src", pa.int32())])
_OCC = pa.schema([("is_rel", pa.bool_()), ("key", pa.string()), ("order", pa.int64())])
_IDS = pa.schema([("src", pa.int32()), ("hk", pa.int64()), ("r", pa.int64()), ("tk", pa.int64()), ("h", pa.int64()),
                  ("t", pa.int64()), ("pos", pa.int64())])


def _partition_table(batches) -> pa.Table:
    # one Arrow table per partition: the lookups below build their hash table once, not per batch
    batches = list(batches)
    return pa.Table.from_batches(batches) if batches else _TRIPLE_COLUMNS.empty_table()


def _partition_occurrences(batches):
    t = _partition_table(batches)
    if not t.num_rows:
        return
    ents, rels = triple_key_occurrences(t)
    for tbl, flag in ((ents, False), (rels, True)):
        out = pa.table({"is_rel": pa.array(np.full(tbl.num_rows, flag)), "key": tbl["key"], "order": tbl["order"]},
                       schema=_OCC)
        yield from out.to_batches(max_chunksize=1 << 17)


def _id_mapper(key_map: pa.Table, rel_map: pa.Table):
    keys, eids = key_map["key"].combine_chunks(), key_map["entity_id"].combine_chunks().cast(pa.int64())
    rkeys, rids = rel_map["key"].combine_chunks(), rel_map["relation_id"].combine_chunks().cast(pa.int64())

    def run(batches):
        t = _partition_table(batches)
        if not t.num_rows:
            return
        hk, tk = pc.index_in(t["s"], value_set=keys), pc.index_in(t["o"], value_set=keys)
        rk = pc.index_in(t["p"], value_set=rkeys)
        out = pa.table({"src": t["src"], "hk": hk.cast(pa.int64()), "r": pc.take(rids, rk), "tk": tk.cast(pa.int64()),
                        "h": pc.take(eids, hk), "t": pc.take(eids, tk), "pos": t["pos"]}, schema=_IDS)
        yield from out.to_batches(max_chunksize=1 << 17)
    return run


def _arrow(df, columns: list[str]) -> pa.Table:
    t = df.select(*columns).toArrow()
    return pa.table({c: t[c] for c in columns})


def _spark_schema(schema: pa.Schema = R.LOCATED):
    from pyspark.sql.types import BooleanType, IntegerType, LongType, StringType, StructField, StructType
    types = {pa.string(): StringType(), pa.int64(): LongType(), pa.int32(): IntegerType(), pa.bool_(): BooleanType()}
    return StructType([StructField(f.name, types[f.type], True) for f in schema])
