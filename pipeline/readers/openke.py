"""`openke:DIR` — OpenKE id files: entity2id, relation2id and `*2id` splits of `h t r` ids.

The first line of every file is a count (a header, not data). The split files refer to ids, so
`prepare` loads both id maps in the driver and ships them (small) to the parse function.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kg_store.errors import KGStoreError
from pipeline.readers import records as R
from pipeline.readers.base import InputFile, Reader, reader_registry, require_dir
from pipeline.readers.columns import regex_fields

SPLITS = ("train2id.txt", "valid2id.txt", "test2id.txt")
_ID_LINE = r"^\s*(?P<key>.*\S)\s+(?P<id>\d+)\s*$"


def _first_line_is_count(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    is_header = pc.and_(pc.equal(batch["line_no"], 1), pc.match_substring_regex(batch["line"], r"^\s*\d+\s*$"))
    header = R.make(R.HEADER, int(pc.sum(is_header).as_py() or 0), line_no=batch["line_no"].filter(is_header),
                    primary=False)
    return batch.filter(pc.invert(is_header)), header


def _load_ids(path: Path) -> list[str | None]:
    """id → normalised key (None for ids that no line names)."""
    pairs = {}
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            # a line that read_lines rejects (invalid UTF-8, NUL, too long) names no id either,
            # so a split line using that id is rejected as "id not in entity2id"
            if R.line_problem(raw.rstrip(b"\r\n")) is not None:
                continue
            parts = raw.decode("utf-8").split()
            if i == 0 and len(parts) == 1 and parts[0].isdigit():
                continue
            if len(parts) >= 2 and parts[-1].isdigit():
                pairs[int(parts[-1])] = R.normalize_key(" ".join(parts[:-1]))
    out: list[str | None] = [None] * (max(pairs) + 1 if pairs else 0)
    for i, k in pairs.items():
        out[i] = k
    return out


@reader_registry.register("openke")
class OpenKEReader(Reader):
    name = "openke"

    def plan(self, path: Path, options):
        root = require_dir(self.name, path)
        needed = ["entity2id.txt", "relation2id.txt"]
        missing = [n for n in needed if not (root / n).exists()]
        if missing:
            raise KGStoreError(f"openke: {root} lacks {', '.join(missing)}")
        files = [InputFile(str((root / "entity2id.txt").resolve()), "entities"),
                 InputFile(str((root / "relation2id.txt").resolve()), "relations")]
        files += [InputFile(str((root / s).resolve()), "split") for s in SPLITS if (root / s).exists()]
        return files

    def prepare(self, files, options):
        by_role = {f.role: f.path for f in files}
        return {"entities": _load_ids(Path(by_role["entities"])), "relations": _load_ids(Path(by_role["relations"]))}

    def parse(self, batch, role, ctx):
        batch, header = _first_line_is_count(batch)
        if role in ("entities", "relations"):
            good, m, rej = regex_fields(batch, _ID_LINE, "expected 'key id'")
            kind = R.ENTITY if role == "entities" else R.RELATION
            return R.concat([R.make(kind, good.num_rows, s=R.normalize_keys(m.field("key")), line_no=good["line_no"]),
                             rej, header])
        good, m, rej = regex_fields(batch, r"^\s*(?P<h>\d+)\s+(?P<t>\d+)\s+(?P<r>\d+)\s*$",
                                    "expected 'head_id tail_id relation_id'")
        ents = pa.array(ctx["entities"], pa.string())
        rels = pa.array(ctx["relations"], pa.string())
        ids = {g: pc.cast(m.field(g), pa.int64()).to_numpy() for g in ("h", "r", "t")}
        in_range = (ids["h"] < len(ents)) & (ids["t"] < len(ents)) & (ids["r"] < len(rels))
        safe = {g: np.where(in_range, ids[g], 0) for g in ids}
        h = pc.take(ents, safe["h"]) if len(ents) else pa.nulls(len(safe["h"]), pa.string())
        t = pc.take(ents, safe["t"]) if len(ents) else pa.nulls(len(safe["t"]), pa.string())
        r = pc.take(rels, safe["r"]) if len(rels) else pa.nulls(len(safe["r"]), pa.string())
        ok = pc.and_(pa.array(in_range), pc.and_(pc.and_(pc.is_valid(h), pc.is_valid(t)), pc.is_valid(r)))
        ok = pc.fill_null(ok, False)
        bad = pc.invert(ok)
        rej2 = R.rejects(pc.filter(good["line_no"], bad), pc.filter(good["line"], bad),
                         "id not in entity2id/relation2id")
        triples = R.make(R.TRIPLE, good.num_rows, s=h, p=r, o=t, line_no=good["line_no"]).filter(ok)
        return R.concat([triples, rej, rej2, header])
