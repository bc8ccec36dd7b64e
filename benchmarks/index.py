"""FAISS index kinds vs exact Flat on synthetic embeddings: build time, memory, QPS, recall@10.

Data: unit vectors with embedding-like structure — a mixture of `--clusters` Gaussian clusters in
a 32-d latent space, projected to `--dim` and perturbed by isotropic noise (uniform random
vectors would have no neighbourhood structure and make every ANN index look useless).
Queries are held-out draws of the same distribution. Flat (exact) is built and searched in the
same run: its results are the ground truth and its QPS the baseline of each `speedup`.
Prints one JSON object.

    python benchmarks/index.py [--sizes 100000,1000000] [--dim 512] [--queries 1000] [--threads 2]
                               [--kinds-small flat,ivf,hnsw,ivfpq,auto] [--kinds-large flat,auto,ivfpq]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LARGE = 500_000  # sizes from here use --kinds-large (HNSW takes too long to build on 2 cores)


def synthetic(n: int, d: int, clusters: int, seed: int, block: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, 32)).astype(np.float32)
    proj = rng.normal(size=(32, d)).astype(np.float32) / np.sqrt(32)
    out = np.empty((n, d), np.float32)
    for i in range(0, n, block):
        m = min(block, n - i)
        latent = centers[rng.integers(0, clusters, m)] + 0.35 * rng.normal(size=(m, 32)).astype(np.float32)
        x = latent @ proj + 0.25 * rng.normal(size=(m, d)).astype(np.float32)
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def qps(index, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    index.search(queries[:10], k)  # warm-up
    t = time.perf_counter()
    _, ids = index.search(queries, k)
    return len(queries) / (time.perf_counter() - t), ids


def run_size(n: int, args, kinds: list[str]) -> dict:
    from mmkg.retrieval.index import build_index, recall_at_k
    data = synthetic(n + args.queries, args.dim, args.clusters, seed=n)
    x, queries = data[:n], data[n:]
    rows, truth, flat_qps = [], None, None
    for kind in ["flat"] + [k for k in kinds if k != "flat"]:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        vi = build_index(x, kind=kind, threads=args.threads, check_queries=args.check_queries,
                         target_recall=args.target_recall)
        q_per_s, found = qps(vi, queries, 10)
        if kind == "flat":
            truth, flat_qps = found, q_per_s
        m = vi.meta
        rows.append({
            "kind": kind, "factory": m["factory"], "params": m["params"], "build_s": m["build_seconds"],
            "self_check": m.get("self_check"), "memory_mb": round(m["memory_bytes"] / 2**20, 1),
            "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1),
            "qps": round(q_per_s, 1), "speedup_vs_flat": round(q_per_s / flat_qps, 2),
            "recall@10_vs_flat": round(recall_at_k(found, truth), 4)})
        del vi
    auto = next((r for r in rows if r["kind"] == "auto"), None)
    return {"n": n, "dim": args.dim, "queries": args.queries, "kinds": rows,
            "auto_goal_met": None if auto is None else
            bool(auto["recall@10_vs_flat"] >= 0.95 and (auto["speedup_vs_flat"] >= 20 or auto["factory"] == "Flat"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--check-queries", type=int, default=500, help="sample size of the build's self-check/tuning")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds-small", default="flat,ivf,hnsw,ivfpq,auto")
    ap.add_argument("--kinds-large", default="flat,auto,ivfpq")
    args = ap.parse_args()
    import faiss
    faiss.omp_set_num_threads(args.threads)
    out = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        kinds = (args.kinds_large if n >= LARGE else args.kinds_small).split(",")
        out.append(run_size(n, args, kinds))
    print(json.dumps({"benchmark": "index", "threads": args.threads, "faiss": faiss.__version__,
                      "gpus": faiss.get_num_gpus(), "sizes": out}))


if __name__ == "__main__":
    main()
