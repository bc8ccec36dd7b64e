"""`mmkg stats/entity/neighbors/sparql/export` on MarKG ingested with its real images."""
from __future__ import annotations

import json
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import rdflib
from click.testing import CliRunner

from mmkg.jobs.cli import cli
from mmkg.kg_store import open_store
from tests.conftest import REPO
from tests.jobs.analyst_fixtures import markg_images_kg


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return str(markg_images_kg(data_dir, tmp_path_factory))


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_stats_keeps_its_keys_and_adds_the_analyst_counts(kg):
    s = json.loads(run("stats", "--kg", kg, "--json", "--top", "5"))
    store = open_store(kg)
    assert {k: s[k] for k in store.stats()} == store.stats()  # the existing keys, unchanged
    (src, n), = s["by_source"]["triples"].items()  # source names are ingest's (e.g. "markg:MarKG")
    assert src.startswith("markg") and n == 33_301
    assert sum(s["by_source"]["images"].values()) == s["images"] == store.count("images") > 0
    r = store.table("triples", ["r"])["r"].to_numpy()
    keys = store.table("relations", ["key"])["key"].to_pylist()
    top = sorted(((int(c), keys[i]) for i, c in enumerate(np.bincount(r))), reverse=True)[:5]
    assert [(x["count"], x["key"]) for x in s["relation_frequency"]] == top
    assert s["relation_frequency"][0] == {"key": "P1343", "label": "described by source", "count": 4430}
    assert s["relations_used"] == 191
    deg = s["degree"]
    assert deg["nodes"] == 11_292 and deg["isolated"] == 11_292 - 10_182  # README: 10,182 entities in triples
    assert sum(b["count"] for b in deg["histogram"]) == 11_292
    ents_with_images = len(set(store.table("images", ["entity_id"])["entity_id"].to_pylist()))
    assert s["image_coverage"]["entities_with_images"] == ents_with_images
    assert s["rejects_by_reason"] == {}
    text = run("stats", "--kg", kg)
    assert "image coverage" in text and "P1343" in text and "degree:" in text


def test_entity_by_label_and_by_key(kg):
    card = json.loads(run("entity", "zebra", "--kg", kg, "--json"))
    assert card["key"] == "Q32789" and card["sources"]
    assert len(card["images"]) == 1 and len(card["images"][0]["sha256"]) == 64
    assert sum(len(g["neighbours"]) for g in card["neighbours"]) == card["degree"] == 7
    parent = next(g for g in card["neighbours"] if g["relation"] == "P171")
    assert parent["direction"] == "out" and parent["neighbours"][0]["label"] == "Equus"
    assert json.loads(run("entity", "Q32789", "--kg", kg, "--json"))["id"] == card["id"]
    text = run("entity", "zebra", "--kg", kg)
    assert "parent taxon" in text and "Equus" in text and "image " in text


def test_neighbors_pages_through_two_hops(kg):
    first = json.loads(run("neighbors", "zebra", "--kg", kg, "--hops", "2", "--json", "--limit", "100"))
    rest = json.loads(run("neighbors", "zebra", "--kg", kg, "--hops", "2", "--json", "--limit", "100000",
                          "--offset", "100"))
    assert first["total"] == rest["total"] > 100
    ids = [t["triple_id"] for t in first["triples"] + rest["triples"]]
    assert len(ids) == len(set(ids)) == first["total"]
    one = json.loads(run("neighbors", "Q32789", "--kg", kg, "--json"))
    assert one["total"] == 7
    assert "more (use --offset 3)" in run("neighbors", "zebra", "--kg", kg, "--limit", "3")


def test_sparql_json_and_table_agree_with_the_tables(kg):
    store = open_store(kg)
    p31 = int(store.relation_ids(["P31"])[0])
    n_p31 = int((store.table("triples", ["r"])["r"].to_numpy() == p31).sum())
    out = json.loads(run("sparql", "--kg", kg, "--json", "SELECT (COUNT(*) AS ?n) WHERE { ?h wdt:P31 ?t }"))
    assert out["vars"] == ["n"] and int(out["rows"][0]["n"]) == n_p31
    q = "SELECT ?t WHERE { wd:Q32789 ?p ?t }"
    everything = json.loads(run("sparql", "--kg", kg, "--json", q))
    n = everything["total"]  # 7 triples + label, description, image, and the entity's literals
    assert n >= 7 + 3 and len(everything["rows"]) == n and everything["more"] is False
    rows = json.loads(run("sparql", "--kg", kg, "--json", "--limit", "2", q))
    # --limit stops the evaluation: the total is not counted, only that more rows follow
    assert rows["more"] is True and rows["total"] is None and len(rows["rows"]) == 2
    assert rows["rows"] == everything["rows"][:2]
    table = run("sparql", "--kg", kg, q, "--limit", "3")
    assert "more rows (use --offset 3)" in table
    assert f"({n} rows)" in run("sparql", "--kg", kg, q, "--limit", str(n))
    assert run("sparql", "--kg", kg, "ASK { wd:Q32789 rdfs:label \"zebra\" }").strip() == "true"


def test_export_subgraph_and_whole_kg_round_trip(kg, tmp_path):
    out = json.loads(run("export", "--kg", kg, "--format", "ttl", "--out", str(tmp_path / "z.ttl"),
                         "--subgraph", "zebra,Q1", "--json", "--no-annotations"))
    g = rdflib.Graph().parse(tmp_path / "z.ttl", format="turtle")
    assert len(g) == out["triples"] == 7 + 25
    out = json.loads(run("export", "--kg", kg, "--format", "graphml", "--out", str(tmp_path / "kg.graphml"),
                         "--json", "-q"))
    back = nx.read_graphml(tmp_path / "kg.graphml")
    assert back.number_of_edges() == out["triples"] == 33_301


def test_user_errors_are_one_line(kg, tmp_path):
    for args, needle in ((["entity", "no such entity xyz"], "no entity with key or label"),
                         (["sparql", "SELEKT nothing"], "SPARQL error"),
                         (["export", "--format", "nt", "--out", str(tmp_path / "x.nt"), "--subgraph", "nope-nope"],
                          "no entity")):
        p = subprocess.run([sys.executable, "-m", "mmkg.jobs", *args, "--kg", kg], capture_output=True, text=True,
                           cwd=REPO, timeout=120)
        assert p.returncode == 1, p.stderr
        assert needle in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.nt").exists()


@pytest.fixture(scope="module")
def db15k(data_dir, tmp_path_factory) -> str:
    """DB15K triples + DB15K→FB sameAs + FB→Wikidata map: DBpedia URIs and mids merge into QIDs."""
    from mmkg.pipeline.ingest import ingest
    mm = data_dir / "mmkg"
    root = tmp_path_factory.mktemp("db15k") / "kg"
    ingest(root, [f"mmkg:{mm / 'DB15K' / 'DB15K_EntityTriples.reconstructed.txt'}",
                  f"sameas:{mm / 'DB15K' / 'DB15K_SameAsLink.txt'}",
                  f"fbmap:{mm / 'FB15K' / 'fb15k_mid-wdurl-wpurl_14951.txt'}"], engine="local")
    return str(root)


def test_db15k_merged_keys_sparql_and_export(db15k, tmp_path):
    store = open_store(db15k)
    assert store.count("triples") == 89_197  # README: 99,028 lines, 89,197 distinct
    card = json.loads(run("entity", "http://dbpedia.org/resource/Alabama", "--kg", db15k, "--json"))
    merged = {m["key"] for m in card["merged_keys"]}
    assert "http://dbpedia.org/resource/Alabama" in merged and any(k.startswith("/m/") for k in merged)
    mid = next(k for k in merged if k.startswith("/m/"))
    assert json.loads(run("entity", mid, "--kg", db15k, "--json"))["id"] == card["id"]  # alias → same node
    capital = next(g for g in card["neighbours"] if g["relation"] == "http://dbpedia.org/ontology/capital")
    assert capital["direction"] == "out" and len(capital["neighbours"]) >= 1

    # SPARQL over the whole DB15K store = counts from the triples table
    rid = int(store.relation_ids(["http://dbpedia.org/ontology/capital"])[0])
    n_capital = int((store.table("triples", ["r"])["r"].to_numpy() == rid).sum())
    out = json.loads(run("sparql", "--kg", db15k, "--json",
                         "SELECT (COUNT(*) AS ?n) WHERE { ?s <http://dbpedia.org/ontology/capital> ?o }"))
    assert int(out["rows"][0]["n"]) == n_capital > 0

    # a 1-hop N-Triples export with DBpedia predicates round-trips with the same triple count
    out = json.loads(run("export", "--kg", db15k, "--format", "nt", "--out", str(tmp_path / "al.nt"),
                         "--subgraph", card["key"], "--no-annotations", "--json"))
    g = rdflib.Graph().parse(tmp_path / "al.nt", format="nt")
    one_hop = json.loads(run("neighbors", card["key"], "--kg", db15k, "--json"))["total"]
    assert len(g) == out["triples"] == one_hop > 0
    assert rdflib.URIRef("http://dbpedia.org/ontology/capital") in set(g.predicates())
