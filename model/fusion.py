"""Late fusion diagnostic: candidate score = LLM log-likelihood + β · a KG-only prior.

The prior uses nothing but the KG around the query, so ranking by it alone is the "KG-only
ranker", and fitting β on held-out train queries shows whether the KG signal adds to what the
LLM already ranks (β = 0 wins when it does not). For MARS candidate c and question entity q:

    prior(c) = subgraph(c) + distance(c)
    subgraph(c) = max retrieval score of the retrieved triples (the shard row) that touch c, else 0
    distance(c) = 1 / d(q, c) for d ≤ max_hops hops in the store's CSR graph (both directions), else 0

The question entity itself gets prior 0 (it touches every triple of its own subgraph; an
answer equal to the question is rare). All ranks use `mmkg.model.metrics.rank_of_gold`, so ties —
very common for the prior alone — follow the same rules as the LLM ranks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmkg.kg_store.graph import segment_positions
from mmkg.model.metrics import rank_of_gold

#: β values tried by `fit_beta` (LLM log-likelihoods are sums over tokens, tens of nats apart)
BETA_GRID = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def hop_distances(graph, source: int, max_hops: int) -> np.ndarray:
    """Hops from `source` to every node (edges in both directions), -1 beyond `max_hops`.

    `graph` is a `mmkg.kg_store.graph.CSRGraph` (its rows list each node's edges both ways).
    """
    n = graph.num_nodes
    dist = np.full(n, -1, dtype=np.int64)
    if not 0 <= source < n:
        return dist
    dist[source] = 0
    frontier = np.array([source], dtype=np.int64)
    for d in range(1, max_hops + 1):
        starts, ends = graph.indptr[frontier], graph.indptr[frontier + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            break
        nb = np.unique(np.asarray(graph.neighbor[segment_positions(starts, lengths)]))
        nb = nb[dist[nb] < 0]
        if nb.size == 0:
            break
        dist[nb] = d
        frontier = nb
    return dist


def subgraph_prior(head_ids: Sequence[int], tail_ids: Sequence[int], scores: Sequence[float],
                   candidate_ids: np.ndarray) -> np.ndarray:
    """Per candidate: the best retrieval score among the retrieved triples that touch it, else 0."""
    best: dict[int, float] = {}
    for h, t, s in zip(np.asarray(head_ids).tolist(), np.asarray(tail_ids).tolist(),
                       np.asarray(scores, dtype=np.float64).tolist()):
        for e in (h, t):
            best[e] = max(best.get(e, -np.inf), s)
    return np.array([max(best.get(int(c), 0.0), 0.0) if c >= 0 else 0.0 for c in candidate_ids], dtype=np.float64)


def distance_prior(graph, source: int, candidate_ids: np.ndarray, *, max_hops: int = 2) -> np.ndarray:
    """Per candidate: 1 / hops from `source` (≤ max_hops), 0 when farther, unknown or the source."""
    dist = hop_distances(graph, source, max_hops)
    ids = np.asarray(candidate_ids, dtype=np.int64)
    d = np.where((ids >= 0) & (ids < len(dist)), dist[np.clip(ids, 0, max(len(dist) - 1, 0))], -1)
    return np.where(d > 0, 1.0 / np.maximum(d, 1), 0.0)


def kg_prior(row: dict, candidate_ids: np.ndarray, graph, *, max_hops: int = 2) -> np.ndarray:
    """The KG-only prior of every candidate for one shard row (see the module doc).

    `row`: `SubgraphDataset.row(i)` with `question_entity` among its fields.
    """
    q = row.get("question_entity")
    q = -1 if q is None else int(q)
    prior = subgraph_prior(row["head_ids"], row["tail_ids"], row["scores"], candidate_ids)
    prior = prior + distance_prior(graph, q, candidate_ids, max_hops=max_hops)
    prior[np.asarray(candidate_ids) == q] = 0.0
    return prior


def fused_rank(llm_scores: np.ndarray, prior: np.ndarray, gold: int, beta: float, *,
               ties: str = "realistic") -> float:
    """Rank of candidate `gold` under llm + β·prior (all arrays over the same candidates)."""
    fused = np.asarray(llm_scores, dtype=np.float64) + beta * np.asarray(prior, dtype=np.float64)
    return rank_of_gold(fused, float(fused[gold]), ties=ties)


def fit_beta(llm_scores: Sequence[np.ndarray], priors: Sequence[np.ndarray], golds: Sequence[int], *,
             grid: Sequence[float] = BETA_GRID, ties: str = "realistic") -> tuple[float, dict[float, float]]:
    """β of `grid` with the best MRR over the given queries (ties → the smallest such β).

    Returns (β, {β: MRR}). With no query, β = 0.
    """
    table: dict[float, float] = {}
    for beta in grid:
        ranks = [fused_rank(s, p, g, beta, ties=ties) for s, p, g in zip(llm_scores, priors, golds)]
        table[float(beta)] = float(np.mean([1.0 / r for r in ranks])) if ranks else 0.0
    best = max(table.values(), default=0.0)
    return min((b for b, m in table.items() if m == best), default=0.0), table
