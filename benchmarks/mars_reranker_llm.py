"""The reranker's LLM feature group (issue 28's ablation): the frozen LLM's score of the reranker's top 10.

    python benchmarks/mars_reranker_llm.py          # score dev + test → fit on dev → report on test, resumable

Scoring every training row's 1,000-candidate shortlist with SmolLM2 on 2 cores is out of reach, so the
LLM enters as a second stage over the committed reranker (`benchmarks/out/mars_reranker.lgb.txt`,
its TransE `mars_kge.safetensors`): for each query the reranker's top `--k` candidates get the frozen
SmolLM2-135M's log-likelihood of their label after the question prompt (`mrmkg`, knowledge "none",
zero training steps, fp32 CPU; `evaluate(shortlist={"ranker": "reranker", "model": RUN})`), and the
fused score is

    z(reranker score) + w · z(LLM score)        (z: standardised over the query's own top k)

with the LLM score the log-likelihood or its PMI form (minus the label's log-likelihood after the
scorer's null prompt). The scoring and `w` (a grid, 0 included) are chosen on every dev query;
test is read once with that choice. A gold outside the top k keeps the reranker's rank. Stages
(`--stage`): `score` (the reranker's predictions, then the LLM's, per split; JSONL appended per
query, so a killed run resumes), `fit` (dev only), `report` → `benchmarks/out/mars_reranker_llm.json`:
the test rank of every line for `reranker` and `reranker+llm`, their paired comparison (bootstrap
interval, permutation p) — the "without llm" row of the reranker's ablation (`mars_eval.py` reads it).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = {"backbone": "smollm2-135m", "vision": None, "max_text_length": 256, "knowledge": "none"}
SPLITS = ("dev", "test")
WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SCORINGS = ("loglik", "pmi")
N_PERM = 10000


def run_dir(args) -> Path:
    """A `mmkg train`-style run folder holding the committed reranker artifacts (what the shortlist reads)."""
    from mmkg.kg_store import atomic
    from mmkg.model.reranker_run import KGE_FILE, MODEL_FILE, SUMMARY_FILE
    run = args.work / "reranker-run"
    run.mkdir(parents=True, exist_ok=True)
    committed = json.loads((REPO / "benchmarks" / "out" / "mars_eval.json").read_text())["reranker"]
    for name, src in ((MODEL_FILE, "mars_reranker.lgb.txt"), (KGE_FILE, "mars_kge.safetensors")):
        atomic.write_bytes(run / name, (REPO / "benchmarks" / "out" / src).read_bytes())
    atomic.write_json(run / SUMMARY_FILE, {"folds": 5, "k": int(committed["k"])})
    return run


def shard_dir(kg: Path, split: str) -> Path:
    from mmkg.kg_store.shards import is_complete
    dirs = sorted(p for p in (kg / "subgraphs" / "mars" / split).glob("*") if is_complete(p))
    if not dirs:
        raise SystemExit(f"no MARS {split} shards under {kg}: mmkg retrieve --kg {kg} --dataset mars:... "
                         f"--split {split}")
    return dirs[0]


def score(args, run: Path, split: str) -> None:
    from mmkg.model.evaluation import evaluate
    from mmkg.model.reranker_run import evaluate as evaluate_reranker
    mars = args.data / "markg" / "MARS"
    t0 = time.monotonic()
    rr = args.work / f"{split}.reranker.jsonl"
    if not rr.exists():
        m = evaluate_reranker(kg=str(args.kg), data=str(mars), checkpoint=str(run), split=split,
                              predictions=str(rr), progress=True)
        print(json.dumps({"split": split, "reranker_mrr": m["mrr"], "seconds": m["seconds"]}), flush=True)
    m = evaluate(kg=str(args.kg), task="mars", shards=str(shard_dir(args.kg, split)), model="mrmkg",
                 model_kwargs=MODEL, candidates=str(mars / "analogy_entities.txt"),
                 predictions=str(args.work / f"{split}.llm.jsonl"), device="cpu", amp="off", ties="realistic",
                 shortlist={"ranker": "reranker", "model": str(run), "k": args.k, "train": str(mars / "train.json"),
                            "folds": 5}, scoring="loglik",
                 progress=lambda d, n, s: d % 50 == 0 and print(f"{split} llm {d}/{n} {s:.2f} s/query", flush=True))
    print(json.dumps({"split": split, "llm_only_mrr": m.get("mrr"), "queries": m.get("queries"),
                      "wall_seconds": round(time.monotonic() - t0, 1)}), flush=True)


def records(args, split: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """(reranker, LLM) records by line of the split file (the shard rows' ids are zero-padded, "dev-000017")."""
    from benchmarks.mars_kg import read_predictions
    by_line = lambda recs: {str(int(q.rsplit("-", 1)[1])): r for q, r in recs.items()}  # noqa: E731
    return tuple(by_line(read_predictions(args.work / f"{split}.{what}.jsonl")) for what in ("reranker", "llm"))


def fused_rank(rr: dict[str, Any], llm: dict[str, Any], w: float, null: dict[str, float] | None) -> float:
    """Realistic rank of the gold under z(reranker) + w·z(LLM) over the top k; outside it, the reranker's."""
    from mmkg.model.metrics import rank_of_gold
    keys = [k for k, _ in llm["shortlist_scores"]]
    top = {t["key"]: t["score"] for t in rr["top10"]}
    if keys != [t["key"] for t in rr["top10"]][:len(keys)]:
        raise SystemExit(f"{rr['query_id']}: the LLM's shortlist is not the reranker's top {len(keys)}")
    if rr["gold"] not in keys:
        return float(rr["rank_realistic"])
    a = np.array([top[k] for k in keys])
    b = np.array([v for _, v in llm["shortlist_scores"]], np.float64)
    if null is not None:
        b = b - np.array([null[k] for k in keys])
    z = lambda x: (x - x.mean()) / (x.std() or 1.0)  # noqa: E731
    s = z(a) + w * z(b)
    return float(rank_of_gold(s, float(s[keys.index(rr["gold"])]), ties="realistic"))


def nulls(args, split_records) -> dict[str, float]:
    from benchmarks.mars_llm import null_scores
    keys = sorted({k for recs in split_records for r in recs.values() for k, _ in r["shortlist_scores"]})
    return null_scores(args.kg, keys)


def fit(args) -> dict[str, Any]:
    from benchmarks.mars_llm import mrr
    rr, llm = records(args, "dev")
    qs = sorted(set(rr) & set(llm))
    null = nulls(args, [llm])
    table, best = [], None
    for scoring in SCORINGS:
        for w in WEIGHTS:
            m = mrr(fused_rank(rr[q], llm[q], w, null if scoring == "pmi" else None) for q in qs)
            table.append({"scoring": scoring, "w": w, "dev_mrr": m})
            if best is None or m > best["dev_mrr"] + 1e-12:
                best = table[-1]
    out = {"dev_queries": len(qs), "reranker_dev_mrr": mrr(rr[q]["rank_realistic"] for q in qs),
           "choice": best, "grid": table, "rule": "max dev MRR (first of equals: loglik before pmi, smaller w)"}
    from mmkg.kg_store import atomic
    atomic.write_json(args.work / "fit.json", out)
    return out


def report(args) -> dict[str, Any]:
    from benchmarks.mars_eval import provenance
    from mmkg.model.metrics import add_holm, compare_ranks, summarize
    fitted = json.loads((args.work / "fit.json").read_text())
    choice = fitted["choice"]
    rr, llm = records(args, "test")
    qs = sorted(set(rr) & set(llm), key=int)
    null = nulls(args, [llm]) if choice["scoring"] == "pmi" else None
    ranks = {"reranker": {q: float(rr[q]["rank_realistic"]) for q in qs},
             "reranker+llm": {q: fused_rank(rr[q], llm[q], choice["w"], null) for q in qs}}
    committed = json.loads((REPO / "benchmarks" / "out" / "mars_eval.json").read_text())["ranks"]["reranker"]["test"]
    same = sum(committed.get(k) == v for k, v in ranks["reranker"].items())
    a, b = ([ranks[n][k] for k in ranks["reranker"]] for n in ("reranker", "reranker+llm"))
    comparisons = [{"a": "reranker", "b": "reranker+llm", "split": "test", "part": "all",
                    **compare_ranks(a, b, n_perm=N_PERM)}]
    add_holm(comparisons, N_PERM)
    mars = args.data / "markg" / "MARS"
    result = {
        "benchmark": "mars_reranker_llm", "split": "test", "queries": len(qs),
        "line": "0-based line number in test.json", "ties": "realistic: 1 + #higher + #tied others / 2",
        "config": {"llm": "smollm2-135m (frozen, fp32, CPU, no facts)", "training_steps": 0, "model_kwargs": MODEL,
                   "shortlist": {"ranker": "reranker (committed mars_reranker.lgb.txt)", "k": args.k},
                   "fusion": "z(reranker score) + w * z(LLM score), z over the query's top k",
                   "scoring": choice["scoring"], "w": choice["w"],
                   "fitted_on": f"all {fitted['dev_queries']} dev queries"},
        "reranker_ranks_equal_mars_eval": f"{same}/{len(qs)}",
        "ranks": {"test": ranks}, "metrics": {n: summarize(r.values()) for n, r in ranks.items()},
        "comparisons": comparisons, "dev_fit": fitted,
        "provenance": provenance({"train": mars / "train.json", "dev": mars / "dev.json", "test": mars / "test.json",
                                  "candidates": mars / "analogy_entities.txt"}, args.kg),
    }
    from mmkg.kg_store import atomic
    atomic.write_json(args.out, result)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", default="all", choices=["all", "score", "fit", "report"])
    ap.add_argument("--split", default=None, choices=SPLITS, help="score: only this split")
    ap.add_argument("--k", type=int, default=10, help="the reranker's top k the LLM scores")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--kg", type=Path, default=REPO / "build" / "bench" / "markg-minilm",
                    help="the reranker's MarKG store (benchmarks/mars_eval.py builds it) with MARS dev and test shards")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "mars_reranker_llm")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "mars_reranker_llm.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "score"):
        run = run_dir(args)
        for split in [args.split] if args.split else SPLITS:
            score(args, run, split)
    if args.stage in ("all", "fit"):
        print(json.dumps(fit(args)["choice"]), flush=True)
    if args.stage in ("all", "report"):
        r = report(args)
        print(json.dumps({"metrics": {n: m.get("mrr") for n, m in r["metrics"].items()},
                          "reranker_ranks_equal_mars_eval": r["reranker_ranks_equal_mars_eval"],
                          "comparison": {k: r["comparisons"][0][k] for k in ("mrr_diff", "ci95", "p_text")}}), flush=True)


if __name__ == "__main__":
    main()
