"""Issue 17, query images and trust: image limits at query time, literals in exports and SPARQL,
the manifest validated, the web view's Host check, escapes on the terminal
(docs/RELIABILITY.md §7). Each test failed on the code before the fix.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import rdflib

from tests.fixtures.hostile_images import _save, photo, truncated, zero_png_bytes
from tests.reliability.helpers import assert_no_traceback, mmkg
from tests.reliability.hostile_fixtures import ESC_LABEL, run_cli, small_store


@pytest.fixture
def kg(tmp_path):
    return small_store(tmp_path)


# ---- 5. query images -------------------------------------------------------------------------------------
@pytest.fixture
def query_images(tmp_path):
    d = tmp_path / "queries"
    d.mkdir()
    (d / "bomb.png").write_bytes(zero_png_bytes(9000, 9000))  # 81 Mpx: under Pillow's own guard
    (d / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    (d / "cut.jpg").write_bytes(truncated(_save(photo((640, 480)), "JPEG", quality=90), keep=0.5))
    (d / "ok.jpg").write_bytes(_save(photo((64, 48)), "JPEG", quality=90))
    return d


def test_query_images_get_the_ingest_limits_and_reject_rows(query_images):
    from mmkg.retrieval.datasets import build_queries
    rows = [{"id": "q-bomb", "text": "a", "image": "bomb.png"}, {"id": "q-garbage", "text": "b", "image": "garbage.jpg"},
            {"id": "q-cut", "text": "c", "image": "cut.jpg"}, {"id": "q-ok", "text": "d", "image": "ok.jpg"},
            {"id": "q-text", "text": "e"}]
    q = query_images / "q.jsonl"
    q.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    qs = build_queries(f"jsonl:{q}", with_images=True)
    assert [x.query_id for x in qs.queries] == ["q-ok", "q-text"]  # the good ones go on
    reasons = {r["location"].rsplit(":", 1)[1]: r["reason"] for r in qs.rejects}
    assert reasons["q-bomb"].startswith("image too-many-pixels: 9000x9000")
    assert reasons["q-garbage"].startswith("image not-an-image")
    assert reasons["q-cut"].startswith("image truncated")


def test_the_encoder_never_decodes_a_query_image_past_the_limits(query_images):
    from mmkg.pipeline.encoders import resolve_encoder
    from mmkg.pipeline.images import ImageRejected
    from mmkg.retrieval.datasets import Query
    from mmkg.retrieval.retriever import encode_queries
    enc = resolve_encoder("tiny-clip", device="cpu")
    ok = encode_queries(enc, [Query("q", "a zebra", image_paths=[str(query_images / "ok.jpg")])])
    assert ok.shape == (1, enc.dim)
    # a file swapped after the queries were built: refused from its header, one line, no decode
    with pytest.raises(ImageRejected, match="too-many-pixels"):
        encode_queries(enc, [Query("q", "a zebra", image_paths=[str(query_images / "bomb.png")])])


# ---- 7. literals are exported and queryable ----------------------------------------------------------------
def test_export_and_sparql_include_the_literals_table(kg, tmp_path, capsys):
    height = (rdflib.URIRef("http://www.wikidata.org/entity/Q1"), rdflib.URIRef("http://ex.org/height"))
    for fmt in ("nt", "ttl"):
        rc, out, err = run_cli(capsys, "export", "--kg", kg, "--format", fmt, "-o", tmp_path / f"x.{fmt}",
                               "--json", "-q")
        assert rc == 0 and json.loads(out)["literals"] == 1, err
        g = rdflib.Graph().parse(tmp_path / f"x.{fmt}", format="nt" if fmt == "nt" else "turtle")
        assert [str(o) for o in g.objects(*height)] == ["1.4"]
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, "--json", "SELECT ?v WHERE { wd:Q1 <http://ex.org/height> ?v }")
    assert rc == 0 and [r["v"] for r in json.loads(out)["rows"]] == ["1.4"], err
    rc, out, err = run_cli(capsys, "export", "--kg", kg, "--format", "graphml", "-o", tmp_path / "x.graphml", "-q")
    assert rc == 0 and "1 literal rows are not in graphml" in err  # said, not silently dropped


# ---- 7. the manifest is validated ------------------------------------------------------------------------------
def _edit_manifest(kg, edit) -> None:
    m = json.loads((kg / "manifest.json").read_text())
    edit(m)
    (kg / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_manifest_paths_outside_the_store_fail_verify(kg, tmp_path, capsys, where):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not the store's")
    rel = "../secret.bin" if where == "dotdot" else str(secret)
    _edit_manifest(kg, lambda m: m["files"].__setitem__(rel, {"bytes": secret.stat().st_size,
                                                               "sha256": hashlib.sha256(secret.read_bytes()).hexdigest()}))
    rc, out, err = run_cli(capsys, "verify", "--kg", kg)
    assert rc == 1 and "ok:" not in out, out
    assert "corrupt or modified file" in err and len(err.strip().splitlines()) == 1, err


def test_manifest_entries_naming_a_device_or_fifo_do_not_hang(kg):
    os.symlink("/dev/zero", kg / "tables" / "zero")
    os.mkfifo(kg / "tables" / "pipe")
    _edit_manifest(kg, lambda m: m["files"].update({"tables/zero": {"bytes": 0, "sha256": "0" * 64},
                                                    "tables/pipe": {"bytes": 0, "sha256": "0" * 64}}))
    run = mmkg("verify", "--kg", kg, timeout=90)
    assert run.rc == 1, str(run)
    assert_no_traceback(run)
    assert "BAD tables/pipe: " in run.stdout and "not a regular file" in run.stdout
    assert "BAD tables/zero: " in run.stdout and "/dev/zero" in run.stdout


@pytest.mark.parametrize("doc", [
    [], "just a string", {"format_version": 1, "kg_version": "1", "tables": {}, "files": {}, "inputs": [],
                          "stages": [], "artifacts": {}},
    {"format_version": 1, "kg_version": 1, "tables": [], "files": {}, "inputs": [], "stages": [], "artifacts": {}},
    {"format_version": 1, "kg_version": 1, "tables": {}, "files": {"tables/x": 5}, "inputs": [], "stages": [],
     "artifacts": {}},
])
def test_a_wrong_shaped_manifest_is_one_store_error(kg, capsys, doc):
    (kg / "manifest.json").write_text(json.dumps(doc))
    for cmd in ("stats", "verify"):
        rc, out, err = run_cli(capsys, cmd, "--kg", kg)
        assert rc == 1 and "corrupt or modified file" in err and len(err.strip().splitlines()) == 1, err


# ---- 7. the web view answers only to trusted Host names ------------------------------------------------------------
def test_the_web_view_refuses_untrusted_host_headers(kg):
    from mmkg.jobs.web.app import create_app
    client = create_app(kg, trusted_hosts=["kg.internal"]).test_client()
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example", ""):
        r = client.get("/", headers={"Host": host})
        assert r.status_code == 400, host
        assert b"KG" not in r.data or b"untrusted Host" in r.data
    for host in ("127.0.0.1:8000", "localhost", "localhost:5000", "[::1]:8000", "kg.internal"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    assert client.get("/", base_url="http://rebound.example:8000").status_code == 400


# ---- 7. terminal output --------------------------------------------------------------------------------------------
def test_kg_strings_reach_the_terminal_escaped(kg, capsys):
    outputs = []
    for args in (["entity", "Q2"], ["neighbors", "Q3"], ["stats"],
                 ["sparql", "SELECT ?l WHERE { ?e rdfs:label ?l }"], ["entity", "Q2", "--json"]):
        rc, out, err = run_cli(capsys, *args, "--kg", kg)
        assert rc == 0, err
        outputs.append(out)
        assert not any(c in out for c in "\x1b\x07\x01\x9b"), (args, out)
    assert "bad \\x1b[31mred\\x07 label" in outputs[0] and "parent \\x01 taxon" in outputs[0]
    assert json.loads(outputs[-1])["label"] == ESC_LABEL  # JSON keeps the value, escaped as JSON does
