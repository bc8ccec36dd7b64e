"""The vector cache's in-process memo (issue 31): a cache opened again is not re-read while its files
are unchanged, and any change to them (a new segment, an overwritten one) is read and verified again."""
from __future__ import annotations

import numpy as np

from mmkg.pipeline import vector_cache
from mmkg.pipeline.vector_cache import VectorCache, text_key

DIM = 8


def keys_of(texts):
    return np.array([text_key(t) for t in texts], "S32")


def vecs(n, seed):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_merge_keeps_the_held_vector_and_the_sorted_order(tmp_path):
    c = VectorCache(tmp_path / "c", DIM)
    a = [f"text {i}" for i in range(50)]
    va = vecs(50, 0)
    c.add(keys_of(a), va)
    b = a[25:] + [f"new {i}" for i in range(30)] + ["new 3"]   # 25 held again, a repeat inside
    vb = vecs(len(b), 1)
    c.add(keys_of(b), vb)
    assert len(c) == 80 and np.all(c._keys[:-1] < c._keys[1:])
    found, got = c.lookup(keys_of(a + b))
    assert found.all()
    np.testing.assert_array_equal(got[:50], va)                    # held vectors win
    np.testing.assert_array_equal(got[50 + 25:50 + 55], vb[25:55])
    np.testing.assert_array_equal(got[-1], vb[25 + 3])             # the first of a repeat
    reopened = VectorCache.__new__(VectorCache)                    # a cold read of the same files
    vector_cache._VERIFIED.clear()
    VectorCache.__init__(reopened, tmp_path / "c", DIM)
    np.testing.assert_array_equal(reopened._keys, c._keys)
    np.testing.assert_array_equal(reopened._vecs, c._vecs)


def test_reopening_an_unchanged_cache_reads_nothing(tmp_path, monkeypatch):
    c = VectorCache(tmp_path / "c", DIM)
    c.add(keys_of(["a", "b"]), vecs(2, 0))
    reads = []
    real = VectorCache._verified
    monkeypatch.setattr(VectorCache, "_verified", staticmethod(lambda m, p: reads.append(m) or real(m, p)))
    again = VectorCache(tmp_path / "c", DIM)
    assert reads == [] and len(again) == 2
    c.add(keys_of(["c"]), vecs(1, 1))            # this process's own add keeps the memo current
    assert len(VectorCache(tmp_path / "c", DIM)) == 3 and reads == []


def test_a_changed_segment_is_read_and_verified_again(tmp_path):
    root = tmp_path / "c"
    c = VectorCache(root, DIM)
    c.add(keys_of(["a", "b"]), vecs(2, 0))
    seg = sorted(root.glob("seg-*.vecs.npy"))[0]
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF                              # same size, other bytes: the marker's sha256 fails
    seg.write_bytes(bytes(data))
    assert len(VectorCache(root, DIM)) == 0       # discarded, not served from the memo
    other = VectorCache(tmp_path / "elsewhere", DIM)
    other.add(keys_of(["x"]), vecs(1, 2))         # another process's segment appearing is read too
    for p in sorted((tmp_path / "elsewhere").glob("seg-*")):
        p.rename(root / p.name)
    found, _ = VectorCache(root, DIM).lookup(keys_of(["x"]))
    assert found.all()
