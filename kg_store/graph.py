"""CSR adjacency of the KG, both directions, as mmap-able .npy files.

For node v, rows indptr[v]:indptr[v+1] list its incident edges: neighbour id, relation id,
direction (+1: v is the head, -1: v is the tail) and the triple id. Built with one argsort,
so extracting 1-hop neighbourhoods is vectorised numpy, no per-query graph objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmkg.kg_store import atomic
from mmkg.kg_store.sizes import parse_size  # noqa: F401  (re-exported: mmkg.kg_store.graph.parse_size stays valid)

ARRAYS = ("indptr", "neighbor", "relation", "direction", "triple_id")


def segment_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The ranges [starts[i], starts[i] + lengths[i]) concatenated, as int64 positions: the gather
    index of many CSR rows (or any runs in a flat array) in one vectorised step."""
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


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
        return np.unique(self.triple_id[segment_positions(starts, lengths)])

    def edge_positions(self, nodes: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """CSR positions of every edge of `nodes` (in node order) and, per position, which input
        node it belongs to: the 1-hop neighbourhoods of a whole batch in one vectorised step.

        With `keep` (a bool per CSR position): only the kept edges, read from the CSR restricted to
        them (the work is that of the kept edges; CSR order kept)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        indptr = self.indptr
        if keep is not None:
            kept = np.flatnonzero(keep)
            indptr = np.searchsorted(kept, self.indptr)      # kept edges before each node's first one
        starts, ends = indptr[nodes], indptr[nodes + 1]
        lengths = ends - starts
        owner = np.repeat(np.arange(len(nodes), dtype=np.int64), lengths)
        pos = segment_positions(starts, lengths)
        return (pos if keep is None else kept[pos]), owner

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
    from mmkg.kg_store.errors import CorruptFileError
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptFileError(path, f"unreadable .npy ({str(e).splitlines()[0][:200]})") from None


def load_csr(directory: str | Path, mmap: bool = True) -> CSRGraph:
    return CSRGraph(**{n: load_npy(Path(directory) / f"{n}.npy", mmap=mmap) for n in ARRAYS})


# ---- out-of-core build ---------------------------------------------------------------------
#: bytes of memory one edge costs at the peak of a sort step (keys, order, one gathered column,
#: the sort's own buffer); the edge counts of runs and merge segments are the budget over this
_BYTES_PER_EDGE = 64
#: below this many edges a step, per-run overhead dominates (a budget smaller than 16 KiB is raised)
_MIN_EDGES = 256
_OUT_DTYPES = {"indptr": np.int64, "neighbor": np.int64, "relation": np.int64, "direction": np.int8,
               "triple_id": np.int64}
DEFAULT_GRAPH_MEMORY = 256 << 20


def memory_budget(memory_bytes: int | None = None) -> int:
    """The out-of-core build's memory: `memory_bytes`, else env MMKG_GRAPH_MEMORY, else 256 MiB."""
    import os
    if memory_bytes is not None:
        return int(memory_bytes)
    env = os.environ.get("MMKG_GRAPH_MEMORY")
    return parse_size(env) if env else DEFAULT_GRAPH_MEMORY


def fits_one_run(edges: int, memory_bytes: int | None = None) -> bool:
    """Whether the out-of-core build sorts `edges` in a single run within its budget."""
    return edges * _BYTES_PER_EDGE <= memory_budget(memory_bytes)


def _npy_header(f, dtype, n: int) -> None:
    """The header np.save writes for a 1-D C-order array, so the files are byte-identical."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)})


def _write(f, array: np.ndarray) -> None:
    f.write(memoryview(np.ascontiguousarray(array)).cast("B"))


def _read_into(f, out: np.ndarray, offset: int) -> None:
    """Fill `out` from byte `offset` of an open run file (a plain read: no mmap pages in the RSS)."""
    f.seek(offset)
    view = memoryview(out).cast("B")
    got = f.readinto(view)
    if got != len(view):
        raise OSError(f"short read in {f.name}: {got} of {len(view)} bytes")


def _triple_batches(parts: list[Path], rows: int):
    """(h, r, t, id) int64 arrays of at most `rows` rows each, parts in order, a record batch at a
    time (batches capped at 65,536 rows: Arrow's pool keeps what the largest batch needed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mmkg.kg_store.errors import CorruptFileError
    for part in parts:
        try:
            pf = pq.ParquetFile(str(part))
            missing = {"id", "h", "r", "t"} - set(pf.schema_arrow.names)
            if missing:
                raise CorruptFileError(part, f"triple part lacks column(s) {', '.join(sorted(missing))}")
            for batch in pf.iter_batches(batch_size=max(1, min(rows, 1 << 16)), columns=["h", "r", "t", "id"]):
                yield tuple(batch.column(i).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
                            for i in range(4))
        except (pa.ArrowException, OSError) as e:
            raise CorruptFileError(part, f"unreadable Parquet ({str(e).splitlines()[0][:200]})") from None


def _filled_runs(parts: list[Path], rows: int):
    """The triples in row order as consecutive blocks of exactly `rows` rows (the last may be shorter)."""
    buf = [np.empty(rows, np.int64) for _ in range(4)]
    fill = 0
    for cols in _triple_batches(parts, rows):
        pos = 0
        n = len(cols[0])
        while pos < n:
            take = min(rows - fill, n - pos)
            for b, c in zip(buf, cols):
                b[fill:fill + take] = c[pos:pos + take]
            fill += take
            pos += take
            if fill == rows:
                yield tuple(buf)
                fill = 0
    if fill:
        yield tuple(b[:fill] for b in buf)


def _plan_segments(indptr: np.ndarray, edges: int) -> tuple[list[tuple[int, int, bool]], np.ndarray]:
    """Node ranges [a, b) of at most `edges` edges each, in node order; a node of higher degree
    is a range of its own, streamed without sorting ("hub"). Also the sorted edge keys
    (node * 2 + role) at which every run is cut: each range start and each hub's tail-role start."""
    n = len(indptr) - 1
    segments, keys = [], []
    a = 0
    while a < n:
        b = int(np.searchsorted(indptr, indptr[a] + edges, side="right")) - 1
        hub = b <= a
        b = a + 1 if hub else min(b, n)
        segments.append((a, b, hub))
        keys.append(2 * a)
        if hub:
            keys.append(2 * a + 1)
        a = b
    keys.append(2 * n)
    return segments, np.asarray(keys, dtype=np.int64)


def build_csr_external(triple_parts: list[Path], num_nodes: int, out_dir: Path, *,
                       memory_bytes: int = DEFAULT_GRAPH_MEMORY) -> CSRGraph:
    """`build_csr` of the triple Parquet parts (columns id, h, r, t; rows in part order, the id
    column as the triple id), written as the ARRAYS .npy files in `out_dir`, byte-identical to
    `save_csr(build_csr(h, r, t, num_nodes, triple_ids=id))`, with memory bounded by
    `memory_bytes` instead of the KG size (plus indptr itself, 8 bytes a node).

    External sort: a first pass counts degrees (indptr) and plans node ranges of at most
    memory_bytes / 64 edges; a second pass sorts blocks of rows into runs (edge key node*2+role,
    a stable sort, so rows keep their order within a key, as in build_csr's stable argsort);
    then each node range is read back from every run with plain reads, stably sorted (runs are
    in row order, so equal keys stay in row order) and appended to the outputs, which are
    written sequentially through normal files (no memmap writes: their pages would count in the
    RSS). Runs live in a `<out_dir>-runs.tmp-*` sibling and the outputs in an `<out_dir>.tmp-*`
    folder renamed into place at the end, so a killed build leaves only litter that
    `atomic.cleanup_temp` removes.

    What the budget covers: the numpy working arrays (tracemalloc peak within ~5% of it on 2M
    triples at 16 and 64 MiB). Not covered: indptr (8 bytes a node), the cut table (8 bytes per
    run and range), and the Parquet reader (one record batch of at most 65,536 rows plus about
    60 MiB that Arrow's reader threads and pool keep once the first part is read).
    Reads per range are one slice of every run: runs × ranges grows with (KG / budget)², so a KG
    far beyond the budget squared would want a multi-level merge.
    """
    import os
    import shutil
    from mmkg.kg_store.errors import KGStoreError
    from mmkg.kg_store.safe_io import open_new
    out_dir = Path(out_dir)
    parts = [Path(p) for p in triple_parts]
    edges = max(_MIN_EDGES, int(memory_bytes) // _BYTES_PER_EDGE)
    rows = max(1, edges // 2)

    # pass 1: degrees → indptr (np.unique per block: no num_nodes-long temporary per batch)
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    for h, _r, t, tid in _filled_runs(parts, rows):
        for col, name in ((h, "h"), (t, "t")):
            if len(col) and (col.min() < 0 or col.max() >= num_nodes):
                bad = int(np.flatnonzero((col < 0) | (col >= num_nodes))[0])
                raise KGStoreError(f"triple {int(tid[bad])}: {name}={int(col[bad])} is not an entity id "
                                   f"(the store has {num_nodes} entities)")
        uniq, cnt = np.unique(np.concatenate([h, t]), return_counts=True)
        indptr[uniq + 1] += cnt
    np.cumsum(indptr, out=indptr)
    total = int(indptr[-1])
    segments, cut_keys = _plan_segments(indptr, edges)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    run_dir = atomic._tmp_sibling(out_dir.with_name(f"{out_dir.name}-runs"))
    run_dir.mkdir()
    try:
        # pass 2: sorted runs; per run, where each cut key starts
        runs: list[tuple[Path, int, np.ndarray]] = []
        for h, r, t, tid in _filled_runs(parts, rows):
            n = len(h)
            order = np.argsort(np.concatenate([h, t]), kind="stable")
            path = run_dir / f"run-{len(runs):06d}.bin"
            with open_new(path) as f:
                key = np.concatenate([h, t])[order] * 2 + (order >= n)
                _write(f, key)
                cuts = np.searchsorted(key, cut_keys)
                del key
                for col in (np.concatenate([t, h]), np.concatenate([r, r]), np.concatenate([tid, tid])):
                    _write(f, col[order])
                    del col
            runs.append((path, 2 * n, cuts))
            del order

        # pass 3: merge range by range into the outputs, written sequentially
        with atomic.atomic_path(out_dir) as tmp_out:
            tmp_out.mkdir()
            outs = {name: open_new(tmp_out / f"{name}.npy") for name in ARRAYS}
            handles = _RunFiles([p for p, _, _ in runs])
            try:
                for name, f in outs.items():
                    _npy_header(f, _OUT_DTYPES[name], num_nodes + 1 if name == "indptr" else total)
                _write(outs["indptr"], indptr)
                ci = 0  # index of the segment's first cut key
                for a, b, hub in segments:
                    if hub:
                        _copy_hub(runs, handles, ci, edges, outs)
                        ci += 2
                    else:
                        _merge_range(runs, handles, ci, outs)
                        ci += 1
                for f in outs.values():
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                handles.close()
                for f in outs.values():
                    f.close()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return load_csr(out_dir)


class _RunFiles:
    """Open run files on demand, at most `cap` at a time (thousands of runs would exceed the
    process's file limit); the merge visits runs in order, so older ones are closed first."""

    def __init__(self, paths: list[Path], cap: int = 128):
        from collections import OrderedDict
        self.paths, self.cap, self.open = paths, cap, OrderedDict()

    def __getitem__(self, i: int):
        f = self.open.pop(i, None)
        if f is None:
            if len(self.open) >= self.cap:
                self.open.popitem(last=False)[1].close()
            f = open(self.paths[i], "rb")
        self.open[i] = f
        return f

    def close(self) -> None:
        for f in self.open.values():
            f.close()
        self.open.clear()


def _column_offset(n_edges: int, column: int) -> int:
    return column * n_edges * 8


def _gather(runs, handles, ci: int, column: int, size: int) -> np.ndarray:
    """Column `column` of every run's slice between cut keys ci and ci+1, runs in order."""
    out = np.empty(size, dtype=np.int64)
    pos = 0
    for i, (_, n_edges, cuts) in enumerate(runs):
        lo, hi = int(cuts[ci]), int(cuts[ci + 1])
        if hi > lo:
            _read_into(handles[i], out[pos:pos + hi - lo], _column_offset(n_edges, column) + lo * 8)
            pos += hi - lo
    return out


def _direction(key: np.ndarray) -> np.ndarray:
    return (1 - 2 * (key & 1)).astype(np.int8)


def _merge_range(runs, handles, ci: int, outs) -> None:
    size = sum(int(c[ci + 1] - c[ci]) for _, _, c in runs)
    if size == 0:
        return
    key = _gather(runs, handles, ci, 0, size)
    order = np.argsort(key, kind="stable")  # runs hold consecutive rows: equal keys keep row order
    _write(outs["direction"], _direction(key[order]))
    del key
    for column, name in ((1, "neighbor"), (2, "relation"), (3, "triple_id")):
        _write(outs[name], _gather(runs, handles, ci, column, size)[order])


def _copy_hub(runs, handles, ci: int, edges: int, outs) -> None:
    """One node of more than `edges` edges: its head-role then tail-role slices, every run's in
    row order, already in build_csr's order, so copied through in blocks without sorting."""
    for k, sign in ((ci, 1), (ci + 1, -1)):
        for i, (_, n_edges, cuts) in enumerate(runs):
            lo, hi = int(cuts[k]), int(cuts[k + 1])
            f = handles[i] if hi > lo else None
            for s in range(lo, hi, edges):
                m = min(edges, hi - s)
                _write(outs["direction"], np.full(m, sign, np.int8))
                buf = np.empty(m, np.int64)
                for column, name in ((1, "neighbor"), (2, "relation"), (3, "triple_id")):
                    _read_into(f, buf, _column_offset(n_edges, column) + s * 8)
                    _write(outs[name], buf)
