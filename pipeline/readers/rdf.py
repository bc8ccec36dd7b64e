"""`rdf:FILE` — anything rdflib parses, the syntax chosen by extension (.nt, .nq, .ttl, .trig, .trix,
.rdf/.xml/.owl, .n3, .jsonld).

Line formats (N-Triples, N-Quads) are read line by line in bounded blocks (kg_store.safe_io), so a
bad line is one reject at its line number and the rest of the file is kept. Other syntaxes are
parsed as a whole document (rdflib cannot resume after a syntax error): a document that does not
parse is one reject (`path:0`), and statements are sorted so ids are stable. Literal objects become
literals (rdfs:label / skos:prefLabel become entity labels); IRIs and blank nodes become triples.

Held to the same rules as the line readers (issue 17):

* terms: no surrogate code points (`\\uD800`), NUL or control characters, invalid escapes
  (`\\q` in N-Triples), or terms over `MAX_LINE_BYTES`; an IRI holding spaces or `<>"{}|^\\``
  is invalid. Each such statement (line) is one reject, the others are accepted;
* relative IRIs are never resolved against the file's own `file:///…` path (that leaked local
  paths into keys): the base is the reserved `http://mmkg.invalid/base/`, and a statement whose
  IRI still depends on it is rejected (`relative IRI … and no @base`). A document's own `@base`
  is honoured;
* blank nodes get deterministic keys, skolemised from the source name and the node's label
  (N-Triples/N-Quads `_:label`) or its position of first appearance (other syntaxes, which do
  not keep labels): re-ingesting a file gives the same keys, so nothing is duplicated;
* quad formats (.nq, .trig, .trix) are read: every statement of every graph, graph names
  dropped (the default-graph union rdflib's SPARQL uses);
* nothing is fetched: a JSON-LD `@context`/`@import` naming a URL or `file:` is refused (the
  document is one reject) before rdflib could fetch it; rdflib reads only the bytes we read
  through `safe_io` (a document over `max_mib`, default 256, is one reject).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa

from kg_store.errors import KGStoreError
from kg_store.safe_io import UnsafeFileError, iter_lines, open_regular, read_bounded
from pipeline.readers import records as R
from pipeline.readers.base import InputFile, Reader, reader_registry

LABEL_PREDICATES = {
    "http://www.w3.org/2000/01/rdf-schema#label",
    "http://www.w3.org/2004/02/skos/core#prefLabel",
}
_XSD = "http://www.w3.org/2001/XMLSchema#"
NTRIPLES = ("nt", "ntriples", "nt11")
LINE_FORMATS = (*NTRIPLES, "nquads")
QUAD_FORMATS = ("nquads", "trig", "trix")
#: base of relative IRIs: reserved (RFC 2606), never a local path; IRIs under it are rejected
BASE_HOST = "http://mmkg.invalid/"
BASE = BASE_HOST + "base/"
#: a whole document (Turtle, RDF/XML, JSON-LD, …) larger than this is one reject (option max_mib)
DEFAULT_MAX_MIB = 256
MAX_TERM_BYTES = R.MAX_LINE_BYTES

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_IRI_BAD = re.compile(r'[\x00-\x20<>"{}|^`\\\x7f-\x9f]')
_LITERAL_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[tbnrf\"'\\])|\\")


# ---- rules --------------------------------------------------------------------------------------
def escape_problem(line: str) -> str | None:
    """Why an N-Triples/N-Quads line's escapes are not acceptable, or None."""
    if "\\" not in line:
        return None
    for m in _ESCAPE.finditer(line):
        esc = m.group(1)
        if esc is None:
            return f"invalid escape {line[m.start():m.start() + 2]!r}"
        if esc[0] in "uU":
            cp = int(esc[1:], 16)
            if 0xD800 <= cp <= 0xDFFF:
                return f"surrogate escape \\{esc} (not a character)"
            if cp > 0x10FFFF:
                return f"escape \\{esc} beyond U+10FFFF"
            if cp == 0:
                return "escaped NUL character"
    return None


def _size_problem(text: str) -> str | None:
    n = len(text.encode("utf-8", "surrogatepass"))
    return f"term too long ({n} bytes > {MAX_TERM_BYTES})" if n > MAX_TERM_BYTES else None


def term_problem(term) -> str | None:
    """Why one rdflib term may not enter the store, or None (the key/term rules of issue 17)."""
    from rdflib import BNode, Literal, URIRef
    text = str(term)
    if _SURROGATE.search(text):
        return "surrogate code point (\\uD800-\\uDFFF) in a term"
    problem = _size_problem(text)
    if problem:
        return problem
    if isinstance(term, Literal):
        if "\x00" in text:
            return "NUL character in a literal"
        if _LITERAL_BAD.search(text):
            return "control character in a literal"
        if term.datatype is not None:
            return term_problem(URIRef(term.datatype))
        return None
    if isinstance(term, BNode):
        return None
    if isinstance(term, URIRef):
        if text.startswith(BASE_HOST):
            return f"relative IRI <{text[len(BASE):] if text.startswith(BASE) else text}> and no @base"
        if not _SCHEME.match(text):
            return f"relative IRI <{text}> and no @base"
        if "\x00" in text:
            return "NUL character in an IRI"
        if _IRI_BAD.search(text):
            return f"invalid character {_IRI_BAD.search(text).group()!r} in an IRI"
        return None
    return f"unsupported term {type(term).__name__}"


def _skolem(source: str, label: str) -> str:
    return "b" + hashlib.sha256(f"{source}\x00{label}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


class _SkolemLabels(dict):
    """rdflib's N-Triples `bnode_context`: `_:label` → a BNode named from (source, label)."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def get(self, label, default=None):  # the parser asks `.get(label, None)` first
        from rdflib import BNode
        return BNode(_skolem(self.source, label))


def remote_context(doc: Any) -> str | None:
    """The first `@context`/`@import` of a JSON-LD document that names a document (URL or file)."""
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "@context":
                    for c in (v if isinstance(v, list) else [v]):
                        if isinstance(c, str):
                            return c
                elif k == "@import" and isinstance(v, str):
                    return v
                stack.append(v)
        elif isinstance(x, list):
            stack.extend(x)
    return None


def _guess_format(path: str) -> str:
    from rdflib.util import guess_format
    fmt = guess_format(path) or ("xml" if path.endswith(".owl") else None)
    if fmt is None:
        raise KGStoreError(f"rdf: cannot tell the RDF syntax of {path} from its extension "
                           "(.nt, .nq, .ttl, .trig, .trix, .rdf, .n3, .jsonld …)")
    return fmt


def _raw(text: str) -> str:
    return text[:1024].encode("utf-8", "backslashreplace").decode("utf-8")


def _ordered_memory_class():
    from rdflib.plugins.stores.memory import Memory

    class OrderedMemory(Memory):
        """rdflib's Memory store that remembers the order statements were parsed in (its own
        iteration order comes from a set, so blank-node ordinals would change from run to run)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.order: dict = {}

        def add(self, triple, context, quoted=False):
            self.order.setdefault(triple, None)
            super().add(triple, context, quoted)
    return OrderedMemory


def _OrderedMemory():
    global _ORDERED
    if _ORDERED is None:
        _ORDERED = _ordered_memory_class()
    return _ORDERED()


_ORDERED = None


class _LineSink:
    """What rdflib's line parsers write to: the statements of the current line (graph dropped)."""

    def __init__(self):
        self.got: list = []

    def triple(self, s, p, o):  # N-Triples
        self.got.append((s, p, o))

    def get_context(self, _graph):  # N-Quads: every graph, named or default
        return self

    @property
    def default_context(self):
        return self

    def add(self, t):
        self.got.append(tuple(t[:3]))


@reader_registry.register("rdf")
class RDFReader(Reader):
    name = "rdf"
    line_based = False

    def plan(self, path: Path, options):
        files = super().plan(path, options)
        fmt = options.get("format") or _guess_format(files[0].path)
        from rdflib.plugin import PluginException, get
        from rdflib.parser import Parser
        try:
            get(fmt, Parser)
        except PluginException:
            raise KGStoreError(f"rdf: no rdflib parser for format {fmt!r}") from None
        return [InputFile(files[0].path, fmt)]

    def prepare(self, files, options):
        try:
            max_mib = float(options.get("max_mib", DEFAULT_MAX_MIB))
        except ValueError:
            raise KGStoreError(f"rdf: max_mib must be a number, not {options['max_mib']!r}") from None
        return {"source": f"rdf:{Path(files[0].path).name}", "max_bytes": int(max_mib * (1 << 20))}

    def parse_file(self, path: str, role: str, ctx) -> pa.RecordBatch:
        source = ctx.get("source") or f"rdf:{Path(path).name}"
        if role in LINE_FORMATS:
            return self._lines(path, role, source)
        try:
            data = read_bounded(path, int(ctx.get("max_bytes", DEFAULT_MAX_MIB << 20)))
        except UnsafeFileError as e:
            return _doc_reject(path, f"{e.detail} (rdf(max_mib=N):FILE raises the document limit)"
                               if e.reason == "too-large" else e.detail)
        return self._document(path, data, role, source)

    # ---- whole documents ---------------------------------------------------------------------
    def _document(self, path: str, data: bytes, role: str, source: str) -> pa.RecordBatch:
        import rdflib
        kwargs: dict[str, Any] = {"publicID": BASE}
        if role == "json-ld":
            try:
                doc = json.loads(data.decode("utf-8"))
            except (ValueError, RecursionError) as e:
                return _doc_reject(path, f"not JSON-LD: {type(e).__name__}: {str(e)[:200]}")
            remote = remote_context(doc)
            if remote is not None:
                return _doc_reject(path, f"JSON-LD context {remote[:200]!r} names a document; remote and file "
                                         "contexts are not fetched (network and file access are off): inline it")
            kwargs["base"] = BASE
        store = _OrderedMemory()
        graph = rdflib.Dataset(store=store, default_union=True) if role in QUAD_FORMATS else rdflib.Graph(store=store)
        try:
            graph.parse(data=data, format=role, **kwargs)
        except Exception as e:  # noqa: BLE001 - rdflib raises many types; all mean "does not parse"
            return _doc_reject(path, f"rdflib could not parse {role}: {type(e).__name__}: {_raw(str(e))[:300]}")
        triples = list(store.order)  # document order (every graph of a quad document, names dropped)
        ordinals: dict[Any, str] = {}
        key = _key_function(lambda b: ordinals.setdefault(b, _skolem(source, f"#{len(ordinals) + 1}")))
        items = []
        for s, p, o in triples:
            problem = next(filter(None, (term_problem(t) for t in (s, p, o))), None)
            items.append(((key(s), str(p), key(o) if not _is_literal(o) else str(o)), (s, p, o), problem))
        items.sort(key=lambda it: tuple(x.encode("utf-8", "surrogatepass") for x in it[0]))
        good = [(i + 1, t) for i, (_, t, problem) in enumerate(items) if problem is None]
        bad = [(i + 1, _raw(" ".join(x.n3() for x in t)), problem)
               for i, (_, t, problem) in enumerate(items) if problem is not None]
        return _with_rejects(self._records(good, key), bad)

    # ---- N-Triples / N-Quads, line by line ------------------------------------------------------
    def _lines(self, path: str, role: str, source: str) -> pa.RecordBatch:
        from rdflib.plugins.parsers.nquads import NQuadsParser
        from rdflib.plugins.parsers.ntriples import W3CNTriplesParser
        sink = _LineSink()
        labels = _SkolemLabels(source)
        parser = (NQuadsParser if role == "nquads" else W3CNTriplesParser)(sink, bnode_context=labels)
        parser.sink = sink
        good, bad = [], []
        try:
            f = open_regular(path)
        except UnsafeFileError as e:
            return _doc_reject(path, e.detail)
        with f:
            # lines end at b"\n" only (as read_lines counts them), not at a lone "\r"
            for line_no, (raw, n) in enumerate(iter_lines(f, R.MAX_LINE_BYTES), 1):
                if raw is None:
                    bad.append((line_no, "", R.too_long(n)))
                    continue
                problem = R.line_problem(raw)
                if problem is not None:
                    bad.append((line_no, raw[:1024].decode("utf-8", errors="replace"), problem))
                    continue
                line = raw.decode("utf-8").rstrip("\r")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                problem = escape_problem(line)
                if problem is None:
                    sink.got = []
                    parser.line = line
                    try:
                        parser.parseline(bnode_context=labels)
                    except Exception as e:  # noqa: BLE001 - ParseError and friends
                        problem = f"not {'N-Quads' if role == 'nquads' else 'N-Triples'}: {_raw(str(e))[:200]}"
                if problem is None:
                    problem = next(filter(None, (term_problem(t) for st in sink.got for t in st)), None)
                if problem is not None:
                    bad.append((line_no, _raw(line), problem))
                    continue
                good += [(line_no, st) for st in sink.got]
        return _with_rejects(self._records(good, _key_function(lambda b: str(b))), bad)

    def _records(self, statements: Iterable[tuple[int, tuple]], key: Callable) -> pa.RecordBatch:
        from rdflib import Literal
        rows: dict[str, list] = {k: [] for k in ("kind", "s", "p", "o", "dt", "line_no")}
        for line_no, (s, p, o) in statements:
            pred = str(p)
            if isinstance(o, Literal):
                if pred in LABEL_PREDICATES:
                    kind, pp, dt = R.ENTITY, "label", None
                else:
                    kind, pp = R.LITERAL, pred
                    dt = f"@{o.language}" if o.language else (str(o.datatype).replace(_XSD, "xsd:")
                                                               if o.datatype else "xsd:string")
                obj = str(o)
            else:
                kind, pp, dt, obj = R.TRIPLE, R.normalize_key(pred), None, key(o)
            for k, v in zip(rows, (kind, key(s), pp, obj, dt, line_no)):
                rows[k].append(v)
        n = len(rows["kind"])
        arrays = {k: pa.array(v, pa.int64() if k == "line_no" else pa.string()) for k, v in rows.items()}
        return pa.RecordBatch.from_arrays(
            [arrays["kind"], arrays["s"], arrays["p"], arrays["o"], arrays["dt"], arrays["line_no"],
             pa.array([True] * n), pa.nulls(n, pa.string()), pa.nulls(n, pa.string())], schema=R.RECORDS)


def _is_literal(term) -> bool:
    from rdflib import Literal
    return isinstance(term, Literal)


def _key_function(bnode_name: Callable) -> Callable:
    """term → store key: blank nodes `_:<skolem id>`, IRIs normalised as by the line readers."""
    from rdflib import BNode

    def key(term) -> str:
        return f"_:{bnode_name(term)}" if isinstance(term, BNode) else R.normalize_key(str(term))
    return key


def _doc_reject(path: str, reason: str) -> pa.RecordBatch:
    return R.rejects(pa.array([0], pa.int64()), pa.array([Path(path).name]), reason)


def _with_rejects(batch: pa.RecordBatch, bad: list[tuple[int, str, str]]) -> pa.RecordBatch:
    if not bad:
        return batch
    ln, raw, reason = zip(*bad)
    return R.concat([batch, R.rejects(pa.array(ln, pa.int64()), pa.array(raw, pa.string()),
                                      pa.array(reason, pa.string()))])
