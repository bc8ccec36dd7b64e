"""The Spark engine gives the same store as the local engine (one local[2] session per module)."""
from __future__ import annotations

import numpy as np
import pytest

from mmkg.pipeline.ingest import ingest

TABLES = ("entities", "relations", "triples", "literals", "same_as", "images", "rejects")


@pytest.fixture(scope="module")
def mixed_sources(data_dir, tmp_path_factory):
    """MarKG, FB15K map, DB15K sameAs and image index, MARS images, plus a TSV with bad lines."""
    tmp = tmp_path_factory.mktemp("src")
    tsv = tmp / "extra.tsv"
    tsv.write_text("head\trelation\ttail\n/m/016ywr\t/people/person/nationality\t/m/09c7w0\tvalid\nbad line\n"
                   "Q262\tP47\tQ1028\n")
    mm = data_dir / "mmkg"
    return [f"markg:{data_dir / 'markg/MarKG'}", f"fbmap:{mm / 'FB15K/fb15k_mid-wdurl-wpurl_14951.txt'}",
            f"sameas:{mm / 'DB15K/DB15K_SameAsLink.txt'}", f"image-index:{mm / 'DB15K/DB15K_ImageIndex.txt'}",
            f"images:{data_dir / 'markg/MARS/images'}", f"tsv:{tsv}"]


@pytest.mark.parametrize("large", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["defaults", "large-input-settings"])
def test_spark_and_local_give_identical_stores(spark, mixed_sources, tmp_path, monkeypatch, large):
    if large:  # what a big input gets: cached frames on disk, the graph in many node ranges
        from mmkg.pipeline.engines import spark as S
        monkeypatch.setattr(S, "BYTES_IN_MEMORY", 0)
        monkeypatch.setattr(S, "EDGES_PER_RANGE", 5_000)
        monkeypatch.setenv("MMKG_GRAPH_MEMORY", "64k")  # beyond one run: built on the executors
    # small chunks so the Spark run really splits files across tasks
    s = ingest(tmp_path / "spark", mixed_sources, engine="spark", chunk_bytes=256 << 10)
    lo = ingest(tmp_path / "local", mixed_sources, engine="local")
    for name in TABLES:
        assert s.store.table(name).equals(lo.store.table(name)), name
    g_s, g_lo = s.store.graph, lo.store.graph  # built on the executors vs out of core here
    for name in ("indptr", "neighbor", "relation", "direction", "triple_id"):
        assert np.array_equal(getattr(g_s, name), getattr(g_lo, name)), name
    assert s.inputs == lo.inputs
    assert s.counts == lo.counts
    by_source = {i["source"]: i["counts"] for i in s.inputs}
    assert by_source["markg:MarKG"]["duplicates"] == 6
    assert by_source["tsv:extra.tsv"] == {"read": 3, "accepted": 2, "rejected": 1, "duplicates": 0,
                                          "skipped": {"header": 1}}
    # Q262 P47 Q1028 is also a MarKG triple: stored once, counted as collapsed across sources
    assert (s.counts["triples"], s.counts["triples_collapsed"], s.counts["images"]) == (33_301 + 1, 1, 17)
    assert s.counts["merged_keys"] > 0
    # the session belongs to the fixture: the engine must not have stopped it
    assert spark.sparkContext._jsc is not None
    assert s.store.stats()["kg_version"] == 1


def test_driver_parsed_rdf_documents_join_the_spark_triples(spark, tmp_path):
    """Turtle parses whole in the driver; its triples enter Spark's integer pass next to line files."""
    ttl = tmp_path / "extra.ttl"
    ttl.write_text("@prefix wd: <http://www.wikidata.org/entity/> .\n"
                   "wd:Q262 wd:P47 wd:Q1028 .\nwd:Q1028 wd:P47 wd:Q262 .\nwd:Q1028 wd:P47 wd:Q262 .\n")
    tsv = tmp_path / "extra.tsv"
    tsv.write_text("Q262\tP47\tQ1028\nQ5\tP31\tQ262\n")
    sources = [f"rdf:{ttl}", f"tsv:{tsv}"]
    s = ingest(tmp_path / "spark", sources, engine="spark")
    lo = ingest(tmp_path / "local", sources, engine="local")
    for name in TABLES:
        assert s.store.table(name).equals(lo.store.table(name)), name
    assert s.counts == lo.counts and s.inputs == lo.inputs
    assert s.counts["triples"] == lo.counts["triples"] >= 3
