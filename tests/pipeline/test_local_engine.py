"""The local engine's dedupe kernel (issue 18): one hash pass over packed integer keys gives what
Arrow's multi-column group_by gave (distinct tuples at their minimum pos, ascending)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from mmkg.pipeline.engines.arrow_ops import first_occurrences, pack_columns


def _reference(cols, pos):
    t = pa.table({**{f"c{i}": c for i, c in enumerate(cols)}, "pos": pos})
    g = t.group_by([f"c{i}" for i in range(len(cols))]).aggregate([("pos", "min")]).sort_by("pos_min")
    return g


def test_first_occurrences_equals_group_by_min_pos():
    rng = np.random.default_rng(0)
    n = 20_000
    cols = [rng.integers(0, 3, n), rng.integers(0, 50, n), rng.integers(0, 40, n)]
    for pos in (np.arange(n, dtype=np.int64) * 3, rng.permutation(n).astype(np.int64)):  # in order, shuffled
        rows = first_occurrences(cols, [3, 50, 40], pos)
        ref = _reference(cols, pos)
        assert np.array_equal(pos[rows], ref["pos_min"].to_numpy())
        for i, c in enumerate(cols):
            assert np.array_equal(c[rows], ref[f"c{i}"].to_numpy())


def test_keys_too_wide_to_pack_take_the_multi_column_path():
    big = 1 << 40
    cols = [np.array([5, 5, 7, 5]), np.array([big - 1, big - 1, 0, 1])]
    assert pack_columns(cols, [big, big]) is None
    rows = first_occurrences(cols, [big, big], np.array([10, 3, 4, 1]))
    assert rows.tolist() == [3, 1, 2]  # (5, 1) at pos 1, (5, big-1) at pos 3, (7, 0) at pos 4


def test_local_engine_final_triples_match_the_group_by_path(data_dir, tmp_path):
    from mmkg.pipeline.engines.arrow_ops import TripleIdMap
    from mmkg.pipeline.engines import local as L
    from mmkg.pipeline.ingest import ingest
    seen = {}
    original = L.LocalEngine.final_triples

    def both(self, key_map, rel_map):
        fast = original(self, key_map, rel_map)
        id_map = TripleIdMap(key_map, rel_map)
        seen["fast"], seen["group_by"] = fast, self._final_triples_group_by(id_map, id_map.key_ids(self._triples))
        return fast

    L.LocalEngine.final_triples = both
    try:
        ingest(tmp_path / "kg", [f"markg:{data_dir / 'markg' / 'MarKG'}",
                                 f"fbmap:{data_dir / 'mmkg' / 'FB15K' / 'fb15k_mid-wdurl-wpurl_14951.txt'}"],
               engine="local")
    finally:
        L.LocalEngine.final_triples = original
    (final, stats), (ref, ref_stats) = seen["fast"], seen["group_by"]
    assert final.num_rows == 33_301
    assert final.to_pydict() == ref.to_pydict()
    assert stats.sort_by("src").equals(ref_stats.sort_by("src"))
