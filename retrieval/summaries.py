"""Per-query figures of a retrieval run (`QuerySummaries`) and the small helpers the reports and
the datasets' report hooks share; below both, so neither imports the other."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

#: the N values MR-MKG reports (10 and 20 triples)
REPORT_N = (10, 20)
BASELINE_SEED = 0

Pairs = Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass
class QuerySummaries:
    """Per query, the few figures the reports need, in query order: computed next to the
    subgraphs (in the executors under Spark), so the reports never hold queries × N triples."""

    kept: np.ndarray                     # triples kept in the shards (top_N prefix)
    score_sum: np.ndarray                # float64 sum of those triples' scores
    top1: np.ndarray                     # float64 best score, NaN for an empty subgraph
    num_candidates: np.ndarray
    seeds: list[np.ndarray]              # seed entities (the random baselines expand them)
    #: datasets with an answer entity (`Dataset.answer_summaries`): answer in the candidate pool /
    #: in the top-n (every n of `report_ns`) / a kept triple links question and answer directly
    pool_hit: np.ndarray | None = None
    hits: dict[int, np.ndarray] = field(default_factory=dict)
    links: np.ndarray | None = None


def report_ns(top_N: int, ranked_N: int | None = None) -> list[int]:
    """The N of the hit rates: every `REPORT_N` the ranked lists reach, and the shards' top_N."""
    ranked_N = max(ranked_N or top_N, top_N)
    return sorted({*[n for n in REPORT_N if n <= ranked_N], top_N})


def share(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if mask.size else 0.0


def contains(outputs_entities: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    return np.array([t >= 0 and bool(np.isin(t, e)) for e, t in zip(outputs_entities, targets)], dtype=bool)


def pairs_link(pairs: Pairs, q_ids: np.ndarray, a_ids: np.ndarray) -> np.ndarray:
    """Per query: one of its (head, tail) pairs is question→answer or answer→question."""
    return np.array([bool(np.any(((h == q) & (t == a)) | ((h == a) & (t == q))))
                     for (h, t), q, a in zip(pairs, q_ids, a_ids)], bool)


def flag_summary(qids: list[str], flags: dict[str, np.ndarray], list_up_to: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"queries": len(qids), "counts": {k: int(v.sum()) for k, v in flags.items()}}
    # ids of the rarer leaks, so results can be recomputed without them
    out["query_ids"] = {k: [q for q, f in zip(qids, v) if f] for k, v in flags.items()
                        if 0 < int(v.sum()) <= list_up_to}
    return out
