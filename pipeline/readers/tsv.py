"""`tsv:FILE` — head, relation, tail, tab-separated; a header line is detected, extra columns ignored.

With a header, named columns may carry labels and descriptions (issue 29): `head_label`,
`relation_label`, `tail_label`, `head_description`, `relation_description`, `tail_description`
(any order after the first three; case-insensitive). An empty cell gives nothing; the first
label of a key in the input wins, and a key the store already has keeps its label.
"""
from __future__ import annotations


import pyarrow.compute as pc

from mmkg.kg_store.safe_io import iter_lines, open_regular
from mmkg.pipeline.readers import records as R
from mmkg.pipeline.readers.base import Reader, reader_registry
from mmkg.pipeline.readers.columns import three_columns

#: words that make a first line a header rather than a triple
HEADER_WORDS = {"head", "relation", "tail", "h", "r", "t", "subject", "predicate", "object", "s", "p", "o",
                "rel", "source", "target", "head_id", "tail_id", "relation_id", "from", "to"}
#: header name → (record kind, the field whose key it annotates, label | description)
TEXT_COLUMNS = {f"{part}_{what}": (R.RELATION if part == "relation" else R.ENTITY, i, what)
                for i, part in enumerate(("head", "relation", "tail")) for what in ("label", "description")}


def _is_header(line: str) -> bool:
    fields = [f.strip().lower() for f in line.split("\t")[:3]]
    return sum(f in HEADER_WORDS for f in fields) >= 2


def _first_line(path: str) -> str:
    with open_regular(path) as f:
        for raw, _n in iter_lines(f, R.MAX_LINE_BYTES):
            return raw.decode("utf-8", errors="replace").rstrip("\r") if raw is not None else ""
    return ""


@reader_registry.register("tsv")
class TSVReader(Reader):
    """Extra columns (e.g. FB15K's `split`) are ignored, never an error, unless the header names them
    as label/description columns (`TEXT_COLUMNS`)."""

    name = "tsv"

    def prepare(self, files, options):
        first = _first_line(files[0].path)
        if not _is_header(first):
            return {"text_columns": []}
        names = [f.strip().lower() for f in first.split("\t")]
        return {"text_columns": [(i, *TEXT_COLUMNS[n]) for i, n in enumerate(names) if i >= 3 and n in TEXT_COLUMNS]}

    def parse(self, batch, role, ctx):
        out = []
        if batch.num_rows and batch["line_no"][0].as_py() == 1 and _is_header(batch["line"][0].as_py()):
            out.append(R.make(R.HEADER, 1, line_no=batch["line_no"].slice(0, 1), primary=False, reason="header"))
            batch = batch.slice(1)
        good, s, p, o, rej = three_columns(batch, exact=False)
        out += [R.make(R.TRIPLE, good.num_rows, s=s, p=p, o=o, line_no=good["line_no"]), rej]
        if ctx.get("text_columns") and good.num_rows:
            parts, n = R.split_columns(good["line"], "\t")
            keys = (s, p, o)
            for col, kind, field, what in ctx["text_columns"]:
                text = pc.utf8_trim_whitespace(R.field(parts, col, n))
                has = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False)
                # secondary records: the line's one primary record is its triple
                out.append(R.make(kind, good.num_rows, s=keys[field], p=what, o=text, line_no=good["line_no"],
                                  primary=False).filter(has))
        return R.concat(out)
