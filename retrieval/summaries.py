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
    #: the random-pool baseline: answer in n triples drawn from the pool (every n of `report_ns`)
    pool_drawn: dict[int, np.ndarray] = field(default_factory=dict)


def report_ns(top_N: int, ranked_N: int | None = None) -> list[int]:
    """The N of the hit rates: every `REPORT_N` the ranked lists reach, and the shards' top_N."""
    ranked_N = max(ranked_N or top_N, top_N)
    return sorted({*[n for n in REPORT_N if n <= ranked_N], top_N})


def share(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if mask.size else 0.0


def _flat_pairs(pairs: Pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(owner, position within its list, heads, tails) of every query's (heads, tails) lists, flat."""
    lens = np.array([len(h) for h, _ in pairs], np.int64)
    owner = np.repeat(np.arange(len(pairs)), lens)
    pos = np.arange(len(owner)) - np.repeat(np.cumsum(lens) - lens, lens)
    flat = [np.concatenate([np.asarray(x, np.int64) for x in col]) if len(pairs) else np.empty(0, np.int64)
            for col in zip(*pairs)] or [np.empty(0, np.int64)] * 2
    return owner, pos, flat[0], flat[1]


def first_end_position(pairs: Pairs, targets: np.ndarray) -> np.ndarray:
    """Per query: the position of its first (head, tail) with its target as an end (int64 max when
    none, and for an unknown target < 0): the target is among the first n triples' entities iff < n."""
    owner, pos, h, t = _flat_pairs(pairs)
    targets = np.asarray(targets, np.int64)
    a = targets[owner]
    match = ((h == a) | (t == a)) & (a >= 0)
    first = np.full(len(pairs), np.iinfo(np.int64).max)
    np.minimum.at(first, owner[match], pos[match])
    return first


def pairs_link(pairs: Pairs, q_ids: np.ndarray, a_ids: np.ndarray) -> np.ndarray:
    """Per query: one of its (head, tail) pairs is question→answer or answer→question."""
    owner, _, h, t = _flat_pairs(pairs)
    q, a = np.asarray(q_ids, np.int64)[owner], np.asarray(a_ids, np.int64)[owner]
    link = ((h == q) & (t == a)) | ((h == a) & (t == q))
    return np.bincount(owner[link], minlength=len(pairs)) > 0


def flag_summary(qids: list[str], flags: dict[str, np.ndarray], list_up_to: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"queries": len(qids), "counts": {k: int(v.sum()) for k, v in flags.items()}}
    # ids of the rarer leaks, so results can be recomputed without them
    out["query_ids"] = {k: [q for q, f in zip(qids, v) if f] for k, v in flags.items()
                        if 0 < int(v.sum()) <= list_up_to}
    return out
