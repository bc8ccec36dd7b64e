"""Issue 17, nothing leaves the machine: JSON-LD contexts, SPARQL SERVICE/FROM, query time and
row bounds (docs/RELIABILITY.md §7).

A `Listener` on 127.0.0.1 records every connection: the tests prove that no request is made
(not merely that the command fails). Each test failed on the code before the fix.
"""
from __future__ import annotations

import json
import time

import pyarrow.compute as pc
import pytest

from mmkg.kg_store import open_store
from mmkg.kg_store.sparql_store import build_sparql_store
from mmkg.pipeline.readers import records as R
from tests.pipeline.test_readers import parse_all
from tests.reliability.hostile_fixtures import Listener, run_cli, small_store, write_markg

PRODUCT = " . ".join(f"?s{i} ?p{i} ?o{i}" for i in range(9))  # 7^9 = 40 million rows on the small store


@pytest.fixture
def kg(tmp_path):
    return small_store(tmp_path)


@pytest.fixture
def listener():
    srv = Listener()
    yield srv
    srv.close()


@pytest.fixture
def silent_listener():
    srv = Listener(hold=True)
    yield srv
    srv.close()


def _no_request(listener) -> None:
    time.sleep(0.3)  # a connection already in flight would be accepted by now
    assert listener.requests == [], f"a request reached the listener: {listener.requests[:1]}"


# ---- 2. JSON-LD --------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["string", "list", "import", "scoped"])
def test_a_remote_jsonld_context_is_never_fetched(tmp_path, capsys, listener, form):
    ctx_url = f"{listener.url}/context.jsonld"
    context = {"string": ctx_url, "list": [ctx_url, {"ex": "http://ex.org/"}],
               "import": {"@import": ctx_url}, "scoped": {"knows": {"@id": "http://ex.org/knows", "@context": ctx_url}}
               }[form]
    doc = tmp_path / "doc.jsonld"
    doc.write_text(json.dumps({"@context": context, "@id": "http://ex.org/a",
                               "http://ex.org/knows": {"@id": "http://ex.org/b"}}))
    markg = write_markg(tmp_path / "src")
    rc, out, err = run_cli(capsys, "ingest", "--kg", tmp_path / "kg", "--engine", "local",
                           "--source", f"markg:{markg}", "--source", f"rdf:{doc}")
    assert rc == 0, err
    _no_request(listener)
    store = open_store(tmp_path / "kg")
    assert store.count("triples") == 2  # the good source next to the bad document is all there
    reasons = store.table("rejects")["reason"].to_pylist()
    assert len(reasons) == 1 and "not fetched" in reasons[0] and listener.url in reasons[0]


def test_a_file_jsonld_context_is_not_read(tmp_path):
    ctx = tmp_path / "private" / "context.jsonld"
    ctx.parent.mkdir()
    ctx.write_text(json.dumps({"@context": {"name": "http://leak.example/name"}}))
    doc = tmp_path / "doc.jsonld"
    doc.write_text(json.dumps({"@context": ctx.as_uri(), "@id": "http://ex.org/a", "name": "x"}))
    t = parse_all(f"rdf:{doc}")
    assert "http://leak.example/name" not in t["p"].to_pylist()
    rej = t.filter(pc.equal(t["kind"], R.REJECT))
    assert rej.num_rows == 1 and "not fetched" in rej["reason"][0].as_py()


# ---- 2. SPARQL -----------------------------------------------------------------------------------------
def test_sparql_service_is_refused_and_sends_nothing(kg, capsys, listener):
    q = f"SELECT ?s ?label WHERE {{ ?s rdfs:label ?label . SERVICE <{listener.url}/sparql> {{ ?s ?p ?o }} }}"
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, q)
    assert rc == 1 and "SERVICE" in err and "--allow-service" in err, err
    assert len(err.strip().splitlines()) == 1
    _no_request(listener)


@pytest.mark.parametrize("clause", ["FROM", "FROM NAMED"])
def test_sparql_from_is_refused_and_fetches_nothing(kg, capsys, listener, clause):
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, f"SELECT * {clause} <{listener.url}/g.ttl> WHERE {{ ?s ?p ?o }}")
    assert rc == 1 and "FROM" in err, err
    _no_request(listener)


def test_an_allowed_service_call_has_a_timeout(kg, capsys, silent_listener):
    q = f"SELECT * WHERE {{ SERVICE <{silent_listener.url}/sparql> {{ ?s ?p ?o }} }}"
    t0 = time.monotonic()
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, "--allow-service", "--timeout", "2", q)
    assert rc == 1 and "timeout" in err, err
    assert time.monotonic() - t0 < 60
    assert len(silent_listener.requests) == 1  # the user allowed it: one request, then the timeout


# ---- 4. SPARQL time and rows -------------------------------------------------------------------------------
def test_sparql_limit_stops_the_evaluation(kg, capsys):
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, "--json", "--limit", "1", "--timeout", "60",
                           f"SELECT * WHERE {{ {PRODUCT} }}")
    assert rc == 0, err
    page = json.loads(out)
    assert len(page["rows"]) == 1 and page["more"] is True and page["total"] is None


def test_sparql_timeout_and_row_cap(kg, capsys):
    build_sparql_store(kg)  # else the first query also says that it builds the store
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, "--timeout", "1",
                           f"SELECT (COUNT(*) AS ?n) WHERE {{ {PRODUCT} }}")
    assert rc == 1 and "timeout" in err and len(err.strip().splitlines()) == 1, err
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, "--limit", "5", "--max-rows", "3",
                           "SELECT * WHERE { ?s ?p ?o }")
    assert rc == 2 and "row cap" in err, err  # conflicting options: a usage error
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, "--max-rows", "2", "--limit", "2",
                           "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }")
    assert rc == 1 and "cap" in err, err


def test_sparql_memory_budget_stops_the_query(kg, capsys):
    """Issue 32 item 4: bounded in memory as well as time. Sorting 40 million rows needs far more
    than 64 MiB: the evaluation stops with one line, long before the timeout."""
    build_sparql_store(kg)
    t0 = time.monotonic()
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, "--memory", "64M", "--timeout", "120",
                           f"SELECT * WHERE {{ {PRODUCT} }} ORDER BY ?o1 ?o2 LIMIT 1")
    assert rc == 1 and "memory budget of 64 MiB" in err and len(err.strip().splitlines()) == 1, err
    assert time.monotonic() - t0 < 60
    rc, out, err = run_cli(capsys, "sparql", "--kg", kg, "--memory", "64M", "--json",
                           "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }")
    assert rc == 0 and int(json.loads(out)["rows"][0]["n"]) > 0  # small queries fit the same budget
