"""rdflib and networkx views of a store: the whole KG or only the triples around some entities.

URIs (stable, documented in docs/ARCHITECTURE.md terms):

* Wikidata keys keep their canonical Wikidata URIs, so queries written for Wikidata read
  naturally: entity `Q42` → `http://www.wikidata.org/entity/Q42` (prefix `wd:`), property
  `P31` → `http://www.wikidata.org/prop/direct/P31` (prefix `wdt:`). Wikidata's own RDF uses
  `http://`, not `https://`, for these concept URIs, so we do too.
* Keys that already are absolute IRIs of any scheme (DBpedia and YAGO `http(s)://…`, `urn:…`,
  `tag:…`, the IRIs of an `rdf:` source) are used as they are (surrounding `<…>` dropped), so an
  RDF source comes back unchanged (issue 33).
* Blank nodes of RDF sources are stored skolemised, as IRIs under `GENID`
  (`…/.well-known/genid/<id>`, RDF 1.1 §3.5), and exported as such; older stores' `_:<id>` keys
  map to the same IRIs.
* Everything else (Freebase mids, MarKG analogy relations `A0`…, keys with spaces):
  `urn:mmkg:entity:<key>` / `urn:mmkg:relation:<key>` with the key percent-encoded, so `/m/0abc`
  stays one URI.

Labels are `rdfs:label`, descriptions `schema:description`, entity images `foaf:depiction`
of `urn:sha256:<hex>`, rows of the `literals` table `<entity> <attribute> "value"^^datatype`
(attribute: a Wikidata P-id → `wdt:`, an http(s) URI as is, else `urn:mmkg:attribute:<key>`;
datatype `@lang`, `xsd:…` or an IRI). Relational triples use the relation URI as predicate, so the number
of triples whose predicate is a relation equals the store's triple count.

A subgraph never materialises the rest of the store: its triples, entities and relations are
`take`n by id from the needed columns of the memory-mapped tables (ids are row indexes), and
rdflib/networkx objects are built only for those rows.
"""
from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import quote, unquote

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import FOAF, RDFS, SDO, XSD

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.store import KGStore

WD = Namespace("http://www.wikidata.org/entity/")
WDT = Namespace("http://www.wikidata.org/prop/direct/")
SCHEMA = SDO  # https://schema.org/, rdflib binds it as `schema`
MMKG_ENTITY = "urn:mmkg:entity:"
MMKG_RELATION = "urn:mmkg:relation:"
MMKG_ATTRIBUTE = "urn:mmkg:attribute:"
#: Skolem IRIs of blank nodes (RDF 1.1 §3.5): reserved host (RFC 2606), never dereferenced
GENID = "https://mmkg.invalid/.well-known/genid/"
PREFIXES = {"wd": WD, "wdt": WDT, "rdfs": RDFS, "schema": SCHEMA, "foaf": FOAF}

_QID = re.compile(r"Q[1-9][0-9]*")
_PID = re.compile(r"P[1-9][0-9]*")

#: progress callback: (done, total) in triples
Progress = Callable[[int, int], None]


# ---- URIs ----------------------------------------------------------------------------------
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_NOT_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\\x7f-\x9f]')


def _absolute_uri(key: str) -> str | None:
    """`key` (without `<…>`) when it is a valid absolute IRI of any scheme (RFC 3987, checked by
    Oxigraph, whose N-Triples writer must accept it), else None."""
    import pyoxigraph
    k = key[1:-1] if key.startswith("<") and key.endswith(">") else key
    if not _SCHEME.match(k) or _NOT_IRI.search(k):
        return None
    try:
        pyoxigraph.NamedNode(k)
    except ValueError:
        return None
    return k


def entity_uri(key: str) -> URIRef:
    if _QID.fullmatch(key):
        return WD[key]
    if key.startswith("_:") and len(key) > 2 and not _NOT_IRI.search(key):
        return URIRef(GENID + key[2:])  # a blank node of an older store: its Skolem IRI
    return URIRef(_absolute_uri(key) or MMKG_ENTITY + quote(key, safe=""))


def relation_uri(key: str) -> URIRef:
    if _PID.fullmatch(key):
        return WDT[key]
    return URIRef(_absolute_uri(key) or MMKG_RELATION + quote(key, safe=""))


def attribute_uri(key: str) -> URIRef:
    if _PID.fullmatch(key):
        return WDT[key]
    return URIRef(_absolute_uri(key) or MMKG_ATTRIBUTE + quote(key, safe=""))


_LANG = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")


def literal_term(value: str, datatype: str | None) -> Literal:
    """The rdflib Literal of a `literals` row (datatype `@en`, `xsd:integer`, an IRI, or none)."""
    dt = (datatype or "").strip()
    if dt.startswith("@") and _LANG.fullmatch(dt[1:]):
        return Literal(value, lang=dt[1:])
    if dt.startswith("xsd:"):  # the prefix the readers write, never an IRI of scheme `xsd`
        if dt == "xsd:string" or _NOT_IRI.search(dt):
            return Literal(value)
        return Literal(value, datatype=XSD[dt[4:]], normalize=False)
    if _absolute_uri(dt):
        return Literal(value, datatype=URIRef(_absolute_uri(dt)), normalize=False)
    return Literal(value)


def key_from_uri(uri: str) -> str:
    """Inverse of `entity_uri`/`relation_uri` (for absolute-URI keys: the URI itself)."""
    for prefix in (str(WD), str(WDT)):
        if uri.startswith(prefix):
            return uri[len(prefix):]
    for prefix in (MMKG_ENTITY, MMKG_RELATION, MMKG_ATTRIBUTE):
        if uri.startswith(prefix):
            return unquote(uri[len(prefix):])
    return uri


# ---- selecting part of the store -------------------------------------------------------------
def neighbourhood_triples(store: KGStore, entity_ids: Iterable[int], hops: int = 1) -> np.ndarray:
    """Sorted ids of the triples within `hops` of the seeds (CSR walk; reads no tables)."""
    if hops < 1:
        raise KGStoreError(f"hops must be >= 1, got {hops}")
    g = store.graph
    frontier = np.unique(np.asarray(list(entity_ids), dtype=np.int64))
    seen_nodes = frontier
    tids = np.empty(0, dtype=np.int64)
    for _ in range(hops):
        new = g.incident_triples(frontier)
        tids = np.union1d(tids, new)
        if hops > 1:
            s, e = g.indptr[frontier], g.indptr[frontier + 1]
            nbrs = np.unique(np.concatenate([g.neighbor[a:b] for a, b in zip(s, e)] or [np.empty(0, np.int64)]))
            frontier = np.setdiff1d(nbrs, seen_nodes)
            seen_nodes = np.union1d(seen_nodes, frontier)
            if frontier.size == 0:
                break
    return tids


def dense_by_id(table: pa.Table) -> pa.Table:
    """`table` with row i = id i, as the store contract says entities/relations are.

    Defensive: a store whose table repeats an id (one row per merged source label) would
    otherwise make taking rows by id return the wrong entities; the first row of each id wins.
    """
    ids = table["id"].to_numpy()
    if np.array_equal(ids, np.arange(len(ids))):
        return table
    uniq, first = np.unique(ids, return_index=True)
    if not np.array_equal(uniq, np.arange(len(uniq))):
        raise KGStoreError("table ids are not dense 0..n-1; run `mmkg verify` / re-ingest")
    return table.take(pa.array(first))


def _take(store: KGStore, table: str, ids: np.ndarray | None, columns: list[str]) -> pa.Table:
    t = store.table(table, columns)
    if table in ("entities", "relations"):
        t = dense_by_id(t)
    return t if ids is None else t.take(pa.array(ids, pa.int64()))


def _selection(store: KGStore, triple_ids: np.ndarray | None):
    """(h, r, t arrays, entity rows, relation rows) of the whole KG or of `triple_ids` only."""
    tri = _take(store, "triples", triple_ids, ["h", "r", "t"])
    h, r, t = (tri[c].to_numpy().astype(np.int64) for c in ("h", "r", "t"))
    if triple_ids is None:
        ent_ids, rel_ids = None, None
    else:
        ent_ids, rel_ids = np.union1d(h, t), np.unique(r)
    ents = _take(store, "entities", ent_ids, ["id", "key", "label", "description"])
    rels = _take(store, "relations", rel_ids, ["id", "key", "label", "description"])
    return h, r, t, ents, rels


def _lookup(table: pa.Table, column: str, size_hint: int) -> dict[int, str] | list[str]:
    """id → column value; a dense list when the table holds every id 0..n-1."""
    ids = table["id"].to_numpy()
    vals = table[column].to_pylist()
    if len(ids) == size_hint and (len(ids) == 0 or (ids[0] == 0 and ids[-1] == len(ids) - 1)):
        return vals
    return dict(zip(ids.tolist(), vals))


# ---- rdflib ----------------------------------------------------------------------------------
def _bind(g: Graph) -> Graph:
    for prefix, ns in PREFIXES.items():
        g.bind(prefix, ns, override=True)
    return g


def iter_rdf_chunks(store: KGStore, triple_ids: np.ndarray | None = None, *, annotations: bool = True,
                    chunk_size: int = 20_000, progress: Progress | None = None) -> Iterator[Graph]:
    """The KG (or the triples `triple_ids`) as a sequence of small rdflib Graphs.

    Exporters serialise chunk by chunk, so a long export reports progress and never holds
    more than one chunk of rdflib objects. Annotations (labels, descriptions, images) of the
    selected entities and relations come in the first chunk; the `literals` rows (attribute
    statements) and the relational triples always come: `annotations=False` is exactly the
    ingested statements (issue 33).
    """
    h, r, t, ents, rels = _selection(store, triple_ids)
    total = len(h)
    e_uri = {int(i): entity_uri(k) for i, k in zip(ents["id"].to_pylist(), ents["key"].to_pylist())}
    r_uri = {int(i): relation_uri(k) for i, k in zip(rels["id"].to_pylist(), rels["key"].to_pylist())}
    lit = _literals(store, e_uri if triple_ids is not None else None)
    if annotations:
        g = _bind(Graph())
        # an entity whose rdfs:label statements were ingested as such gets no derived label
        stated = set(lit.filter(pc.equal(lit["attribute"], str(RDFS.label)))["entity_id"].to_pylist())
        for table, uris in ((ents, e_uri), (rels, r_uri)):
            for i, label, desc in zip(table["id"].to_pylist(), table["label"].to_pylist(),
                                      table["description"].to_pylist()):
                if label and not (uris is e_uri and i in stated):
                    g.add((uris[i], RDFS.label, Literal(label)))
                if desc:
                    g.add((uris[i], SCHEMA.description, Literal(desc)))
        images = store.table("images", ["entity_id", "sha256"])
        if images.num_rows:
            if triple_ids is not None:
                images = images.filter(pc.is_in(images["entity_id"], pa.array(list(e_uri), pa.int64())))
            for eid, sha in zip(images["entity_id"].to_pylist(), images["sha256"].to_pylist()):
                if eid in e_uri:
                    g.add((e_uri[eid], FOAF.depiction, URIRef(f"urn:sha256:{sha}")))
        yield g
    yield from _literal_chunks(lit, e_uri, chunk_size)  # attribute statements: data, not annotations
    if progress:
        progress(0, total)
    for start in range(0, total, chunk_size):
        g = _bind(Graph())
        stop = min(total, start + chunk_size)
        g.addN((e_uri[a], r_uri[b], e_uri[c], g) for a, b, c in
               zip(h[start:stop].tolist(), r[start:stop].tolist(), t[start:stop].tolist()))
        yield g
        if progress:
            progress(stop, total)


def _literals(store: KGStore, e_uri: dict[int, URIRef] | None = None) -> pa.Table:
    lit = store.table("literals", ["entity_id", "attribute", "value", "datatype"])
    if e_uri is not None and lit.num_rows:
        lit = lit.filter(pc.is_in(lit["entity_id"], pa.array(list(e_uri), pa.int64())))
    return lit


def _literal_chunks(lit: pa.Table, e_uri: dict[int, URIRef], chunk_size: int) -> Iterator[Graph]:
    """The `literals` table as statements (issue 17: exports and SPARQL used to leave it out)."""
    for start in range(0, lit.num_rows, chunk_size):
        part = lit.slice(start, chunk_size)
        g = _bind(Graph())
        for eid, attr, value, dt in zip(*(part[c].to_pylist() for c in ("entity_id", "attribute", "value", "datatype"))):
            if eid in e_uri and attr and value is not None:
                g.add((e_uri[eid], attribute_uri(attr), literal_term(value, dt)))
        yield g


def to_rdf_graph(store: KGStore, triple_ids: np.ndarray | None = None, *, annotations: bool = True,
                 progress: Progress | None = None) -> Graph:
    """One rdflib Graph of the whole KG, or only of `triple_ids` and their entities."""
    out = _bind(Graph())
    for chunk in iter_rdf_chunks(store, triple_ids, annotations=annotations, progress=progress):
        out += chunk
    return out


_CACHE: dict[tuple, Graph] = {}
_CACHE_LOCK = threading.Lock()


def cached_rdf_graph(store: KGStore) -> Graph:
    """The whole-KG Graph, built once per process and KG version (SPARQL needs all of it)."""
    key = (str(Path(store.root).resolve()), store.kg_version, tuple(sorted((n, tuple(store.table_parts(n))) for n in store.manifest["tables"])))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one store per process is the norm; don't let versions pile up
            _CACHE[key] = to_rdf_graph(store)
        return _CACHE[key]


#: query-time bounds of `sparql` (CLI: --timeout, --max-rows)
SPARQL_TIMEOUT = 30.0
SPARQL_MAX_ROWS = 100_000


class _QueryTimeout(BaseException):
    """Raised by the alarm inside rdflib's evaluation; BaseException so no `except Exception` eats it."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Interrupt the evaluation after `seconds` (SIGALRM; main thread only: elsewhere the row loops
    check the deadline themselves)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(_signum, _frame):
        raise _QueryTimeout()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def _socket_timeout(seconds: float | None):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _walk(node: Any) -> Iterator[Any]:
    stack, seen = [node], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)


def prepare_query(query: str, *, allow_service: bool = False):
    """Parse a SPARQL query and refuse what would leave the machine (issue 17).

    `SERVICE <url>` sends a request per solution, carrying KG data, to any URL: refused unless
    `allow_service` (then every request has the query's timeout). `FROM`/`FROM NAMED <url>` would
    fetch and parse a document: always refused (the KG is the default graph). Updates (`LOAD`,
    `INSERT` …) are not queries and fail to parse here.
    """
    from rdflib.plugins.sparql import prepareQuery
    from rdflib.plugins.sparql.parserutils import CompValue
    try:
        prepared = prepareQuery(query, initNs=PREFIXES)
    except Exception as e:  # pyparsing and rdflib raise many types; the user needs one line
        msg = " ".join(str(e).split())
        raise KGStoreError(f"SPARQL error: {msg[:300]}") from None
    for node in _walk(prepared.algebra):
        if not isinstance(node, CompValue):
            continue
        if node.name == "ServiceGraphPattern" and not allow_service:
            raise KGStoreError(f"SPARQL SERVICE <{node.get('term')}> refused: federated queries send KG data to "
                               "another server; pass --allow-service to permit them (with --timeout)")
        if "datasetClause" in node and node["datasetClause"]:
            raise KGStoreError("SPARQL FROM / FROM NAMED refused: it would fetch and parse a document; "
                               "the KG is the default graph, so leave the clause out")
    return prepared


@dataclass
class SparqlAnswer:
    """One page of a query's answer; `total` is known only when the rows ran out before the page did."""

    type: str
    vars: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    offset: int = 0
    more: bool = False
    total: int | None = None
    ask: bool | None = None
    graph: Graph | None = None


def _timed_out(seconds: float | None) -> KGStoreError:
    return KGStoreError(f"SPARQL query stopped after its {seconds:g} s timeout (--timeout); "
                        "narrow it (LIMIT, more specific patterns) or raise the timeout")


def sparql_page(store: KGStore, query: str, *, offset: int = 0, limit: int = 100,
                timeout: float | None = SPARQL_TIMEOUT, max_rows: int = SPARQL_MAX_ROWS,
                allow_service: bool = False) -> SparqlAnswer:
    """Rows `offset … offset+limit` of a query, evaluated lazily: rows after the page are never
    computed (only one more, to say whether there are more), and the whole evaluation stops after
    `timeout` seconds. `offset + limit` may not exceed `max_rows`; a CONSTRUCT/DESCRIBE graph may not
    hold more than `max_rows` triples."""
    if offset + limit > max_rows:
        raise ConfigError(f"--offset + --limit = {offset + limit} exceeds the row cap {max_rows} (--max-rows)")
    prepared = prepare_query(query, allow_service=allow_service)
    graph = cached_rdf_graph(store)
    deadline = time.monotonic() + timeout if timeout else None
    try:
        with _time_limit(timeout), (_socket_timeout(timeout) if allow_service else contextlib.nullcontext()):
            result = graph.query(prepared, initNs=PREFIXES)
            if result.type == "ASK":
                return SparqlAnswer("ASK", ask=bool(result.askAnswer))
            if result.type in ("CONSTRUCT", "DESCRIBE"):
                if len(result.graph) > max_rows:
                    raise KGStoreError(f"{result.type} made {len(result.graph):,} triples > the cap {max_rows:,} "
                                       "(--max-rows)")
                return SparqlAnswer(result.type, graph=result.graph)
            names = [str(v) for v in result.vars]
            page, seen, more = [], 0, False
            for row in islice(iter(result), offset + limit + 1):
                if deadline is not None and time.monotonic() > deadline:
                    raise _QueryTimeout()
                seen += 1
                if seen > offset + limit:
                    more = True
                    break
                if seen > offset:
                    page.append([None if row[i] is None else row[i] for i in range(len(names))])
    except _QueryTimeout:
        raise _timed_out(timeout) from None
    except KGStoreError:
        raise
    except Exception as e:  # evaluation errors (type errors in FILTERs, a failing SERVICE …)
        msg = " ".join(str(e).split())
        raise KGStoreError(f"SPARQL error: {type(e).__name__}: {msg[:300]}") from None
    return SparqlAnswer("SELECT", vars=names, rows=page, offset=offset, more=more,
                        total=None if more else seen)


def sparql(store: KGStore, query: str, *, timeout: float | None = SPARQL_TIMEOUT,
           max_rows: int = SPARQL_MAX_ROWS, allow_service: bool = False):
    """Run a SPARQL query over the whole KG; returns rdflib's Result (rows, or a bool for ASK),
    fully evaluated within `timeout`, at most `max_rows` rows (more is an error).

    rdflib's `query` parses queries only (updates are a syntax error there), so the cached
    graph cannot be modified from here; errors become one-line KGStoreErrors. SERVICE and FROM
    are refused (`prepare_query`).
    """
    from rdflib.query import Result
    answer = sparql_page(store, query, offset=0, limit=max_rows, timeout=timeout, max_rows=max_rows + 1,
                         allow_service=allow_service)
    result = Result(answer.type)
    if answer.type == "ASK":
        result.askAnswer = answer.ask
    elif answer.type in ("CONSTRUCT", "DESCRIBE"):
        result.graph = answer.graph
    else:
        if answer.more:
            raise KGStoreError(f"SPARQL query has more than {max_rows:,} rows; add a LIMIT")
        from rdflib import Variable
        result.vars = [Variable(v) for v in answer.vars]
        result.bindings = [{Variable(v): t for v, t in zip(answer.vars, row) if t is not None} for row in answer.rows]
    return result


# ---- networkx --------------------------------------------------------------------------------
def to_networkx(store: KGStore, triple_ids: np.ndarray | None = None, *,
                progress: Progress | None = None) -> nx.MultiDiGraph:
    """MultiDiGraph: nodes = store entity ids (attrs key, label); one edge per triple, edge key =
    triple id, attrs `relation` (key) and `label`. Without `triple_ids`, every entity is a node
    (isolated ones included); with them, only the entities those triples touch."""
    h, r, t, ents, rels = _selection(store, triple_ids)
    tids = np.arange(len(h)) if triple_ids is None else np.asarray(triple_ids, np.int64)
    g = nx.MultiDiGraph()
    g.add_nodes_from((int(i), {"key": k, "label": lab or ""}) for i, k, lab in
                     zip(ents["id"].to_pylist(), ents["key"].to_pylist(), ents["label"].to_pylist()))
    rkey = _lookup(rels, "key", store.num_relations)
    rlabel = _lookup(rels, "label", store.num_relations)
    total, step = len(h), 50_000
    for start in range(0, total, step):
        stop = min(total, start + step)
        g.add_edges_from((a, c, int(k), {"relation": rkey[b], "label": rlabel[b] or ""}) for a, b, c, k in
                         zip(h[start:stop].tolist(), r[start:stop].tolist(), t[start:stop].tolist(),
                             tids[start:stop].tolist()))
        if progress:
            progress(stop, total)
    return g


# ---- exports ---------------------------------------------------------------------------------
EXPORT_FORMATS = ("nt", "ttl", "graphml", "gexf")


#: characters XML 1.0 does not allow at all (GraphML/GEXF exports escape them as \\xNN)
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """`text` with every XML-illegal character written as a visible `\\xNN`/`\\uNNNN` escape."""
    if not _XML_ILLEGAL.search(text):
        return text
    return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                            else f"\\u{ord(m.group()):04x}", text)


def _xml_safe_graph(g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    for _, attrs in g.nodes(data=True):
        for k, v in attrs.items():
            if isinstance(v, str):
                attrs[k] = xml_safe(v)
    for *_, attrs in g.edges(keys=True, data=True):
        for k, v in attrs.items():
            if isinstance(v, str):
                attrs[k] = xml_safe(v)
    return g


def export(store: KGStore, path: str | Path, fmt: str, triple_ids: np.ndarray | None = None, *,
           annotations: bool = True, progress: Progress | None = None) -> dict:
    """Write the KG (or the triples `triple_ids`) to `path`, atomically; returns counts.

    nt/ttl: Oxigraph's N-Triples writer / rdflib's Turtle serialiser, chunk by chunk (N-Triples
    and Turtle documents may be concatenated; Turtle repeats its @prefix lines, which the grammar
    allows), so memory stays bounded and `progress` advances; the `literals` table is always
    included, annotations (derived labels, descriptions, images) unless `annotations=False`.
    graphml/gexf: networkx writers over `to_networkx` (entities and relational triples only:
    the summary's `literals_omitted` says how many literal rows are not in the file), with
    XML-illegal characters in keys and labels escaped so the file is well-formed XML.
    """
    from mmkg.kg_store import atomic  # local: only exports write files

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        if fmt in ("nt", "ttl"):
            n_statements = 0
            with open(tmp, "wb") as f:
                for chunk in iter_rdf_chunks(store, triple_ids, annotations=annotations, progress=progress):
                    n_statements += len(chunk)
                    f.write(_ntriples(chunk) if fmt == "nt" else chunk.serialize(format="turtle", encoding="utf-8"))
            h = _take(store, "triples", triple_ids, ["h"])
            counts = {"triples": h.num_rows, "statements": n_statements,
                      "literals": _literals_of(store, triple_ids).num_rows}
        else:
            g = _xml_safe_graph(to_networkx(store, triple_ids, progress=progress))
            if fmt == "graphml":
                nx.write_graphml(g, tmp)
            else:
                nx.write_gexf(g, tmp)
            counts = {"triples": g.number_of_edges(), "nodes": g.number_of_nodes(),
                      "literals_omitted": _literals_of(store, triple_ids).num_rows}
    return {"path": str(path), "format": fmt, "bytes": path.stat().st_size, **counts}


def _ntriples(g: Graph) -> bytes:
    """Canonical N-Triples (Oxigraph's writer): every character escaped as RDF 1.1 asks
    (`\\r`, `\\u0000` …), so control characters in literals survive the round trip."""
    import pyoxigraph as ox

    def term(t):
        if isinstance(t, Literal):
            if t.language:
                return ox.Literal(str(t), language=t.language)
            return ox.Literal(str(t), datatype=ox.NamedNode(str(t.datatype)) if t.datatype else None)
        return ox.NamedNode(str(t))
    return ox.serialize([ox.Triple(term(s), term(p), term(o)) for s, p, o in g], format=ox.RdfFormat.N_TRIPLES)


def _literals_of(store: KGStore, triple_ids: np.ndarray | None) -> pa.Table:
    if triple_ids is None:
        return _literals(store)
    _, _, _, ents, _ = _selection(store, triple_ids)
    return _literals(store, dict.fromkeys(ents["id"].to_pylist()))
