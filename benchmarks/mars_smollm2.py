"""MR-MKG with the real SmolLM2-135M on MARS, on CPU: with KG vs without KG, same seed and budget.

    python benchmarks/mars_smollm2.py --train-examples 400 --eval-queries 100 --seed 0 --budget-minutes 8

Steps: MarKG store (ingest) → `minilm` vectors and FAISS indexes → retrieval shards for the first
`--train-examples` MARS train queries and the first `--eval-queries` dev queries (a held subset:
dev is never trained on) → for each variant a fresh model with the same seed, trained on the same
shards for at most `--budget-minutes` of wall time (and at most `--epochs` epochs) → ranking of the
gold answer among all 2,063 MARS candidates, unfiltered (ties optimistic).
Variants: `kg` (RGAT/GAT knowledge encoder + knowledge adapter over the retrieved subgraph) and
`no_kg` — MR-MKG without the KG has nothing left to train when there is no image path, so it gets
`top_n + 1` learned soft-prompt tokens instead (same steps, same budget, no knowledge content);
`--zero-shot` adds the frozen LLM alone. Prints one JSON object: Hits@1/3/5/10, MRR, steps trained
and seconds per variant.

Everything is cached under `--work` (store, vectors, shards; SmolLM2 as safetensors under
~/.cache/mmkg), so a second run spends its time on training and evaluation only.
Caveats: entity vectors come from minilm (a text encoder; the paper uses CLIP), and the store has
images for only a few entities, so this run measures the knowledge path, not the visual one.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENCODER = "minilm"


def prepare_store(kg: Path, data: Path) -> None:
    """MarKG store + minilm vectors + indexes (each step skipped when already committed)."""
    from mmkg.kg_store import open_store
    if not (kg / "manifest.json").exists():
        from mmkg.pipeline.ingest import ingest
        ingest(kg, [f"markg:{data / 'markg' / 'MarKG'}"], engine="local")
    store = open_store(kg)
    if store.artifact(f"vectors/{ENCODER}") is None:
        from mmkg.pipeline.embed import embed_store
        embed_store(kg, ENCODER, progress=False)
    if open_store(kg).artifact(f"indexes/{ENCODER}") is None:
        from mmkg.retrieval.index import build_store_indexes
        build_store_indexes(kg, ENCODER)


def retrieve(kg: Path, data: Path, split: str, limit: int, top_n: int) -> Path:
    from mmkg.retrieval.batch import retrieve_dataset
    from mmkg.retrieval.retriever import RetrievalConfig
    res = retrieve_dataset(kg, f"mars:{data / 'markg' / 'MARS'}", RetrievalConfig(encoder=ENCODER, top_N=top_n),
                           split=split, limit=limit)
    return Path(res.shard_dir)


MODEL = {"backbone": "smollm2-135m", "vision": None, "gnn_layer": "gat", "kg_hidden": 256, "max_text_length": 96}


def run_variant(name: str, *, model_kwargs: dict, train_it: bool, args, kg: Path, train_dir: Path,
                dev_dir: Path) -> dict:
    from mmkg.model.evaluation import evaluate
    from mmkg.model.training import train
    out = Path(args.work) / "runs" / f"{name}-seed{args.seed}"
    kwargs = {**MODEL, **model_kwargs}
    t0 = time.monotonic()
    summary = {"global_step": 0, "stopped_by_budget": False, "parameters": {"trainable": 0}}
    if train_it:
        summary = train(
            kg=str(kg), output_dir=str(out), seed=args.seed, device="cpu", amp=args.amp, resume=False,
            model="mrmkg", model_kwargs=kwargs,
            stages=[{"name": "finetune", "task": "mars", "shards": str(train_dir), "lr": args.lr, "batch_size": 4,
                     "epochs": args.epochs}],
            weight_decay=0.01, max_triples=args.top_n, budget_minutes=args.budget_minutes, checkpoint_every=10**9,
            log_every=5)
    train_s = time.monotonic() - t0
    metrics = evaluate(kg=str(kg), task="mars", shards=str(dev_dir), checkpoint=str(out / "final") if train_it else None,
                       model="mrmkg", model_kwargs=kwargs,
                       candidates=str(Path(args.data) / "markg" / "MARS" / "analogy_entities.txt"),
                       predictions=str(out / "predictions.dev.jsonl"), device="cpu", amp=args.amp,
                       max_triples=args.top_n)
    return {"model_kwargs": model_kwargs, "steps": summary["global_step"],
            "stopped_by_budget": summary["stopped_by_budget"],
            "trainable_parameters": summary["parameters"]["trainable"], "train_seconds": round(train_s, 1),
            **{k: metrics[k] for k in ("hits@1", "hits@3", "hits@5", "hits@10", "mrr", "mean_rank", "count")},
            "eval_seconds": metrics["seconds"], "predictions": str(out / "predictions.dev.jsonl")}


def paired_ranks(predictions: str, baseline: str) -> dict:
    """Per-query comparison of two variants' gold ranks on the same queries: wins/losses/ties and
    a two-sided sign test (60 queries cannot separate small MRR differences; this says how far apart)."""
    import math
    import statistics

    def ranks(path: str) -> dict[str, int]:
        return {r["query_id"]: int(r["rank"]) for r in map(json.loads, Path(path).read_text().splitlines())}
    a, b = ranks(predictions), ranks(baseline)
    common = sorted(set(a) & set(b))
    wins = sum(a[q] < b[q] for q in common)
    losses = sum(a[q] > b[q] for q in common)
    n = wins + losses
    tail = sum(math.comb(n, k) for k in range(0, min(wins, losses) + 1)) / 2 ** n if n else 1.0
    return {"queries": len(common), "better": wins, "worse": losses, "ties": len(common) - n,
            "sign_test_p": round(min(1.0, 2 * tail), 4), "median_rank": statistics.median(a[q] for q in common),
            "baseline_median_rank": statistics.median(b[q] for q in common)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="MR-MKG + SmolLM2-135M on MARS: KG vs no KG (CPU).")
    ap.add_argument("--train-examples", type=int, default=400)
    ap.add_argument("--eval-queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-minutes", type=float, default=8.0, help="training wall time per variant")
    ap.add_argument("--epochs", type=int, default=3, help="upper bound on epochs within the budget")
    ap.add_argument("--lr", type=float, default=1e-4,
                    help="adapter learning rate (the paper's 5e-6 is for 7B models and many more steps)")
    ap.add_argument("--top-n", type=int, default=10, help="triples per subgraph (N)")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"],
                    help="autocast; auto = bf16 only on CPUs with native bf16 (AVX2-only CPUs run bf16 GEMMs "
                         "through a slow fallback)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "build" / "bench" / "mars_smollm2"))
    ap.add_argument("--kg", default=None, help="existing store with minilm vectors + indexes (default: <work>/kg, "
                                                  "built from MarKG on first use)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (1 avoids OpenMP spin-waits when the CPU is oversubscribed)")
    ap.add_argument("--zero-shot", action="store_true", help="also rank with the frozen LLM alone (no training)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    kg, data = Path(args.kg or Path(args.work) / "kg"), Path(args.data)
    prepare_store(kg, data)
    train_dir = retrieve(kg, data, "train", args.train_examples, args.top_n)
    dev_dir = retrieve(kg, data, "dev", args.eval_queries, args.top_n)
    prep_s = time.monotonic() - t0
    plan = [("kg", {"use_kg": True}, True), ("no_kg", {"use_kg": False, "soft_prompt_tokens": args.top_n + 1}, True)]
    if args.zero_shot:
        plan.append(("zero_shot", {"use_kg": False}, False))
    variants = {name: run_variant(name, model_kwargs=mk, train_it=t, args=args, kg=kg, train_dir=train_dir,
                                  dev_dir=dev_dir) for name, mk, t in plan}
    for name, v in variants.items():
        if name != "no_kg":
            v["vs_no_kg"] = paired_ranks(v["predictions"], variants["no_kg"]["predictions"])
    result = {"benchmark": "mars_smollm2", "backbone": "smollm2-135m", "encoder": ENCODER,
              "train_examples": args.train_examples, "eval_queries": args.eval_queries, "eval_split": "dev",
              "candidates": 2063, "ranking": "unfiltered, ties optimistic", "seed": args.seed,
              "budget_minutes_per_variant": args.budget_minutes, "lr": args.lr, "top_n": args.top_n,
              "amp": args.amp, "threads": torch.get_num_threads(), "prepare_seconds": round(prep_s, 1), "variants": variants,
              "total_seconds": round(time.monotonic() - t0, 1)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
