"""`mmkg train` / `mmkg evaluate` of the learned MARS reranker: a job whose `model` is `reranker`.

The reranker is a LightGBM model over features (`mmkg.model.reranker`), not a network prompted by
shards, so its jobs read the MARS folder (train.json, the split files, analogy_entities.txt) and the
KG directly; the CLI picks these functions for a job naming one of `VARIANTS`.

* `train(**job)` fits it on the train split featurised out of fold (early stopping on `valid_split`)
  and writes the run folder: `reranker.lgb.txt` (the model), `kge.safetensors` (the KG embedding its
  kge features read, when used), `job.json` and `summary.json`.
* `evaluate(**job)` ranks every query of a split (or a seeded random sample of `limit`) among all candidates with a
  run's model and writes predictions JSONL with the rank fields of every MARS evaluation
  (`rank`, `rank_optimistic`, `rank_realistic`, `rank_pessimistic`, `in_shortlist`, `top10`; query id
  `<split>-<line>`, the id of the full split's shard rows), and returns the metrics.

`benchmarks/mars_eval.py --reranker` trains the same way (`mmkg.model.reranker.training_set`), with the
ablations on top.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mmkg.kg_store.errors import ConfigError

VARIANTS = ("reranker",)
MODEL_FILE, KGE_FILE, SUMMARY_FILE = "reranker.lgb.txt", "kge.safetensors", "summary.json"


def _mars_dir(data: str | Path) -> Path:
    d = Path(data)
    missing = [f for f in ("train.json", "analogy_entities.txt") if not (d / f).is_file()]
    if missing:
        raise ConfigError(f"{d}: not a MARS folder (missing {', '.join(missing)})")
    return d


def _kge_params(kge: bool | Mapping[str, Any]) -> Any:
    from mmkg.model.kge import KGEParams
    if kge is False or kge is None:
        return None
    try:
        return KGEParams(**(dict(kge) if isinstance(kge, Mapping) else {}))
    except TypeError as e:
        raise ConfigError(f"kge: {e} (keys: {', '.join(asdict(KGEParams()))})") from None


def train(*, kg: str, data: str, output_dir: str, model: str = "reranker", valid_split: str = "dev",
          k: int | None = None, folds: int = 5, seed: int = 0, rounds: int = 500, kge: bool | Mapping[str, Any] = True,
          progress: bool = False) -> dict[str, Any]:
    """Fit the reranker out of fold on `data`/train.json over the KG at `kg`; returns the summary.

    Args:
        data: the MARS folder (train.json, `valid_split`.json, analogy_entities.txt).
        valid_split: the split whose queries stop the boosting early and set the training mix's seen share.
        k: shortlist size (the top K of `memory>kg_prior` the model reranks; None: `reranker.DEFAULT_K`).
        kge: use the TransE features (`true`, or a mapping of `mmkg.model.kge.KGEParams` overrides; `false`: none).
    """
    from mmkg.model.kge import load_or_train_kge, save_kge
    from mmkg.model.rankers import MarsContext
    from mmkg.model.reranker import DEFAULT_K, EntityVectors, available_groups, feature_names, featurize, \
        fit_reranker, rank_featurized, training_set
    from mmkg.retrieval.paths import read_mars_rows
    k = DEFAULT_K if k is None else k
    if model not in VARIANTS:
        raise ConfigError(f"model {model!r} is not a learned ranker ({', '.join(VARIANTS)})")
    mars = _mars_dir(data)
    valid_file = mars / f"{valid_split}.json"
    if not valid_file.is_file():
        raise ConfigError(f"valid_split {valid_split!r}: {valid_file} does not exist")
    t0 = time.perf_counter()
    ctx = MarsContext.from_files(kg, mars, folds=folds)
    vectors = EntityVectors(ctx.store)
    params = _kge_params(kge)
    kge_key = None
    if params is not None:
        ctx.kge, kge_key = load_or_train_kge(kg, params)
    valid = featurize(ctx, read_mars_rows(valid_file), train_rows=False, k=k, vectors=vectors, progress=progress)
    train_rows = read_mars_rows(mars / "train.json")
    train_set, mixture = training_set(ctx, kg, mars, train_rows, target_seen_share=float(np.mean(valid.seen)), k=k,
                                      vectors=vectors, seed=seed, progress=progress)
    groups = available_groups(vectors, ctx.kge)
    booster = fit_reranker(train_set, feature_names(groups), valid=valid, seed=seed, rounds=rounds)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from mmkg.kg_store import atomic
    with atomic.atomic_path(out / MODEL_FILE) as tmp:
        booster.save_model(str(tmp))
    if ctx.kge is not None:
        save_kge(out / KGE_FILE, ctx.kge)
    valid_ranks = np.array(rank_featurized(valid, booster))
    summary = {"model": model, "output_dir": str(out), "groups": groups, "features": feature_names(groups), "k": k,
               "folds": folds, "seed": seed, "rounds": booster.best_iteration or booster.current_iteration(),
               "training_mixture": mixture, "prior": ctx.prior_key, "kge": kge_key,
               "valid": {"split": valid_split, "queries": len(valid_ranks),
                         "mrr": float(np.mean(1 / valid_ranks)) if len(valid_ranks) else None},
               "seconds": round(time.perf_counter() - t0, 1)}
    atomic.write_json(out / "job.json", {"model": model, "kg": str(kg), "data": str(mars), "valid_split": valid_split,
                                         "k": k, "folds": folds, "seed": seed, "rounds": rounds,
                                         "kge": asdict(params) if params else None})
    atomic.write_json(out / SUMMARY_FILE, summary)
    return summary


def run_summary(run: Path) -> dict[str, Any]:
    """The summary of a `train` run folder; a one-line ConfigError when the folder holds no run."""
    if not (run / MODEL_FILE).is_file() or not (run / SUMMARY_FILE).is_file():
        raise ConfigError(f"{run}: not a reranker run (no {MODEL_FILE} / {SUMMARY_FILE}; run mmkg train first)")
    return json.loads((run / SUMMARY_FILE).read_text())


def attach_run(ctx: Any, run: str | Path) -> Any:
    """`ctx` (a `MarsContext`) with a `train` run's model, its shortlist size and the KG embedding its
    kge features read: what the `reranker` ranker needs (`mmkg evaluate`, an LLM's shortlist)."""
    from mmkg.model.kge import load_kge
    from mmkg.model.reranker import FEATURES, load_reranker
    run = Path(run)
    summary = run_summary(run)
    if int(summary["folds"]) != ctx.folds:
        raise ConfigError(f"{run}: trained with {summary['folds']} prior folds, the context has {ctx.folds}")
    ctx.reranker, ctx.reranker_k = load_reranker(run / MODEL_FILE), int(summary["k"])
    if any(n in FEATURES["kge"] for n in ctx.reranker.feature_name()):
        ctx.kge = load_kge(run / KGE_FILE)
    return ctx


def evaluate(*, kg: str, data: str, checkpoint: str, model: str = "reranker", split: str = "test",
             predictions: str | None = None, limit: int | None = None, ties: str = "realistic",
             progress: bool = False) -> dict[str, Any]:
    """Rank the queries of `data`/`split`.json with the run at `checkpoint` (a `train` output folder);
    `limit`: a seeded random sample of that many, in line order (`mmkg evaluate --limit`)."""
    from tqdm.auto import tqdm

    from mmkg.kg_store import atomic
    from mmkg.retrieval.datasets.base import limit_sample
    from mmkg.model.metrics import TIE_RULES, rank_of_gold, ranking_metrics
    from mmkg.model.rankers import MarsContext, realistic_rank, top_positions
    from mmkg.model.reranker import reranker_ranker
    from mmkg.retrieval.paths import read_mars_rows
    if model not in VARIANTS:
        raise ConfigError(f"model {model!r} is not a learned ranker ({', '.join(VARIANTS)})")
    if ties not in TIE_RULES:
        raise ConfigError(f"ties must be one of {TIE_RULES}, not {ties!r}")
    run = Path(checkpoint)
    summary = run_summary(run)  # before any data is read
    mars = _mars_dir(data)
    split_file = mars / f"{split}.json"
    if not split_file.is_file():
        raise ConfigError(f"split {split!r}: {split_file} does not exist")
    t0 = time.perf_counter()
    ctx = attach_run(MarsContext.from_files(kg, mars, folds=int(summary["folds"])), run)
    rows = read_mars_rows(split_file)
    lines = limit_sample(len(rows), limit)
    records = []
    for line in tqdm(lines, disable=not progress, desc=split, leave=False):
        row = rows[line]
        scores = reranker_ranker(ctx, ctx.query(row))  # the row's question and example pair only
        gold = ctx.gold(row)
        by_rule = {rule: (rank_of_gold(scores, float(scores[gold]), ties=rule) if gold >= 0 else float(len(scores)))
                   for rule in TIE_RULES}
        by_rule["realistic"] = realistic_rank(scores, gold)  # the benchmark's own rule, bit for bit
        in_short = gold >= 0 and by_rule["pessimistic"] <= ctx.reranker_k
        best = top_positions(scores, 10)
        records.append({"query_id": f"{split}-{line}", "task": "mars", "gold": row["answer"],
                        "gold_in_candidates": gold >= 0, "in_shortlist": bool(in_short),
                        "shortlist": {"ranker": "memory>kg_prior", "k": ctx.reranker_k}, "rank": by_rule[ties],
                        **{f"rank_{rule}": r for rule, r in by_rule.items()},
                        "top10": [{"key": ctx.candidates[j], "score": float(scores[j])} for j in best],
                        "mode": row.get("mode")})
    if predictions:
        atomic.write_bytes(predictions, "".join(json.dumps(r) + "\n" for r in records).encode())
    metrics = ranking_metrics(r["rank"] for r in records)
    metrics["mrr_by_ties"] = {rule: ranking_metrics(r[f"rank_{rule}"] for r in records)["mrr"] for rule in TIE_RULES}
    metrics[f"recall@{ctx.reranker_k}"] = float(np.mean([r["in_shortlist"] for r in records])) if records else None
    metrics.update(task="mars", model=model, split=split, ties=ties, queries=len(records), complete=True,
                   seconds=round(time.perf_counter() - t0, 2))
    return metrics
