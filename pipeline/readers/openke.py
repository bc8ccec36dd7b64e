"""`openke:DIR` — OpenKE id files: entity2id, relation2id and `*2id` splits of `h t r` ids.

The first line of every file is a count (a header, not data). The split files refer to ids, so
`prepare` loads both id maps in the driver and ships them (small) to the parse function.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmkg.kg_store.errors import KGStoreError
from mmkg.pipeline.readers import records as R
from mmkg.kg_store.safe_io import iter_lines, open_regular
from mmkg.pipeline.readers.base import InputFile, Reader, reader_registry, require_dir, source_file
from mmkg.pipeline.readers.columns import regex_fields

SPLITS = ("train2id.txt", "valid2id.txt", "test2id.txt")
_ID_LINE = r"^\s*(?P<key>.*\S)\s+(?P<id>\d+)\s*$"


def _first_line_is_count(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    is_header = pc.and_(pc.equal(batch["line_no"], 1), pc.match_substring_regex(batch["line"], r"^\s*\d+\s*$"))
    header = R.make(R.HEADER, int(pc.sum(is_header).as_py() or 0), line_no=batch["line_no"].filter(is_header),
                    primary=False)
    return batch.filter(pc.invert(is_header)), header


def _load_ids(path: Path) -> dict[int, str]:
    """id → normalised key of every line that names one.

    A dict, not a list indexed by id: a 20-byte line `x 99999999999` must not allocate
    gigabytes (issue 17). The file is read through `mmkg.kg_store.safe_io` (regular files only) in
    bounded blocks, so a line over `MAX_LINE_BYTES` is never held whole.
    """
    pairs: dict[int, str] = {}
    with open_regular(path) as f:
        for i, (raw, _n) in enumerate(iter_lines(f, R.MAX_LINE_BYTES)):
            # a line that read_lines rejects (invalid UTF-8, NUL, too long) names no id either,
            # so a split line using that id is rejected as "id not in entity2id"
            if raw is None:
                continue
            raw = raw.rstrip(b"\r")
            if R.line_problem(raw) is not None:
                continue
            parts = raw.decode("utf-8").split()
            if i == 0 and len(parts) == 1 and parts[0].isdigit():
                continue
            # ASCII digits that fit uint64, as the split files' ids must
            if len(parts) >= 2 and parts[-1].isascii() and parts[-1].isdigit() and len(parts[-1]) <= 19:
                pairs[int(parts[-1])] = R.normalize_key(" ".join(parts[:-1]))
    return pairs


def _lookup(ids: np.ndarray, table: dict[str, list]) -> pa.Array:
    """Keys of `ids` (int64) from a sorted (ids, keys) table; null where an id is unknown."""
    known = np.asarray(table["ids"], dtype=np.uint64) if table["ids"] else np.empty(0, np.uint64)
    if known.size == 0 or ids.size == 0:
        return pa.nulls(ids.size, pa.string())
    pos = np.clip(np.searchsorted(known, ids), 0, known.size - 1)
    hit = known[pos] == ids
    keys = pc.take(pa.array(table["keys"], pa.string()), pa.array(pos, pa.int64()))
    return pc.if_else(pa.array(hit), keys, pa.scalar(None, pa.string()))


def _id_table(pairs: dict[int, str]) -> dict[str, list]:
    order = sorted(pairs)
    return {"ids": order, "keys": [pairs[i] for i in order]}


@reader_registry.register("openke")
class OpenKEReader(Reader):
    name = "openke"

    def plan(self, path: Path, options):
        root = require_dir(self.name, path)
        needed = ["entity2id.txt", "relation2id.txt"]
        missing = [n for n in needed if not (root / n).exists() and not (root / n).is_symlink()]
        if missing:
            raise KGStoreError(f"openke: {root} lacks {', '.join(missing)}")
        files = [InputFile(source_file(self.name, root / "entity2id.txt", root), "entities"),
                 InputFile(source_file(self.name, root / "relation2id.txt", root), "relations")]
        files += [InputFile(source_file(self.name, root / s, root), "split") for s in SPLITS
                  if (root / s).exists() or (root / s).is_symlink()]
        return files

    def prepare(self, files, options):
        by_role = {f.role: f.path for f in files}
        return {"entities": _id_table(_load_ids(Path(by_role["entities"]))),
                "relations": _id_table(_load_ids(Path(by_role["relations"])))}

    def parse(self, batch, role, ctx):
        batch, header = _first_line_is_count(batch)
        if role in ("entities", "relations"):
            good, m, rej = regex_fields(batch, _ID_LINE, "expected 'key id'")
            kind = R.ENTITY if role == "entities" else R.RELATION
            return R.concat([R.make(kind, good.num_rows, s=R.normalize_keys(m.field("key")), line_no=good["line_no"]),
                             rej, header])
        good, m, rej = regex_fields(batch, r"^\s*(?P<h>\d+)\s+(?P<t>\d+)\s+(?P<r>\d+)\s*$",
                                    "expected 'head_id tail_id relation_id'")
        # ids are digits only, but may be longer than any integer type: those name no entity either
        digits = {g: m.field(g) for g in ("h", "r", "t")}
        fits = pc.and_(pc.and_(*(pc.less_equal(pc.utf8_length(digits[g]), 19) for g in ("h", "t"))),
                       pc.less_equal(pc.utf8_length(digits["r"]), 19))
        ids = {g: pc.cast(pc.if_else(fits, digits[g], "0"), pa.uint64()).to_numpy() for g in digits}
        h = _lookup(ids["h"], ctx["entities"])
        t = _lookup(ids["t"], ctx["entities"])
        r = _lookup(ids["r"], ctx["relations"])
        ok = pc.and_(fits, pc.and_(pc.and_(pc.is_valid(h), pc.is_valid(t)), pc.is_valid(r)))
        ok = pc.fill_null(ok, False)
        bad = pc.invert(ok)
        rej2 = R.rejects(pc.filter(good["line_no"], bad), pc.filter(good["line"], bad),
                         "id not in entity2id/relation2id")
        triples = R.make(R.TRIPLE, good.num_rows, s=h, p=r, o=t, line_no=good["line_no"]).filter(ok)
        return R.concat([triples, rej, rej2, header])
