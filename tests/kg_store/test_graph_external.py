"""The out-of-core CSR build (issue 19): byte-identical to build_csr + save_csr, under a memory
budget small enough that many sorted runs, many merge ranges and a streamed hub node happen."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmkg.kg_store import KGStore, KGStoreError, open_store
from mmkg.kg_store.atomic import TMP_NAME, cleanup_temp
from mmkg.kg_store.errors import ConfigError
from mmkg.kg_store.graph import ARRAYS, build_csr, build_csr_external, parse_size, save_csr
from tests.stores import build_markg_store

TINY = 64 << 10  # 1,024 edges a step
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def markg(data_dir, tmp_path_factory) -> KGStore:
    return build_markg_store(data_dir, tmp_path_factory.mktemp("markg"))


def _same_files(a: Path, b: Path) -> None:
    for name in ARRAYS:
        assert (a / f"{name}.npy").read_bytes() == (b / f"{name}.npy").read_bytes(), name


def _write_parts(folder: Path, h, r, t, sizes: list[int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    parts, lo = [], 0
    for i, n in enumerate(sizes):
        sl = slice(lo, lo + n)
        table = pa.table({"id": np.arange(lo, lo + n, dtype=np.int64), "h": h[sl], "r": r[sl], "t": t[sl]})
        pq.write_table(table, folder / f"part-{i:05d}.parquet", row_group_size=700)
        parts.append(folder / f"part-{i:05d}.parquet")
        lo += n
    assert lo == len(h)
    return parts


def _synthetic(n_triples: int, n_nodes: int, seed: int = 0):
    """Random triples over the first nodes only (the last ones have no edges), some isolated nodes
    in between, and one hub (node 3) with more edges than a TINY merge step holds."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, n_nodes - 50, n_triples)
    t = rng.integers(0, n_nodes - 50, n_triples)
    r = rng.integers(0, 40, n_triples)
    isolated = np.arange(100, 130)
    h[np.isin(h, isolated)] = 5
    t[np.isin(t, isolated)] = 6
    h[::7] = 3
    t[1::11] = 3
    return h, r, t


def test_markg_graph_built_out_of_core_is_byte_identical(markg, tmp_path):
    out = tmp_path / "kg" / "graph" / "v000001"
    g = build_csr_external(markg.table_files("triples"), markg.num_entities, out, memory_bytes=TINY)
    _same_files(markg.root / markg.manifest["graph"], out)
    assert g.num_nodes == 11_292 and len(g.neighbor) == 2 * 33_301
    assert sorted(os.listdir(out.parent)) == ["v000001"]  # the runs were removed


def test_store_writer_write_graph_external(markg, tmp_path, monkeypatch):
    """A new version whose graph is written out of core (budget from MMKG_GRAPH_MEMORY): same
    bytes as the in-memory graph, registered in the manifest, verify clean."""
    root = tmp_path / "kg"
    shutil.copytree(markg.root, root)
    monkeypatch.setenv("MMKG_GRAPH_MEMORY", "64k")
    with KGStore.writer(root) as w:
        rel = w.write_graph_external(w.store.table_files("triples"), w.store.num_entities)
        store = w.commit(bump_version=True)
    assert rel == "graph/v000002" and store.manifest["graph"] == rel
    assert {f"{rel}/{n}.npy" for n in ARRAYS} <= set(store.manifest["files"])
    assert store.verify() == []
    _same_files(markg.root / markg.manifest["graph"], root / rel)
    assert np.array_equal(open_store(root).graph.incident_triples(np.array([0, 5])),
                          markg.graph.incident_triples(np.array([0, 5])))
    monkeypatch.setenv("MMKG_GRAPH_MEMORY", "lots")
    with KGStore.writer(root) as w, pytest.raises(ConfigError, match="memory size 'lots'"):
        w.write_graph_external(w.store.table_files("triples"), w.store.num_entities)


@pytest.mark.parametrize("memory", [TINY, 1 << 20, 1 << 30])
def test_synthetic_parts_hub_isolated_and_trailing_nodes(tmp_path, memory):
    n_nodes = 400
    h, r, t = _synthetic(12_000, n_nodes)
    parts = _write_parts(tmp_path / "tables", h, r, t, [5_000, 1, 0, 4_321, 2_678])
    save_csr(build_csr(h, r, t, n_nodes), tmp_path / "ref")
    g = build_csr_external(parts, n_nodes, tmp_path / "graph" / "v000001", memory_bytes=memory)
    _same_files(tmp_path / "ref", tmp_path / "graph" / "v000001")
    deg = g.degree()
    assert deg[3] > TINY // 64 and (deg[100:130] == 0).all() and (deg[-50:] == 0).all()


def test_empty_triple_table(tmp_path):
    empty = np.empty(0, np.int64)
    save_csr(build_csr(empty, empty, empty, 5), tmp_path / "ref")
    parts = _write_parts(tmp_path / "tables", empty, empty, empty, [0])
    for i, p in enumerate((parts, [])):
        out = tmp_path / "graph" / f"v{i}"
        g = build_csr_external(p, 5, out, memory_bytes=TINY)
        _same_files(tmp_path / "ref", out)
        assert g.num_nodes == 5 and len(g.neighbor) == 0


def test_entity_id_out_of_range_is_one_clear_error(tmp_path):
    parts = _write_parts(tmp_path / "tables", np.array([0, 9]), np.array([0, 0]), np.array([1, 2]), [2])
    with pytest.raises(KGStoreError, match="triple 1: h=9 is not an entity id"):
        build_csr_external(parts, 5, tmp_path / "graph" / "v1", memory_bytes=TINY)
    assert not (tmp_path / "graph").exists() or os.listdir(tmp_path / "graph") == []


def test_parse_size():
    assert parse_size("256m") == 256 << 20 and parse_size("64KiB") == 64 << 10 and parse_size("1000") == 1000


def test_killed_build_leaves_only_temp_litter_cleanup_removes(tmp_path):
    """SIGKILL in the middle of the merge: the graph folder holds only `*.tmp-*` entries (the runs
    and the half-written outputs), and cleanup_temp removes every one of them."""
    h, r, t = _synthetic(150_000, 2_000, seed=1)
    parts = _write_parts(tmp_path / "tables", h, r, t, [150_000])
    graph_dir = tmp_path / "graph"
    code = ("import sys; from pathlib import Path; from mmkg.kg_store.graph import build_csr_external; "
            "build_csr_external([Path(sys.argv[1])], 2000, Path(sys.argv[2]), memory_bytes=16 << 10)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(parts[0]), str(graph_dir / "v000001")],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        merging = None
        deadline = time.monotonic() + 120
        while merging is None and proc.poll() is None and time.monotonic() < deadline:
            outs = [p for p in graph_dir.glob("v000001.tmp-*/neighbor.npy") if p.stat().st_size > 0]
            merging = outs[0] if outs else None
            time.sleep(0.005)
        assert merging is not None, "the build ended before its merge could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = os.listdir(graph_dir)
    assert left and all(TMP_NAME.fullmatch(n) for n in left), left
    assert any(n.startswith("v000001-runs.tmp-") for n in left)
    assert cleanup_temp(tmp_path) == len(left)
    assert os.listdir(graph_dir) == []


# ---- the CSR written in node ranges by several writers (Spark executors) and concatenated ------
def _write_ranges(folder: Path, h, r, t, bounds: list[int], batch: int = 997) -> None:
    """What each executor does: its range's edges sorted by (node, role, triple id), streamed."""
    from mmkg.kg_store.graph_ranges import RangeWriter
    tid = np.arange(len(h), dtype=np.int64)
    v, role = np.concatenate([h, t]), np.concatenate([np.zeros(len(h), np.int64), np.ones(len(h), np.int64)])
    nb, rel, ids = np.concatenate([t, h]), np.concatenate([r, r]), np.concatenate([tid, tid])
    order = np.lexsort((ids, role, v))
    v, role, nb, rel, ids = v[order], role[order], nb[order], rel[order], ids[order]
    for i in range(len(bounds) - 1):
        sel = (v >= bounds[i]) & (v < bounds[i + 1])
        if not sel.any():
            continue  # a partition without edges writes nothing
        w = RangeWriter(folder, i, bounds[i], bounds[i + 1])
        cols = [c[sel] for c in (v, role, nb, rel, ids)]
        for s in range(0, len(cols[0]), batch):
            w.add(*[c[s:s + batch] for c in cols])
        w.close()


def test_graph_assembled_from_node_ranges_is_byte_identical(markg, tmp_path):
    from mmkg.kg_store.graph_ranges import assemble_csr, range_bounds
    tri = markg.table("triples", ["h", "r", "t"])
    h, r, t = (tri[c].to_numpy().astype(np.int64) for c in ("h", "r", "t"))
    n = markg.count("entities")
    save_csr(build_csr(h, r, t, n), tmp_path / "ref")
    bounds = range_bounds(n, 7)
    assert bounds[0] == 0 and bounds[-1] == n and len(bounds) == 8
    (tmp_path / "ranges").mkdir()
    _write_ranges(tmp_path / "ranges", h, r, t, bounds)
    assemble_csr(tmp_path / "ranges", bounds, 2 * len(h), tmp_path / "graph")
    _same_files(tmp_path / "ref", tmp_path / "graph")
    # nodes without edges at the end: their ranges have no files, indptr stays flat there
    n2 = 2_000
    h2, r2, t2 = _synthetic(5_000, n2)
    save_csr(build_csr(h2, r2, t2, n2), tmp_path / "ref2")
    b2 = range_bounds(n2, 40)
    (tmp_path / "ranges2").mkdir()
    _write_ranges(tmp_path / "ranges2", h2, r2, t2, b2)
    assert len(list((tmp_path / "ranges2").glob("*.degree"))) < 40
    assemble_csr(tmp_path / "ranges2", b2, 2 * len(h2), tmp_path / "graph2")
    _same_files(tmp_path / "ref2", tmp_path / "graph2")


def test_graph_ranges_refuse_unsorted_misplaced_or_missing_edges(tmp_path):
    from mmkg.kg_store.graph_ranges import RangeWriter, assemble_csr
    one = np.ones(2, np.int64)
    w = RangeWriter(tmp_path, 0, 0, 10)
    with pytest.raises(KGStoreError, match="not sorted"):
        w.add(np.array([3, 2]), 0 * one, one, one, np.array([0, 1]))
    w.abort()
    w = RangeWriter(tmp_path, 0, 0, 10)
    with pytest.raises(KGStoreError, match="outside"):
        w.add(np.array([3, 12]), 0 * one, one, one, np.array([0, 1]))
    w.abort()
    assert not list(tmp_path.iterdir())  # an aborted range leaves nothing
    w = RangeWriter(tmp_path, 0, 0, 10)
    w.add(np.array([3, 4]), 0 * one, one, one, np.array([0, 1]))
    w.close()
    with pytest.raises(KGStoreError, match="hold 2 edges, expected 4"):
        assemble_csr(tmp_path, [0, 10, 20], 4, tmp_path / "g")
    assert not (tmp_path / "g").exists()
