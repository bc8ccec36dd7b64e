"""CSR adjacency of the KG, both directions, as mmap-able .npy files.

For node v, rows indptr[v]:indptr[v+1] list its incident edges: neighbour id, relation id,
direction (+1: v is the head, -1: v is the tail) and the triple id. Built with one argsort,
so extracting 1-hop neighbourhoods is vectorised numpy, no per-query graph objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kg_store import atomic

ARRAYS = ("indptr", "neighbor", "relation", "direction", "triple_id")


@dataclass(frozen=True)
class CSRGraph:
    indptr: np.ndarray      # (n_nodes + 1,) int64
    neighbor: np.ndarray    # (2 * n_triples,) int64
    relation: np.ndarray    # (2 * n_triples,) int64
    direction: np.ndarray   # (2 * n_triples,) int8
    triple_id: np.ndarray   # (2 * n_triples,) int64

    @property
    def num_nodes(self) -> int:
        return len(self.indptr) - 1

    def degree(self, nodes: np.ndarray | None = None) -> np.ndarray:
        deg = np.diff(self.indptr)
        return deg if nodes is None else deg[nodes]

    def incident_triples(self, nodes: np.ndarray) -> np.ndarray:
        """Distinct ids of the triples touching any of `nodes` (vectorised; no Python loop)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        nodes = nodes[(nodes >= 0) & (nodes < self.num_nodes)]
        if nodes.size == 0:
            return np.empty(0, dtype=np.int64)
        starts, ends = self.indptr[nodes], self.indptr[nodes + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64)
        # positions = concatenation of ranges [starts[i], ends[i])
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        pos = offsets + np.arange(total, dtype=np.int64)
        return np.unique(self.triple_id[pos])

    def edge_positions(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR positions of every edge of `nodes` (in node order) and, per position, which input
        node it belongs to: the 1-hop neighbourhoods of a whole batch in one vectorised step."""
        nodes = np.asarray(nodes, dtype=np.int64)
        starts, ends = self.indptr[nodes], self.indptr[nodes + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(nodes), dtype=np.int64), lengths)
        pos = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        return pos, owner

    def neighbors(self, node: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s, e = self.indptr[node], self.indptr[node + 1]
        return self.neighbor[s:e], self.relation[s:e], self.direction[s:e], self.triple_id[s:e]


def build_csr(h: np.ndarray, r: np.ndarray, t: np.ndarray, num_nodes: int,
              triple_ids: np.ndarray | None = None) -> CSRGraph:
    h, r, t = (np.asarray(a, dtype=np.int64) for a in (h, r, t))
    tid = np.arange(len(h), dtype=np.int64) if triple_ids is None else np.asarray(triple_ids, np.int64)
    src = np.concatenate([h, t])
    order = np.argsort(src, kind="stable")
    counts = np.bincount(src, minlength=num_nodes)
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return CSRGraph(
        indptr=indptr,
        neighbor=np.concatenate([t, h])[order],
        relation=np.concatenate([r, r])[order],
        direction=np.concatenate([np.ones(len(h), np.int8), -np.ones(len(h), np.int8)])[order],
        triple_id=np.concatenate([tid, tid])[order],
    )


def save_csr(graph: CSRGraph, directory: str | Path) -> list[Path]:
    directory = Path(directory)
    paths = []
    for name in ARRAYS:
        path = directory / f"{name}.npy"
        atomic.write_npy(path, getattr(graph, name))
        paths.append(path)
    return paths


def load_npy(path: str | Path, *, mmap: bool = True) -> np.ndarray:
    """np.load of a committed .npy; a damaged header is a CorruptFileError naming the file
    (numpy's own ValueError would surface as a traceback, or as "pickled data" advice)."""
    from kg_store.errors import CorruptFileError
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptFileError(path, f"unreadable .npy ({str(e).splitlines()[0][:200]})") from None


def load_csr(directory: str | Path, mmap: bool = True) -> CSRGraph:
    return CSRGraph(**{n: load_npy(Path(directory) / f"{n}.npy", mmap=mmap) for n in ARRAYS})
