"""Seeds → k-hop candidate triples on the CSR → the top-N by cosine to the query (MR-MKG §3.2).

Everything is vectorised numpy over the store's mmap-ed CSR and triple vectors; no Python
graph object is ever built for a query (PyG's `SamplerOutput` idea, G1/G5).
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from mmkg.kg_store.graph import CSRGraph


@dataclass
class SubgraphOutput:
    """The retrieved subgraph of one query, triples sorted by descending score.

    Shapes: `triple_ids`, `heads`, `relations`, `tails`, `scores`: (N',) with N' ≤ N.
    """

    triple_ids: np.ndarray      # int64 store triple ids
    heads: np.ndarray           # int64 entity ids
    relations: np.ndarray       # int64 relation ids
    tails: np.ndarray           # int64 entity ids
    scores: np.ndarray          # float32 cosine(query, triple)
    seed_entities: np.ndarray   # int64 entity ids the expansion started from
    num_candidates: int         # size of the k-hop candidate pool that was ranked

    @property
    def empty(self) -> bool:
        return self.triple_ids.size == 0

    @property
    def entities(self) -> np.ndarray:
        return np.unique(np.concatenate([self.heads, self.tails]))

    def __len__(self) -> int:
        return int(self.triple_ids.size)

    def head(self, n: int) -> "SubgraphOutput":
        """The top-`n` prefix (what retrieving with N = n gives, ties broken the same way)."""
        return SubgraphOutput(self.triple_ids[:n], self.heads[:n], self.relations[:n], self.tails[:n],
                              self.scores[:n], self.seed_entities, self.num_candidates)


def expand_hops(graph: CSRGraph, triples: np.ndarray, seeds: np.ndarray, hops: int) -> np.ndarray:
    """Ids of the triples within `hops` hops of `seeds` (hop 1 = triples touching a seed)."""
    frontier = np.unique(np.asarray(seeds, dtype=np.int64))
    reached = np.empty(0, dtype=np.int64)
    seen_nodes = frontier
    for _ in range(hops):
        tids = graph.incident_triples(frontier)
        reached = np.union1d(reached, tids)
        if tids.size == 0:
            break
        nodes = np.unique(triples[tids][:, [0, 2]])
        frontier = np.setdiff1d(nodes, seen_nodes, assume_unique=True)
        seen_nodes = np.union1d(seen_nodes, frontier)
    return reached


def top_by_score(candidates: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the `n` best scores, best first; ties go to the lower triple id (deterministic)."""
    order = np.lexsort((candidates, -scores.astype(np.float64)))
    return order[:n]


def empty_output(seeds: np.ndarray, num_candidates: int = 0) -> SubgraphOutput:
    e = np.empty(0, dtype=np.int64)
    return SubgraphOutput(e, e, e, e, np.empty(0, np.float32), np.asarray(seeds, np.int64), num_candidates)


class TripleScorer:
    """Cosine of triples to a query vector (triple vectors may be mmap/float16, some ids unembedded)."""

    def __init__(self, triple_vectors: np.ndarray, row_of_triple: np.ndarray):
        self.vectors, self.row_of = triple_vectors, row_of_triple

    def __call__(self, query: np.ndarray, tids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the triples that have a vector, their cosines)."""
        rows = self.row_of[tids] if tids.size else tids
        tids, rows = tids[rows >= 0], rows[rows >= 0]
        order = np.argsort(rows, kind="stable")  # sequential reads on an mmap
        scores = np.empty(rows.size, np.float32)
        scores[order] = np.asarray(self.vectors[rows[order]], np.float32) @ np.asarray(query, np.float32)
        return tids, scores


def subgraph_output(triples: np.ndarray, tids: np.ndarray, scores: np.ndarray, seeds: np.ndarray,
                    pool: int) -> SubgraphOutput:
    """The output for the kept triple ids (already in score order) of a pool of `pool` candidates."""
    if tids.size == 0:
        return empty_output(seeds, pool)
    h, r, t = triples[tids].T
    return SubgraphOutput(tids.astype(np.int64), h.copy(), r.copy(), t.copy(), scores.astype(np.float32),
                          np.asarray(seeds, np.int64), int(pool))


def rank_pool(score: TripleScorer, triples: np.ndarray, query: np.ndarray, pool: np.ndarray, seeds: np.ndarray,
              top_N: int) -> SubgraphOutput:
    """The top-N of a candidate pool by cosine to the query (triples without a vector cannot be
    ranked: the scorer drops them)."""
    cands, scores = score(query, pool)
    keep = top_by_score(cands, scores, top_N)
    return subgraph_output(triples, cands[keep], scores[keep], seeds, cands.size)


def random_one_hop(graph: CSRGraph, triples: np.ndarray, seeds: np.ndarray, n: int, *, hops: int = 1,
                   rng: np.random.Generator) -> np.ndarray:
    """Baseline: `n` triples drawn uniformly from the same k-hop pool (ids, unranked)."""
    return random_draw(expand_hops(graph, triples, seeds, hops), n, rng)


def random_draw(cands: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` of the triple ids `cands` drawn uniformly without replacement, sorted (all when ≤ n)."""
    if cands.size <= n:
        return cands
    return np.sort(rng.choice(cands, size=n, replace=False))
