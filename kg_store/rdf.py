"""rdflib and networkx views of a store: the whole KG or only the triples around some entities.

URIs (stable, documented in docs/ARCHITECTURE.md terms):

* Wikidata keys keep their canonical Wikidata URIs, so queries written for Wikidata read
  naturally: entity `Q42` → `http://www.wikidata.org/entity/Q42` (prefix `wd:`), property
  `P31` → `http://www.wikidata.org/prop/direct/P31` (prefix `wdt:`). Wikidata's own RDF uses
  `http://`, not `https://`, for these concept URIs, so we do too.
* Keys that already are absolute http(s) URIs (DBpedia, YAGO) are used as they are
  (surrounding `<…>` dropped).
* Everything else (Freebase mids, MarKG analogy relations `A0`…): `urn:mmkg:entity:<key>` /
  `urn:mmkg:relation:<key>` with the key percent-encoded, so `/m/0abc` stays one URI.

Labels are `rdfs:label`, descriptions `schema:description`, entity images `foaf:depiction`
of `urn:sha256:<hex>`. Relational triples use the relation URI as predicate, so the number
of triples whose predicate is a relation equals the store's triple count.

A subgraph never materialises the rest of the store: its triples, entities and relations are
`take`n by id from the needed columns of the memory-mapped tables (ids are row indexes), and
rdflib/networkx objects are built only for those rows.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote, unquote

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import FOAF, RDFS, SDO

from kg_store.errors import KGStoreError
from kg_store.store import KGStore

WD = Namespace("http://www.wikidata.org/entity/")
WDT = Namespace("http://www.wikidata.org/prop/direct/")
SCHEMA = SDO  # https://schema.org/, rdflib binds it as `schema`
MMKG_ENTITY = "urn:mmkg:entity:"
MMKG_RELATION = "urn:mmkg:relation:"
PREFIXES = {"wd": WD, "wdt": WDT, "rdfs": RDFS, "schema": SCHEMA, "foaf": FOAF}

_QID = re.compile(r"Q[1-9][0-9]*")
_PID = re.compile(r"P[1-9][0-9]*")

#: progress callback: (done, total) in triples
Progress = Callable[[int, int], None]


# ---- URIs ----------------------------------------------------------------------------------
def _absolute_uri(key: str) -> str | None:
    k = key[1:-1] if key.startswith("<") and key.endswith(">") else key
    return k if k.startswith(("http://", "https://")) and not any(c in k for c in ' <>"{}|\\^`') else None


def entity_uri(key: str) -> URIRef:
    if _QID.fullmatch(key):
        return WD[key]
    return URIRef(_absolute_uri(key) or MMKG_ENTITY + quote(key, safe=""))


def relation_uri(key: str) -> URIRef:
    if _PID.fullmatch(key):
        return WDT[key]
    return URIRef(_absolute_uri(key) or MMKG_RELATION + quote(key, safe=""))


def key_from_uri(uri: str) -> str:
    """Inverse of `entity_uri`/`relation_uri` (for absolute-URI keys: the URI itself)."""
    for prefix in (str(WD), str(WDT)):
        if uri.startswith(prefix):
            return uri[len(prefix):]
    for prefix in (MMKG_ENTITY, MMKG_RELATION):
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
    selected entities and relations come in the first chunk.
    """
    h, r, t, ents, rels = _selection(store, triple_ids)
    total = len(h)
    e_uri = {int(i): entity_uri(k) for i, k in zip(ents["id"].to_pylist(), ents["key"].to_pylist())}
    r_uri = {int(i): relation_uri(k) for i, k in zip(rels["id"].to_pylist(), rels["key"].to_pylist())}
    if annotations:
        g = _bind(Graph())
        for table, uris in ((ents, e_uri), (rels, r_uri)):
            for i, label, desc in zip(table["id"].to_pylist(), table["label"].to_pylist(),
                                      table["description"].to_pylist()):
                if label:
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
    key = (str(Path(store.root).resolve()), store.kg_version, tuple(sorted(store.manifest["tables"].items())))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one store per process is the norm; don't let versions pile up
            _CACHE[key] = to_rdf_graph(store)
        return _CACHE[key]


def sparql(store: KGStore, query: str):
    """Run a SPARQL query over the whole KG; returns rdflib's Result (rows, or a bool for ASK).

    rdflib's `query` parses queries only (updates are a syntax error there), so the cached
    graph cannot be modified from here; errors become one-line KGStoreErrors.
    """
    graph = cached_rdf_graph(store)
    try:
        return graph.query(query, initNs=PREFIXES)
    except Exception as e:  # pyparsing and rdflib raise many types; the user needs one line
        msg = " ".join(str(e).split())
        raise KGStoreError(f"SPARQL error: {msg[:300]}") from None


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


def export(store: KGStore, path: str | Path, fmt: str, triple_ids: np.ndarray | None = None, *,
           annotations: bool = True, progress: Progress | None = None) -> dict:
    """Write the KG (or the triples `triple_ids`) to `path`, atomically; returns counts.

    nt/ttl: rdflib serialisers, chunk by chunk (N-Triples and Turtle documents may be
    concatenated; Turtle repeats its @prefix lines, which the grammar allows), so memory stays
    bounded and `progress` advances. graphml/gexf: networkx writers over `to_networkx`.
    """
    from kg_store import atomic  # local: only exports write files

    if fmt not in EXPORT_FORMATS:
        raise KGStoreError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        if fmt in ("nt", "ttl"):
            rdf_format = {"nt": "nt", "ttl": "turtle"}[fmt]
            n_statements = 0
            with open(tmp, "wb") as f:
                for chunk in iter_rdf_chunks(store, triple_ids, annotations=annotations, progress=progress):
                    n_statements += len(chunk)
                    f.write(chunk.serialize(format=rdf_format, encoding="utf-8"))
            h = _take(store, "triples", triple_ids, ["h"])
            counts = {"triples": h.num_rows, "statements": n_statements}
        else:
            g = to_networkx(store, triple_ids, progress=progress)
            if fmt == "graphml":
                nx.write_graphml(g, tmp)
            else:
                nx.write_gexf(g, tmp)
            counts = {"triples": g.number_of_edges(), "nodes": g.number_of_nodes()}
    return {"path": str(path), "format": fmt, "bytes": path.stat().st_size, **counts}
