"""`tsv:FILE` — head, relation, tail, tab-separated; a header line is detected, extra columns ignored."""
from __future__ import annotations

from pipeline.readers import records as R
from pipeline.readers.base import Reader, reader_registry
from pipeline.readers.columns import three_columns

#: words that make a first line a header rather than a triple
HEADER_WORDS = {"head", "relation", "tail", "h", "r", "t", "subject", "predicate", "object", "s", "p", "o",
                "rel", "source", "target", "head_id", "tail_id", "relation_id", "from", "to"}


def _is_header(line: str) -> bool:
    fields = [f.strip().lower() for f in line.split("\t")[:3]]
    return sum(f in HEADER_WORDS for f in fields) >= 2


@reader_registry.register("tsv")
class TSVReader(Reader):
    """Extra columns (e.g. FB15K's `split`) are ignored, never an error."""

    name = "tsv"

    def parse(self, batch, role, ctx):
        out = []
        if batch.num_rows and batch["line_no"][0].as_py() == 1 and _is_header(batch["line"][0].as_py()):
            out.append(R.make(R.HEADER, 1, line_no=batch["line_no"].slice(0, 1), primary=False, reason="header"))
            batch = batch.slice(1)
        good, s, p, o, rej = three_columns(batch, exact=False)
        out += [R.make(R.TRIPLE, good.num_rows, s=s, p=p, o=o, line_no=good["line_no"]), rej]
        return R.concat(out)

