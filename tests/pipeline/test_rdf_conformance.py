"""The W3C RDF 1.1 test suites (N-Triples, N-Quads, Turtle, TriG; tests/data/w3c-rdf-tests, read
from their manifests) through the `rdf:` reader, `mmkg ingest --strict` and `mmkg export --format nt
--no-annotations` (issue 33).

Each test's own IRI (the manifest's `mf:action`) is its base, as the suites ask. Positive syntax
tests must give no reject, negative ones at least one (`--strict` refuses the source), and no test
may raise. Evaluation tests are ingested into a store (local engine, in-process: a subprocess per
test would take minutes) and exported; the export, Skolem IRIs turned back into blank nodes, must
be isomorphic to the test's expected graph (quads: the union of the graphs, as the store holds
one graph). One case of each kind also runs through the real CLI.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyoxigraph as ox
import pytest
import rdflib
from rdflib.compare import isomorphic

from mmkg.kg_store.rdf import GENID, export
from mmkg.pipeline.ingest import IngestRejectedError, ingest
from mmkg.pipeline.readers import reader_registry
from mmkg.pipeline.readers import records as R
from tests.reliability.helpers import assert_no_traceback, mmkg

SUITES = Path(__file__).resolve().parents[1] / "data" / "w3c-rdf-tests"
MF = "http://www.w3.org/2001/sw/DataAccess/tests/test-manifest#"
RDFT = "http://www.w3.org/ns/rdftest#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
#: where the suites say they live: a test's base IRI is this + its file name
TEST_BASE = "https://w3c.github.io/rdf-tests/rdf/rdf11/"


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    kind: str      # positive | negative | eval
    action: Path   # the input file
    base: str      # the test's own IRI
    result: Path | None = None

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


def _kind(test_type: str) -> str | None:
    t = test_type.removeprefix(RDFT)
    if t.endswith("PositiveSyntax"):
        return "positive"
    if t.endswith("NegativeSyntax") or t.endswith("NegativeEval"):
        return "negative"
    if t.endswith("Eval"):
        return "eval"
    return None


def manifest_cases(suite: str) -> list[Case]:
    """The tests of one suite, in the order of the manifest's `mf:entries`."""
    folder = SUITES / suite
    base = f"{TEST_BASE}{suite}/"
    props: dict = {}
    for q in ox.parse(path=folder / "manifest.ttl", format=ox.RdfFormat.TURTLE, base_iri=base + "manifest.ttl"):
        props.setdefault(q.subject, {}).setdefault(q.predicate.value, []).append(q.object)
    manifest = ox.NamedNode(base + "manifest.ttl")
    node, entries = props[manifest][MF + "entries"][0], []
    while node != ox.NamedNode(RDF + "nil"):
        entries.append(props[node][RDF + "first"][0])
        node = props[node][RDF + "rest"][0]

    def local(iri) -> Path:
        assert iri.value.startswith(base), iri
        return folder / iri.value[len(base):]
    cases = []
    for test in entries:
        p = props[test]
        kind = _kind(p[RDF + "type"][0].value)
        assert kind is not None, p[RDF + "type"]
        action = p[MF + "action"][0]
        result = p.get(MF + "result", [None])[0]
        cases.append(Case(suite, p[MF + "name"][0].value, kind, local(action), action.value,
                          local(result) if kind == "eval" else None))
    return cases


ALL = [c for s in ("rdf-n-triples", "rdf-n-quads", "rdf-turtle", "rdf-trig") for c in manifest_cases(s)]


def _rdflib_term(term, bnodes: bool, bnode_prefix: str = ""):
    if isinstance(term, ox.BlankNode):
        return rdflib.BNode(bnode_prefix + term.value)
    if isinstance(term, ox.NamedNode):
        if bnodes and term.value.startswith(GENID):  # a Skolem IRI is the blank node it stands for
            return rdflib.BNode(term.value[len(GENID):])
        return rdflib.URIRef(term.value)
    if term.language:
        return rdflib.Literal(term.value, lang=term.language)
    # normalize=False: compare lexical forms as written, not rdflib's canonical values
    return rdflib.Literal(term.value, datatype=rdflib.URIRef(term.datatype.value), normalize=False)


def graph_of(path: Path, unskolemise: bool = False, bnode_prefix: str = "") -> rdflib.Graph:
    """An N-Triples/N-Quads file as one rdflib graph (graph names dropped), read by Oxigraph."""
    g = rdflib.Graph()
    fmt = ox.RdfFormat.N_QUADS if path.suffix == ".nq" else ox.RdfFormat.N_TRIPLES
    for q in ox.parse(path=path, format=fmt):
        g.add(tuple(_rdflib_term(t, unskolemise, bnode_prefix) for t in (q.subject, q.predicate, q.object)))
    return g


def reader_outcome(case: Case) -> tuple[int, int]:
    """(statements read, rejects) of the `rdf:` reader on one test file (the ingest's parse step)."""
    reader = reader_registry.get("rdf")()
    spec_options = {"base": case.base}
    (planned,) = reader.plan(case.action, spec_options)
    batch = reader.parse_file(planned.path, planned.role, reader.prepare([planned], spec_options))
    kinds = batch.column("kind").to_pylist()
    return sum(k != R.REJECT for k in kinds), kinds.count(R.REJECT)


def round_trip(case: Case, tmp: Path) -> tuple[rdflib.Graph, rdflib.Graph]:
    """(expected graph, the graph `ingest --strict` + `export nt --no-annotations` gives back)."""
    result = ingest(tmp / "kg", [f"rdf:{case.action}"], engine="local", strict=True, base=case.base)
    export(result.store, tmp / "out.nt", "nt", annotations=False)
    return graph_of(case.result), graph_of(tmp / "out.nt", unskolemise=True)


SYNTAX = [c for c in ALL if c.kind != "eval"]
EVAL = [c for c in ALL if c.kind == "eval"]


def test_the_suites_are_all_here():
    """Counts of the vendored manifests (w3c/rdf-tests, RDF 1.1): nothing silently skipped."""
    counts = {(s, k): sum(c.suite == s and c.kind == k for c in ALL)
              for s in ("rdf-n-triples", "rdf-n-quads", "rdf-turtle", "rdf-trig")
              for k in ("positive", "negative", "eval")}
    assert counts == {
        ("rdf-n-triples", "positive"): 41, ("rdf-n-triples", "negative"): 29, ("rdf-n-triples", "eval"): 0,
        ("rdf-n-quads", "positive"): 53, ("rdf-n-quads", "negative"): 34, ("rdf-n-quads", "eval"): 0,
        ("rdf-turtle", "positive"): 74, ("rdf-turtle", "negative"): 94, ("rdf-turtle", "eval"): 145,
        ("rdf-trig", "positive"): 98, ("rdf-trig", "negative"): 115, ("rdf-trig", "eval"): 143,
    }


@pytest.mark.parametrize("case", SYNTAX, ids=lambda c: c.id)
def test_syntax(case):
    read, rejects = reader_outcome(case)
    if case.kind == "positive":
        assert rejects == 0, f"{case.id}: a valid document gave {rejects} reject(s)"
    else:
        assert rejects >= 1, f"{case.id}: an invalid document was accepted ({read} records)"


def _eval_param(c: Case):
    # TriG evaluations repeat the Turtle ones inside graphs: run by the slow tier only
    return pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.suite == "rdf-trig" else [])


@pytest.mark.parametrize("case", [_eval_param(c) for c in EVAL])
def test_evaluation_round_trips(case, tmp_path):
    expected, got = round_trip(case, tmp_path)
    assert isomorphic(expected, got), (f"{case.id}: export differs\nmissing: {sorted(expected - got)[:5]}\n"
                                      f"extra: {sorted(got - expected)[:5]}")


def _strict_param(c: Case):
    # a refusal stops before anything is written (fast); an accepted source commits a store: the
    # positive ones run in the slow tier (the reader's verdict on them is test_syntax's)
    return pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.kind == "positive" else [])


@pytest.mark.parametrize("case", [_strict_param(c) for c in SYNTAX])
def test_strict_ingest(case, tmp_path):
    if case.kind == "negative":
        with pytest.raises(IngestRejectedError, match="rejected"):
            ingest(tmp_path / "kg", [f"rdf:{case.action}"], engine="local", strict=True, base=case.base)
    else:
        result = ingest(tmp_path / "kg", [f"rdf:{case.action}"], engine="local", strict=True, base=case.base)
        assert result.counts["rejects_added"] == 0


def test_the_default_export_adds_annotations_and_no_annotations_is_the_input(tmp_path):
    """`--no-annotations`: exactly the statements ingested; the default adds derived labels and
    descriptions, but no second label where the input stated one."""
    ttl = tmp_path / "a.ttl"
    ttl.write_text('@prefix ex: <http://ex.org/> . @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n'
                   'ex:a rdfs:label "A"@en ; ex:p ex:b ; ex:n "1"^^<urn:dt> .\n')
    store = ingest(tmp_path / "kg", [f"rdf:{ttl}"], engine="local", strict=True).store
    export(store, tmp_path / "bare.nt", "nt", annotations=False)
    export(store, tmp_path / "full.nt", "nt")
    given = graph_of_turtle(ttl)
    bare, full = graph_of(tmp_path / "bare.nt"), graph_of(tmp_path / "full.nt")
    assert isomorphic(bare, given)
    added = full - bare
    # derived labels (URI tails) of the entity and the relation that had none
    assert {(str(s), str(p), str(o)) for s, p, o in added} == {
        ("http://ex.org/b", str(rdflib.RDFS.label), "b"), ("http://ex.org/p", str(rdflib.RDFS.label), "p")}


def graph_of_turtle(path: Path) -> rdflib.Graph:
    g = rdflib.Graph()
    for q in ox.parse(path=path, format=ox.RdfFormat.TURTLE):
        g.add(tuple(_rdflib_term(t, False) for t in (q.subject, q.predicate, q.object)))
    return g


# ---- the real CLI, one case of each kind ------------------------------------------------------------
def _case(suite: str, name: str) -> Case:
    return next(c for c in ALL if c.suite == suite and c.name == name)


def test_cli_positive_syntax_with_a_per_source_base(tmp_path):
    case = _case("rdf-turtle", "IRI-resolution-01")
    run = mmkg("ingest", "--kg", tmp_path / "kg", "--engine", "local", "--strict",
               "--source", f"rdf(base={case.base}):{case.action}", timeout=180)
    assert run.rc == 0, str(run)
    assert_no_traceback(run)


def test_cli_negative_syntax_is_refused_without_a_traceback(tmp_path):
    case = _case("rdf-turtle", "turtle-syntax-bad-struct-09")
    run = mmkg("ingest", "--kg", tmp_path / "kg", "--engine", "local", "--strict", "--base", case.base,
               "--source", f"rdf:{case.action}", timeout=180)
    assert run.rc == 3, str(run)
    assert_no_traceback(run)
    assert re.search(r"turtle-syntax-bad-struct-09\.ttl:\d+: not Turtle", run.stderr), run.stderr


def test_cli_evaluation_round_trip(tmp_path):
    """Three evaluation tests in one store (relative IRIs resolved against a per-source base, a CR
    in a literal, labelled blank nodes): `export --no-annotations` gives back exactly their union."""
    cases = [_case("rdf-turtle", "IRI-resolution-07"), _case("rdf-turtle", "literal_with_CARRIAGE_RETURN"),
             _case("rdf-turtle", "labeled_blank_node_subject")]
    kg, out = tmp_path / "kg", tmp_path / "out.nt"
    run = mmkg("ingest", "--kg", kg, "--engine", "local", "--strict", "--base", "http://unused.example/",
               "--source", f"rdf(base={cases[0].base}):{cases[0].action}",
               *(a for c in cases[1:] for a in ("--source", f"rdf:{c.action}")), timeout=180)
    assert run.rc == 0, str(run)
    run = mmkg("export", "--kg", kg, "--format", "nt", "--no-annotations", "--out", out, timeout=180)
    assert run.rc == 0, str(run)
    assert_no_traceback(run)
    expected = rdflib.Graph()
    for c in cases:  # blank nodes of different files are different nodes
        expected += graph_of(c.result, bnode_prefix=c.name)
    assert isomorphic(expected, graph_of(out, unskolemise=True))
