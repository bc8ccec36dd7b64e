"""Property-based tests of the line readers (hypothesis): arbitrary bytes never raise, and every
input line is accounted exactly once — as one primary record (data or reject) or as skipped
(blank / header) — however the file is cut into chunks.

The engines' worker function (`run_task`) is called directly: it is exactly what the local
engine and Spark's mapInArrow run per byte range, and it is cheap enough for ~20 examples a reader.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mmkg.pipeline.engines.plan import ChunkTask, run_task, scan_file
from mmkg.pipeline.readers import reader_registry
from mmkg.pipeline.readers import records as R
from mmkg.pipeline.readers.mmkg import YAGO_BASE

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: (reader, role, ctx) — every role of every line reader, with the side tables prepare() would give
_OPENKE_CTX = {"entities": {"ids": [0, 2], "keys": ["<http://x/a>", "Q1"]}, "relations": {"ids": [0], "keys": ["P1"]}}
_MAPPING_CTX = {"root": "/nonexistent-root", "file_col": 0, "key_col": 1}
READERS = [
    ("markg", "entity_label", {}), ("markg", "relation_description", {}), ("markg", "triples", {}),
    ("mmkg", "data", {}), ("sameas", "data", {}), ("image-index", "data", {}), ("fbmap", "data", {}),
    ("literals", "data", {"base": None}), ("literals", "data", {"base": YAGO_BASE}), ("tsv", "data", {}),
    ("openke", "entities", _OPENKE_CTX), ("openke", "split", _OPENKE_CTX),
    ("images", "mapping", _MAPPING_CTX), ("images", "listing", {"root": "/nonexistent-root"}),
]

# Lines that look like the formats (so the parsers get past their first check) mixed with noise.
_TOKENS = [b"Q1", b"P31", b"<http://x/a>", b"<>", b"/m/0x", b".", b"0", b"1", b"2", b"42", b'"v"^^<x>', b"",
           b"<SameAs>", b"http://www.wikidata.org/entity/Q5", b"https://en.wikipedia.org/wiki/A_b%20c",
           b"head", b"relation", b"tail", b"file", b"entity", b"a.jpg", b"../x.jpg", b"/abs.jpg", b"Q1,Q2",
           b"\x00", b"\xff", b"\xc3", b"\r", b" ", b"\t", "é".encode(), b"<a b>", b"#"]
_noise = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))
_structured = st.tuples(st.lists(st.one_of(st.sampled_from(_TOKENS), _noise), max_size=5),
                        st.sampled_from([b"\t", b" ", b"\t\t", b" \t"])).map(lambda t: t[1].join(t[0]))
_line = st.one_of(_structured, _structured, _noise)
_file = st.tuples(st.lists(_line, max_size=25), st.booleans())


def _write(lines: list[bytes], final_newline: bool) -> tuple[Path, int]:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    f = tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False)
    f.write(data)
    f.close()
    n = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return Path(f.name), n


def _run(path: Path, reader: str, role: str, ctx: dict, chunk_bytes: int) -> pa.Table:
    _, _, chunks = scan_file(str(path), chunk_bytes)
    impl = reader_registry.get(reader)()
    out = [run_task(ChunkTask(0, 0, str(path), role, a, b, first), impl, ctx) for a, b, first in chunks]
    return pa.Table.from_batches(out, R.LOCATED)


def _sorted_rows(t: pa.Table) -> list[tuple]:
    cols = ["line_no", "kind", "s", "p", "o", "dt", "primary", "reason", "raw"]
    return sorted(tuple(map(repr, row)) for row in zip(*(t[c].to_pylist() for c in cols)))


@pytest.mark.parametrize("reader,role,ctx", READERS, ids=[f"{r}-{role}" for r, role, _ in READERS])
@SETTINGS
@given(doc=_file, chunk_bytes=st.integers(1, 64))
def test_every_line_accounted_once(reader, role, ctx, doc, chunk_bytes):
    path, n_lines = _write(*doc)
    try:
        whole = _run(path, reader, role, ctx, 1 << 20)
        # every line: exactly one primary record, or exactly one skipped (header/blank) record
        kinds = whole["kind"].to_pylist()
        primary = whole["primary"].to_pylist()
        per_line = Counter(ln for ln, k, p in zip(whole["line_no"].to_pylist(), kinds, primary)
                           if p or k == R.HEADER)
        assert sorted(per_line) == list(range(1, n_lines + 1)), "lines missing or invented"
        assert set(per_line.values()) <= {1}, f"lines counted twice: {[k for k, v in per_line.items() if v > 1]}"
        # rejects say why; accepted keys are never empty and never carry NUL bytes
        for row in whole.to_pylist():
            if row["kind"] == R.REJECT:
                assert row["reason"], row
            elif row["kind"] in (R.TRIPLE, R.ENTITY, R.RELATION, R.LINK, R.LITERAL, R.IMAGE):
                keys = [row["s"]] + ([row["p"], row["o"]] if row["kind"] in (R.TRIPLE, R.LINK) else [])
                assert all(k and "\x00" not in k for k in keys), f"accepted bad key: {row}"
        # cutting the file into chunks changes nothing (Spark and local split differently)
        assert _sorted_rows(_run(path, reader, role, ctx, chunk_bytes)) == _sorted_rows(whole)
    finally:
        path.unlink()


@SETTINGS
@given(doc=_file)
def test_ntriples_never_raise(doc):
    """Whole-document RDF: any bytes in a .nt file give records or rejects, never an exception."""
    path, n_lines = _write(*doc)
    nt = path.with_suffix(".nt")
    path.rename(nt)
    try:
        out = reader_registry.get("rdf")().parse_file(str(nt), "nt", {})
        lines = [ln for ln in out["line_no"].to_pylist()]
        assert all(0 <= ln <= max(n_lines, 1) for ln in lines)
        assert all(r for r, k in zip(out["reason"].to_pylist(), out["kind"].to_pylist()) if k == R.REJECT)
    finally:
        nt.unlink()
