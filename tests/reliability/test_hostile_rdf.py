"""Issue 17, the RDF reader held to the line readers' rules, and well-formed XML exports
(docs/RELIABILITY.md §7). Each test failed on the code before the fix. Issue 33 made NUL and
control characters in literals valid (they are valid RDF) and blank nodes Skolem IRIs.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pyarrow.compute as pc
import pytest

from mmkg.kg_store import open_store
from mmkg.kg_store.rdf import GENID, export
from mmkg.pipeline.readers import records as R
from tests.pipeline.test_readers import parse_all
from tests.reliability.helpers import assert_no_traceback, mmkg
from tests.reliability.hostile_fixtures import small_store

GOOD_NT = "<http://ex.org/a> <http://ex.org/p> <http://ex.org/b> ."
NT_LINES = [
    GOOD_NT,                                                           # 1 good
    '<http://ex.org/a> <http://ex.org/p> "\\uD800" .',                # 2 surrogate escape
    '<http://ex.org/a> <http://ex.org/p> "nul\\u0000" .',             # 3 escaped NUL: valid
    '<http://ex.org/a> <http://ex.org/p> "a\\qb" .',                  # 4 invalid escape
    '<http://ex.org/a> <http://ex.org/p> "ctl\x01" .',                # 5 raw control character: valid
    "<http://ex.org/a\\u0000b> <http://ex.org/p> <http://ex.org/b> .",  # 6 NUL in an IRI
    '<http://ex.org/c> <http://ex.org/p> "fine" .',                   # 7 good literal
    "_:x <http://ex.org/p> <http://ex.org/c> .",                      # 8 good, blank node
]
TTL = ("@prefix ex: <http://ex.org/> .\n"
       "ex:a ex:p ex:b .\n"
       f'ex:a ex:big "{"x" * (2 << 20)}" .\n'
       "ex:a ex:p [ ex:q \"v\" ] .\n")
#: a syntax error: the document is that reject and nothing else (issue 33)
BAD_TTL = '@prefix ex: <http://ex.org/> .\nex:a ex:p ex:b .\nex:a ex:p "\\uD800" .\n'



def test_bad_rdf_terms_are_rejects_and_the_good_statements_stay(tmp_path):
    nt = tmp_path / "g.nt"
    nt.write_text("\n".join(NT_LINES) + "\n")
    ttl = tmp_path / "g.ttl"
    ttl.write_text(TTL)
    bad_ttl = tmp_path / "bad.ttl"
    bad_ttl.write_text(BAD_TTL)
    kg = tmp_path / "kg"
    run = mmkg("ingest", "--kg", kg, "--engine", "local", "--source", f"rdf:{nt}", "--source", f"rdf:{ttl}",
               "--source", f"rdf:{bad_ttl}", timeout=180)
    assert run.rc == 0, str(run)
    assert_no_traceback(run)
    store = open_store(kg)
    rej = store.table("rejects").to_pylist()
    by_loc = {r["location"]: r["reason"] for r in rej if r["location"].startswith(str(nt))}
    assert sorted(by_loc) == [f"{nt}:{line}" for line in (2, 4, 6)], by_loc
    for line, needle in ((2, "not a valid unicode character"), (4, "escape"), (6, "not N-Triples")):
        assert needle in by_loc[f"{nt}:{line}"], by_loc
    ttl_reasons = [r["reason"] for r in rej if r["location"].startswith(str(ttl))]
    assert len(ttl_reasons) == 1 and ttl_reasons[0].startswith("term too long"), ttl_reasons
    bad = [(r["location"], r["reason"]) for r in rej if r["location"].startswith(str(bad_ttl))]
    assert len(bad) == 1 and bad[0][0] == f"{bad_ttl}:3" and "not a valid unicode character" in bad[0][1], bad
    keys = set(store.table("entities")["key"].to_pylist())
    assert {"http://ex.org/a", "http://ex.org/b", "http://ex.org/c"} <= keys
    assert not any("\x00" in k or "\x01" in k for k in keys)
    lits = store.table("literals")["value"].to_pylist()
    assert {"fine", "v", "nul\x00", "ctl\x01"} <= set(lits)  # valid RDF: kept exactly
    assert store.count("triples") >= 3  # a→b (twice, one kept), _:x→c, a→[blank node]


@pytest.mark.parametrize("name, text", [
    ("rel.ttl", "@prefix ex: <http://ex.org/> .\n<rel> ex:p ex:b .\nex:a ex:p ex:b .\n"),
    ("rel.rdf", '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://ex.org/">'
                '<rdf:Description rdf:about="rel"><ex:p rdf:resource="http://ex.org/b"/></rdf:Description>'
                '<rdf:Description rdf:about="http://ex.org/a"><ex:p rdf:resource="http://ex.org/b"/>'
                '</rdf:Description></rdf:RDF>'),
    ("rel.jsonld", '[{"@id": "rel", "http://ex.org/p": {"@id": "http://ex.org/b"}},'
                   ' {"@id": "http://ex.org/a", "http://ex.org/p": {"@id": "http://ex.org/b"}}]'),
])
def test_relative_iris_never_become_local_paths(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    t = parse_all(f"rdf:{f}")
    values = [v for c in ("s", "p", "o") for v in t[c].to_pylist() if v]
    assert not any("file:" in v or str(tmp_path) in v for v in values), values
    tri = t.filter(pc.equal(t["kind"], R.TRIPLE))
    # Turtle: Oxigraph reports the relative IRI as a syntax error, and such a document gives
    # nothing but its rejects; rdflib documents keep their other statements
    good = [] if name.endswith(".ttl") else [{"s": "http://ex.org/a", "o": "http://ex.org/b"}]
    assert tri.select(["s", "o"]).to_pylist() == good
    rej = t.filter(pc.equal(t["kind"], R.REJECT))
    assert rej.num_rows == 1 and "relative IRI" in rej["reason"][0].as_py()


def test_blank_nodes_get_the_same_keys_on_every_ingest(tmp_path):
    from mmkg.pipeline.ingest import ingest
    ttl = tmp_path / "b.ttl"
    ttl.write_text("@prefix ex: <http://ex.org/> .\n"
                   "ex:a ex:p [ ex:q [ ex:r ex:c ] ] .\nex:b ex:p [ ex:q ex:c ], [ ex:q ex:d ] .\n"
                   "_:z ex:p _:y . _:y ex:p ex:a .\n")
    nt = tmp_path / "b.nt"
    nt.write_text("_:n1 <http://ex.org/p> _:n2 .\n_:n2 <http://ex.org/p> <http://ex.org/a> .\n")
    sources = [f"rdf:{ttl}", f"rdf:{nt}"]
    first = ingest(tmp_path / "kg", sources, engine="local").store
    keys = first.table("entities")["key"].to_pylist()
    n_ent, n_tri = first.count("entities"), first.count("triples")
    again = ingest(tmp_path / "kg", sources, engine="local").store  # re-ingest: nothing new
    assert (again.count("entities"), again.count("triples")) == (n_ent, n_tri)
    other = ingest(tmp_path / "kg2", sources, engine="local").store  # another store, same keys
    assert sorted(other.table("entities")["key"].to_pylist()) == sorted(keys)
    blanks = [k for k in keys if k.startswith(GENID)]  # Skolem IRIs (issue 33)
    assert len(blanks) == 6 + 2 and all(len(k) == len(GENID) + 33 for k in blanks)


TRIX = """<TriX xmlns="http://www.w3.org/2004/03/trix/trix-1/">
<graph><uri>http://ex.org/g1</uri>
  <triple><uri>http://ex.org/a</uri><uri>http://ex.org/p</uri><uri>http://ex.org/b</uri></triple></graph>
<graph>
  <triple><uri>http://ex.org/c</uri><uri>http://ex.org/p</uri><uri>http://ex.org/d</uri></triple></graph>
</TriX>
"""
QUADS = {
    "g.nq": "<http://ex.org/a> <http://ex.org/p> <http://ex.org/b> <http://ex.org/g1> .\n"
            "<http://ex.org/c> <http://ex.org/p> <http://ex.org/d> .\n",
    "g.trig": "@prefix ex: <http://ex.org/> .\nex:g1 { ex:a ex:p ex:b . }\n{ ex:c ex:p ex:d . }\n",
    "g.trix": TRIX,
}


@pytest.mark.parametrize("name", sorted(QUADS))
def test_quad_formats_are_read_not_silently_empty(tmp_path, name):
    f = tmp_path / name
    f.write_text(QUADS[name])
    t = parse_all(f"rdf:{f}")
    tri = t.filter(pc.equal(t["kind"], R.TRIPLE))
    assert sorted(tri["s"].to_pylist()) == ["http://ex.org/a", "http://ex.org/c"]
    assert t.filter(pc.equal(t["kind"], R.REJECT)).num_rows == 0


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_graph_exports_are_well_formed_xml(tmp_path, fmt):
    store = open_store(small_store(tmp_path))
    out = tmp_path / f"kg.{fmt}"
    summary = export(store, out, fmt)
    root = ET.parse(out).getroot()  # raised ParseError on the control characters before
    text = " ".join(filter(None, (e.text for e in root.iter()))) + " " + " ".join(
        v for e in root.iter() for v in e.attrib.values())
    # the characters are still visible, as escapes
    assert "bad \\x1b[31mred\\x07 label" in text and "parent \\x01 taxon" in text
    assert summary["triples"] == 2 and summary["literals_omitted"] == 1


def test_strict_refusal_and_a_bad_base_are_one_escaped_message(tmp_path):
    """The reasons quote the input: an ESC in an IRI reaches the terminal escaped (issue 33)."""
    nt = tmp_path / "esc.nt"
    nt.write_bytes(b"<http://x/a\x1b[31m> <http://x/p> <http://x/b> .\n")
    run = mmkg("ingest", "--kg", tmp_path / "kg", "--engine", "local", "--strict", "--source", f"rdf:{nt}",
               timeout=180)
    assert run.rc == 3, str(run)
    assert_no_traceback(run)
    assert f"{nt}:1: not N-Triples: Invalid IRI code point '\\x1b'" in run.stderr and "\x1b" not in run.stderr
    run = mmkg("ingest", "--kg", tmp_path / "kg", "--engine", "local", "--base", "not an iri",
               "--source", f"rdf:{nt}", timeout=180)
    assert run.rc == 2 and "is not an absolute IRI" in run.stderr, str(run)
    assert_no_traceback(run)
