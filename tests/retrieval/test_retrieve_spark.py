"""Spark retrieve (issue 19): the executors write the shard parts themselves and send the driver
per-query summaries only; rows, meta and reports equal the local engine's."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmkg.kg_store import open_store
from mmkg.kg_store.errors import CorruptFileError
from mmkg.kg_store.shards import BASE_SCHEMA, ShardWriter, part_files, read_meta, read_shards
from mmkg.retrieval.batch import retrieve_dataset
from mmkg.retrieval.retriever import RetrievalConfig
from tests.retrieval.shards_fixture import ENCODER, build_retrieval_store, shared_root


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return build_retrieval_store(data_dir, shared_root(tmp_path_factory))


def _reports(d):
    out = {p.name: json.loads(p.read_text()) for p in sorted(d.glob("*.json")) if p.name != "meta.json"}
    out["quality.json"].pop("retrieve_seconds")
    return out


def _same_meta(a, b):
    for k in ("queries", "empty", "columns", "rows", "cache_key", "reports"):
        assert a[k] == b[k], k


@pytest.mark.spark
def test_spark_writes_parts_on_executors_equal_to_local(kg, data_dir, spark):
    """MARS, ranked to 20 for the report while the shards keep 7: two range partitions and Arrow
    batches of 3 rows, so several tasks each write several parts; every row, meta figure and
    report (quality at N = 7, 10, 20, leakage) equals the local engine's."""
    spec = f"mars:{data_dir / 'markg/MARS'}"
    config = RetrievalConfig(encoder=ENCODER, top_N=7)
    local = retrieve_dataset(kg.root, spec, config, split="dev", limit=8)
    local_rows = read_shards(local.shard_dir).to_pylist()
    local_meta, local_reports = read_meta(local.shard_dir), _reports(local.shard_dir)
    assert set(local_reports["quality.json"]["hits"]) == {"7", "10", "20"}
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")
    try:
        res = retrieve_dataset(kg.root, spec, config, split="dev", limit=8, engine="spark", force=True,
                               engine_kwargs={"spark": spark, "partitions": 2})
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    d = res.shard_dir
    assert d == local.shard_dir and read_meta(d)["engine"] == "spark"
    assert read_shards(d).to_pylist() == local_rows
    _same_meta(read_meta(d), local_meta)
    assert _reports(d) == local_reports
    assert res.reports["quality"]["hits"] == local.reports["quality"]["hits"]
    parts = part_files(d)
    assert len(parts) >= 3 and [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(len(parts))]
    assert sorted(p.name for p in d.iterdir()) == ["_SUCCESS", "leakage.json", "meta.json", "parts", "quality.json"]
    assert sorted(p.name for p in (d / "parts").iterdir()) == [p.name for p in parts]  # the Parquet parts only
    assert open_store(kg.root).verify() == []


@pytest.mark.spark
def test_spark_jsonl_queries_equal_local(kg, tmp_path, spark):
    """A dataset without MARS figures (no hit rates): same rows, same score statistics."""
    f = tmp_path / "probe.jsonl"
    f.write_text("".join(json.dumps({"id": f"q{i}", "text": t, "entities": e}) + "\n" for i, (t, e) in enumerate(
        [("swimming pool", ["Q1501"]), ("a red apple", []), ("mountain river", ["Q4022"])])))
    config = RetrievalConfig(encoder=ENCODER, top_N=4)
    local = retrieve_dataset(kg.root, f"jsonl:{f}", config)
    rows, reports = read_shards(local.shard_dir).to_pylist(), _reports(local.shard_dir)
    res = retrieve_dataset(kg.root, f"jsonl:{f}", config, engine="spark", force=True,
                           engine_kwargs={"spark": spark, "partitions": 2})
    assert read_shards(res.shard_dir).to_pylist() == rows and _reports(res.shard_dir) == reports


def _part(path, n0, n):
    table = BASE_SCHEMA.empty_table().to_pylist()
    rows = [{**{f.name: None for f in BASE_SCHEMA}, "query_id": f"q{i}", "empty": True} for i in range(n0, n0 + n)]
    pq.write_table(pa.Table.from_pylist(table + rows, schema=BASE_SCHEMA), path)


def test_adopt_parts_keeps_only_reported_files_in_order(tmp_path):
    """The parts the successful tasks reported become part-00000… in query order; a failed
    attempt's file and temp litter in the staging folder never publish."""
    d = tmp_path / "subgraphs/x/test/abc"
    with ShardWriter(d) as w:
        _part(w.parts / "spark-000000000003-00000002.parquet", 3, 2)
        _part(w.parts / "spark-000000000000-00000003.parquet", 0, 3)
        _part(w.parts / "spark-000000000000-00000001.parquet", 0, 1)  # a failed attempt's batch
        (w.parts / "spark-000000000005-00000001.parquet.tmp-0123abcd").write_bytes(b"half")
        w.adopt_parts([("spark-000000000000-00000003.parquet", 3), ("spark-000000000003-00000002.parquet", 2)])
        w.close({"encoder": "e"})
    assert [p.name for p in part_files(d)] == ["part-00000.parquet", "part-00001.parquet"]
    assert read_shards(d)["query_id"].to_pylist() == ["q0", "q1", "q2", "q3", "q4"]
    assert read_meta(d)["rows"] == 5
    assert sorted(p.name for p in d.iterdir()) == ["_SUCCESS", "meta.json", "parts"]
    assert sorted(p.name for p in (d / "parts").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    with ShardWriter(tmp_path / "subgraphs/x/test/bad") as w:
        _part(w.parts / "spark-000000000000-00000003.parquet", 0, 3)
        with pytest.raises(CorruptFileError, match="3 rows, the task reported 2"):
            w.adopt_parts([("spark-000000000000-00000003.parquet", 2)])
    assert not (tmp_path / "subgraphs/x/test/bad").exists()
