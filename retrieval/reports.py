"""Quality and leakage reports of a retrieval run, written as JSON beside the shards.

Every dataset gets the score statistics of its subgraphs (mean query–triple cosine, empty
subgraphs, candidates); what else a dataset reports (MARS: answer hit rates against random
baselines, by stratum; leakage against the KG and train) is its own hook (`mmkg.retrieval.datasets`:
`summarize`, `quality`, `run_leakage`, `leakage`), so this module never names a dataset.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmkg.kg_store import KGStore
from mmkg.retrieval.datasets import QuerySet, resolve_dataset
from mmkg.retrieval.subgraph import SubgraphOutput
from mmkg.retrieval.summaries import QuerySummaries


def summarize(graph: Any, triples: np.ndarray, dataset: str, queries: Sequence[Any],
              outputs: Sequence[SubgraphOutput], *, top_N: int, hops: int = 1,
              ranked_N: int | None = None) -> QuerySummaries:
    """The `QuerySummaries` of `outputs` (ranked to `ranked_N`, the shards keep `top_N`)."""
    from mmkg.retrieval.datasets import datasets
    kept = [o.head(top_N) for o in outputs]
    s = QuerySummaries(
        kept=np.array([len(o) for o in kept], np.int64),
        score_sum=np.array([np.sum(o.scores, dtype=np.float64) for o in kept], np.float64),
        top1=np.array([o.scores[0] if len(o) else np.nan for o in kept], np.float64),
        num_candidates=np.array([o.num_candidates for o in outputs], np.int64),
        seeds=[np.asarray(o.seed_entities, np.int64) for o in outputs])
    datasets.get(dataset).summarize(s, graph, triples, queries, outputs, top_N=top_N, hops=hops, ranked_N=ranked_N)
    return s


def _score_stats(s: QuerySummaries) -> dict[str, Any]:
    n, total = len(s.kept), int(s.kept.sum())
    full = s.kept > 0
    return {"queries": n, "empty": int((~full).sum()),
            "mean_triples": round(float(s.kept.mean()), 3) if n else 0.0,
            "mean_candidates": round(float(s.num_candidates.mean()), 1) if n else 0.0,
            "mean_query_triple_score": round(float(s.score_sum.sum() / total), 4) if total else None,
            "mean_top1_score": round(float(s.top1[full].mean()), 4) if full.any() else None}


def quality_report(store: KGStore, qs: QuerySet, outputs: Sequence[SubgraphOutput], *, top_N: int,
                   hops: int = 1, strata: dict[str, np.ndarray] | None = None,
                   ranked_N: int | None = None) -> dict[str, Any]:
    """Retrieval quality of one run (the shards' `top_N` triples per query).

    A dataset that ranks deeper for its reports (`Dataset.ranked_N`) gets figures at every N
    of `REPORT_N` that the ranked lists reach (`ranked_N`, default `top_N`): the top-N is the
    prefix of a longer ranking, so one ranking of 20 gives N = 10 and 20.
    """
    s = summarize(store.graph, store.triples_array(), qs.dataset, qs.queries, outputs, top_N=top_N, hops=hops,
                  ranked_N=ranked_N)
    return quality_from_summaries(store, qs, s, top_N=top_N, hops=hops, strata=strata, ranked_N=ranked_N)


def quality_from_summaries(store: KGStore, qs: QuerySet, s: QuerySummaries, *, top_N: int, hops: int = 1,
                           strata: dict[str, np.ndarray] | None = None,
                           ranked_N: int | None = None) -> dict[str, Any]:
    """`quality_report` from the per-query summaries (what the Spark engine sends the driver)."""
    report: dict[str, Any] = {"dataset": qs.dataset, "split": qs.split, "top_N": top_N, **_score_stats(s)}
    qs.kind.quality(store, qs, s, report, top_N=top_N, hops=hops, strata=strata, ranked_N=ranked_N)
    return report


def run_reports(store: KGStore, qs: QuerySet, outputs: Sequence[SubgraphOutput], *, top_N: int,
                hops: int = 1, ranked_N: int | None = None) -> dict[str, dict[str, Any]]:
    """The JSON side files of a shard set: {"quality": ..., "leakage": ...} (leakage where defined).

    `outputs` may be ranked deeper than the shards keep (`ranked_N` > `top_N`): leakage and score
    statistics use the first `top_N` triples, the hit rates every N up to `ranked_N`.
    """
    s = summarize(store.graph, store.triples_array(), qs.dataset, qs.queries, outputs, top_N=top_N, hops=hops,
                  ranked_N=ranked_N)
    return reports_from_summaries(store, qs, s, top_N=top_N, hops=hops, ranked_N=ranked_N)


def reports_from_summaries(store: KGStore, qs: QuerySet, s: QuerySummaries, *, top_N: int, hops: int = 1,
                           ranked_N: int | None = None) -> dict[str, dict[str, Any]]:
    """`run_reports` from the per-query summaries (the Spark engine's executors compute them)."""
    reports: dict[str, dict[str, Any]] = {}
    leakage, strata = qs.kind.run_leakage(store, qs, s)
    if leakage is not None:
        reports["leakage"] = leakage
    reports["quality"] = quality_from_summaries(store, qs, s, top_N=top_N, hops=hops, strata=strata,
                                                ranked_N=ranked_N)
    return reports


def leakage_for_dataset(store: KGStore, spec: str, splits: list[str] | None = None) -> dict[str, Any]:
    """`mmkg leakage`: per split, the dataset's leakage report (`Dataset.leakage`)."""
    ds = resolve_dataset(spec)
    if not ds.has_leakage:
        ds.leakage(store, None)  # type: ignore[arg-type]  # raises the one-line "defined for ..." error
    out: dict[str, Any] = {"dataset": ds.name, "kg_version": store.kg_version, "splits": {}}
    for split in splits or ds.leakage_splits():
        out["splits"][split] = ds.leakage(store, ds.build(store=store, split=split))
    return out
