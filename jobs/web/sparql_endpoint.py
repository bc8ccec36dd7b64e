"""The SPARQL 1.1 Protocol on `mmkg serve` (`/sparql`) and the query page (`/query`), issue 30.

`/sparql` answers `GET ?query=`, `POST` form-encoded (`query=`) and `POST application/sparql-query`,
with SPARQL JSON, XML, CSV or TSV results by `Accept` (CONSTRUCT/DESCRIBE: N-Triples or Turtle).
It is read-only: `update=` and `application/sparql-update` get 400, so do queries that do not parse
(Oxigraph's query parser has no update forms); SERVICE, FROM and `default-graph-uri` /
`named-graph-uri` are refused (400). Every request is bounded like `mmkg sparql` (time, rows,
memory; `mmkg.kg_store.sparql_query`), and at most `max_concurrent` evaluations run at once (the others
wait up to their timeout, then get 503), so 8 clients cannot start 8 evaluators on 2 cores.
A SELECT with more rows than the cap is refused with 400 rather than silently cut.
"""
from __future__ import annotations

import threading
from urllib.parse import unquote

from flask import Flask, Response, redirect, render_template, request, url_for

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import ConfigError, KGStoreError

#: Accept media type → (pyoxigraph results format name, response type); the first is the default
RESULT_TYPES = {
    "application/sparql-results+json": ("JSON", "application/sparql-results+json"),
    "application/json": ("JSON", "application/sparql-results+json"),
    "application/sparql-results+xml": ("XML", "application/sparql-results+xml"),
    "application/xml": ("XML", "application/sparql-results+xml"),
    "text/xml": ("XML", "application/sparql-results+xml"),
    "text/csv": ("CSV", "text/csv; charset=utf-8"),
    "text/tab-separated-values": ("TSV", "text/tab-separated-values; charset=utf-8"),
}
GRAPH_TYPES = {"application/n-triples": ("N_TRIPLES", "application/n-triples"),
               "text/plain": ("N_TRIPLES", "application/n-triples"),
               "text/turtle": ("TURTLE", "text/turtle; charset=utf-8")}
#: the query page's examples (the KG's predefined prefixes apply)
EXAMPLES = {
    "Triples per relation": "SELECT ?p (COUNT(*) AS ?n) WHERE { ?s ?p ?o } GROUP BY ?p ORDER BY DESC(?n) LIMIT 20",
    "Entities with images": "SELECT (COUNT(DISTINCT ?e) AS ?n) WHERE { ?e foaf:depiction ?img }",
    "Two hops from zebra": "SELECT ?p1 ?mid ?p2 ?end WHERE {\n  ?z rdfs:label \"zebra\" .\n"
                           "  ?z ?p1 ?mid . ?mid ?p2 ?end .\n  FILTER(isIRI(?end))\n} LIMIT 50",
    "Labels matching a word": "SELECT ?e ?label WHERE { ?e rdfs:label ?label . "
                              "FILTER(CONTAINS(LCASE(?label), \"horse\")) } LIMIT 20",
    "Literal attributes": "SELECT ?e ?attr ?value WHERE { ?e ?attr ?value . FILTER(isLiteral(?value)) "
                          "FILTER(?attr NOT IN (rdfs:label, schema:description)) } LIMIT 20",
}
PAGE_ROWS = 200
#: namespaces of predicates and vocabularies, never entity pages
_NOT_ENTITIES = ("http://www.wikidata.org/prop/", "https://schema.org/", "http://www.w3.org/",
                 "http://xmlns.com/foaf/")


def _bad(message: str, code: int = 400) -> Response:
    return Response(message + "\n", status=code, mimetype="text/plain")


def _negotiate(table: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    if not request.headers.get("Accept", "").strip():
        return next(iter(table.values()))
    best = request.accept_mimetypes.best_match(list(table))
    return table[best] if best else None


def register_sparql(app: Flask, store: KGStore, *, timeout: float, max_rows: int, memory: int,
                    max_concurrent: int = 4) -> None:
    from mmkg.kg_store.sparql_query import run_query
    from mmkg.kg_store.sparql_store import current_meta, ensure_sparql_store
    slots = threading.BoundedSemaphore(max_concurrent)
    build_lock = threading.Lock()

    def database():
        meta = current_meta(store)
        if meta is None:
            with build_lock:
                ensure_sparql_store(store.root)
            meta = current_meta(store)
        if meta is None:  # the store moved on to a newer version than this server shows
            raise KGStoreError("the KG changed since the server started; restart `mmkg serve`")
        return store.root / meta["path"], meta["prefixes"]

    def evaluate(query: str, *, limit: int, offset: int = 0):
        path, prefixes = database()
        if not slots.acquire(timeout=timeout):
            raise TimeoutError
        try:
            return run_query(path, query, prefixes=prefixes, offset=offset, limit=limit, timeout=timeout,
                             max_rows=max_rows + 1, memory=memory)
        finally:
            slots.release()

    @app.route("/sparql", methods=["GET", "POST"])
    def sparql_protocol():
        request.max_content_length = 1 << 20  # this route reads bodies: queries up to 1 MiB
        ctype = request.mimetype
        if ctype == "application/sparql-update" or "update" in request.values:
            return _bad("SPARQL updates are refused: this endpoint is read-only")
        if request.args.getlist("default-graph-uri") or request.args.getlist("named-graph-uri") \
                or request.form.getlist("default-graph-uri") or request.form.getlist("named-graph-uri"):
            return _bad("default-graph-uri / named-graph-uri refused: the KG is the default graph")
        if request.method == "POST" and ctype == "application/sparql-query":
            query = request.get_data(as_text=True)
        elif request.method == "POST" and ctype == "application/x-www-form-urlencoded":
            query = request.form.get("query", "")
        elif request.method == "POST":
            return _bad("POST needs Content-Type application/sparql-query or application/x-www-form-urlencoded", 415)
        else:
            query = request.args.get("query", "")
        if not query.strip():
            if request.method == "GET" and request.accept_mimetypes.best == "text/html":
                return redirect(url_for("query_page"))
            return _bad("no query: give query= (GET or form POST) or an application/sparql-query body")
        try:
            answer = evaluate(query, limit=max_rows)
        except ConfigError as e:
            return _bad(str(e))
        except TimeoutError:
            return _bad(f"busy: no evaluation slot within {timeout:g} s; retry", 503)
        except KGStoreError as e:
            stopped = str(e).startswith("SPARQL query stopped")
            return _bad(str(e), 503 if stopped else 400)
        return _serialise(answer, max_rows)

    @app.get("/query")
    def query_page():
        query = request.args.get("query", "")
        answer, message = None, None
        if query.strip():
            try:
                answer = evaluate(query, limit=PAGE_ROWS)
            except TimeoutError:
                message = f"busy: no evaluation slot within {timeout:g} s; retry"
            except KGStoreError as e:  # ConfigError included
                message = str(e)
        prefixes = database()[1] if answer else {}
        rows = [[_cell(t, prefixes) for t in row] for row in answer.rows] if answer and answer.type == "SELECT" else []
        return render_template("query.html", query=query, answer=answer, rows=rows, message=message,
                               examples=EXAMPLES, page_rows=PAGE_ROWS, timeout=timeout, max_rows=max_rows)


def _serialise(answer, max_rows: int) -> Response:
    import pyoxigraph as ox
    if answer.type == "CONSTRUCT":
        fmt = _negotiate(GRAPH_TYPES)
        if fmt is None:
            return _bad("not acceptable: CONSTRUCT/DESCRIBE answers are application/n-triples or text/turtle", 406)
        text = "\n".join(answer.ntriples) + ("\n" if answer.ntriples else "")
        if fmt[0] == "TURTLE":
            triples = [q.triple for q in ox.parse(text, format=ox.RdfFormat.N_TRIPLES)]
            text = ox.serialize(triples, format=ox.RdfFormat.TURTLE).decode()
        return Response(text, mimetype=fmt[1].split(";")[0], content_type=fmt[1])
    if answer.more:
        return _bad(f"the query has more than {max_rows:,} rows (the endpoint's row cap); add a LIMIT")
    fmt = _negotiate(RESULT_TYPES)
    if fmt is None:
        return _bad("not acceptable: results are SPARQL JSON, XML, CSV or TSV", 406)
    import json
    data = json.dumps(answer.sparql_json()).encode()
    if fmt[0] != "JSON":
        data = ox.parse_query_results(data, format=ox.QueryResultsFormat.JSON).serialize(
            format=getattr(ox.QueryResultsFormat, fmt[0]))
    return Response(data, content_type=fmt[1])


def _cell(term: dict[str, str] | None, prefixes: dict[str, str]) -> dict[str, str] | None:
    """A result term for the table: its text (an IRI as prefix:name where a predefined prefix fits),
    the full value, and for a KG entity the key of its page."""
    if term is None:
        return None
    value = term["value"]
    text = value
    if term["type"] == "uri":
        for name, ns in prefixes.items():
            rest = value[len(ns):]
            if value.startswith(ns) and rest and all(c.isalnum() or c in "_-" for c in rest):
                text = f"{name}:{rest}"
                break
    key = None
    if term["type"] == "uri":
        for prefix in ("http://www.wikidata.org/entity/", "urn:mmkg:entity:"):
            if value.startswith(prefix):
                key = unquote(value[len(prefix):])
        if key is None and value.startswith(("http://", "https://")) and not value.startswith(_NOT_ENTITIES):
            key = value  # an absolute-URI key (DBpedia, YAGO) is its own URI (kg_store/rdf.py)
    return {"text": text, "value": value, "key": key, "type": term["type"],
            "extra": term.get("xml:lang") or term.get("datatype", "").rsplit("#", 1)[-1]}


__all__ = ["EXAMPLES", "register_sparql"]
