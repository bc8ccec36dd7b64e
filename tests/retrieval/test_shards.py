"""Batch retrieval into cached, committed shards; `mmkg retrieve` end to end (real minilm + FAISS)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mmkg.jobs.cli import cli
from mmkg.kg_store import open_store
from mmkg.kg_store.shards import BASE_SCHEMA, SUCCESS, is_complete, part_files, read_meta, read_shards
from mmkg.retrieval.batch import retrieve_dataset
from mmkg.retrieval.retriever import RetrievalConfig
from tests.retrieval.shards_fixture import ENCODER, build_retrieval_store, build_test_shards, shared_root


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return build_retrieval_store(data_dir, shared_root(tmp_path_factory))


@pytest.fixture(scope="module")
def shards(data_dir, tmp_path_factory, kg):
    return build_test_shards(data_dir, shared_root(tmp_path_factory))


def test_mars_shard_rows_are_consistent_with_the_store(kg, shards):
    d = shards["mars/dev"]
    assert d == kg.path(f"subgraphs/mars/dev/{d.name}") and is_complete(d)
    t = read_shards(d)
    assert t.num_rows == 8 and t.schema.names[:len(BASE_SCHEMA)] == BASE_SCHEMA.names
    assert {"example", "question", "answer", "relation", "mode", "answer_entity"} <= set(t.column_names)
    triples = kg.triples_array()
    ekeys = np.array(kg.table("entities", ["key"])["key"].to_pylist(), dtype=object)
    rkeys = np.array(kg.table("relations", ["key"])["key"].to_pylist(), dtype=object)
    for row in t.to_pylist():
        n = len(row["triple_ids"])
        assert 0 < n <= 10 and not row["empty"]
        assert all(len(row[c]) == n for c in ("head_keys", "relation_keys", "tail_keys", "head_ids", "relation_ids",
                                              "tail_ids", "scores"))
        tri = triples[row["triple_ids"]]
        assert tri.tolist() == [list(x) for x in zip(row["head_ids"], row["relation_ids"], row["tail_ids"])]
        assert row["head_keys"] == ekeys[tri[:, 0]].tolist() and row["tail_keys"] == ekeys[tri[:, 2]].tolist()
        assert row["relation_keys"] == rkeys[tri[:, 1]].tolist()
        assert row["scores"] == sorted(row["scores"], reverse=True)
    meta = read_meta(d)
    assert meta["cache_key"]["kg_version"] == kg.kg_version and meta["encoder"] == ENCODER
    assert meta["config_hash"] == RetrievalConfig(encoder=ENCODER).config_hash
    # committed: listed as an artifact and covered by `verify`
    store = open_store(kg.root)
    assert store.artifact(f"subgraphs/mars/dev/{d.name}")["queries"] == 8
    assert f"subgraphs/mars/dev/{d.name}/{SUCCESS}" in store.manifest["files"] and store.verify() == []


def test_a_shard_folder_reads_as_it_is_with_pandas_pyarrow_and_datasets(shards):
    """Issue 29: the Parquet parts sit alone in `parts/` (reports and meta.json beside it), so
    pandas, pyarrow.dataset and Hugging Face `datasets` (when installed) read that folder directly."""
    import pandas as pd
    import pyarrow.dataset as pads
    from mmkg.kg_store.shards import parts_dir
    d = shards["mars/dev"]
    parts = parts_dir(d)
    assert parts == d / "parts" and {p.suffix for p in parts.iterdir()} == {".parquet"}
    assert {"meta.json", "quality.json", SUCCESS} <= {p.name for p in d.iterdir()}
    expect = read_shards(d)["query_id"].to_pylist()
    df = pd.read_parquet(parts)
    assert len(df) == 8 and df["query_id"].tolist() == expect
    assert pads.dataset(parts, format="parquet").to_table()["query_id"].to_pylist() == expect
    try:
        import datasets
    except ImportError:
        return
    hf = datasets.load_dataset("parquet", data_dir=str(parts), split="train")
    assert hf["query_id"] == expect


def test_scienceqa_shards_carry_question_choices_image(shards, data_dir):
    t = read_shards(shards["scienceqa/test"]).to_pylist()
    assert len(t) == 8
    problems = json.loads((data_dir / "scienceqa/problems.subset150.json").read_text())
    for row in t:  # every row carries its problem's fields, and its image where the data folder has it
        p = problems[row["query_id"]]
        assert row["choices"] == p["choices"] and row["answer"] == p["answer"]
        image = data_dir / f"scienceqa/images/test/{row['query_id']}/image.png"
        assert row["image_path"] == (str(image) if p.get("image") and image.exists() else None)
        assert {"hint", "subject", "grade", "image"} <= set(row)
    q = json.loads((shards["scienceqa/test"] / "quality.json").read_text())
    assert q["queries"] == 8 and 0 < q["mean_query_triple_score"] <= 1


def test_same_key_reuses_shards_and_force_recomputes(kg, data_dir):
    spec = f"mars:{data_dir / 'markg/MARS'}"
    config = RetrievalConfig(encoder=ENCODER, top_N=5)
    first = retrieve_dataset(kg.root, spec, config, split="dev", limit=3)
    again = retrieve_dataset(kg.root, spec, config, split="dev", limit=3)
    assert not first.reused and again.reused and again.shard_dir == first.shard_dir
    forced = retrieve_dataset(kg.root, spec, config, split="dev", limit=3, force=True)
    assert not forced.reused and json.loads((forced.shard_dir / "meta.json").read_text())["created"]
    assert read_shards(forced.shard_dir).equals(read_shards(first.shard_dir))
    assert len(part_files(forced.shard_dir)) == 1 and open_store(kg.root).verify() == []
    other = retrieve_dataset(kg.root, spec, RetrievalConfig(encoder=ENCODER, top_N=6), split="dev", limit=3)
    assert other.shard_dir != first.shard_dir and not other.reused


def test_cli_retrieve_prints_the_shard_dir_and_says_when_it_reuses(kg, data_dir, tmp_path):
    runner = CliRunner()
    f = tmp_path / "probe.jsonl"
    f.write_text(json.dumps({"id": "a", "text": "swimming pool", "entities": ["Q1501"]}) + "\n")
    args = ["retrieve", "--kg", str(kg.root), "--encoder", ENCODER, "--dataset", f"jsonl:{f}", "--triples", "4"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    shard_dir = res.stdout.strip().splitlines()[-1]
    assert shard_dir.startswith(str(kg.root / "subgraphs/jsonl/probe/")) and is_complete(shard_dir)
    assert len(read_shards(shard_dir)["triple_ids"][0]) == 4
    res2 = runner.invoke(cli, args)
    assert res2.exit_code == 0 and "reusing cached shards" in res2.stderr
    assert res2.stdout.strip().splitlines()[-1] == shard_dir
    bad = runner.invoke(cli, ["retrieve", "--kg", str(kg.root), "--dataset", "nope"])
    assert bad.exit_code != 0


@pytest.mark.spark
def test_spark_engine_matches_local(kg, data_dir, spark):
    spec = f"mars:{data_dir / 'markg/MARS'}"
    config = RetrievalConfig(encoder=ENCODER, top_N=7)
    cols = ["query_id", "triple_ids", "head_keys", "relation_keys", "tail_keys", "seed_entity_ids"]
    local = retrieve_dataset(kg.root, spec, config, split="test", limit=3)
    local_rows = read_shards(local.shard_dir, cols).to_pylist()
    spark = retrieve_dataset(kg.root, spec, config, split="test", limit=3, engine="spark", force=True,
                             engine_kwargs={"spark": spark, "partitions": 1})
    assert spark.shard_dir == local.shard_dir and read_meta(spark.shard_dir)["engine"] == "spark"
    assert read_shards(spark.shard_dir, cols).to_pylist() == local_rows


def test_shard_writer_publishes_whole_sets_only(tmp_path):
    from mmkg.kg_store.errors import KGStoreError
    from mmkg.kg_store.shards import ShardWriter
    import pyarrow as pa

    d = tmp_path / "subgraphs/x/test/abc"
    table = BASE_SCHEMA.empty_table()
    with ShardWriter(d, rows_per_part=2) as w:
        w.write(table)
        w.close({"encoder": "e"})
    assert is_complete(d) and read_shards(d).num_rows == 0 and read_meta(d)["parts"] == 1
    rows = pa.table({"query_id": ["a", "b", "c"]})
    with pytest.raises(RuntimeError):
        with ShardWriter(d, rows_per_part=2) as w:
            w.write(rows)
            raise RuntimeError("killed mid-write")
    assert read_meta(d)["rows"] == 0 and [p.name for p in d.parent.iterdir()] == ["abc"]  # old set intact
    with ShardWriter(d, rows_per_part=2) as w:
        w.write(rows)
        w.close({})
    assert [p.name for p in part_files(d)] == ["part-00000.parquet", "part-00001.parquet"]
    assert read_shards(d)["query_id"].to_pylist() == ["a", "b", "c"]
    (d / SUCCESS).unlink()
    with pytest.raises(KGStoreError, match="not a finished shard directory"):
        read_shards(d)
