"""Arrow kernels both engines run on triple tables (`TRIPLE_COLUMNS`): the local engine over the
whole input in-process, the Spark engine per partition inside its workers. One implementation, so
the two engines number keys and ids the same way.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmkg.pipeline.assemble import occurrences

#: the columns of a parsed triple the engines keep (keys as strings, `pos` = first line position)
TRIPLE_COLUMNS = pa.schema([("s", pa.string()), ("p", pa.string()), ("o", pa.string()), ("pos", pa.int64()),
                            ("src", pa.int32())])


def triple_key_occurrences(t: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(entity keys, relation keys) of triples with their first order (pos * 4 + slot)."""
    base = pc.multiply(t["pos"], 4)
    ents = occurrences(pa.chunked_array(t["s"].chunks + t["o"].chunks, pa.string()),
                       pa.chunked_array(base.chunks + pc.add(base, 2).chunks, pa.int64()))
    return ents, occurrences(t["p"], pc.add(base, 1))


class TripleIdMap:
    """Triple keys → ids, from the driver's key tables (key_map: key, entity_id; rel_map: key,
    relation_id). `key_ids` numbers the keys themselves (per-source distinct counts are on keys);
    `entity_ids` adds the merged entity/relation ids for rows that carry key ids."""

    def __init__(self, key_map: pa.Table, rel_map: pa.Table):
        self.keys, self.eids = key_map["key"].combine_chunks(), key_map["entity_id"].combine_chunks().cast(pa.int64())
        self.rkeys = rel_map["key"].combine_chunks()
        self.rids = rel_map["relation_id"].combine_chunks().cast(pa.int64())

    def key_ids(self, t: pa.Table) -> pa.Table:
        """TRIPLE_COLUMNS rows → src, hk, rk, tk (row numbers in the key tables), pos."""
        def ids(col: str, value_set: pa.Array) -> pa.Array:
            return pc.index_in(t[col], value_set=value_set).cast(pa.int64())
        return pa.table({"src": t["src"], "hk": ids("s", self.keys), "rk": ids("p", self.rkeys),
                         "tk": ids("o", self.keys), "pos": t["pos"]})

    def entity_ids(self, hk: pa.Array, rk: pa.Array, tk: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
        """(h, r, t) store ids of key ids (several keys of one merged entity share its id)."""
        return pc.take(self.eids, hk), pc.take(self.rids, rk), pc.take(self.eids, tk)


def pack_columns(cols: Sequence[np.ndarray], sizes: Sequence[int]) -> np.ndarray | None:
    """One int64 per row from non-negative integer columns (column i < sizes[i]), mixed radix;
    None when the product of the sizes does not fit an int64."""
    total = 1
    for size in sizes:
        total *= max(int(size), 1)
    if total >= 1 << 63:
        return None
    out = np.zeros(len(cols[0]), np.int64)
    for col, size in zip(cols, sizes):
        out *= max(int(size), 1)
        out += col
    return out


def first_occurrences(cols: Sequence[np.ndarray], sizes: Sequence[int], pos: np.ndarray) -> np.ndarray:
    """Row indices of the first row of each distinct tuple of `cols`, where rows are taken in
    ascending `pos` (ties in row order); the result is in that order too, so `pos[result]` is
    each tuple's minimum pos, ascending. One hash pass over a packed int64 key (what a
    multi-column group_by spends most of its time on is the multi-key hashing)."""
    import pandas as pd
    order = None
    if len(pos) > 1 and not bool(np.all(pos[1:] >= pos[:-1])):
        order = np.argsort(pos, kind="stable")
        cols = [c[order] for c in cols]
    packed = pack_columns(cols, sizes)
    if packed is not None:
        dup = pd.Series(packed, copy=False).duplicated(keep="first").to_numpy()
    else:
        dup = pd.DataFrame({i: c for i, c in enumerate(cols)}, copy=False).duplicated(keep="first").to_numpy()
    rows = np.flatnonzero(~dup)
    return rows if order is None else order[rows]
