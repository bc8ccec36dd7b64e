"""The CSR built in node ranges by many writers (Spark executors), assembled by concatenation.

A distributed build sorts the edges (node, role, triple id) into contiguous node ranges; each
range's writer streams its sorted edges into raw column files (`RangeWriter`), and one process
concatenates the ranges, in order, into the graph's .npy files (`assemble_csr`): byte-identical
to `graph.save_csr(graph.build_csr(...))`, with memory bounded by a copy buffer, whatever the
KG's size (the degrees become indptr by a running sum, block by block).

Files of range i in the staging folder: `r<i>.degree` (int64 per node of the range),
`r<i>.neighbor`, `r<i>.relation`, `r<i>.triple_id` (int64 per edge), `r<i>.direction` (int8).
A writer publishes each by rename when its range is complete, so a failed or retried task
leaves either nothing or the whole range (the same bytes, whichever attempt wins).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from mmkg.kg_store import atomic
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.graph import _OUT_DTYPES, ARRAYS, CSRGraph, _npy_header, _write, load_csr

_EDGE_COLUMNS = tuple(a for a in ARRAYS if a != "indptr")  # neighbor, relation, direction, triple_id
#: bytes per block when concatenating and summing degrees
_BLOCK = 8 << 20


def range_bounds(num_nodes: int, ranges: int) -> list[int]:
    """Node ids where ranges 0..ranges-1 begin, plus num_nodes: equal node counts."""
    ranges = max(1, min(ranges, max(num_nodes, 1)))
    return [num_nodes * i // ranges for i in range(ranges)] + [num_nodes]


class RangeWriter:
    """Streams one node range's edges, sorted by (node, role, triple id), into its files."""

    def __init__(self, folder: str | Path, index: int, lo: int, hi: int):
        self.folder, self.index, self.lo, self.hi = Path(folder), index, lo, hi
        self.degree = np.zeros(hi - lo, dtype=np.int64)
        self.edges = 0
        self._last = (-1, -1, -1)
        tag = uuid.uuid4().hex[:8]
        self._tmp = {c: self.folder / f"r{index}.{c}.part-{tag}" for c in (*_EDGE_COLUMNS, "degree")}
        self._files = {c: open(self._tmp[c], "wb") for c in _EDGE_COLUMNS}

    def add(self, node: np.ndarray, role: np.ndarray, neighbor: np.ndarray, relation: np.ndarray,
            triple_id: np.ndarray) -> None:
        if not len(node):
            return
        if node.min() < self.lo or node.max() >= self.hi:
            raise KGStoreError(f"graph range {self.index}: node outside [{self.lo}, {self.hi})")
        dn, dr, dt = np.diff(node), np.diff(role), np.diff(triple_id)
        unsorted = (dn < 0) | ((dn == 0) & ((dr < 0) | ((dr == 0) & (dt <= 0))))
        if (int(node[0]), int(role[0]), int(triple_id[0])) <= self._last or unsorted.any():
            raise KGStoreError(f"graph range {self.index}: edges not sorted by (node, role, triple id)")
        self._last = (int(node[-1]), int(role[-1]), int(triple_id[-1]))
        first = int(node[0]) - self.lo  # sorted: the batch covers nodes first..last only
        counts = np.bincount(node - (first + self.lo))
        self.degree[first:first + len(counts)] += counts
        _write(self._files["neighbor"], neighbor.astype(np.int64, copy=False))
        _write(self._files["relation"], relation.astype(np.int64, copy=False))
        _write(self._files["direction"], (1 - 2 * role).astype(np.int8))
        _write(self._files["triple_id"], triple_id.astype(np.int64, copy=False))
        self.edges += len(node)

    def close(self) -> int:
        """Publish the range's files; returns its edge count."""
        for f in self._files.values():
            f.close()
        with open(self._tmp["degree"], "wb") as f:
            _write(f, self.degree)
        for c, tmp in self._tmp.items():
            os.replace(tmp, self.folder / f"r{self.index}.{c}")
        return self.edges

    def abort(self) -> None:
        for f in self._files.values():
            f.close()
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)


def assemble_csr(folder: str | Path, bounds: list[int], edges: int, out_dir: str | Path) -> CSRGraph:
    """The graph's .npy files in `out_dir` from the ranges in `folder` (`bounds` as
    `range_bounds` gave them; a range without files has no edges). `edges` = 2 × triples,
    checked against the ranges' files and degrees. Written to a temp sibling, renamed into place."""
    folder, out_dir = Path(folder), Path(out_dir)
    n_ranges, num_nodes = len(bounds) - 1, bounds[-1]
    present = [(folder / f"r{i}.degree").exists() for i in range(n_ranges)]
    sizes = [os.path.getsize(folder / f"r{i}.triple_id") // 8 if ok else 0 for i, ok in enumerate(present)]
    if sum(sizes) != edges:
        raise KGStoreError(f"graph ranges hold {sum(sizes)} edges, expected {edges}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        with open(tmp / "indptr.npy", "wb") as f:
            _npy_header(f, np.int64, num_nodes + 1)
            total = 0
            _write(f, np.zeros(1, np.int64))
            for i in range(n_ranges):
                n = bounds[i + 1] - bounds[i]
                if not present[i]:
                    for s in range(0, n, _BLOCK // 8):
                        _write(f, np.full(min(_BLOCK // 8, n - s), total, np.int64))
                    continue
                deg_path = folder / f"r{i}.degree"
                if os.path.getsize(deg_path) != 8 * n:
                    raise KGStoreError(f"graph range {i}: {deg_path.name} is not {n} degrees")
                with open(deg_path, "rb") as d:
                    while block := d.read(_BLOCK):
                        cum = np.cumsum(np.frombuffer(block, np.int64)) + total
                        total = int(cum[-1])
                        _write(f, cum)
            if total != edges:
                raise KGStoreError(f"graph degrees sum to {total}, expected {edges} edges")
            f.flush()
            os.fsync(f.fileno())
        for name in _EDGE_COLUMNS:
            with open(tmp / f"{name}.npy", "wb") as f:
                _npy_header(f, _OUT_DTYPES[name], edges)
                for i in range(n_ranges):
                    if present[i]:
                        with open(folder / f"r{i}.{name}", "rb") as src:
                            while block := src.read(_BLOCK):
                                f.write(block)
                f.flush()
                os.fsync(f.fileno())
    return load_csr(out_dir)
