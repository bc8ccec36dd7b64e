"""The one Arrow schema every reader emits, and vectorised helpers to build it.

A reader turns a batch of raw lines (`line_no`, `line`) into a batch of typed *records*. One
schema for all kinds keeps Spark's `mapInArrow` and the local engine identical: the engine only
adds where a record came from (`src`, `file_seq`, `pos`), the assembly step interprets `kind`.

Every non-blank, non-header line yields exactly one record with `primary = true` (its triple,
label, link … or its reject), so "lines read" is the number of primary records; a line may add
secondary records (e.g. an fbmap line gives a link and a label hint).
"""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

ENTITY = "entity"            # s=key, p="label"|"description"|None, o=text; makes the entity exist
ENTITY_HINT = "entity_hint"  # s=key, p="label", o=text; a fallback label, does not create the entity
RELATION = "relation"        # s=key, p="label"|"description"|None, o=text
TRIPLE = "triple"            # s=head key, p=relation key, o=tail key
LITERAL = "literal"          # s=entity key, p=attribute, o=value, dt=datatype
LINK = "link"                # s=key, o=key (same thing), p=link kind ("sameAs", "fbmap")
IMAGE = "image"              # s=entity key, o=absolute file path, p=source uri (as written in the input)
REJECT = "reject"            # reason, raw
HEADER = "header"            # a header/count line: neither read nor rejected (reported as skipped)

#: RDF predicates that annotate their subject: the entity's (or relation's) label or description
ANNOTATIONS = {
    "http://www.w3.org/2000/01/rdf-schema#label": "label",
    "http://www.w3.org/2004/02/skos/core#prefLabel": "label",
    "https://schema.org/description": "description",
    "http://schema.org/description": "description",
}
#: IRIs that name a property by themselves (Wikidata direct claims `wdt:`, the export's own relation
#: IRIs): their annotations label the relation even before any triple uses it
PROPERTY_IRI_PREFIXES = ("http://www.wikidata.org/prop/direct/", "https://www.wikidata.org/prop/direct/",
                         "urn:mmkg:relation:")

KINDS = (ENTITY, ENTITY_HINT, RELATION, TRIPLE, LITERAL, LINK, IMAGE, REJECT, HEADER)

RECORDS = pa.schema([
    ("kind", pa.string()), ("s", pa.string()), ("p", pa.string()), ("o", pa.string()),
    ("dt", pa.string()), ("line_no", pa.int64()), ("primary", pa.bool_()),
    ("reason", pa.string()), ("raw", pa.string()),
])

#: what the engines add to each reader batch
LOCATED = RECORDS.append(pa.field("src", pa.int32())).append(pa.field("file_seq", pa.int32())) \
    .append(pa.field("pos", pa.int64()))

LINES = pa.schema([("line_no", pa.int64()), ("line", pa.string())])

#: bits of `pos` below the file sequence number: line numbers up to 2**40 per file
LINE_BITS = 40

#: the longest line any line reader accepts (bytes). No record of our formats comes near it (the
#: real data's longest line is 260 B); a longer one is garbage or an attack, and rejecting it
#: keeps a single line from becoming a multi-MB key that every later stage would carry.
MAX_LINE_BYTES = 1 << 20
#: reject reasons shared by every line reader (read_lines, the OpenKE id maps, N-Triples)
INVALID_UTF8 = "invalid UTF-8"
NUL_BYTE = "NUL byte in line"


def too_long(n_bytes: int) -> str:
    return f"line too long ({n_bytes} bytes > {MAX_LINE_BYTES})"


def line_problem(raw: bytes) -> str | None:
    """Why a raw line (without its newline) is not a record of any line format, or None."""
    if len(raw) > MAX_LINE_BYTES:
        return too_long(len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return INVALID_UTF8
    return NUL_BYTE if "\x00" in text else None


def empty() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=RECORDS)


def make(kind: str, n: int | None = None, *, s=None, p=None, o=None, dt=None, line_no=None,
         primary=True, reason=None, raw=None) -> pa.RecordBatch:
    """Records of one kind; scalar arguments are broadcast to the length of the array ones."""
    cols = {"s": s, "p": p, "o": o, "dt": dt, "line_no": line_no, "primary": primary,
            "reason": reason, "raw": raw}
    if n is None:
        n = next(len(v) for v in cols.values() if isinstance(v, (pa.Array, pa.ChunkedArray, list)))
    arrays = [pa.array([kind] * n, pa.string()) if n else pa.array([], pa.string())]
    for field in RECORDS:
        if field.name == "kind":
            continue
        v = cols[field.name]
        if isinstance(v, pa.ChunkedArray):
            v = v.combine_chunks()
        if isinstance(v, pa.Array):
            arrays.append(v.cast(field.type))
        elif isinstance(v, list):
            arrays.append(pa.array(v, field.type))
        else:
            arrays.append(pa.nulls(n, field.type) if v is None else pa.array([v] * n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=RECORDS)


def rejects(line_no: pa.Array, raw: pa.Array, reason: str | pa.Array) -> pa.RecordBatch:
    return make(REJECT, len(line_no), line_no=line_no, raw=raw, reason=reason)


def concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return empty()
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches, RECORDS).combine_chunks().to_batches()[0]


def split_columns(lines: pa.Array, sep: str, max_splits: int | None = None) -> tuple[pa.Array, pa.Array]:
    """(list of fields, field count) for each line."""
    parts = pc.split_pattern(lines, sep, max_splits=max_splits)
    return parts, pc.list_value_length(parts)


def field(parts: pa.Array, i: int, n: pa.Array) -> pa.Array:
    """The i-th field, null where the line has fewer fields."""
    safe = pc.if_else(pc.greater(n, i), parts, pa.scalar([""] * (i + 1), parts.type))
    return pc.if_else(pc.greater(n, i), pc.list_element(safe, i), pa.scalar(None, pa.string()))


# ---- keys ----------------------------------------------------------------------------------
#: Wikidata IRIs of an item or property (`wd:`, `wdt:` direct claims, `wiki/Property:` pages) → the
#: bare `Q42` / `P31` keys MarKG uses, so an export (`wdt:P31`) re-ingests onto MarKG's `P31`
_WIKIDATA = r"^https?://(?:www\.)?wikidata\.org/(?:entity/|wiki/|wiki/Property:|prop/direct/)([QP]\d+)$"
#: the same as prefixed names in line formats (TSV `wd:Q42 wdt:P31 wd:Q5`)
_WIKIDATA_PREFIXED = r"^(?:wd|wdt):([QP]\d+)$"


def normalize_keys(tokens: pa.Array) -> pa.Array:
    """Source keys as stored: no <>, Wikidata URLs as bare QIDs (so MarKG and FB15K meet)."""
    # plain slicing and a cheap substring test first: regex replacement is the slow path here
    t = pc.utf8_trim_whitespace(tokens)
    bracketed = pc.and_(pc.starts_with(t, "<"), pc.ends_with(t, ">"))
    t = pc.if_else(bracketed, pc.utf8_slice_codeunits(t, 1, -1), t)
    if pc.any(pc.match_substring(t, "wikidata.org")).as_py():
        t = pc.replace_substring_regex(t, _WIKIDATA, r"\1")
    if pc.any(pc.or_(pc.starts_with(t, "wd:"), pc.starts_with(t, "wdt:"))).as_py():
        t = pc.replace_substring_regex(t, _WIKIDATA_PREFIXED, r"\1")
    return t


def normalize_key(token: str) -> str:
    t = token.strip()
    if t.startswith("<") and t.endswith(">"):
        t = t[1:-1]
    m = re.match(_WIKIDATA, t) or re.match(_WIKIDATA_PREFIXED, t)
    return m.group(1) if m else t


def is_blank(lines: pa.Array) -> pa.Array:
    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0)
