"""Out-of-core CSR build (`build_csr_external`) vs the in-memory `build_csr` + `save_csr` baseline,
measured in the same run on the same synthetic triple parts: wall time and peak RSS (VmHWM of a
fresh child process per build, so neither inherits the other's pages; `rss_after_import_mib` is
the child's peak before it reads any triple, to tell the interpreter from the build), and whether
the two outputs are byte-identical. Prints one JSON object.

    python benchmarks/csr_external.py [--triples 5000000] [--nodes 1000000] [--parts 8]
                                      [--memory 256m] [--workdir DIR] [--out benchmarks/out/csr_external.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def vm_hwm_mib() -> float:
    """Peak resident set of this process (kB line of /proc/self/status), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_parts(folder: Path, n_triples: int, n_nodes: int, n_parts: int, seed: int = 0) -> list[Path]:
    """Triple parts (id, h, r, t) with a skewed (Zipf-like) degree distribution, written block by block."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, n_triples, n_parts + 1).astype(np.int64)
    paths = []
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        n = int(hi - lo)
        h = np.minimum((rng.pareto(1.2, n) * n_nodes / 50).astype(np.int64), n_nodes - 1)
        t = rng.integers(0, n_nodes, n)
        r = rng.integers(0, 500, n)
        path = folder / f"part-{i:05d}.parquet"
        pq.write_table(pa.table({"id": np.arange(lo, hi, dtype=np.int64), "h": h, "r": r, "t": t}), path)
        paths.append(path)
    return paths


def one_build(mode: str, parts: list[Path], n_nodes: int, out_dir: Path, memory: int) -> dict:
    """Runs in the child process: one build, its time and peak RSS."""
    from mmkg.kg_store.graph import build_csr, build_csr_external, save_csr
    rss_import = vm_hwm_mib()
    t0 = time.perf_counter()
    if mode == "in_memory":  # what StoreWriter.write_graph does after ingest's concatenated table
        import pyarrow as pa
        import pyarrow.parquet as pq
        tri = pa.concat_tables([pq.read_table(p, columns=["id", "h", "r", "t"]) for p in parts])
        save_csr(build_csr(tri["h"].to_numpy(), tri["r"].to_numpy(), tri["t"].to_numpy(), n_nodes,
                           triple_ids=tri["id"].to_numpy()), out_dir)
    else:
        build_csr_external(parts, n_nodes, out_dir, memory_bytes=memory)
    return {"mode": mode, "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mib": round(vm_hwm_mib(), 1),
            "rss_after_import_mib": round(rss_import, 1)}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--triples", type=int, default=5_000_000)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--memory", default="256m", help="budget of the out-of-core build (MMKG_GRAPH_MEMORY syntax)")
    ap.add_argument("--workdir", default=None, help="scratch dir (default: a temp dir, removed afterwards)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: in_memory | external
    ap.add_argument("--dest", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from mmkg.kg_store.graph import ARRAYS, parse_size
    memory = parse_size(args.memory)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmkg-bench-csr-"))
    if args.one:
        parts = sorted((work / "tables").glob("part-*.parquet"))
        print(json.dumps(one_build(args.one, parts, args.nodes, Path(args.dest), memory)))
        return
    out: dict = {"benchmark": "csr_external", "triples": args.triples, "nodes": args.nodes, "parts": args.parts,
                 "memory_budget_mib": round(memory / 2**20, 1), "cpu_count": os.cpu_count(),
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        work.mkdir(parents=True, exist_ok=True)
        make_parts(work / "tables", args.triples, args.nodes, args.parts)
        rows = {}
        for mode in ("in_memory", "external"):  # in_memory is the baseline
            cmd = [sys.executable, __file__, "--one", mode, "--dest", str(work / "graph" / mode),
                   "--workdir", str(work), "--nodes", str(args.nodes), "--memory", args.memory]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
            rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"[bench] {json.dumps(rows[mode])}", file=sys.stderr, flush=True)
        out["rows"] = list(rows.values())
        out["byte_identical"] = all(sha256(work / "graph" / "in_memory" / f"{a}.npy")
                                    == sha256(work / "graph" / "external" / f"{a}.npy") for a in ARRAYS)
        out["graph_bytes"] = sum((work / "graph" / "external" / f"{a}.npy").stat().st_size for a in ARRAYS)
        out["peak_rss_ratio"] = round(rows["external"]["peak_rss_mib"] / rows["in_memory"]["peak_rss_mib"], 3)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    from benchmarks.report import emit
    emit(out, args.out)


if __name__ == "__main__":
    main()
