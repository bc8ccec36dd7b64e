"""Spark ingest with a driver that cannot hold the KG (issue 19): ids, the triple dedupe and the
entity and triple tables stay on the executors, so a 1 MB `spark.driver.maxResultSize` suffices
for an input whose triples are ~10 MB; the store equals the local engine's, and an append reuses
the old parts. One session per module: the driver limit must be set when the session starts."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.ingest import write_synthetic_tsv
from mmkg.pipeline.ingest import ingest

# slow tier: ~25 s of 300,000 synthetic rows through a second Spark session (the default tier's budget is 10 min)
pytestmark = [pytest.mark.spark, pytest.mark.slow]

TABLES = ("entities", "relations", "triples", "literals", "same_as", "images", "rejects")
#: nothing else: the session caps automatic broadcast joins (collected in the driver) to 1/8 of it
SMALL_DRIVER = {"spark.driver.maxResultSize": "1m"}
N = 300_000


@pytest.fixture(scope="module")
def small_driver_spark():
    from pyspark.sql import SparkSession
    from mmkg.pipeline.engines.spark import get_or_create_session
    assert SparkSession.getActiveSession() is None, "another module left a Spark session running"
    session = get_or_create_session(master="local[2]", app_name="mmkg-tests-small-driver", shuffle_partitions=4,
                                    conf=SMALL_DRIVER)
    assert session.sparkContext.getConf().get("spark.driver.maxResultSize") == "1m"
    assert session.conf.get("spark.sql.autoBroadcastJoinThreshold") == str((1 << 20) // 8)  # broadcasts capped
    yield session
    jvm = session.sparkContext._jvm
    session.stop()
    # PySpark leaves a started context's settings in the JVM's system properties, where the next
    # module's session would find them: that session gets Spark's defaults back
    for key in SMALL_DRIVER:
        jvm.java.lang.System.clearProperty(key)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("syn")
    first = tmp / "first.tsv"
    write_synthetic_tsv(first, N)  # N/10 entities, 1,000 relations, 1 % duplicate lines
    # the append: 2,000 lines the store already has, 20,000 new triples with 5,000 new entities
    head = first.read_text().splitlines()[:2000]
    rng = np.random.default_rng(1)
    new = [f"n{i % 5000}\tr{rng.integers(0, 1000)}\te{rng.integers(0, N // 10)}" for i in range(20_000)]
    second = tmp / "second.tsv"
    second.write_text("\n".join(head + new) + "\n")
    return first, second


def _same_store(a, b) -> None:
    for name in TABLES:
        assert a.table(name).equals(b.table(name)), name
    ga, gb = a.graph, b.graph
    for arr in ("indptr", "neighbor", "relation", "direction", "triple_id"):
        assert np.array_equal(getattr(ga, arr), getattr(gb, arr)), arr


def test_spark_ingest_with_a_1mb_driver_equals_local_and_appends(small_driver_spark, inputs, tmp_path):
    first, second = inputs
    # small chunks and 4 shuffle partitions: several tasks, several part files
    s1 = ingest(tmp_path / "spark", [f"tsv:{first}"], engine="spark", chunk_bytes=1 << 20, shuffle_partitions=4,
                spark_conf=SMALL_DRIVER)
    lo1 = ingest(tmp_path / "local", [f"tsv:{first}"], engine="local")
    assert s1.counts == lo1.counts and s1.inputs == lo1.inputs
    assert s1.counts["triples"] == N - N // 100 and s1.counts["duplicates"] == N // 100
    _same_store(s1.store, lo1.store)
    ent_parts, tri_parts = s1.store.table_parts("entities"), s1.store.table_parts("triples")
    assert len(ent_parts) > 1 and len(tri_parts) > 1
    # the limit bites: collecting the triple table to this driver fails, so the ingest cannot have
    with pytest.raises(Exception, match="maxResultSize"):
        small_driver_spark.read.parquet(*[str(p) for p in s1.store.table_files("triples")]).toArrow()

    # append: old ids and parts unchanged, new rows in new parts
    s2 = ingest(tmp_path / "spark", [f"tsv:{second}"], engine="spark", chunk_bytes=1 << 18, shuffle_partitions=4,
                spark_conf=SMALL_DRIVER)
    lo2 = ingest(tmp_path / "local", [f"tsv:{second}"], engine="local")
    assert s2.counts == lo2.counts and s2.inputs == lo2.inputs
    assert s2.counts["triples_already_in_store"] == 2000 and s2.counts["entities_added"] == 5000
    _same_store(s2.store, lo2.store)
    for name, old in (("entities", ent_parts), ("triples", tri_parts)):
        parts = s2.store.table_parts(name)
        assert parts[:len(old)] == old and len(parts) > len(old), name
        assert all(s2.store.manifest["files"][p] == s1.store.manifest["files"][p] for p in old)
    keys = s1.store.table("entities", ["key"])["key"].to_pylist()
    assert np.array_equal(s2.store.entity_ids(keys), np.arange(len(keys)))
    assert s2.store.kg_version == 2 and not s2.store.verify()


@pytest.mark.slow  # a rare path (64-bit hash collision), kept out of the 10-minute default tier
def test_key_hash_collision_fallback_joins_on_strings(small_driver_spark, tmp_path, monkeypatch, data_dir):
    """The string-join path (taken when two keys share a 64-bit hash) gives the same store,
    with a link merging two data keys (DB15K sameAs lines), an append, and an append of
    nothing new."""
    from mmkg.pipeline.engines import spark as S
    monkeypatch.setattr(S, "HASH_KEYS", False)
    tsv = tmp_path / "t.tsv"
    tsv.write_text("http://dbpedia.org/resource/Andy_Griffith\tr\tQ5\n/m/01m4kpp\tr\tQ5\nQ5\tr\tQ6\n"
                   "/m/01s47p\tr2\tQ6\n")
    sameas = tmp_path / "sameas.txt"
    sameas.write_text("".join((data_dir / "mmkg" / "DB15K" / "DB15K_SameAsLink.txt").read_text().splitlines(True)[:3]))
    extra = tmp_path / "extra.tsv"
    extra.write_text("Q5\tr\tQ6\nQ7\tr2\t/m/01m4kpp\n")
    parts = []
    for src in ([f"tsv:{tsv}", f"sameas:{sameas}"], [f"tsv:{extra}"], [f"tsv:{extra}"]):
        s = ingest(tmp_path / "spark", src, engine="spark", shuffle_partitions=2, spark_conf=SMALL_DRIVER)
        lo = ingest(tmp_path / "local", src, engine="local")
        assert s.counts == lo.counts and s.inputs == lo.inputs
        _same_store(s.store, lo.store)
        assert s.counts["merged_keys"] == (1 if len(src) == 2 else 0)
        parts.append({name: s.store.table_parts(name) for name in ("entities", "triples")})
    assert s.counts["triples_already_in_store"] == 2 and s.counts["triples_added"] == 0
    assert parts[2] == parts[1]  # nothing new: the old parts stay, nothing rewritten in the driver
