"""rdflib/networkx views of the real MarKG store: SPARQL counts agree with the tables, exports
round-trip with the same triple count, subgraphs read only their part."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pyarrow.compute as pc
import pytest
import rdflib

from mmkg.kg_store import rdf
from mmkg.kg_store.errors import ConfigError, KGStoreError
from tests.stores import build_markg_store

ZEBRA = "Q32789"


@pytest.fixture(scope="module")
def store(data_dir, tmp_path_factory):
    return build_markg_store(data_dir, tmp_path_factory.mktemp("rdf") / "kg")


def _relation_counts(store) -> dict[str, int]:
    r = store.table("triples", ["r"])["r"].to_numpy()
    keys = store.table("relations", ["key"])["key"].to_pylist()
    counts = np.bincount(r, minlength=len(keys))
    return {keys[i]: int(c) for i, c in enumerate(counts) if c}


def _value(result) -> int:
    (row,) = list(result)
    return int(row[0])


@pytest.mark.parametrize("key, uri", [
    ("Q32789", "http://www.wikidata.org/entity/Q32789"),
    ("/m/0abc_1", "urn:mmkg:entity:%2Fm%2F0abc_1"),
    ("<http://dbpedia.org/resource/Alabama>", "http://dbpedia.org/resource/Alabama"),
    ("Category:Soy milk", "urn:mmkg:entity:Category%3ASoy%20milk"),
    ("urn:isbn:0451450523", "urn:isbn:0451450523"),  # an IRI of any scheme is itself (issue 33)
    ("tag:example.org,2026:x", "tag:example.org,2026:x"),
    ("Category:Foo%zz", "urn:mmkg:entity:Category%3AFoo%25zz"),  # not a valid IRI
])
def test_entity_uris_are_stable_and_invertible(key, uri):
    assert str(rdf.entity_uri(key)) == uri
    assert rdf.key_from_uri(uri) == key.strip("<>")


def test_blank_node_keys_of_older_stores_export_as_skolem_iris():
    assert str(rdf.entity_uri("_:b0123")) == rdf.GENID + "b0123"
    assert rdf.GENID.endswith("/.well-known/genid/")


def test_relation_uris():
    assert str(rdf.relation_uri("P31")) == "http://www.wikidata.org/prop/direct/P31"
    assert str(rdf.relation_uri("A12")) == "urn:mmkg:relation:A12"
    assert rdf.key_from_uri(str(rdf.relation_uri("A12"))) == "A12"


def test_dense_by_id_keeps_one_row_per_id():
    import pyarrow as pa
    t = pa.table({"id": [0, 1, 1, 2], "label": ["a", "b", "b-alias", "c"]})
    assert rdf.dense_by_id(t)["label"].to_pylist() == ["a", "b", "c"]
    with pytest.raises(KGStoreError):
        rdf.dense_by_id(pa.table({"id": [0, 2], "label": ["a", "c"]}))


def test_sparql_counts_match_the_tables(store):
    counts = _relation_counts(store)
    assert _value(rdf.sparql(store, "SELECT (COUNT(*) AS ?n) WHERE { ?h wdt:P31 ?t }")) == counts["P31"]
    assert _value(rdf.sparql(store, "SELECT (COUNT(*) AS ?n) WHERE { ?h <urn:mmkg:relation:A12> ?t }")) \
        == counts["A12"]
    # every relational triple once: all statements minus the annotation ones
    n_rel = _value(rdf.sparql(store, """SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o
        FILTER(?p NOT IN (rdfs:label, schema:description, foaf:depiction)) }"""))
    assert n_rel == store.count("triples") == 33_301
    # descriptions: one per entity and relation with a non-empty description
    n_desc = sum(int(pc.sum(pc.greater(pc.utf8_length(pc.fill_null(store.table(t, ["description"])["description"],
                                                                   "")), 0)).as_py() or 0)
                 for t in ("entities", "relations"))
    assert _value(rdf.sparql(store, "SELECT (COUNT(DISTINCT ?e) AS ?n) WHERE { ?e schema:description ?d }")) == n_desc
    # the zebra's out-degree by SPARQL = by the tables
    zid = int(store.entity_ids([ZEBRA])[0])
    h = store.table("triples", ["h"])["h"].to_numpy()
    assert _value(rdf.sparql(store, 'SELECT (COUNT(*) AS ?n) WHERE { ?z rdfs:label "zebra" . ?z ?p ?o . '
                                    'FILTER(STRSTARTS(STR(?p), STR(wdt:))) }')) == int((h == zid).sum())
    assert bool(rdf.sparql(store, "ASK { wd:Q32789 wdt:P171 ?parent }").askAnswer)


def test_sparql_rejects_updates_and_bad_syntax_in_one_line(store):
    for q in ("INSERT DATA { wd:Q1 wdt:P31 wd:Q2 }", "SELEKT ?x WHERE { ?x ?y ?z }"):
        with pytest.raises(KGStoreError) as e:
            rdf.sparql(store, q)
        assert "\n" not in str(e.value)
    assert _value(rdf.sparql(store, "SELECT (COUNT(*) AS ?n) WHERE { ?h wdt:P31 ?t }")) > 0  # cache unharmed


def test_one_hop_subgraph_equals_the_table_filter(store):
    zid = int(store.entity_ids([ZEBRA])[0])
    tri = store.triples_array()
    expected = np.flatnonzero((tri[:, 0] == zid) | (tri[:, 2] == zid))
    tids = rdf.neighbourhood_triples(store, [zid], hops=1)
    assert tids.tolist() == expected.tolist() and len(tids) == 7
    two = rdf.neighbourhood_triples(store, [zid], hops=2)
    nodes = np.union1d(tri[tids, 0], tri[tids, 2])
    assert set(two.tolist()) == set(np.flatnonzero(np.isin(tri[:, 0], nodes) | np.isin(tri[:, 2], nodes)).tolist())


def test_networkx_views(store):
    g = rdf.to_networkx(store)
    assert isinstance(g, nx.MultiDiGraph)
    assert (g.number_of_nodes(), g.number_of_edges()) == (11_292, 33_301)
    zid = int(store.entity_ids([ZEBRA])[0])
    assert g.nodes[zid]["label"] == "zebra" and g.out_degree(zid) + g.in_degree(zid) == 7
    tids = rdf.neighbourhood_triples(store, [zid], hops=1)
    sub = rdf.to_networkx(store, tids)
    assert sub.number_of_edges() == len(tids)
    assert sorted(k for _, _, k in sub.edges(keys=True)) == tids.tolist()  # edge key = triple id
    assert sub.number_of_nodes() == 8
    for a, b, k, d in sub.edges(keys=True, data=True):
        assert d["relation"] == g.edges[a, b, k]["relation"]


def test_full_exports_round_trip(store, tmp_path):
    nt = rdf.export(store, tmp_path / "kg.nt", "nt")
    g = rdflib.Graph().parse(tmp_path / "kg.nt", format="nt")
    assert len(g) == nt["statements"]
    annotations = {rdflib.RDFS.label, rdflib.SDO.description, rdflib.FOAF.depiction}
    assert sum(1 for p in g.predicates(unique=False) if p not in annotations) == nt["triples"] == 33_301

    gm = rdf.export(store, tmp_path / "kg.graphml", "graphml")
    back = nx.read_graphml(tmp_path / "kg.graphml")
    assert back.is_multigraph() and back.is_directed()
    assert (back.number_of_nodes(), back.number_of_edges()) == (gm["nodes"], gm["triples"]) == (11_292, 33_301)


def test_subgraph_exports_round_trip(store, tmp_path):
    zid = int(store.entity_ids([ZEBRA])[0])
    tids = rdf.neighbourhood_triples(store, [zid], hops=2)
    seen = []
    ttl = rdf.export(store, tmp_path / "z.ttl", "ttl", tids, annotations=False,
                     progress=lambda done, total: seen.append((done, total)))
    assert ttl["triples"] == len(tids) == len(rdflib.Graph().parse(tmp_path / "z.ttl", format="turtle"))
    assert seen[-1] == (len(tids), len(tids))
    gx = rdf.export(store, tmp_path / "z.gexf", "gexf", tids)
    back = nx.read_gexf(tmp_path / "z.gexf")
    assert back.number_of_edges() == gx["triples"] == len(tids)
    with pytest.raises(ConfigError):
        rdf.export(store, tmp_path / "z.xyz", "xyz")
    assert not (tmp_path / "z.xyz").exists()
