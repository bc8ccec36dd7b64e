"""FAISS on the GPU: what tests/retrieval/test_index.py checks on the CPU, per index kind, built with
`use_gpu=True` — the same recall self-check, search through the id map, then back to the CPU for
saving (a saved index is always a CPU index; faiss-gpu has no HNSW, which stays on the CPU and says so).
"""
from __future__ import annotations

import numpy as np
import pytest

from mmkg.retrieval.index import (VectorIndex, _is_gpu_index, build_index, exact_topk, gpu_count, recall_at_k,
                             resolve_index_gpu)
from tests.gpu.helpers import requires_cuda, requires_faiss_gpu
from tests.retrieval.test_index import KINDS, data  # noqa: F401 (the CPU tier's fixture: 4,000 clustered vectors)

pytestmark = [pytest.mark.gpu, pytest.mark.faiss, requires_cuda, requires_faiss_gpu]


def test_auto_and_explicit_requests_pick_the_gpu():
    assert gpu_count() >= 1
    assert resolve_index_gpu(None) is True and resolve_index_gpu("cuda") is True
    assert resolve_index_gpu(False) is False


@pytest.mark.parametrize("kind", KINDS)
def test_index_kind_on_gpu(kind, data, tmp_path):  # noqa: F811
    x, ids, queries = data
    vi = build_index(x, kind=kind, ids=ids, check_queries=200, threads=1, use_gpu=True, encoder="test")
    m = vi.meta
    if kind == "hnsw":
        assert m["gpu"] is False and "no HNSW" in m["gpu_note"] and not _is_gpu_index(vi.index)
    else:
        assert m["gpu"] is True and "gpu_note" not in m and _is_gpu_index(vi.index), m
    assert m["ntotal"] == vi.ntotal == 4000 and m["self_check"]["k"] == 10 and 0 <= m["self_check"]["recall"] <= 1
    scores, found = vi.search(queries, 10)
    assert scores.shape == found.shape == (200, 10)
    assert np.all(np.diff(scores, axis=1) <= 1e-4)  # best first
    assert set(np.unique(found)) <= set(ids.tolist())  # store ids, not row numbers
    truth = ids[exact_topk(x, queries, 10)]
    recall = recall_at_k(found, truth)
    if kind == "ivfpq":
        assert recall > 0.3
    else:
        assert recall >= 0.9, (kind, m)
        assert m["self_check"]["recall"] >= 0.9 if kind != "flat" else m["self_check"]["recall"] == 1.0
        assert np.array_equal(vi.search(x[:50], 1)[1][:, 0], ids[:50])
    if m["params"].get("nprobe"):
        assert m["params"]["nprobe"] <= m["params"]["nlist"]

    # back to the CPU for saving: the file holds a CPU index that answers the same queries
    vi.save(tmp_path / kind)
    back = VectorIndex.read(tmp_path / kind)
    assert not _is_gpu_index(back.index) and "Gpu" not in type(back.index).__name__
    assert back.meta["params"] == m["params"]
    _, found_cpu = back.search(queries, 10)
    assert recall_at_k(found_cpu, found) >= (0.99 if kind in ("flat", "auto") else 0.9)


def test_gpu_flat_equals_cpu_flat(data):  # noqa: F811
    x, ids, queries = data
    gpu = build_index(x, kind="flat", ids=ids, use_gpu=True)
    cpu = build_index(x, kind="flat", ids=ids, use_gpu=False)
    s_gpu, f_gpu = gpu.search(queries, 10)
    s_cpu, f_cpu = cpu.search(queries, 10)
    assert np.allclose(s_gpu, s_cpu, atol=1e-4)
    assert recall_at_k(f_gpu, f_cpu) >= 0.99  # ties may swap places, nothing else
