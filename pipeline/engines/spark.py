"""The Spark engine: the same reader functions, run by `mapInArrow` on any master.

Nothing that grows with the KG passes through the driver (issue 19): pass 1 reduces each
partition's triple keys to their first occurrence; entity ids are assigned by Spark (a range-
partitioned sort by first occurrence, then per-partition counts → offsets; keys the store has
keep their ids, read from its Parquet parts); pass 2 re-parses the triples and joins their keys
to ids on 64-bit xxhash values (so the dedupe shuffles integers), anti-joins the store's triples,
and the executors write the entity and triple rows as id-ordered Parquet parts into the store.
The driver gets counts, per-source statistics and rows about the small records (labels, links,
literals, images); link components are resolved there over the linked keys only.

Tuning from measurements on 2 cores (DESIGN.md, benchmarks/ingest.py): few shuffle partitions
(2 for small inputs, up to 8 for ~10M triples instead of the default 200). Work is split by byte
ranges planned in the driver, so workers need the input paths and the store (local files, or a
shared filesystem on a cluster).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmkg.kg_store import schema
from mmkg.kg_store.graph import fits_one_run
from mmkg.kg_store.graph_ranges import RangeWriter, range_bounds
from mmkg.pipeline import assemble as A
from mmkg.pipeline.engines.base import TRIPLE_STATS, Engine, EntityIds, NewRows, TripleResult, engine_registry
from mmkg.pipeline.engines.arrow_ops import TRIPLE_COLUMNS, triple_key_occurrences
from mmkg.pipeline.linking import NEW_ID_ORDER, linked_keys, resolve_links
from mmkg.pipeline.engines.plan import Plan, locate, run_task
from mmkg.pipeline.readers import records as R

log = logging.getLogger(__name__)

#: bytes of line input per shuffle partition when `shuffle_partitions` is not given
BYTES_PER_PARTITION = 64 << 20
#: bytes of line input per id range (part file) at least
BYTES_PER_RANGE = 1 << 30
#: bytes of line input above which cached frames live on local disk, not in the JVM heap
BYTES_IN_MEMORY = 512 << 20
#: graph edges per node range at most: one Spark partition, sorted in one Python worker's
#: memory (about 100 bytes an edge at the peak of the sort)
EDGES_PER_RANGE = 4_000_000


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
    _cap_broadcasts(session)
    return session


#: automatic broadcast joins stay under this share of spark.driver.maxResultSize
BROADCAST_SHARE = 8


def _cap_broadcasts(session) -> None:
    """A broadcast join collects its small side in the driver, and Spark sizes a Parquet read by
    its compressed bytes: automatic broadcasts are kept to 1/8 of spark.driver.maxResultSize, so a
    small driver makes Spark shuffle instead of failing the job."""
    limit = _size(session.sparkContext.getConf().get("spark.driver.maxResultSize", "1g"))
    current = _size(session.conf.get("spark.sql.autoBroadcastJoinThreshold"))
    if limit > 0 and current > limit // BROADCAST_SHARE:
        session.conf.set("spark.sql.autoBroadcastJoinThreshold", str(limit // BROADCAST_SHARE))


def _size(text: str) -> int:
    """Bytes of a Spark size setting ("16m", "1g", "10485760b", "-1"); units are powers of 1024."""
    text = text.strip().lower().removesuffix("b")
    units = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
    if text and text[-1] in units:
        return int(float(text[:-1]) * 1024 ** units[text[-1]])
    return int(text)


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


def _second_pass(plan_parts):
    """mapInArrow: parse again and keep only the triples (keys as strings; Spark hashes them)."""
    def run(batches):
        for batch in batches:
            for rec in _task_records(batch, plan_parts):
                t = _triples_of(rec)
                if t.num_rows:
                    yield from t.to_batches(max_chunksize=1 << 17)
    return run


def _triples_of(rec: pa.RecordBatch, is_triple: pa.Array | None = None) -> pa.Table:
    if is_triple is None:
        is_triple = pc.equal(rec["kind"], R.TRIPLE)
    return pa.Table.from_batches([rec.filter(is_triple)]).select(TRIPLE_COLUMNS.names)


def _occurrence_records(kind: str, occ: pa.Table) -> pa.Table:
    n = occ.num_rows
    cols = {f.name: pa.nulls(n, f.type) for f in R.LOCATED}
    cols.update(kind=pa.array([kind] * n, pa.string()), s=occ["key"], pos=occ["order"])
    return pa.table(cols, schema=R.LOCATED)


def _finish_entities(names: list[str], file_src):
    """mapInArrow over id-sorted partitions: the entity rows' label and source (shared code)."""
    def run(batches):
        for batch in batches:
            if batch.num_rows:
                yield from A.finish_labelled(batch, names, file_src).to_batches()
    return run


#: keys are joined on their 64-bit xxhash (a shuffle of integers) unless two keys share a hash,
#: then on the strings themselves (checked per run by distinct counts)
HASH_KEYS = True
#: shifts of `monotonically_increasing_id`: partition index above bit 33, row number below
_MONO_BITS = 33
_OCC = pa.schema([("key", pa.string()), ("order", pa.int64())])
_KEY_IDS = pa.schema([("key", pa.string()), ("entity_id", pa.int64())])


@engine_registry.register("spark")
class SparkEngine(Engine):
    """Ids, the triple dedupe and the entity and triple rows are Spark jobs; only per-partition
    counts, per-source statistics and rows about the small records (labels, links, literals,
    images) reach the driver, so the KG's size is bounded by the executors, not the driver."""

    name = "spark"

    def __init__(self, *, master: str | None = None, shuffle_partitions: int | None = None,
                 conf: dict[str, str] | None = None, app_name: str = "mmkg-ingest", **_ignored: Any):
        self.master, self.conf, self.app_name = master, conf, app_name
        self.shuffle_partitions = shuffle_partitions
        self.spark = None
        self._owned = False
        self._plan: Plan | None = None
        self._small = self._whole_triples = None
        self._pass1 = self._occ = self._key_map = self._new_ids = None
        self._persisted: list[Any] = []
        self._added = 0
        self._injective: bool | None = None
        self._written: list[Path] = []
        self._parts = self._ranges = 2
        self._large = False

    def start(self, plan: Plan) -> None:
        if self.spark is not None:
            return
        from pyspark.sql import SparkSession
        line_bytes = sum(t.end - t.start for t in plan.tasks)
        # one shuffle partition per 64 MiB of input: an aggregation or a cache block per task
        # stays small enough for a fixed 2g JVM whatever the input (a cap of 8 ran out of
        # aggregation memory at 50M triples)
        self._parts = self.shuffle_partitions or int(min(256, max(2, line_bytes // BYTES_PER_PARTITION)))
        # id ranges (= part files of the entity and triple tables): the shuffle partitions, more
        # for a large input, so that no executor sorts a huge range alone
        self._ranges = max(self._parts, -(-line_bytes // BYTES_PER_RANGE))
        self._large = line_bytes > BYTES_IN_MEMORY
        active = SparkSession.getActiveSession()
        self._owned = active is None
        self.spark = get_or_create_session(self.master, self.app_name, self._parts, self.conf)

    # ---- helpers --------------------------------------------------------------------------------
    def _keep(self, df):
        from pyspark import StorageLevel
        # a large input's cached frames go to local disk: cached blocks in the heap squeezed the
        # aggregations' memory (AGGREGATE_OUT_OF_MEMORY at 50M triples with a 2g JVM)
        df = df.persist(StorageLevel.DISK_ONLY if self._large else StorageLevel.MEMORY_AND_DISK)
        self._persisted.append(df)
        return df

    def _df(self, table: pa.Table):
        """A DataFrame of a driver-side table (rows about small records only)."""
        return self.spark.createDataFrame(table)

    def _dense_ids(self, df, order: list[str], start: int, bounds: list[int], *, counted=None):
        """`df` with `id` = start + rank in `order` (distinct rows) and the number of rows. Rows go
        to the ranges of order[0] that `bounds` (ascending) begin: each range's key hashes to its
        own partition index, so no sampling pass; sorted within partitions; the ranges' row
        counts → offsets (only the counts reach the driver). `counted` (default `df`): a cheaper
        frame with the same order[0] values, e.g. a cached one the rows are joined from.

        Nothing is cached here: the counts are an aggregate (map-side combined) and the sort
        runs in the job that consumes the result, where Spark's sorter spills (caching the
        sorted ranges instead held a whole range per task in the heap: out of memory at 50M
        triples with a 2g JVM). The result is partitioned and sorted by id; a range placed in
        the wrong partition would fail the table's density check (row counts vs id bounds)."""
        from pyspark.sql import functions as F
        index = _range_index(order[0], bounds)
        counts = {r["_b"]: r["n"] for r in (df if counted is None else counted).groupBy(index.alias("_b")).agg(
            F.count(F.lit(1)).alias("n")).collect()}
        delta, total = [], start
        for p in range(len(bounds) + 1):
            delta.append(total - (p << _MONO_BITS))
            total += counts.get(p, 0)
        offset = F.element_at(F.array(*[F.lit(d) for d in delta]), (F.shiftright("_m", _MONO_BITS) + 1).cast("int"))
        ranked = self._by_range(df, index, len(bounds) + 1).sortWithinPartitions(*order) \
            .withColumn("_m", F.monotonically_increasing_id())
        return ranked.withColumn("id", F.col("_m") + offset).drop("_m"), total - start

    def _by_range(self, df, index, n: int):
        """`df` with the rows of range index i (`_range_index`) in partition i: each range's key
        hashes to its own partition index (`_partition_keys`), so no sampling pass over `df`."""
        from pyspark.sql import functions as F
        keys = self._partition_keys(n)
        return df.repartition(n, F.element_at(F.array(*[F.lit(k).cast("long") for k in keys]), index + 1))

    def _pos_bounds(self) -> list[int]:
        """Input positions (file_seq << LINE_BITS | line) where the id ranges of the partitions
        begin: task starts, about equal in bytes, at most `self._ranges` ranges."""
        tasks = sorted(self._plan.tasks, key=lambda t: (t.file_seq, t.start))
        sizes = [max(t.end - t.start, 1) for t in tasks]
        total, acc, bounds = sum(sizes), 0, []
        for t, size in zip(tasks, sizes):
            pos = (t.file_seq << R.LINE_BITS) + t.first_line
            if acc and acc * self._ranges >= total * (len(bounds) + 1) and (not bounds or pos > bounds[-1]):
                bounds.append(pos)
            acc += size
        return bounds[:self._ranges - 1]

    def _partition_keys(self, n: int) -> list[int]:
        """For each partition index p < n, a long whose Spark hash partitioning (pmod of Murmur3
        hash, seed 42) is p: `repartition(n, key)` then puts range p in partition p."""
        from pyspark.sql import functions as F
        if n == 1:
            return [0]
        rows = self.spark.range(0, 64 * n, numPartitions=1).select(
            "id", F.pmod(F.hash("id"), F.lit(n)).alias("p")).collect()
        keys: dict[int, int] = {}
        for r in rows:
            keys.setdefault(r["p"], r["id"])
        return [keys[p] for p in range(n)]

    def _write(self, w, name: str, df) -> list[str]:
        """Write `df` (partitioned and sorted by id) with Spark's commit protocol into a new folder
        of the store; the part files, in partition (= id) order, relative to the store."""
        rel = f"tables/{name}.v{w.new_version:06d}-{uuid.uuid4().hex[:8]}"
        out = w.root / rel
        self._written.append(out)
        df.write.option("compression", "zstd").parquet(str(out))
        parts = []
        for p in os.listdir(out):
            if p.startswith("part-") and p.endswith(".parquet"):
                parts.append((int(p.split("-")[1]), p))
            elif p == "_SUCCESS" or p.endswith(".crc"):
                os.unlink(out / p)  # Hadoop's marker and checksums: not store files
        parts.sort()
        return [f"{rel}/{p}" for _, p in parts]

    # ---- pass 1 ---------------------------------------------------------------------------------
    def parse(self, plan: Plan) -> None:
        # pass 1 of 2: per partition, the small records and the triples' distinct keys (first
        # occurrence); Spark never holds the string triples (pass 2 re-reads, see `new_triples`)
        from pyspark.sql import functions as F
        self.start(plan)
        self._plan = plan
        whole = [locate(plan.readers[src].parse_file(path, role, plan.contexts[src]), src, seq)
                 for src, seq, path, role in plan.whole]  # whole documents (RDF/XML, Turtle) parse in the driver
        records = pa.Table.from_batches(whole, R.LOCATED)
        is_triple = pc.equal(records["kind"], R.TRIPLE)
        self._whole_triples = records.filter(is_triple).select(TRIPLE_COLUMNS.names)
        small = records.filter(pc.invert(is_triple))
        if plan.tasks:
            self._pass1 = self._keep(self._over_tasks(_first_pass(self._plan_parts()), _spark_schema()))
            is_occ = F.col("kind").isin(OCC_ENTITY, OCC_RELATION)
            collected = self._pass1.filter(~is_occ).toArrow()
            if collected.num_rows:
                small = pa.concat_tables([collected.cast(R.LOCATED), small])
            self._occ = self._pass1.filter(is_occ).select("kind", F.col("s").alias("key"), F.col("pos").alias("order"))
        self._small = small

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

    def _occurrences(self, kind: str, extra: pa.Table):
        """Distinct keys of one kind with their first order: the partitions' partials, the
        driver-parsed documents' and `extra` (key, order) merged."""
        from pyspark.sql import functions as F
        w_ents, w_rels = triple_key_occurrences(self._whole_triples)
        driver = pa.concat_tables([(w_ents if kind == OCC_ENTITY else w_rels).cast(_OCC), extra.cast(_OCC)])
        frames = [self._df(driver)]
        if self._occ is not None:
            frames.insert(0, self._occ.filter(F.col("kind") == kind).select("key", "order"))
        occ = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
        # shuffle first, then aggregate: each pass-1 partition is already distinct, so a map-side
        # partial aggregate reduces nothing and holds a whole partition's keys in one hash map
        # (out of memory at 50M triples with a 2g JVM); after the shuffle each holds 1/parts of them
        return occ.repartition(self._parts, "key").groupBy("key").agg(F.min("order").alias("order"))

    def relation_occurrences(self) -> pa.Table:
        # relations are few (thousands): their first occurrences come to the driver
        return self._occurrences(OCC_RELATION, _OCC.empty_table()).toArrow().cast(_OCC)

    # ---- entity ids -----------------------------------------------------------------------------
    def assign_entity_ids(self, store, data_occ: pa.Table, links: pa.Table, lookup_keys: pa.Array) -> EntityIds:
        from pyspark.sql import functions as F
        occ = self._keep(self._occurrences(OCC_ENTITY, data_occ))
        n_existing = store.count("entities")
        aliases = store.table("same_as", ["key", "entity_id"]).cast(_KEY_IDS)   # a small table
        existing = self._df(aliases)
        if n_existing:
            old = self.spark.read.parquet(*[str(p) for p in store.table_files("entities")])
            existing = old.select("key", F.col("id").alias("entity_id")).unionByName(existing)

        # keys in a link are few: their first orders and store ids come to the driver, which
        # resolves the components with the union-find (mmkg.pipeline.linking)
        linked = linked_keys(links)
        linked_df = F.broadcast(self._df(pa.table({"key": linked})))
        first = occ.join(linked_df, "key").toArrow() if len(linked) else _OCC.empty_table()
        ex_hit = existing.join(linked_df, "key").toArrow() if len(linked) else _KEY_IDS.empty_table()
        comps = resolve_links(links, dict(zip(first["key"].to_pylist(), first["order"].to_pylist())),
                              dict(zip(ex_hit["key"].to_pylist(), ex_hit["entity_id"].to_pylist())))

        # every other key: the store's id if it has one, else a new id after the store's
        single = occ.join(linked_df, "key", "left_anti") if len(linked) else occ
        if n_existing or aliases.num_rows:
            single = self._keep(single.join(existing, "key", "left_outer"))
        else:  # a new store: every key is new
            single = single.withColumn("entity_id", F.lit(None).cast("long"))
        old_single = single.filter(F.col("entity_id").isNotNull()).select("key", "entity_id")
        comp_df = self._df(pa.table({"key": pa.array([c for c, _ in comps.new], pa.string()),
                                     "order": pa.array([o for _, o in comps.new], pa.int64())}))
        new = single.filter(F.col("entity_id").isNull()).select("key", "order", F.lit(False).alias("comp")) \
            .unionByName(comp_df.withColumn("comp", F.lit(True)))
        # id ranges of about equal size: first occurrences crowd the start of the input
        qs = occ.approxQuantile("order", [i / self._ranges for i in range(1, self._ranges)], 0.01) \
            if self._ranges > 1 else []
        bounds = sorted({int(q) for q in qs if q is not None})
        new_ids, added = self._dense_ids(new, NEW_ID_ORDER, n_existing, bounds)
        new_ids = self._new_ids = self._keep(new_ids)  # read three times below
        comp_ids = new_ids.filter("comp").select("key", "id").toArrow() if comps.new else None
        linked_map, same_as = comps.resolved(dict(zip(comp_ids["key"].to_pylist(), comp_ids["id"].to_pylist()))
                                             if comp_ids is not None else {})
        key_map = new_ids.filter(~F.col("comp")).select("key", F.col("id").alias("entity_id")) \
            .unionByName(old_single).unionByName(self._df(linked_map.cast(_KEY_IDS)))
        self._key_map = self._keep(key_map)
        self._added = added
        # do two keys share an entity id? Known here for a new store (only linked keys can);
        # else `_key_ids` counts distinct ids in Spark
        linked_ids = linked_map["entity_id"]
        self._injective = pc.count_distinct(linked_ids).as_py() == len(linked_ids) \
            if not (n_existing or aliases.num_rows) else None
        lookup = self._key_map.join(F.broadcast(self._df(pa.table({"key": lookup_keys}))), "key").toArrow() \
            if len(lookup_keys) else _KEY_IDS.empty_table()
        return EntityIds(lookup=lookup.cast(_KEY_IDS), new_same_as=same_as, added=added,
                         merged_keys=comps.merged_keys, merged_entities=comps.merged_entities,
                         conflicts=comps.conflicts)

    def new_entity_rows(self, w, labels, hints, descs, names, file_src) -> NewRows:
        from pyspark.sql import functions as F
        added = self._added
        if not added:
            return NewRows(0, write=list)  # the old parts, as they are
        # `_new_ids` is range-partitioned and sorted by id already; the label tables are driver
        # tables (about the small records) joined by broadcast, which keeps that layout
        df = self._new_ids.select("id", "key", "order")
        for name, tbl in (("label", labels), ("hint", hints), ("description", descs)):
            if tbl is None or not tbl.num_rows:
                df = df.withColumn(name, F.lit(None).cast("string"))
            else:
                df = df.join(F.broadcast(self._df(tbl.rename_columns(["id", name]))), "id", "left_outer")
        rows = df.sortWithinPartitions("id").mapInArrow(_finish_entities(names, file_src),
                                                        _spark_schema(schema.ENTITIES))
        return NewRows(added, write=lambda: self._write(w, "entities", rows))

    # ---- pass 2: triples ------------------------------------------------------------------------
    def new_triples(self, w, rel_map: pa.Table, plan: Plan) -> TripleResult:
        from pyspark.sql import functions as F
        # pass 2: re-read and re-parse each byte range (cheap next to caching strings in the JVM)
        frames = []
        if self._plan.tasks:
            frames.append(self._over_tasks(_second_pass(self._plan_parts()), _spark_schema(TRIPLE_COLUMNS)))
        if self._whole_triples.num_rows:
            frames.append(self._df(self._whole_triples))
        if not frames:
            return TripleResult(NewRows(0, write=list), TRIPLE_STATS.empty_table(), 0)
        triples = frames[0]
        for f in frames[1:]:
            triples = triples.unionByName(f)
        # relations are few: their ids join by broadcast on the key strings (one id per key)
        rels = F.broadcast(self._df(pa.table({"p": rel_map["key"], "r": rel_map["relation_id"]}).cast(
            pa.schema([("p", pa.string()), ("r", pa.int64())]))))
        keyed, emap = self._key_ids(triples.join(rels, "p"))
        # per-source distinct on keys (the README counts), then on merged entity ids. Shuffled by
        # the head key first: the aggregate then needs no shuffle of its own (nor a map-side hash
        # map of a whole partition's triples), and the join on `hk` below reuses the partitioning
        per_src = self._keep(keyed.repartition(self._parts, "hk").groupBy("src", "hk", "r", "tk").agg(
            F.min("pos").alias("pos"), F.count(F.lit(1)).alias("n")))
        st = per_src.groupBy("src").agg(F.sum("n").alias("lines"), F.count(F.lit(1)).alias("distinct")).toArrow()
        mapped = per_src.join(emap.select(F.col("k").alias("hk"), F.col("entity_id").alias("h")), "hk") \
            .join(emap.select(F.col("k").alias("tk"), F.col("entity_id").alias("t")), "tk")
        n_old = w.store.count("triples")
        counted = None
        if self._injective and st.num_rows <= 1:
            # one triple source and no merged keys: key-level groups are already the (h, r, t)
            # groups, and the joins keep every row: the cached `per_src` gives the range counts
            final = mapped.select("h", "r", "t", "pos")
            counted = None if n_old else per_src
        else:
            final = mapped.repartition(self._parts, "h", "r", "t").groupBy("h", "r", "t").agg(F.min("pos").alias("pos"))
        distinct = None
        if n_old:  # triples the store already has: an anti-join against its parts, on the executors
            final = self._keep(final)  # counted, then anti-joined
            distinct = final.count()
            old = self.spark.read.parquet(*[str(p) for p in w.store.table_files("triples")]).select("h", "r", "t")
            final = final.join(old, ["h", "r", "t"], "left_anti")
        if counted is None:
            final = self._keep(final)  # counted, then numbered and written
        rows, added = self._dense_ids(final, ["pos", "h", "r", "t"], n_old, self._pos_bounds(), counted=counted)
        if distinct is None:
            distinct = added
        stats = pa.table({c: st[c].cast(TRIPLE_STATS.field(c).type) for c in TRIPLE_STATS.names}, schema=TRIPLE_STATS)
        if not added:
            return TripleResult(NewRows(0, write=list), stats, distinct)
        file_names = [plan.names[s] for s in plan.file_src]
        source = F.element_at(F.array(*[F.lit(n) for n in file_names]),
                              (F.shiftright("pos", R.LINE_BITS) + 1).cast("int"))
        # every column nullable, as the store's schema has them (Spark writes provably non-null
        # columns as required fields; `id >= 0` always holds but the optimizer cannot know)
        rows = rows.select(*[F.when(F.col("id") >= 0, c).alias(n) for n, c in (
            ("id", F.col("id")), ("h", F.col("h")), ("r", F.col("r")), ("t", F.col("t")), ("source", source))])
        return TripleResult(NewRows(added, write=lambda: self._write(w, "triples", rows)), stats, distinct)

    # ---- the graph ------------------------------------------------------------------------------
    def write_graph(self, w, triple_files: list[Path], num_nodes: int) -> str:
        """The CSR built on the executors: both edges of every triple, range-partitioned by node;
        each range sorted (node, role, triple id) with numpy in a Python worker and written into
        its own files (graph_ranges.RangeWriter); the driver only concatenates the ranges through
        a copy buffer, so its memory does not grow with the KG. (Spark's own sort before the
        worker took 1.7× as long on 2 cores; the worker holds one range, EDGES_PER_RANGE.)"""
        import pyarrow.parquet as pq
        from pyspark.sql import functions as F
        edges = 2 * sum(pq.ParquetFile(p).metadata.num_rows for p in triple_files)  # footers only
        if fits_one_run(edges):  # a small graph: one in-memory sort here beats a Spark job
            return super().write_graph(w, triple_files, num_nodes)
        slots = self.spark.sparkContext.defaultParallelism
        ranges = -(-max(self._ranges, -(-edges // EDGES_PER_RANGE)) // slots) * slots  # whole waves of tasks
        tri = self.spark.read.parquet(*[str(p) for p in triple_files]).select("id", "h", "r", "t")
        both = tri.select(F.col("h").alias("v"), F.lit(0).alias("role"), F.col("t").alias("nb"), "r", "id") \
            .unionByName(tri.select(F.col("t").alias("v"), F.lit(1).alias("role"), F.col("h").alias("nb"), "r", "id"))
        # ranges of about equal edge counts (a KG's early ids are often its hubs), from quantiles
        qs = both.approxQuantile("v", [i / ranges for i in range(1, ranges)], 0.01) if ranges > 1 and edges else []
        bounds = sorted({0, num_nodes, *(min(int(q), num_nodes) for q in qs if q is not None)})
        if len(bounds) < 2:
            bounds = range_bounds(num_nodes, 1)
        folder = w.graph_staging()
        done = self._by_range(both, _range_index("v", bounds[1:-1]), len(bounds) - 1) \
            .mapInArrow(_graph_ranges(str(folder), bounds), "range int, edges long").toArrow()
        written = done["range"].to_pylist()
        if len(set(written)) != len(written):
            raise RuntimeError("ingest bug: a graph range came from two partitions; nothing committed")
        return w.write_graph_ranges(folder, bounds, edges)

    def _key_ids(self, triples):
        """(src, hk, r, tk, pos) rows with one 64-bit number per entity key, and the map number → id.

        The number is the key's xxhash64 when no two keys share one (checked by a distinct count;
        the shuffles then carry integers only), else a row number joined on the key strings."""
        from pyspark.sql import functions as F
        emap = self._key_map.select(F.xxhash64("key").alias("k"), "entity_id")

        def distinct(col: str) -> int:
            # shuffled first: no map-side hash map of a whole partition's values, which ran out of
            # memory (AGGREGATE_OUT_OF_MEMORY) for 5M keys with a 2g JVM
            return emap.select(col).repartition(self._parts, col).distinct().count()
        n = emap.count()
        if self._injective is None:  # keys the store had may share an id: count in Spark
            self._injective = n == distinct("entity_id")
        if HASH_KEYS and n == distinct("k"):
            keyed = triples.select("src", F.xxhash64("s").alias("hk"), "r", F.xxhash64("o").alias("tk"), "pos")
            return keyed, emap
        log.info("ingest: two keys share a 64-bit hash; joining on the key strings")
        kk = self._keep(self._key_map.withColumn("k", F.monotonically_increasing_id()))
        keyed = triples.join(kk.select(F.col("key").alias("s"), F.col("k").alias("hk")), "s") \
            .join(kk.select(F.col("key").alias("o"), F.col("k").alias("tk")), "o") \
            .select("src", "hk", "r", "tk", "pos")
        return keyed, kk.select("k", "entity_id")

    def discard(self) -> None:
        for out in self._written:
            shutil.rmtree(out, ignore_errors=True)
        self._written = []

    def close(self) -> None:
        for df in self._persisted:
            try:
                df.unpersist()
            except Exception:  # noqa: BLE001 - a stopped session has nothing left to free
                pass
        self._persisted = []
        self._small = self._whole_triples = self._pass1 = self._occ = self._key_map = self._new_ids = None
        if self.spark is not None and self._owned:
            self.spark.stop()
        self.spark = None


def _range_index(column: str, bounds: list[int]):
    """The index of the range of `column` that ascending `bounds` begin (0 below bounds[0])."""
    from pyspark.sql import functions as F
    index = F.lit(0)
    for i, b in enumerate(bounds):
        index = F.when(F.col(column) >= F.lit(b), F.lit(i + 1)).otherwise(index)
    return index


def _graph_ranges(folder: str, bounds: list[int]):
    """mapInArrow over node-range partitions: sort each range's edges by (v, role, id) in the
    worker (numpy) and write them into its files; one (range, edges) row per non-empty partition."""
    def run(batches):
        got = [b for b in batches if b.num_rows]
        if not got:
            return
        t = pa.Table.from_batches(got)
        del got
        cols = [t.column(c).to_numpy() for c in ("v", "role", "nb", "r", "id")]
        del t
        order = np.lexsort((cols[4], cols[1], cols[0]))
        for k in range(len(cols)):  # one column at a time: the peak is the range + one column
            cols[k] = cols[k][order]
        del order
        i = int(np.searchsorted(bounds, cols[0][0], side="right")) - 1
        writer = RangeWriter(folder, i, bounds[i], bounds[i + 1])
        try:
            writer.add(*cols)
            n = writer.close()
        except BaseException:
            writer.abort()
            raise
        yield pa.record_batch([pa.array([i], pa.int32()), pa.array([n], pa.int64())], names=["range", "edges"])
    return run


def _spark_schema(schema: pa.Schema = R.LOCATED):
    from pyspark.sql.types import BooleanType, IntegerType, LongType, StringType, StructField, StructType
    types = {pa.string(): StringType(), pa.int64(): LongType(), pa.int32(): IntegerType(), pa.bool_(): BooleanType()}
    return StructType([StructField(f.name, types[f.type], True) for f in schema])
