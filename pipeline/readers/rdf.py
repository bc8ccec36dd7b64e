"""`rdf:FILE` — RDF by extension (.nt, .nq, .ttl, .trig; .rdf/.xml/.owl, .jsonld, .trix, .n3).

N-Triples, N-Quads, Turtle and TriG are read by Oxigraph's parsers (`pyoxigraph`, strict and
W3C-conformant: the RDF 1.1 suites pass, tests/pipeline/test_rdf_conformance.py); RDF/XML, JSON-LD,
TriX and N3 by rdflib. Options: `rdf(base=IRI,max_mib=N,format=F):FILE` (`mmkg ingest --base IRI`
gives every RDF source without its own `base` one).

* line formats (N-Triples, N-Quads) are read in bounded blocks of lines (mmkg.kg_store.safe_io): a line
  over `MAX_LINE_BYTES` or not UTF-8 is one reject, and so is each statement Oxigraph refuses,
  at its line number; the rest of the file is kept. Turtle/TriG documents are read whole up to
  `max_mib` (default 256; more is one reject) and parsed as a stream, statements numbered in
  document order; each syntax error is one reject at its line, and a document with one gives
  nothing else (where a broken statement ends is a guess). With `--strict` any reject refuses
  the source;
* every valid term is kept (issue 33): IRIs of any scheme unchanged (only Wikidata entity IRIs
  become `Q42`/`P31` keys, as everywhere in the store), literals with their exact lexical form,
  datatype and language (control characters and NUL included: the terminal escaping of output is
  what protects screens); a term over `MAX_TERM_BYTES` and the RDF 1.2 additions (triple terms,
  base directions), which the store cannot hold, are rejects;
* relative IRIs are resolved against the `base` option only, never against the file's own path
  (that leaked local paths into keys); without one a statement holding a relative IRI is a
  reject. A document's own `@base` is honoured;
* blank nodes are skolemised (RDF 1.1 §3.5) to IRIs under `mmkg.kg_store.rdf.GENID`, named from the
  source name and the node's label (N-Triples/N-Quads `_:label`) or its order of first appearance
  (other syntaxes): re-ingesting a file gives the same keys, so nothing is duplicated;
* statements of every graph are read and graph names dropped (the store holds one graph);
* literal objects become `literals` rows (attribute statements, exported unchanged);
  `rdfs:label`/`skos:prefLabel` also give the entity its label;
* rdflib documents: nothing is fetched (a JSON-LD `@context`/`@import` naming a URL or `file:` is
  refused before rdflib could fetch it); a document that does not parse is one reject (`path:0`).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.rdf import GENID, key_from_uri
from mmkg.kg_store.safe_io import UnsafeFileError, iter_lines, open_regular, read_bounded
from mmkg.pipeline.readers import records as R
from mmkg.pipeline.readers.base import InputFile, Reader, reader_registry

LABEL_PREDICATES = {
    "http://www.w3.org/2000/01/rdf-schema#label",
    "http://www.w3.org/2004/02/skos/core#prefLabel",
}
_XSD = "http://www.w3.org/2001/XMLSchema#"
_XSD_STRING = _XSD + "string"
#: rdflib format names (as `guess_format` gives them) Oxigraph parses; line formats read in blocks
OXIGRAPH_FORMATS = {"nt": "N_TRIPLES", "ntriples": "N_TRIPLES", "nt11": "N_TRIPLES", "nquads": "N_QUADS",
                    "turtle": "TURTLE", "ttl": "TURTLE", "trig": "TRIG"}
LINE_FORMATS = ("N_TRIPLES", "N_QUADS")
QUAD_FORMATS = ("trix",)  # rdflib quad formats (a Dataset, graph names dropped)
#: base of relative IRIs for rdflib documents without a base: reserved (RFC 2606), never a local
#: path; IRIs still under it are rejected
BASE_HOST = "http://mmkg.invalid/"
BASE = BASE_HOST + "base/"
#: a whole document (Turtle, RDF/XML, JSON-LD, …) larger than this is one reject (option max_mib)
DEFAULT_MAX_MIB = 256
MAX_TERM_BYTES = R.MAX_LINE_BYTES
#: lines parsed per Oxigraph call (line formats): bounded memory, few calls
BLOCK_LINES = 16_384

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_IRI_BAD = re.compile(r'[\x00-\x20<>"{}|^`\\\x7f-\x9f]')
_SURROGATE = re.compile(r"[\ud800-\udfff]")


# ---- rules --------------------------------------------------------------------------------------
def _size_problem(text: str) -> str | None:
    if len(text) * 4 <= MAX_TERM_BYTES:  # UTF-8 takes at most 4 bytes a character
        return None
    n = len(text.encode("utf-8", "surrogatepass"))
    return f"term too long ({n} bytes > {MAX_TERM_BYTES})" if n > MAX_TERM_BYTES else None


def check_base(base: str | None) -> str | None:
    """`base` if it is an absolute IRI (Oxigraph's check), else a ConfigError; None stays None."""
    if base is None or base == "":
        return None
    import pyoxigraph
    try:
        pyoxigraph.NamedNode(base)
    except ValueError as e:
        raise ConfigError(f"rdf: base {base!r} is not an absolute IRI ({e})") from None
    if not _SCHEME.match(base):
        raise ConfigError(f"rdf: base {base!r} is not an absolute IRI (no scheme)")
    return base


def term_problem(term, base_given: bool = False) -> str | None:
    """Why one rdflib term may not enter the store, or None (rdflib documents; issue 17 rules)."""
    from rdflib import BNode, Literal, URIRef
    text = str(term)
    if _SURROGATE.search(text):
        return "surrogate code point (\\uD800-\\uDFFF) in a term"
    problem = _size_problem(text)
    if problem:
        return problem
    if isinstance(term, Literal):
        return term_problem(URIRef(term.datatype)) if term.datatype is not None else None
    if isinstance(term, BNode):
        return None
    if isinstance(term, URIRef):
        if not base_given and text.startswith(BASE_HOST):
            return f"relative IRI <{text[len(BASE):] if text.startswith(BASE) else text}> and no base (--base)"
        if not _SCHEME.match(text):
            return f"relative IRI <{text}> and no base (--base)"
        if _IRI_BAD.search(text):
            return f"invalid character {_IRI_BAD.search(text).group()!r} in an IRI"
        return None
    return f"unsupported term {type(term).__name__}"


def iri_key(iri: str) -> str:
    """The store key of an IRI: Wikidata's become `Q42`/`P31` (as everywhere in the store) and the
    export's own `urn:mmkg:entity:|relation:|attribute:<key>` their key again, so an export
    re-ingests onto the keys it came from; every other IRI is its own key."""
    if "wikidata.org" in iri:
        return R.normalize_key(iri)
    return key_from_uri(iri) if iri.startswith("urn:mmkg:") else iri


def skolem_iri(source: str, label: str) -> str:
    """The Skolem IRI of blank node `label` of `source` (stable: same source and label, same IRI)."""
    digest = hashlib.sha256(f"{source}\x00{label}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{GENID}b{digest}"


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


# ---- statements → records -------------------------------------------------------------------------
class _Rows:
    """Record columns built statement by statement (terms already as key / value strings), moved
    to Arrow every `FLUSH_ROWS` rows so a large file never holds its records as Python objects."""

    FLUSH_ROWS = 1 << 18

    def __init__(self):
        self.cols: dict[str, list] = {k: [] for k in ("kind", "s", "p", "o", "dt", "line_no", "primary")}
        self.bad: list[tuple[int, str, str]] = []
        self.done: list[pa.RecordBatch] = []

    def maybe_flush(self) -> None:
        """Between statements only: rows already in Arrow are final (`truncate` cannot reach them)."""
        if len(self.cols["kind"]) >= self.FLUSH_ROWS:
            self.done.append(self._arrow())
            for v in self.cols.values():
                v.clear()

    def add(self, kind: str, s: str, p: str, o: str, dt: str | None, line_no: int, primary: bool = True):
        c = self.cols
        c["kind"].append(kind)
        c["s"].append(s)
        c["p"].append(p)
        c["o"].append(o)
        c["dt"].append(dt)
        c["line_no"].append(line_no)
        c["primary"].append(primary)

    def mark(self) -> tuple[int, int]:
        return len(self.cols["kind"]), len(self.bad)

    def truncate(self, mark: tuple[int, int]) -> None:
        for v in self.cols.values():
            del v[mark[0]:]
        del self.bad[mark[1]:]

    def literal(self, s: str, pred: str, value: str, dt: str, line_no: int, *, of_property: bool = False):
        if of_property and pred in R.ANNOTATIONS:  # `wdt:P31 rdfs:label "…"`: the relation's label
            self.add(R.RELATION, s, R.ANNOTATIONS[pred], value, None, line_no)
            return
        self.add(R.LITERAL, s, pred, value, dt, line_no)
        if pred in LABEL_PREDICATES:  # the statement stays data; the label is derived from it
            self.add(R.ENTITY, s, "label", value, None, line_no, primary=False)

    def _arrow(self) -> pa.RecordBatch:
        c = self.cols
        n = len(c["kind"])
        arrays = [pa.array(c[k], pa.int64() if k == "line_no" else pa.bool_() if k == "primary" else pa.string())
                  for k in ("kind", "s", "p", "o", "dt", "line_no", "primary")]
        return pa.RecordBatch.from_arrays(arrays + [pa.nulls(n, pa.string()), pa.nulls(n, pa.string())],
                                          schema=R.RECORDS)

    def batch(self) -> pa.RecordBatch:
        return _with_rejects(R.concat([*self.done, self._arrow()]), self.bad)


def _datatype(iri: str) -> str:
    return "xsd:" + iri[len(_XSD):] if iri.startswith(_XSD) else iri


class _OxTerms:
    """Oxigraph terms → store keys and literal columns; blank nodes named by `bnode_name`.

    The per-statement path of every N-Triples line: plain attribute reads, the Wikidata regex and
    the UTF-8 length only where they can matter."""

    def __init__(self, bnode_name: Callable[[str], str]):
        import pyoxigraph as ox
        self.named, self.blank, self.lit = ox.NamedNode, ox.BlankNode, ox.Literal
        self.bnode_name = bnode_name

    def key(self, term) -> str:
        if isinstance(term, self.named):
            v = term.value
            return iri_key(v)  # Q42/P31 keys, as everywhere
        if isinstance(term, self.blank):
            return self.bnode_name(term.value)
        raise _Unsupported("a triple term (RDF 1.2) cannot be stored")

    def add(self, rows: _Rows, quad, line_no: int) -> str | None:
        """Append the records of one statement; returns why it cannot be stored, or None."""
        s, p, o = quad.subject, quad.predicate.value, quad.object
        try:
            ks = self.key(s)
            if isinstance(o, self.lit):
                value = o.value
                problem = _size_problem(ks) or _size_problem(value)
                if problem:
                    return problem
                if o.direction is not None:
                    return "a literal with a base direction (RDF 1.2) cannot be stored"
                lang = o.language
                rows.literal(ks, iri_key(p), value, f"@{lang}" if lang else _datatype(o.datatype.value), line_no,
                             of_property=isinstance(s, self.named) and s.value.startswith(R.PROPERTY_IRI_PREFIXES))
            else:
                ko = self.key(o)
                problem = _size_problem(ks) or _size_problem(ko)
                if problem:
                    return problem
                rows.add(R.TRIPLE, ks, iri_key(p), ko, None, line_no)
        except _Unsupported as e:
            return str(e)
        return None


class _Unsupported(Exception):
    pass


def _syntax_error(e: SyntaxError, fmt_name: str, base: str | None = None) -> tuple[int, str]:
    """(line number, one-line reason) of an Oxigraph syntax error."""
    line = e.lineno if isinstance(e.lineno, int) else 0
    msg = e.msg if isinstance(e.msg, str) else str(e)
    msg = re.sub(r"^Parser error at line \d+ (?:between columns \d+ and \d+|column \d+): ", "", msg)
    msg = _raw(" ".join(msg.split()))[:300]
    if base is None and fmt_name in ("Turtle", "TriG") and msg.startswith("No scheme found"):
        return line, f"relative IRI and no base IRI (mmkg ingest --base IRI, or rdf(base=IRI):FILE): {msg}"
    return line, f"not {fmt_name}: {msg}"


def _events(parser) -> Iterator[tuple[Any, SyntaxError | None]]:
    """(quad, None) and (None, error) in document order; Oxigraph resumes after an error."""
    while True:
        try:
            yield next(parser), None
        except StopIteration:
            return
        except SyntaxError as e:
            yield None, e


_FORMAT_NAMES = {"N_TRIPLES": "N-Triples", "N_QUADS": "N-Quads", "TURTLE": "Turtle", "TRIG": "TriG"}


@reader_registry.register("rdf")
class RDFReader(Reader):
    name = "rdf"
    line_based = False
    takes_base = True

    def plan(self, path: Path, options):
        files = super().plan(path, options)
        fmt = options.get("format") or _guess_format(files[0].path)
        if fmt not in OXIGRAPH_FORMATS:
            from rdflib.plugin import PluginException, get
            from rdflib.parser import Parser
            try:
                get(fmt, Parser)
            except PluginException:
                raise KGStoreError(f"rdf: no parser for format {fmt!r}") from None
        check_base(options.get("base"))
        return [InputFile(files[0].path, fmt)]

    def prepare(self, files, options):
        try:
            max_mib = float(options.get("max_mib", DEFAULT_MAX_MIB))
        except ValueError:
            raise KGStoreError(f"rdf: max_mib must be a number, not {options['max_mib']!r}") from None
        # the plan adds "source", the source's unique name (blank nodes are named from it)
        return {"max_bytes": int(max_mib * (1 << 20)),
                "base": check_base(options.get("base"))}

    def parse_file(self, path: str, role: str, ctx) -> pa.RecordBatch:
        source = ctx.get("source") or f"rdf:{Path(path).name}"
        base = ctx.get("base")
        ox_format = OXIGRAPH_FORMATS.get(role)
        if ox_format in LINE_FORMATS:
            return self._lines(path, ox_format, source, base)
        try:
            data = read_bounded(path, int(ctx.get("max_bytes", DEFAULT_MAX_MIB << 20)))
        except UnsafeFileError as e:
            return _doc_reject(path, f"{e.detail} (rdf(max_mib=N):FILE raises the document limit)"
                               if e.reason == "too-large" else e.detail)
        if ox_format is not None:
            return self._ox_document(data, ox_format, source, base)
        return self._document(path, data, role, source, base)

    # ---- Turtle / TriG: Oxigraph, one stream --------------------------------------------------
    def _ox_document(self, data: bytes, ox_format: str, source: str, base: str | None) -> pa.RecordBatch:
        import pyoxigraph as ox
        ordinals: dict[str, str] = {}  # the parser's blank node ids are random: name by first appearance
        terms = _OxTerms(lambda b: ordinals.setdefault(b, skolem_iri(source, f"#{len(ordinals) + 1}")))
        rows, n, last_error, syntax = _Rows(), 0, -1, []
        lines: list[bytes] | None = None
        parser = ox.parse(data, getattr(ox.RdfFormat, ox_format), base_iri=base)
        for quad, error in _events(parser):
            n += 1
            if error is not None:
                line_no, reason = _syntax_error(error, _FORMAT_NAMES[ox_format], base)
                if line_no == last_error:
                    continue  # one reject per line: the parser may stumble twice on one statement
                last_error = line_no
                lines = lines if lines is not None else data.split(b"\n")
                raw = lines[line_no - 1].decode("utf-8", "replace") if 0 < line_no <= len(lines) else ""
                syntax.append((line_no, _raw(raw), reason))
                continue
            # Oxigraph gives statements no position: they are numbered in document order
            problem = terms.add(rows, quad, n)
            if problem is not None:
                rows.bad.append((n, _raw(str(quad)), f"{problem} (statement {n})"))
            rows.maybe_flush()
        if syntax:
            # after a syntax error Oxigraph resumes at a guess (and may have given part of the bad
            # statement): a document with one is its syntax errors, one reject each, and nothing else
            rows = _Rows()
            rows.bad = syntax
        return rows.batch()

    # ---- N-Triples / N-Quads: Oxigraph, block by block of lines ----------------------------------
    def _lines(self, path: str, ox_format: str, source: str, base: str | None) -> pa.RecordBatch:
        import pyoxigraph as ox
        fmt, name = getattr(ox.RdfFormat, ox_format), _FORMAT_NAMES[ox_format]
        terms = _OxTerms(lambda label: skolem_iri(source, label))
        rows = _Rows()
        try:
            f = open_regular(path)
        except UnsafeFileError as e:
            return _doc_reject(path, e.detail)
        with f:
            for first, block in _line_blocks(f):
                self._block(first, block, fmt, name, base, terms, rows)
                rows.maybe_flush()
        return rows.batch()

    @staticmethod
    def _block(first: int, block: list, fmt, name: str, base, terms: _OxTerms, rows: _Rows) -> None:
        """Parse lines `first …` at once; a statement is one line, so without errors the k-th
        statement read is the k-th statement line."""
        import pyoxigraph as ox
        texts = [b"" if raw is None else raw for raw, _ in block]
        for i, (raw, n) in enumerate(block):
            if raw is None:
                rows.bad.append((first + i, "", R.too_long(n)))
        data = b"\n".join(texts)
        try:
            data.decode("utf-8")  # the whole block at once; line by line only when it fails
        except UnicodeDecodeError:
            for i, raw in enumerate(texts):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    rows.bad.append((first + i, raw[:1024].decode("utf-8", "replace"), R.INVALID_UTF8))
                    texts[i] = b""
            data = b"\n".join(texts)
        statement_lines = [i for i, raw in enumerate(texts) if raw.lstrip()[:1] not in (b"", b"#")]
        if not statement_lines:
            return
        nxt, mark = 0, rows.mark()
        for quad, error in _events(ox.parse(data, fmt, base_iri=base)):
            # Oxigraph resumes after an error and may still give the bad line's statement, or
            # name the next line: a block with an error (or two statements on a line) is parsed
            # again line by line, which is exact
            if error is not None or nxt >= len(statement_lines):
                rows.truncate(mark)
                RDFReader._line_by_line(first, texts, statement_lines, fmt, name, base, terms, rows)
                return
            j = statement_lines[nxt]
            nxt += 1
            problem = terms.add(rows, quad, first + j)
            if problem is not None:
                rows.bad.append((first + j, _raw(texts[j].decode("utf-8", "replace")), problem))
        if nxt != len(statement_lines):
            rows.truncate(mark)
            RDFReader._line_by_line(first, texts, statement_lines, fmt, name, base, terms, rows)

    @staticmethod
    def _line_by_line(first: int, texts: list[bytes], statement_lines: list[int], fmt, name: str, base,
                      terms: _OxTerms, rows: _Rows) -> None:
        """The slow path of a block: each statement line parsed alone; more than one statement on a
        line is not N-Triples/N-Quads (one per line, RDF 1.1 grammar)."""
        import pyoxigraph as ox
        for j in statement_lines:
            got = list(_events(ox.parse(texts[j], fmt, base_iri=base)))
            raw = _raw(texts[j].decode("utf-8", "replace"))
            error = next((e for _, e in got if e is not None), None)
            if error is not None:
                rows.bad.append((first + j, raw, _syntax_error(error, name)[1]))
            elif len(got) != 1:
                rows.bad.append((first + j, raw, f"not {name}: {len(got)} statements on one line"))
            else:
                problem = terms.add(rows, got[0][0], first + j)
                if problem is not None:
                    rows.bad.append((first + j, raw, problem))

    # ---- rdflib documents (RDF/XML, JSON-LD, TriX, N3) -----------------------------------------
    def _document(self, path: str, data: bytes, role: str, source: str, base: str | None) -> pa.RecordBatch:
        import rdflib
        kwargs: dict[str, Any] = {"publicID": base or BASE}
        if role == "json-ld":
            try:
                doc = json.loads(data.decode("utf-8"))
            except (ValueError, RecursionError) as e:
                return _doc_reject(path, f"not JSON-LD: {type(e).__name__}: {str(e)[:200]}")
            remote = remote_context(doc)
            if remote is not None:
                return _doc_reject(path, f"JSON-LD context {remote[:200]!r} names a document; remote and file "
                                         "contexts are not fetched (network and file access are off): inline it")
            kwargs["base"] = base or BASE
        store = _OrderedMemory()
        graph = rdflib.Dataset(store=store, default_union=True) if role in QUAD_FORMATS else rdflib.Graph(store=store)
        try:
            graph.parse(data=data, format=role, **kwargs)
        except Exception as e:  # noqa: BLE001 - rdflib raises many types; all mean "does not parse"
            return _doc_reject(path, f"rdflib could not parse {role}: {type(e).__name__}: {_raw(str(e))[:300]}")
        ordinals: dict[Any, str] = {}

        def key(term) -> str:
            if isinstance(term, rdflib.BNode):
                return ordinals.setdefault(term, skolem_iri(source, f"#{len(ordinals) + 1}"))
            return iri_key(str(term))
        items = []
        for s, p, o in store.order:  # document order (every graph of a quad document, names dropped)
            problem = next(filter(None, (term_problem(t, base is not None) for t in (s, p, o))), None)
            items.append(((key(s), str(p), key(o) if not isinstance(o, rdflib.Literal) else str(o)), (s, p, o),
                          problem))
        # rdflib may report statements out of document order: sorted, ids do not depend on it
        items.sort(key=lambda it: tuple(x.encode("utf-8", "surrogatepass") for x in it[0]))
        rows = _Rows()
        for i, ((ks, kp, ko), (s, p, o), problem) in enumerate(items, 1):
            if problem is not None:
                rows.bad.append((i, _raw(" ".join(_n3(x) for x in (s, p, o))), problem))
            elif isinstance(o, rdflib.Literal):
                dt = f"@{o.language}" if o.language else _datatype(str(o.datatype) if o.datatype else _XSD_STRING)
                rows.literal(ks, iri_key(kp), ko, dt, i, of_property=str(s).startswith(R.PROPERTY_IRI_PREFIXES))
            else:
                rows.add(R.TRIPLE, ks, iri_key(kp), ko, None, i)
        return rows.batch()


def _n3(term) -> str:
    try:
        return term.n3()
    except Exception:  # noqa: BLE001 - rdflib refuses to write some terms it parsed
        return repr(str(term))


def _line_blocks(f) -> Iterator[tuple[int, list]]:
    """(first line number, [(line, length) …]) blocks of `BLOCK_LINES` lines (safe_io.iter_lines:
    lines end at b"\\n" only, an over-long line is never held whole)."""
    block: list = []
    first = 1
    for item in iter_lines(f, R.MAX_LINE_BYTES):
        block.append(item)
        if len(block) == BLOCK_LINES:
            yield first, block
            first += len(block)
            block = []
    if block:
        yield first, block


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


def _doc_reject(path: str, reason: str) -> pa.RecordBatch:
    return R.rejects(pa.array([0], pa.int64()), pa.array([Path(path).name]), reason)


def _with_rejects(batch: pa.RecordBatch, bad: list[tuple[int, str, str]]) -> pa.RecordBatch:
    if not bad:
        return batch
    ln, raw, reason = zip(*bad)
    return R.concat([batch, R.rejects(pa.array(ln, pa.int64()), pa.array(raw, pa.string()),
                                      pa.array(reason, pa.string()))])
