"""Retrieval speed on the whole MarKG, each figure with its baseline measured in the same run.

1. 1-hop extraction around seed entities: the CSR (`CSRGraph.incident_triples`) vs networkx on the
   same graph, both `ego_graph` (radius 1) and gathering the edges incident to the seeds
   (goal: ≥ 5× the latter);
2. batch retrieval of MARS test + ScienceQA test with the query vectors precomputed (the encoder
   excluded), for the default `anchored` retriever and the paper's `mrmkg` (goals ≥ 5,000 and ≥ 2,000
   queries/s), against the per-query reference ranking in the same run;
3. shard rows → PyG `Batch` through `subgraph_loader` (vectorised `collate_rows`), one process,
   against one `Data` per row + `Batch.from_data_list` (goal ≥ 20,000 subgraphs/s per core).

    python benchmarks/retrieval.py [--kg build/bench/markg-minilm] [--seeds 2000] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "data"
#: networkx's ego_graph takes ~0.25 s per seed here: timed on this many seeds
EGO_SEEDS = 20


def timed(fn, repeat: int = 3) -> float:
    """Best of `repeat` wall-clock runs (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def one_hop(store, seeds: np.ndarray) -> dict:
    import networkx as nx
    triples = store.triples_array()
    g = nx.MultiDiGraph()
    g.add_nodes_from(range(store.num_entities))
    g.add_edges_from((int(h), int(t), int(i)) for i, (h, _, t) in enumerate(triples))
    csr = store.graph

    def ours():
        return [csr.incident_triples(np.array([s])) for s in seeds]

    def nx_edges():
        return [sorted({k for _, _, k in g.out_edges(int(s), keys=True)} | {k for _, _, k in g.in_edges(int(s), keys=True)})
                for s in seeds]

    ego_seeds = seeds[:EGO_SEEDS]

    def nx_ego():  # builds an undirected view per call: seconds per seed, so timed on a subset
        return [nx.ego_graph(g, int(s), radius=1, undirected=True) for s in ego_seeds]

    def ours_batched():  # every seed's neighbourhood in one vectorised step (how a batch of queries runs)
        pos, owner = csr.edge_positions(seeds)
        return csr.triple_id[pos], np.searchsorted(owner, np.arange(len(seeds) + 1))

    a, b = ours(), nx_edges()
    assert all(np.array_equal(x, np.array(y, np.int64)) for x, y in zip(a, b)), "CSR and networkx disagree"
    tids, offsets = ours_batched()
    assert all(np.array_equal(np.unique(tids[offsets[i]:offsets[i + 1]]), a[i]) for i in range(len(seeds)))
    t_ours, t_batch, t_edges = timed(ours), timed(ours_batched), timed(nx_edges)
    t_ego = timed(nx_ego, repeat=1) * len(seeds) / len(ego_seeds)
    return {"seeds": len(seeds), "csr_batched_seeds_per_s": round(len(seeds) / t_batch),
            "batched_speedup_vs_incident_edges": round(t_edges / t_batch, 1),
            "csr_one_call_per_seed_seeds_per_s": round(len(seeds) / t_ours),
            "networkx_incident_edges_seeds_per_s": round(len(seeds) / t_edges),
            "networkx_ego_graph_seeds_per_s": round(len(seeds) / t_ego, 2), "ego_graph_timed_on_seeds": len(ego_seeds),
            "one_call_per_seed_speedup_vs_incident_edges": round(t_edges / t_ours, 1),
            "one_call_per_seed_speedup_vs_ego_graph": round(t_ego / t_ours, 1),
            "goal_vs_incident_edges": 5.0}


def batch_retrieval(store, kg: Path, limit: int | None = None) -> dict:
    """Queries/s of the bulk ranking (the retrievers as they run) against the per-query reference
    ranking they replaced (`tests/retrieval/reference_ranking.py`), same queries, same run."""
    from mmkg.retrieval.paths import load_or_fit_prior
    from mmkg.retrieval.datasets import build_queries
    from mmkg.retrieval.retriever import RetrievalConfig, SubgraphRetriever, encode_queries, retriever_class
    from tests.retrieval.reference_ranking import anchored_reference, mrmkg_reference
    mars = build_queries(f"mars:{DATA / 'markg/MARS'}", store=store, split="test", limit=limit)
    sqa = build_queries(f"scienceqa:{DATA / 'scienceqa'}", store=store, split="test", limit=limit)
    prior, _ = load_or_fit_prior(kg, mars.train_file, mars.answer_space)
    out = {"queries": {"mars_test": len(mars.queries), "scienceqa_test": len(sqa.queries)}}
    for name in ("anchored", "mrmkg"):
        r_mars = SubgraphRetriever(store, RetrievalConfig(retriever=name), answer_space=mars.answer_space,
                                   prior=prior if retriever_class(RetrievalConfig(retriever=name)).uses_prior else None)
        r_sqa = SubgraphRetriever(store, RetrievalConfig(retriever=name))
        v_mars = encode_queries(r_mars.encoder, mars.queries)
        v_sqa = encode_queries(r_sqa.encoder, sqa.queries)
        r_sqa.retrieve_vectors(sqa.queries[:5], v_sqa[:5])  # warm-up (the linker's label table)

        def reference(r, qs, v):
            return anchored_reference(r.retriever, qs, v) if name == "anchored" else \
                mrmkg_reference(r.retriever.ctx, qs, v)
        # best of 5: a 0.2 s run on a shared VM meets the odd slow scheduling slice
        t = timed(lambda: (r_mars.retrieve_vectors(mars.queries, v_mars), r_sqa.retrieve_vectors(sqa.queries, v_sqa)),
                  repeat=5)
        t_ref = timed(lambda: (reference(r_mars, mars.queries, v_mars), reference(r_sqa, sqa.queries, v_sqa)),
                      repeat=1 if limit else 3)
        n = len(mars.queries) + len(sqa.queries)
        out[name] = {"queries_per_s": round(n / t), "seconds": round(t, 3),
                     "per_query_reference_queries_per_s": round(n / t_ref), "speedup_vs_per_query": round(t_ref / t, 2)}
    out["goal_queries_per_s"] = {"anchored": 5000, "mrmkg": 2000}
    return out


def shard_batches(store, kg: Path) -> dict:
    from mmkg.retrieval.batch import retrieve_dataset
    from mmkg.retrieval.dataset import SubgraphDataset, subgraph_loader
    from mmkg.retrieval.retriever import RetrievalConfig
    res = retrieve_dataset(kg, f"mars:{DATA / 'markg/MARS'}", RetrievalConfig(), split="test")
    ds = SubgraphDataset(res.shard_dir)

    from torch_geometric.data import Batch

    def load():
        return sum(b.num_graphs for b in subgraph_loader(ds, batch_size=64))

    def per_row():  # the baseline: a Data per row, then PyG's collate
        return sum(Batch.from_data_list([ds[i] for i in range(lo, min(lo + 64, len(ds)))]).num_graphs
                   for lo in range(0, len(ds), 64))

    assert load() == per_row() == len(ds)
    t, t_rows = timed(load), timed(per_row)
    return {"subgraphs": len(ds), "subgraphs_per_s": round(len(ds) / t), "per_row_data_subgraphs_per_s":
            round(len(ds) / t_rows), "speedup_vs_per_row": round(t_rows / t, 1), "processes": 1,
            "goal_per_core": 20000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kg", type=Path, default=ROOT / "build/bench/markg-minilm")
    ap.add_argument("--seeds", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/retrieval.json")
    ap.add_argument("--quick", action="store_true",
                    help="300 MARS test queries, 200 seeds, no shard→PyG part (checks the benchmark runs)")
    args = ap.parse_args()
    if args.quick:
        args.seeds = min(args.seeds, 200)
    import torch
    torch.set_num_threads(args.threads)
    from retrieval_quality import markg_store, write_report
    store = markg_store(args.kg)
    seeds = np.random.default_rng(0).choice(store.num_entities, args.seeds, replace=False)
    result = {"kg": str(args.kg), "triples": store.count("triples"), "cpu_count": os.cpu_count(),
              "load_before": os.getloadavg()[0], "one_hop": one_hop(store, seeds),
              "quick": args.quick,
              "batch_retrieval_excluding_encoder": batch_retrieval(store, args.kg, 300 if args.quick else None)}
    if not args.quick:
        result["shard_to_pyg_batch"] = shard_batches(store, args.kg)
    result["load_after"] = os.getloadavg()[0]
    write_report(result, args.out)


if __name__ == "__main__":
    main()
