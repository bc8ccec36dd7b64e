"""Vectorised parsing of delimited lines shared by the line readers, with rejects for bad lines."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mmkg.pipeline.readers import records as R


def _ok_and_rejects(batch: pa.RecordBatch, ok: pa.Array,
                    reason: pa.Array | str) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Split `batch` into the rows where `ok` and a reject batch for the others."""
    ok = pc.fill_null(ok, False)
    bad = pc.invert(ok)
    rej_lines = batch.filter(bad)
    reasons = reason if isinstance(reason, str) else pc.filter(reason, bad)
    return batch.filter(ok), R.rejects(rej_lines["line_no"], rej_lines["line"], reasons)


def key_text(batch: pa.RecordBatch, kind: str, p: str | None, *, sep: str = "\t") -> pa.RecordBatch:
    """`key<sep>text` lines (MarKG entity2text …): a record per line, reject without separator/key."""
    parts, n = R.split_columns(batch["line"], sep, max_splits=1)
    keys = R.normalize_keys(R.field(parts, 0, n))
    ok = pc.and_(pc.equal(n, 2), pc.greater(pc.utf8_length(keys), 0))
    reason = pc.if_else(pc.less(n, 2), f"expected 'key{_show(sep)}text', no separator", "empty key")
    good, rej = _ok_and_rejects(batch, ok, reason)
    okm = pc.fill_null(ok, False)
    rec = R.make(kind, good.num_rows, s=pc.filter(keys, okm), p=p,
                 o=pc.filter(R.field(parts, 1, n), okm), line_no=good["line_no"])
    return R.concat([rec, rej])


def three_columns(batch: pa.RecordBatch, *, sep: str = "\t", exact: bool = True, what: str = "head, relation, tail"
                  ) -> tuple[pa.RecordBatch, pa.Array, pa.Array, pa.Array, pa.RecordBatch]:
    """Split into (good lines, s, p, o normalised keys, rejects); `exact=False` allows extra fields."""
    parts, n = R.split_columns(batch["line"], sep)
    s, p, o = (R.normalize_keys(R.field(parts, i, n)) for i in range(3))
    nonempty = pc.and_(pc.and_(pc.greater(pc.utf8_length(s), 0), pc.greater(pc.utf8_length(p), 0)),
                       pc.greater(pc.utf8_length(o), 0))
    count_ok = pc.equal(n, 3) if exact else pc.greater_equal(n, 3)
    ok = pc.fill_null(pc.and_(count_ok, nonempty), False)
    reason = pc.if_else(count_ok, f"empty field in {what}",
                        pc.binary_join_element_wise(f"expected 3 {_show(sep)}-separated fields ({what}), got ",
                                                    pc.cast(n, pa.string()), ""))
    good, rej = _ok_and_rejects(batch, ok, reason)
    return good, pc.filter(s, ok), pc.filter(p, ok), pc.filter(o, ok), rej


def regex_fields(batch: pa.RecordBatch, pattern: str,
                 reason: str) -> tuple[pa.RecordBatch, pa.StructArray, pa.RecordBatch]:
    """Lines matching a named-group regex (RE2), their groups, and rejects for the rest."""
    m = pc.extract_regex(batch["line"], pattern)
    ok = pc.is_valid(m)
    good, rej = _ok_and_rejects(batch, ok, reason)
    return good, pc.filter(m, ok), rej


def _show(sep: str) -> str:
    return {"\t": "tab", " ": "space"}.get(sep, repr(sep))
