"""The persistent SPARQL store (issue 30) on the real MarKG store with its images (plus YAGO15K's
numerical literals, which MarKG lacks): the same answers as
rdflib's in-memory graph of the same statements, registered in the manifest, verified, collected by gc,
built by the DAG stage once."""
from __future__ import annotations

import shutil
from pathlib import Path
from decimal import Decimal

import pytest
from rdflib import BNode, Literal, URIRef

from mmkg.kg_store import open_store, rdf
from mmkg.kg_store.sparql_query import sparql_page
from mmkg.kg_store.sparql_store import ARTIFACT, build_sparql_store, current_meta, nt_file_digest, verify_sparql_store
from tests.jobs.analyst_fixtures import markg_images_kg

#: real questions an analyst asks of MarKG: counts, labels, literals, images, 2 hops, OPTIONAL, ASK
QUERIES = {
    "count by relation": "SELECT ?p (COUNT(*) AS ?n) WHERE { ?s ?p ?o } GROUP BY ?p",
    "labels of zebra's neighbours": 'SELECT ?o ?label WHERE { ?z rdfs:label "zebra" . ?z ?p ?o . ?o rdfs:label ?label }',
    "description": "SELECT ?d WHERE { wd:Q32789 schema:description ?d }",
    "literals": "SELECT ?e ?a ?v (DATATYPE(?v) AS ?dt) (LANG(?v) AS ?lang) WHERE { ?e ?a ?v . FILTER(isLiteral(?v)) "
                "FILTER(?a NOT IN (rdfs:label, schema:description)) }",
    "entities with images": "SELECT (COUNT(DISTINCT ?e) AS ?n) (COUNT(*) AS ?pairs) WHERE { ?e foaf:depiction ?img }",
    "images of zebra": 'SELECT ?img WHERE { ?z rdfs:label "zebra" ; foaf:depiction ?img }',
    "two hops from zebra": "SELECT ?p1 ?mid ?p2 ?end WHERE { wd:Q32789 ?p1 ?mid . ?mid ?p2 ?end . FILTER(isIRI(?end)) }",
    "optional labels": "SELECT ?t ?l WHERE { wd:Q32789 wdt:P31 ?t OPTIONAL { ?t rdfs:label ?l } }",
    "analogy relations": "SELECT (COUNT(*) AS ?n) WHERE { ?h ?r ?t FILTER(STRSTARTS(STR(?r), 'urn:mmkg:relation:')) }",
    "distinct subjects": "SELECT (COUNT(DISTINCT ?s) AS ?n) WHERE { ?s ?p ?o }",
}


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sparql") / "kg"
    shutil.copytree(markg_images_kg(data_dir, tmp_path_factory), root)
    # MarKG has no literal rows: add the first 3,000 of YAGO15K's numerical attributes (typed literals)
    from mmkg.pipeline.ingest import ingest
    lines = (data_dir / "mmkg" / "YAGO15K" / "YAGO15K_NumericalTriples.v984182b.txt").read_text().splitlines()
    part = root.parent / "yago_numerical.txt"
    part.write_text("\n".join(lines[:3000]) + "\n")
    ingest(root, [f"literals:{part}"], engine="local")
    return root


_NUMERIC = {str(rdf.XSD[n]) for n in ("decimal", "integer", "double", "float")}


def _value(text: str, datatype: str):
    """Oxigraph keeps numbers by value ("1906.0000"^^xsd:decimal is read back as "1906"), rdflib keeps
    the lexical form: numbers compare by value, everything else as text."""
    return Decimal(text) if datatype in _NUMERIC else text


def _rdflib_term(t) -> tuple | None:
    if t is None:
        return None
    if isinstance(t, URIRef):
        return ("uri", str(t), "")
    if isinstance(t, BNode):
        return ("bnode", "", "")
    assert isinstance(t, Literal)
    extra = t.language or (str(t.datatype) if t.datatype and str(t.datatype) != rdf.XSD.string else "")
    return ("literal", _value(str(t), extra), extra)


def _json_term(t) -> tuple | None:
    if t is None:
        return None
    extra = t.get("xml:lang") or t.get("datatype", "")
    return (t["type"], "" if t["type"] == "bnode" else _value(t["value"], extra), extra)


def test_the_store_answers_like_rdflib(kg):
    meta = build_sparql_store(kg)
    store = open_store(kg)
    graph = rdf.to_rdf_graph(store)
    assert meta["statements"] == meta["nt_statements"] == len(graph)  # the export's statements, all of them
    for name, q in QUERIES.items():
        ours = sparql_page(store, q, limit=100_000)
        theirs = graph.query(q, initNs=rdf.PREFIXES)
        assert ours.vars == [str(v) for v in theirs.vars], name
        got = sorted(tuple(_json_term(c) for c in row) for row in ours.rows)
        want = sorted(tuple(_rdflib_term(c) for c in row) for row in theirs)
        assert got == want and got, name
    # and the values that make those answers worth comparing
    by_rel = {r[0]["value"]: int(r[1]["value"]) for r in sparql_page(store, QUERIES["count by relation"],
                                                                      limit=1000).rows}
    assert by_rel["http://www.wikidata.org/prop/direct/P1343"] == 4430
    two_hop = sparql_page(store, QUERIES["two hops from zebra"], limit=10_000)
    ents = store.table("entities", ["key", "label"]).to_pylist()
    equus = next(e["key"] for e in ents if e["label"] == "Equus")
    assert str(rdf.entity_uri(equus)) in {r[1]["value"] for r in two_hop.rows}  # zebra → parent taxon → …
    ask = sparql_page(store, "ASK { wd:Q32789 wdt:P171 ?parent }")
    assert ask.type == "ASK" and ask.ask is True and bool(graph.query("ASK { wd:Q32789 wdt:P171 ?parent }",
                                                                      initNs=rdf.PREFIXES).askAnswer)


def test_registered_verified_and_rebuilt_only_when_the_tables_change(kg):
    meta = build_sparql_store(kg)
    store = open_store(kg)
    assert store.artifact(ARTIFACT)["path"] == f"sparql/v{store.kg_version:06d}"
    assert f"{meta['path']}.json" in store.manifest["files"]  # the build meta, hashed by verify
    assert not any(f.startswith(meta["path"] + "/") for f in store.manifest["files"])  # RocksDB files are not
    assert store.verify() == [] and verify_sparql_store(store) == []
    again = build_sparql_store(kg)
    assert again["built"] is False and again["nt_digest"] == meta["nt_digest"]
    # built from the export's statements: `mmkg export --format nt` has the same lines (in another order)
    export = rdf.export(store, kg.parent / "kg.nt", "nt")
    assert nt_file_digest(kg.parent / "kg.nt") == meta["nt_digest"] and export["bytes"] == meta["nt_bytes"]
    # a database that lost statements (or its folder) is reported by verify
    db = kg / meta["path"]
    shutil.move(db, kg / "moved-away")
    try:
        assert current_meta(open_store(kg)) is None
        assert "missing" in verify_sparql_store(open_store(kg))[0]
    finally:
        shutil.move(kg / "moved-away", db)


def test_gc_collects_stores_no_kept_version_names(kg):
    from mmkg.kg_store.gc import collect_garbage
    build_sparql_store(kg)
    stale = kg / "sparql" / "v000000"
    shutil.copytree(kg / open_store(kg).artifact(ARTIFACT)["path"], stale)  # an older version's store
    (kg / "sparql" / "v000000.json").write_text("{}")
    current = Path(open_store(kg).artifact(ARTIFACT)["path"]).name
    # the shared source KG may already hold a store of an older version (a test that queried it first)
    others = [p for p in (kg / "sparql").iterdir() if p.is_dir() and p.name != current]
    out = collect_garbage(kg, keep=1)
    assert out["sparql_stores_deleted"] == len(others) >= 1
    assert not stale.exists() and not (kg / "sparql" / "v000000.json").exists()
    assert (kg / "sparql" / current).is_dir()
    assert current_meta(open_store(kg)) is not None and open_store(kg).verify() == []


def test_the_dag_stage_builds_once(kg, data_dir):
    from mmkg.jobs.runner import run_pipeline
    shutil.rmtree(kg / "sparql")
    first = run_pipeline(kg=kg, data=data_dir, sparql={}, progress=False)
    s = first.stage("sparql")
    assert s.status == "ran" and s.counts["statements"] > 56_000, s
    assert current_meta(open_store(kg)) is not None
    second = run_pipeline(kg=kg, data=data_dir, sparql={}, progress=False)
    assert second.stage("sparql").status == "cached"
