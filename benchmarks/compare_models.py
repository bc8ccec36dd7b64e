"""Every `model` option side by side: same backbone, seed, shards and step budget, on MARS and ScienceQA.

    python benchmarks/compare_models.py --backbone tiny-llama --steps 20 --seed 0

Steps: MarKG store with the real entity images (ingest) → `minilm` vectors and FAISS indexes →
retrieval shards for the first `--train-examples` MARS train queries and a held subset of MARS dev
(`--eval-queries`), and for the ScienceQA problems available (train → test) → for each option
(`--models`, MR-MKG included) a fresh model with the same seed, `--steps` finetuning steps through
`mmkg.model.training.train`, then `mmkg.model.evaluation.evaluate` (the code behind `mmkg train` /
`mmkg evaluate`) → one table: metric, trainable parameters, step time.

Then Simignore's accuracy-vs-tokens-kept curve: the Simignore checkpoint trained on MARS is
re-evaluated on the held MARS queries *that have an image* at several `keep_ratio`s (Simignore
is applied at inference, as in the paper), recording the image tokens kept, the prompt tokens
the LLM reads and the seconds per query; the PNG goes to `--png`.

Prints one JSON object on stdout, then the markdown table. Everything expensive (store, vectors,
shards) is cached under `--work`, so a second run spends its time on training and evaluation.
Caveats: tiny backbones are randomly initialised (mechanics, not quality); entity vectors come
from minilm (a text encoder; the paper uses CLIP); only ScienceQA's one real image exists here.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENCODER = "minilm"
MODELS = ("mrmkg", "kamt", "simignore", "mks2")
#: per-option constructor kwargs on top of the shared ones; sizes chosen so a step stays well under
#: a second on 2 CPU cores for the tiny backbones
OPTION_KWARGS: dict[str, dict[str, Any]] = {
    "mrmkg": {"gnn_layer": "gat", "kg_hidden": 64},
    "simignore": {"gnn_layer": "gat", "kg_hidden": 64, "keep_ratio": 0.5},
    "kamt": {"hidden_size": 128, "num_layers": 2},
    "mks2": {"gnn_layer": "gat", "kg_hidden": 64},
}
KEEP_RATIOS = (1.0, 0.75, 0.5, 0.25, 0.0)


def prepare_store(kg: Path, data: Path) -> None:
    """MarKG + entity images store, minilm vectors, indexes (each step skipped when already committed)."""
    from mmkg.kg_store import open_store
    if not (kg / "manifest.json").exists():
        from mmkg.pipeline.ingest import ingest
        sources = [f"markg:{data / 'markg' / 'MarKG'}", f"images:{data / 'markg' / 'MARS' / 'images'}",
                   f"images:{data / 'entity_images' / 'imagenet_markg_overlap' / 'mapping.tsv'}"]
        ingest(kg, sources, engine="local")
    if open_store(kg).artifact(f"vectors/{ENCODER}") is None:
        from mmkg.pipeline.embed import embed_store
        embed_store(kg, ENCODER, progress=False)
    if open_store(kg).artifact(f"indexes/{ENCODER}") is None:
        from mmkg.retrieval.index import build_store_indexes
        build_store_indexes(kg, ENCODER)


def retrieve(kg: Path, dataset: str, split: str, limit: int | None, top_n: int) -> Path:
    from mmkg.retrieval.batch import retrieve_dataset
    from mmkg.retrieval.retriever import RetrievalConfig
    return Path(retrieve_dataset(kg, dataset, RetrievalConfig(encoder=ENCODER, top_N=top_n), split=split,
                                 limit=limit).shard_dir)


def prepare_shards(args, kg: Path, data: Path) -> dict[str, Path]:
    mars, sqa = f"mars:{data / 'markg' / 'MARS'}", f"scienceqa:{data / 'scienceqa'}"
    return {"mars/train": retrieve(kg, mars, "train", args.train_examples, args.top_n),
            # the dev subset is larger than the evaluated one: the image-bearing queries of the
            # Simignore curve are picked from it
            "mars/dev": retrieve(kg, mars, "dev", args.curve_pool, args.top_n),
            "scienceqa/train": retrieve(kg, sqa, "train", None, args.top_n),
            "scienceqa/test": retrieve(kg, sqa, "test", None, args.top_n)}


def step_seconds(log_path: Path) -> float | None:
    """Median seconds per training step from `train_log.jsonl` (logged every step).

    Each record holds the running mean since its epoch began; differences of running totals give
    each step's own time. The first step of each epoch (loader start, lazy init) is left out.
    """
    per_step, prev = [], None
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        key = (rec["stage"], rec["epoch"])
        total = rec["s_per_step"] * rec["batch"]
        if prev is not None and prev[0] == key:
            per_step.append(total - prev[1])
        prev = (key, total)
    if not per_step:
        return None
    per_step.sort()
    return round(per_step[len(per_step) // 2], 4)


def run_option(name: str, task: str, *, args, kg: Path, train_dir: Path, eval_dir: Path) -> dict[str, Any]:
    """Train `name` for `args.steps` steps on `train_dir`, evaluate on `eval_dir` (the mmkg train/evaluate code)."""
    from mmkg.model.evaluation import evaluate
    from mmkg.model.training import train
    out = Path(args.work) / "runs" / f"{name}-{task}-{args.backbone}-seed{args.seed}"
    model_kwargs = {"backbone": args.backbone, "vision": "tiny-clip", "max_text_length": args.max_text_length,
                    **OPTION_KWARGS[name]}
    t0 = time.monotonic()
    summary = train(kg=str(kg), output_dir=str(out), seed=args.seed, device="cpu", amp=args.amp, resume=False,
                    model=name, model_kwargs=model_kwargs,
                    stages=[{"name": "finetune", "task": task, "shards": str(train_dir), "lr": args.lr,
                             "batch_size": args.batch_size, "epochs": 10**6, "max_steps": args.steps}],
                    weight_decay=0.01, max_triples=args.top_n, checkpoint_every=10**9, log_every=1)
    train_s = time.monotonic() - t0
    kwargs: dict[str, Any] = {}
    if task == "mars":
        kwargs = {"candidates": str(Path(args.data) / "markg" / "MARS" / "analogy_entities.txt"),
                  "limit": args.eval_queries}
    metrics = evaluate(kg=str(kg), task=task, shards=str(eval_dir), checkpoint=str(out / "final"), device="cpu",
                       amp=args.amp, max_triples=args.top_n, predictions=str(out / "predictions.jsonl"), **kwargs)
    keep = ("hits@1", "hits@3", "hits@10", "mrr", "count") if task == "mars" else ("overall", "IMG", "NO", "counts")
    return {"steps": summary["global_step"], "trainable_parameters": summary["parameters"]["trainable"],
            "trainable_percent": round(summary["parameters"]["trainable_percent"], 3),
            "step_seconds": step_seconds(out / "train_log.jsonl"), "train_seconds": round(train_s, 1),
            "eval_seconds": metrics["seconds"], "eval_queries": metrics["queries"],
            **{k: metrics.get(k) for k in keep}, "checkpoint": str(out / "final")}


def image_items(kg: Path, shard_dir: Path, top_n: int, limit: int) -> list:
    """The first `limit` (graph, example) pairs of `shard_dir` whose MARS query comes with an image."""
    from mmkg.kg_store import open_store
    from mmkg.model.batching import TaskDataset
    from mmkg.model.data import open_graphs
    from mmkg.model.kg_text import KGText
    from mmkg.model.tasks import resolve_task
    task = resolve_task("mars")
    ds = TaskDataset(open_graphs(kg, [shard_dir], task.fields), task=task, kg_text=KGText.from_store(open_store(kg)),
                     max_triples=top_n)
    items = [ds[i] for i in range(len(ds)) if ds.items[i][1].image is not None and ds.items[i][1].image.exists()]
    return items[:limit]


def simignore_curve(checkpoint: str, *, args, kg: Path, shard_dir: Path) -> list[dict[str, Any]]:
    """Hits/MRR, image tokens kept, prompt tokens and s/query of one Simignore checkpoint per keep ratio."""
    import numpy as np
    import torch
    from mmkg.kg_store import open_store
    from mmkg.model import checkpoint as ckpt
    from mmkg.model.batching import Collator
    from mmkg.model.scoring import read_candidates
    from mmkg.model.kg_text import KGText
    from mmkg.model.metrics import rank_of_gold, ranking_metrics
    kg_text = KGText.from_store(open_store(kg))
    items = image_items(kg, shard_dir, args.top_n, args.curve_queries)
    cand_keys = read_candidates(Path(args.data) / "markg" / "MARS" / "analogy_entities.txt")
    cand_labels = [kg_text.entity_by_key(k) for k in cand_keys]
    points = []
    for ratio in args.keep_ratios:
        net = ckpt.load_model(checkpoint, keep_ratio=ratio).eval()
        collate = Collator(kg_text=kg_text, image_transform=net.image_transform)
        net.reset_token_stats()
        ranks, t0 = [], time.monotonic()
        for item in items:
            batch = collate([item])
            ex = batch.examples[0]
            gold_in = ex.gold_key in cand_keys
            with torch.no_grad():
                scores = net.score_candidates(batch, cand_labels if gold_in else [*cand_labels, ex.target]).numpy()
            gold = float(scores[cand_keys.index(ex.gold_key)] if gold_in else scores[-1])
            ranks.append(rank_of_gold(scores[:len(cand_keys)], gold, gold_in_candidates=gold_in))
        seconds = time.monotonic() - t0
        stats = net.token_stats
        n_tokens = max(stats["image_tokens"], 1)
        metrics = ranking_metrics(ranks)
        points.append({"keep_ratio": ratio, "queries": len(items),
                       "image_tokens_kept_fraction": round(stats["image_tokens_kept"] / n_tokens, 4),
                       "image_tokens_kept_per_image": round(stats["image_tokens_kept"] / max(stats["images"], 1), 2),
                       "prompt_tokens_per_query": round(stats["prompt_tokens"] / max(len(items), 1), 1),
                       "seconds_per_query": round(seconds / max(len(items), 1), 4),
                       **{k: round(float(metrics[k]), 4) if not np.isnan(metrics[k]) else None
                          for k in ("hits@1", "hits@10", "mrr")}})
    return points


def plot_curve(points: list[dict[str, Any]], png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    png.parent.mkdir(parents=True, exist_ok=True)
    x = [p["image_tokens_kept_fraction"] for p in points]
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(x, [p["mrr"] for p in points], "o-", label="MRR")
    left.plot(x, [p["hits@10"] for p in points], "s-", label="Hits@10")
    left.set_xlabel("fraction of image tokens kept")
    left.set_ylabel("MARS ranking (image-bearing held queries)")
    right = left.twinx()
    right.plot(x, [p["prompt_tokens_per_query"] for p in points], "^--", color="gray", label="prompt tokens")
    right.set_ylabel("LLM prompt tokens per query")
    lines = left.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=8)
    left.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def markdown_table(result: dict[str, Any]) -> str:
    """One row per option: MARS and ScienceQA metrics, trainable parameters, step time."""
    head = ("| option | MARS MRR | MARS Hits@1 | MARS Hits@10 | ScienceQA acc. % | trainable params | "
            "step s (MARS) | step s (ScienceQA) |\n|---|---|---|---|---|---|---|---|")
    rows = []
    for name, r in result["options"].items():
        m, s = r.get("mars", {}), r.get("scienceqa", {})

        def fmt(v, spec=".3f"):
            return "–" if v is None else format(v, spec)
        params = m.get("trainable_parameters", s.get("trainable_parameters"))
        rows.append(f"| {name} | {fmt(m.get('mrr'))} | {fmt(m.get('hits@1'))} | {fmt(m.get('hits@10'))} | "
                    f"{fmt(s.get('overall'), '.1f')} | {fmt(params, ',')} | {fmt(m.get('step_seconds'))} | "
                    f"{fmt(s.get('step_seconds'))} |")
    return "\n".join([head, *rows])


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from runs that differ only in their tasks (same backbone, seed, steps)."""
    first = results[0]
    for r in results[1:]:
        same = all(r[k] == first[k] for k in ("backbone", "seed", "steps", "batch_size", "lr", "top_n"))
        if not same:
            raise SystemExit("--merge: the runs differ in backbone, seed or budget")
    merged = {**first, "options": {}}
    for r in results:
        for name, tasks in r["options"].items():
            merged["options"].setdefault(name, {}).update(tasks)
        if "simignore_curve" in r:
            merged["simignore_curve"] = r["simignore_curve"]
    merged["total_seconds"] = round(sum(r["total_seconds"] for r in results), 1)
    merged["merged_runs"] = len(results)
    return merged


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="All model options, same backbone/seed/budget, MARS + ScienceQA.")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--backbone", default="tiny-llama", help="a decoder-only preset (MKS2 needs one)")
    ap.add_argument("--steps", type=int, default=20, help="training steps per option and task")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3, help="for every option (tiny random backbones need a high one)")
    ap.add_argument("--train-examples", type=int, default=200, help="MARS train queries retrieved")
    ap.add_argument("--eval-queries", type=int, default=20, help="MARS dev queries evaluated (held: never trained)")
    ap.add_argument("--curve-pool", type=int, default=400, help="MARS dev queries searched for images (the curve)")
    ap.add_argument("--curve-queries", type=int, default=20, help="image-bearing dev queries of the curve")
    ap.add_argument("--keep-ratios", nargs="+", type=float, default=list(KEEP_RATIOS), help="points of the curve")
    ap.add_argument("--tasks", nargs="+", default=["mars", "scienceqa"], choices=["mars", "scienceqa"])
    ap.add_argument("--top-n", type=int, default=10, help="triples per subgraph (N)")
    ap.add_argument("--max-text-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amp", default="off", choices=["bf16", "off"])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "build" / "bench" / "compare_models"))
    ap.add_argument("--png", default=str(REPO / "benchmarks" / "out" / "simignore_curve.png"))
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="only merge the stdout of earlier runs (e.g. "
                    "one per --tasks, run side by side) and print them as one result and table")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.merge:
        # each file is a run's stdout: the JSON object, then its table
        result = merge_results([json.JSONDecoder().raw_decode(Path(p).read_text())[0] for p in args.merge])
        print(json.dumps(result, indent=2))
        print()
        print(markdown_table(result))
        return result
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    kg, data = Path(args.work) / "kg", Path(args.data)
    prepare_store(kg, data)
    shards = prepare_shards(args, kg, data)
    prep_s = time.monotonic() - t0
    splits = {"mars": ("mars/train", "mars/dev"), "scienceqa": ("scienceqa/train", "scienceqa/test")}
    options: dict[str, dict[str, Any]] = {}
    for name in args.models:
        options[name] = {}
        for task in args.tasks:
            tr, ev = splits[task]
            options[name][task] = run_option(name, task, args=args, kg=kg, train_dir=shards[tr], eval_dir=shards[ev])
            logging.getLogger("compare_models").info("%s %s: %s", name, task, options[name][task])
    result: dict[str, Any] = {
        "benchmark": "compare_models", "backbone": args.backbone, "vision": "tiny-clip", "encoder": ENCODER,
        "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "amp": args.amp,
        "top_n": args.top_n, "mars": {"train_queries": args.train_examples, "eval": f"first {args.eval_queries} dev",
                                      "candidates": 2063, "ranking": "unfiltered, ties optimistic"},
        "scienceqa": {"train": "train split of the problems available", "eval": "test split of the problems available"},
        "option_kwargs": {n: OPTION_KWARGS[n] for n in args.models}, "prepare_seconds": round(prep_s, 1),
        "options": options}
    if "simignore" in options and "mars" in options["simignore"]:
        points = simignore_curve(options["simignore"]["mars"]["checkpoint"], args=args, kg=kg,
                                 shard_dir=shards["mars/dev"])
        result["simignore_curve"] = {"trained_keep_ratio": OPTION_KWARGS["simignore"]["keep_ratio"],
                                     "png": args.png, "points": points}
        plot_curve(points, Path(args.png), f"Simignore on MARS ({args.backbone}, {args.steps} steps, "
                                           f"{points[0]['queries']} image-bearing dev queries)")
    result["total_seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result, indent=2))
    print()
    print(markdown_table(result))
    return result


if __name__ == "__main__":
    main()
