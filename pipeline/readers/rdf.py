"""`rdf:FILE` — anything rdflib parses, the syntax chosen by extension (.nt, .ttl, .rdf/.xml, .n3, .jsonld).

A whole document is parsed at once (rdflib cannot resume after a syntax error); a file that
does not parse becomes one reject. N-Triples are line-oriented, so for them a failed parse is
retried line by line to reject only the bad lines. Statements are sorted so ids are stable.
Literal objects become literals (rdfs:label / skos:prefLabel become entity labels); IRIs and
blank nodes become triples.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from kg_store.errors import KGStoreError
from pipeline.readers import records as R
from pipeline.readers.base import InputFile, Reader, reader_registry

LABEL_PREDICATES = {
    "http://www.w3.org/2000/01/rdf-schema#label",
    "http://www.w3.org/2004/02/skos/core#prefLabel",
}
_XSD = "http://www.w3.org/2001/XMLSchema#"
NTRIPLES = ("nt", "ntriples", "nt11")


def _has_bad_lines(path: str) -> bool:
    with open(path, "rb") as f:
        return any(R.line_problem(raw.rstrip(b"\r\n")) is not None for raw in f)


def _guess_format(path: str) -> str:
    from rdflib.util import guess_format
    fmt = guess_format(path) or ("xml" if path.endswith(".owl") else None)
    if fmt is None:
        raise KGStoreError(f"rdf: cannot tell the RDF syntax of {path} from its extension (.nt, .ttl, .rdf, .n3 …)")
    return fmt


def _term_key(term) -> str:
    from rdflib import BNode
    return f"_:{term}" if isinstance(term, BNode) else R.normalize_key(str(term))


@reader_registry.register("rdf")
class RDFReader(Reader):
    name = "rdf"
    line_based = False

    def plan(self, path: Path, options):
        files = super().plan(path, options)
        _guess_format(files[0].path)
        return [InputFile(files[0].path, options.get("format") or _guess_format(files[0].path))]

    def parse_file(self, path: str, role: str, ctx) -> pa.RecordBatch:
        import rdflib
        if role in NTRIPLES and _has_bad_lines(path):
            return self._per_line(path)  # rdflib would take NUL/undecodable text; reject those lines
        graph = rdflib.Graph()
        try:
            graph.parse(path, format=role)
        except Exception as e:  # noqa: BLE001 - rdflib raises many types; all mean "does not parse"
            if role in NTRIPLES:
                return self._per_line(path)
            return R.rejects(pa.array([0], pa.int64()), pa.array([Path(path).name]),
                             f"rdflib could not parse {role}: {type(e).__name__}: {str(e)[:300]}")
        return self._records(sorted(graph, key=lambda t: tuple(str(x) for x in t)))

    def _per_line(self, path: str) -> pa.RecordBatch:
        import rdflib
        out, rejects = [], []
        with open(path, "rb") as f:
            # lines end at b"\n" only (as read_lines counts them), not at a lone "\r"
            for line_no, raw in enumerate(f, 1):
                raw = raw.rstrip(b"\n")
                problem = R.line_problem(raw)
                if problem is not None:
                    rejects.append((line_no, raw[:1024].decode("utf-8", errors="replace"), problem))
                    continue
                line = raw.decode("utf-8").rstrip("\r")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                g = rdflib.Graph()
                try:
                    g.parse(data=line, format="nt")
                except Exception as e:  # noqa: BLE001
                    rejects.append((line_no, line.rstrip("\n"), f"not N-Triples: {str(e)[:200]}"))
                    continue
                out += [(line_no, t) for t in g]
        batch = self._records([t for _, t in out], [n for n, _ in out])
        if not rejects:
            return batch
        ln, raw, reason = zip(*rejects)
        return R.concat([batch, R.rejects(pa.array(ln, pa.int64()), pa.array(raw), pa.array(reason))])

    def _records(self, statements, line_nos=None) -> pa.RecordBatch:
        from rdflib import Literal
        rows = {k: [] for k in ("kind", "s", "p", "o", "dt", "line_no")}
        for i, (s, p, o) in enumerate(statements):
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
                kind, pp, dt, obj = R.TRIPLE, R.normalize_key(pred), None, _term_key(o)
            for k, v in zip(rows, (kind, _term_key(s), pp, obj, dt, line_nos[i] if line_nos else i + 1)):
                rows[k].append(v)
        n = len(rows["kind"])
        arrays = {k: pa.array(v, pa.int64() if k == "line_no" else pa.string()) for k, v in rows.items()}
        return pa.RecordBatch.from_arrays(
            [arrays["kind"], arrays["s"], arrays["p"], arrays["o"], arrays["dt"], arrays["line_no"],
             pa.array([True] * n), pa.nulls(n, pa.string()), pa.nulls(n, pa.string())], schema=R.RECORDS)
