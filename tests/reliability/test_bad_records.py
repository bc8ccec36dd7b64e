"""Bad input records in every reader: `mmkg ingest` keeps going, rejects each bad line once with
the right reason, accounts for every line, never shows a traceback; `--strict` fails (exit 3)
listing the rejects. Driven as a subprocess over the corpus of tests/fixtures/bad_records.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from mmkg.kg_store import open_store, schema
from tests.fixtures.bad_records import BUILDERS, write_bad_corpus
from tests.reliability.helpers import assert_no_traceback, mmkg

#: a decompression bomb (50000² px) or a 1 MiB line must not blow memory up: peak RSS bound
MAX_RSS_MIB = 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_bad_corpus(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def ingested(corpus, tmp_path_factory):
    """One ingest of every source at once (a process start costs seconds on 2 shared cores)."""
    kg = tmp_path_factory.mktemp("kg") / "kg"
    args = ["ingest", "--kg", kg, "--engine", "local", "--json"]
    for case in corpus:
        args += ["--source", case.spec]
    return mmkg(*args, timeout=240), kg


def test_ingest_goes_on_without_traceback(ingested):
    run, kg = ingested
    assert run.rc == 0, str(run)
    assert_no_traceback(run)
    assert (kg / "manifest.json").exists()
    assert open_store(kg).verify() == []


def test_memory_stays_bounded(ingested):
    """The corpus holds a 50000x50000 PNG bomb, a 10^10 px header bomb and 1 MiB lines."""
    run, _ = ingested
    assert run.rc == 0, str(run)
    assert run.max_rss_kib < MAX_RSS_MIB * 1024, f"peak RSS {run.max_rss_kib // 1024} MiB"


def _input(kg: Path, source_name: str) -> dict:
    entries = [i for i in open_store(kg).manifest["inputs"] if i["source"] == source_name]
    assert len(entries) == 1, f"{source_name}: {len(entries)} manifest inputs"
    return entries[0]


@pytest.mark.parametrize("index", range(len(BUILDERS)), ids=[b.__name__.removesuffix("_case") for b in BUILDERS])
def test_accounting(corpus, ingested, index):
    """read = accepted + rejected + duplicates, each equal to what the corpus says."""
    run, kg = ingested
    assert run.rc == 0, str(run)
    case = corpus[index]
    counts = _input(kg, case.source_name)["counts"]
    assert counts["read"] == counts["accepted"] + counts["rejected"] + counts["duplicates"], counts
    want = {"read": case.read, "accepted": case.accepted, "rejected": case.rejected, "duplicates": case.duplicates}
    assert {k: counts[k] for k in want} == want


@pytest.mark.parametrize("index", range(len(BUILDERS)), ids=[b.__name__.removesuffix("_case") for b in BUILDERS])
def test_one_reject_per_bad_line(corpus, ingested, index):
    """Exactly one rejects row per bad line, at its `path:line`, with the expected reason."""
    run, kg = ingested
    assert run.rc == 0, str(run)
    case = corpus[index]
    rejects = open_store(kg).table("rejects")
    rows = rejects.filter(pc.equal(rejects["source"], case.source_name)).to_pylist()
    locations = [r["location"] for r in rows]
    assert sorted(locations) == sorted(case.expected_rejects), "reject locations differ"
    for r in rows:
        want = case.expected_rejects[r["location"]]
        assert want in r["reason"], f"{r['location']}: reason {r['reason']!r}, expected …{want}…"
        assert r["stage"] == "ingest"
        assert len(r["raw"]) <= schema.REJECT_RAW_MAX, f"{r['location']}: raw not truncated"


def test_strict_fails_listing_rejects(corpus, tmp_path):
    """--strict: exit 3, every reject location named on stderr, nothing committed."""
    small = [c for c in corpus if c.id in ("tsv", "mmkg")]
    kg = tmp_path / "kg"
    args = ["ingest", "--kg", kg, "--engine", "local", "--strict"]
    for c in small:
        args += ["--source", c.spec]
    run = mmkg(*args)
    assert run.rc == 3, str(run)
    assert_no_traceback(run)
    for c in small:
        for location in c.expected_rejects:
            assert location in run.stderr, f"{location} not listed on stderr\n{run}"
    assert not (kg / "manifest.json").exists(), "--strict committed a version despite rejects"


def test_strict_accepts_clean_input(tmp_path):
    """Blank lines, a header and exact duplicates are not rejects: --strict passes."""
    src = tmp_path / "clean.tsv"
    src.write_text("head\trelation\ttail\nQ1\tP1\tQ2\n\nQ1\tP1\tQ2\nQ2\tP1\tQ3\n")
    run = mmkg("ingest", "--kg", tmp_path / "kg", "--engine", "local", "--strict", "--json",
               "--source", f"tsv:{src}")
    assert run.rc == 0, str(run)
    counts = json.loads(run.stdout)["inputs"][0]["counts"]
    assert counts == {"read": 3, "accepted": 2, "rejected": 0, "duplicates": 1,
                      "skipped": {"blank line": 1, "header": 1}}


# ---- query files (`mmkg retrieve --dataset`) ----------------------------------------------------
def _retrieve_with_rejects(kg: Path, spec: str):
    from tests.reliability.conftest import ENCODER
    run = mmkg("retrieve", "--kg", kg, "--encoder", ENCODER, "--dataset", spec, timeout=300)
    assert run.rc == 0, str(run)
    assert_no_traceback(run)
    shard_dir = Path(run.stdout.strip().splitlines()[-1])
    return run, shard_dir


def _check_query_rejects(run, shard_dir: Path, case) -> None:
    from mmkg.kg_store.shards import read_shards
    assert read_shards(shard_dir, columns=["query_id"])["query_id"].to_pylist() == case.good_ids
    report = json.loads((shard_dir / "rejects.json").read_text())
    got = {r["location"]: r["reason"] for r in report["rows"]}
    path = case.spec.split(":", 1)[1]
    want = {f"{path}:{n}": reason for n, reason in case.rejects.items()}
    assert sorted(got) == sorted(want), "query reject locations differ"
    for loc, reason in want.items():
        assert reason in got[loc], f"{loc}: {got[loc]!r}, expected …{reason}…"
    assert f"{len(want)} query record(s) rejected" in run.stderr, str(run)


@pytest.mark.faiss
def test_bad_jsonl_queries_are_rejected_one_by_one(reference_store, pipeline_inputs, tmp_path):
    """Bad JSON, missing fields, invalid UTF-8 and image paths escaping the file's folder (`..`,
    absolute) each become one reject; the good queries are retrieved."""
    import shutil
    from tests.fixtures.bad_records import write_bad_jsonl_queries
    kg = tmp_path / "kg"
    shutil.copytree(reference_store, kg, symlinks=True)
    case = write_bad_jsonl_queries(tmp_path / "q", outside_image=str(pipeline_inputs.images_root / "im0.jpg"))
    run, shard_dir = _retrieve_with_rejects(kg, case.spec)
    _check_query_rejects(run, shard_dir, case)


def test_bad_mars_queries_are_rejected_one_by_one(corpus, ingested, tmp_path):
    """MARS lines: bad JSON, missing fields, a one-key example, a non-integer mode, invalid
    UTF-8 are one reject each; ids of the good lines keep their position. Checked on the query
    builder in-process (the CLI path of query rejects is the JSONL test above: one torch start)."""
    from mmkg.retrieval.datasets import build_queries
    from tests.fixtures.bad_records import write_bad_mars_queries
    run, kg = ingested
    assert run.rc == 0, str(run)
    store = open_store(kg)
    keys = store.table("entities", ["key"])["key"].to_pylist()[:4]
    case = write_bad_mars_queries(tmp_path / "mars", keys)
    qs = build_queries(case.spec, store=store, with_images=True)
    assert [q.query_id for q in qs.queries] == case.good_ids
    path = case.spec.split(":", 1)[1]
    got = {r["location"]: r["reason"] for r in qs.rejects}
    want = {f"{path}:{n}": reason for n, reason in case.rejects.items()}
    assert sorted(got) == sorted(want)
    for loc, reason in want.items():
        assert reason in got[loc], f"{loc}: {got[loc]!r}, expected …{reason}…"

def test_spark_engine_rejects_like_local(corpus, ingested, tmp_path, spark):
    """The one Spark test: the same reader functions under mapInArrow give the same reject rows
    and counts as the local engine for the line formats (engine parity of the bad-record path)."""
    from mmkg.pipeline.ingest import ingest
    run, local_kg = ingested
    assert run.rc == 0, str(run)
    cases = [c for c in corpus if c.id in ("tsv", "markg")]
    res = ingest(tmp_path / "kg", [c.spec for c in cases], engine="spark")
    names = {c.source_name for c in cases}

    def rows(store):
        t = store.table("rejects")
        return sorted((r["source"], r["location"], r["reason"], r["raw"]) for r in t.to_pylist()
                      if r["source"] in names)
    assert rows(res.store) == rows(open_store(local_kg))
    for c in cases:
        assert _input(tmp_path / "kg", c.source_name)["counts"] == _input(local_kg, c.source_name)["counts"]


def test_bad_scienceqa_problems(tmp_path):
    """ScienceQA: a problem without question/choices, or whose image path climbs out of
    `images/`, is one reject at `problems.json:<pid>`; a file that is not JSON is one line."""
    from mmkg.kg_store.errors import KGStoreError
    from mmkg.retrieval.datasets import build_queries
    good = {"question": "q?", "choices": ["a", "b"], "answer": 0, "split": "test", "image": None}
    problems = {"1": good, "2": {**good, "choices": None}, "3": {**good, "image": "../../../etc/passwd"},
                "4": ["not", "an", "object"], "5": {**good, "split": "train", "question": None}}
    f = tmp_path / "problems.json"
    f.write_text(json.dumps(problems))
    qs = build_queries(f"scienceqa:{f}", split="test")
    assert [q.query_id for q in qs.queries] == ["1"]
    got = {r["location"]: r["reason"] for r in qs.rejects}
    assert set(got) == {f"{f}:2", f"{f}:3", f"{f}:4"}  # pid 5 is another split's problem
    assert "question' or 'choices" in got[f"{f}:2"] and "path-escapes-root" in got[f"{f}:3"]
    f.write_bytes(b'{"1": \xff')
    with pytest.raises(KGStoreError, match="not a ScienceQA problems JSON document"):
        build_queries(f"scienceqa:{f}", split="test")
