"""`mmkg serve`'s SPARQL 1.1 Protocol endpoint (issue 30), driven by a real SPARQL client
(SPARQLWrapper) against a real running server on the MarKG store with its images."""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from SPARQLWrapper import CSV, JSON, POST, SPARQLWrapper

from mmkg.kg_store import open_store
from tests.conftest import REPO
from tests.jobs.analyst_fixtures import markg_images_kg
from tests.reliability.hostile_fixtures import Listener

COUNT_P31 = "SELECT (COUNT(*) AS ?n) WHERE { ?h wdt:P31 ?t }"


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return markg_images_kg(data_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def server(kg):
    proc = subprocess.Popen([sys.executable, "-m", "mmkg.jobs", "serve", "--kg", str(kg), "--port", "0",
                             "--sparql-max-rows", "1000", "--sparql-timeout", "20"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()  # "serving KG on http://127.0.0.1:PORT/ ..." (after the store is built)
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"mmkg serve did not start: {line}"
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _n_p31(kg) -> int:
    store = open_store(kg)
    p31 = int(store.relation_ids(["P31"])[0])
    return int((store.table("triples", ["r"])["r"].to_numpy() == p31).sum())


def test_sparqlwrapper_json_and_csv(server, kg):
    client = SPARQLWrapper(server + "sparql")
    client.setQuery(COUNT_P31)
    client.setReturnFormat(JSON)
    doc = client.query().convert()
    assert doc["head"]["vars"] == ["n"]
    assert int(doc["results"]["bindings"][0]["n"]["value"]) == _n_p31(kg) == 3593
    client.setQuery('SELECT ?label ?d WHERE { ?z rdfs:label "zebra" ; wdt:P171 ?p ; schema:description ?d . '
                    '?p rdfs:label ?label }')
    client.setMethod(POST)  # form-encoded POST
    (row,) = client.query().convert()["results"]["bindings"]
    assert row["label"] == {"type": "literal", "value": "Equus"}
    client.setReturnFormat(CSV)
    client.setMethod("GET")
    client.setQuery("SELECT ?p (COUNT(*) AS ?n) WHERE { ?s ?p ?o } GROUP BY ?p ORDER BY DESC(?n) ?p LIMIT 5")
    rows = list(csv.DictReader(io.StringIO(client.query().convert().decode())))
    assert len(rows) == 5 and rows[2] == {"p": "http://www.wikidata.org/prop/direct/P1343", "n": "4430"}


def _http(url: str, *, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def test_protocol_forms_and_result_formats(server):
    q = urllib.parse.quote(COUNT_P31)
    code, ctype, body = _http(server + "sparql", data=COUNT_P31.encode(),
                              headers={"Content-Type": "application/sparql-query",
                                       "Accept": "application/sparql-results+xml"})
    assert code == 200 and ctype.startswith("application/sparql-results+xml") and ">3593<" in body
    code, ctype, body = _http(f"{server}sparql?query={q}", headers={"Accept": "text/tab-separated-values"})
    assert code == 200 and body.split() == ["?n", "3593"]
    code, ctype, body = _http(f"{server}sparql?query={urllib.parse.quote('ASK { wd:Q32789 wdt:P171 ?x }')}")
    assert code == 200 and json.loads(body)["boolean"] is True
    code, ctype, body = _http(f"{server}sparql?query=" + urllib.parse.quote(
        "CONSTRUCT { wd:Q32789 rdfs:label ?l } WHERE { wd:Q32789 rdfs:label ?l }"))
    assert code == 200 and body.strip() == '<http://www.wikidata.org/entity/Q32789> ' \
        '<http://www.w3.org/2000/01/rdf-schema#label> "zebra" .'
    # the row cap: an answer larger than --sparql-max-rows is refused, not silently cut
    code, _, body = _http(f"{server}sparql?query={urllib.parse.quote('SELECT * WHERE { ?s ?p ?o }')}")
    assert code == 400 and "LIMIT" in body


def test_updates_service_and_from_are_refused(server):
    update = "INSERT DATA { <urn:a> <urn:b> <urn:c> }"
    for data, headers in ((urllib.parse.urlencode({"update": update}).encode(), {}),
                          (update.encode(), {"Content-Type": "application/sparql-update"}),
                          (urllib.parse.urlencode({"query": update}).encode(), {})):
        code, _, body = _http(server + "sparql", data=data, headers=headers)
        assert code == 400, body
    code, _, body = _http(f"{server}sparql?query=" + urllib.parse.quote("ASK { <urn:a> <urn:b> <urn:c> }"))
    assert code == 200 and json.loads(body)["boolean"] is False  # nothing was inserted
    listener = Listener()
    try:
        for q in (f"SELECT * WHERE {{ SERVICE <{listener.url}/sparql> {{ ?s ?p ?o }} }}",
                  f"SELECT * FROM <{listener.url}/g.ttl> WHERE {{ ?s ?p ?o }}"):
            code, _, body = _http(f"{server}sparql?query={urllib.parse.quote(q)}")
            assert code == 400 and ("SERVICE" in body or "FROM" in body), body
        code, _, body = _http(f"{server}sparql?query={urllib.parse.quote(COUNT_P31)}"
                              f"&default-graph-uri={urllib.parse.quote(listener.url)}")
        assert code == 400
        assert listener.requests == []  # refused before evaluation: no request left the server
    finally:
        listener.close()


def test_query_page_shows_examples_and_a_results_table(server):
    code, _, page = _http(server + "query")
    assert code == 200 and page.count('class="example"') >= 4
    q = urllib.parse.quote('SELECT ?e ?label WHERE { ?e rdfs:label ?label . FILTER(?label = "zebra") }')
    code, _, page = _http(f"{server}query?query={q}")
    assert code == 200 and 'id="query-results"' in page and "/entity?key=Q32789" in page and "1 row" in page
    code, _, page = _http(f"{server}query?query=SELEKT")
    assert code == 200 and 'id="query-message"' in page and "SPARQL error" in page
