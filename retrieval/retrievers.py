"""Retrievers (registry `retriever`): query vectors + the query's own fields → ranked subgraph triples.

* `anchored` (default): anchors on the entities the query names (MARS: the question entity;
  otherwise the entity keys a query carries, else entities whose label the text mentions), walks
  paths of ≤ 2 hops from them and keeps whole paths, so the subgraph stays connected to the
  anchor; honours the task's answer space (MARS: the candidate file) and ranks path endpoints by
  a path-type prior learned on the train split (`mmkg.retrieval.paths`), the text cosine of the path's
  entities (entity vectors: the anchored retriever needs no triple vectors) breaking ties.
* `mrmkg`: the paper's scheme (MR-MKG App. A.6): E′ = the entities of the top-n triples by
  cosine (plus the named entities only when `named_entities` is set); G = E′, their 1-hop
  neighbours and every relation connecting two of them; the top-N triples of G by cosine.
* `pcst`: G-Retriever's (He et al. 2024) prize-collecting Steiner tree over the neighbourhood of
  the seeds, node and edge prizes from query similarity (`pcst_fast`), cut to N triples by cosine.

A retriever reads a query's `text`, `image_paths`, `entity_keys` and `example_keys` only: never
its `fields` (answer, relation), so dev/test shards cannot depend on the answers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mmkg.kg_store import KGStore
from mmkg.kg_store.registry import family
from mmkg.retrieval.datasets import Query
from mmkg.retrieval.subgraph import SubgraphOutput, TripleScorer, empty_output, expand_hops, subgraph_output, top_by_score

retriever_registry = family("retriever")


class Retriever:
    """What the batch stage asks a retriever class (registered ones subclass this), never its name."""

    #: vector kinds of the store it reads (`mmkg.retrieval.retriever.vector_kinds_needed`)
    needs_vectors: frozenset[str] = frozenset()
    #: ranks with the path prior learned on the dataset's train split (fitted, keyed into the shards)
    uses_prior = False
    #: `mmkg.retrieval.incremental` knows every input of its ranking: a rerun ranks only the queries
    #: whose inputs changed (local engine)
    incremental = False

    @staticmethod
    def pool_hops(config: Any) -> int:
        """How far from its seeds its candidate pool reaches (the reports' random-pool baseline)."""
        return config.hops

    def __init__(self, ctx: "RetrieverContext"):
        self.ctx = ctx


# ---- the paper's scheme ----------------------------------------------------------------------------
def neighbourhood_with_links(graph: Any, triples: np.ndarray, seeds: np.ndarray, hops: int = 1) -> np.ndarray:
    """Triple ids of G = seeds ∪ their `hops`-hop neighbours, with every triple linking two nodes
    of G (the edges between neighbours included, not only those touching a seed)."""
    touching = expand_hops(graph, triples, seeds, hops)
    if touching.size == 0:
        return touching
    nodes = np.union1d(np.asarray(seeds, np.int64), triples[touching][:, [0, 2]].ravel())
    around = graph.incident_triples(nodes)
    ht = triples[around]
    return around[np.isin(ht[:, 0], nodes) & np.isin(ht[:, 2], nodes)]


@retriever_registry.register("mrmkg")
class PaperRetriever(Retriever):
    """MR-MKG App. A.6: top-n triples → E′ → E′ ∪ 1-hop neighbours and their links → top-N by cosine."""

    needs_vectors = frozenset({"triple"})

    def retrieve(self, queries: Sequence[Query], vectors: np.ndarray) -> list[SubgraphOutput]:
        from mmkg.retrieval.ranking import rank_mrmkg
        c = self.ctx
        return rank_mrmkg(c, vectors, c.named(queries) if c.config.named_entities else
                          [np.empty(0, np.int64)] * len(queries), c.pair_cosine)


# ---- G-Retriever ------------------------------------------------------------------------------------
@retriever_registry.register("pcst")
class PCSTRetriever(Retriever):
    """Prize-collecting Steiner tree (G-Retriever) over the k-hop neighbourhood of the seeds.

    As in G-Retriever: the top-`PRIZE_K` nodes and edges by cosine get prizes PRIZE_K..1, every
    edge costs `EDGE_COST`, one tree (GW pruning); the kept edges are then ranked by cosine."""

    PRIZE_K, EDGE_COST = 3, 0.5
    needs_vectors = frozenset({"triple"})

    def retrieve(self, queries: Sequence[Query], vectors: np.ndarray) -> list[SubgraphOutput]:
        import pcst_fast
        c = self.ctx
        seeds = c.seeds.seed_entities(vectors, c.named(queries))
        out = []
        for v, s in zip(vectors, seeds):
            tids, scores = c.score(v, expand_hops(c.graph, c.triples, s, c.config.hops))
            if tids.size == 0:
                out.append(empty_output(s))
                continue
            h, t = c.triples[tids, 0], c.triples[tids, 2]
            nodes, local = np.unique(np.concatenate([h, t]), return_inverse=True)
            edges = local.reshape(2, -1).T
            node_prize = np.zeros(len(nodes))
            node_sim = np.full(len(nodes), -np.inf)
            np.maximum.at(node_sim, edges[:, 0], scores)
            np.maximum.at(node_sim, edges[:, 1], scores)
            k = min(self.PRIZE_K, len(nodes))
            node_prize[np.argsort(-node_sim, kind="stable")[:k]] = np.arange(k, 0, -1)
            edge_prize = np.zeros(len(tids))
            k = min(self.PRIZE_K, len(tids))
            edge_prize[np.argsort(-scores, kind="stable")[:k]] = np.arange(k, 0, -1)
            # G-Retriever turns an edge prize into a virtual node; the usual simplification on
            # small graphs lowers the edge's cost by its prize (never below zero)
            costs = np.maximum(self.EDGE_COST - edge_prize, 0.0)
            _, kept = pcst_fast.pcst_fast(edges.astype(np.int64), node_prize, costs, -1, 1, "gw", 0)
            kept = np.unique(np.asarray(kept, np.int64))
            if kept.size == 0:  # a lone prize node: keep its best edge
                kept = np.argsort(-scores, kind="stable")[:1]
            keep = kept[top_by_score(tids[kept], scores[kept], c.config.top_N)]
            out.append(subgraph_output(c.triples, tids[keep], scores[keep], s, tids.size))
        return out


# ---- anchored paths with a learned prior ----------------------------------------------------------
class MentionLinker:
    """Entities whose label the query text mentions (longest n-grams first, ≤ `max_words` words).

    Labels shorter than 3 characters, pure numbers and common words are never matched; a label
    shared by several entities links to the one of highest degree."""

    STOP = frozenset("the a an of in on at to is are was be and or for with by from as this that which what who "
                     "how why when where it its into than then there these those can could would should will not "
                     "no yes one two three image question options answer context".split())

    def __init__(self, store: KGStore, degree: np.ndarray, *, max_words: int = 4, max_anchors: int = 5):
        labels = store.table("entities", ["label"])["label"].to_pylist()
        best: dict[str, int] = {}
        for i, lab in enumerate(labels):
            key = (lab or "").strip().lower()
            if len(key) < 3 or key.isdigit() or key in self.STOP:
                continue
            if key not in best or degree[i] > degree[best[key]]:
                best[key] = i
        self.by_label, self.max_words, self.max_anchors = best, max_words, max_anchors

    def __call__(self, text: str) -> np.ndarray:
        words = re.findall(r"[\w'-]+", text.lower())
        found: list[int] = []
        taken = bytearray(len(words))                       # (a numpy mask costs µs per n-gram test)
        for n in range(self.max_words, 0, -1):
            for i in range(len(words) - n + 1):
                if any(taken[i:i + n]):
                    continue
                eid = self.by_label.get(" ".join(words[i:i + n]))
                if eid is not None and eid not in found:
                    found.append(eid)
                    taken[i:i + n] = b"\x01" * n
        return np.array(found[:self.max_anchors], np.int64)


#: weight of the text cosine in an anchored triple's score (a tie-break below any prior difference)
TIE_WEIGHT = 1e-3


@retriever_registry.register("anchored")
class AnchoredPathRetriever(Retriever):
    """Whole paths of ≤ 2 hops from the query's anchors, endpoints ranked by the path-type prior;
    ties broken by the entity vectors (no triple vectors needed)."""

    needs_vectors = frozenset({"entity"})
    uses_prior = True
    incremental = True   # its digests: mmkg.retrieval.incremental.query_digests

    @staticmethod
    def pool_hops(config: Any) -> int:
        return config.path_hops

    def __init__(self, ctx: "RetrieverContext"):
        super().__init__(ctx)
        self._linker: MentionLinker | None = None

    def anchors(self, queries: Sequence[Query], vectors: np.ndarray) -> list[np.ndarray]:
        """The entities each query's paths start from."""
        c = self.ctx
        named = c.named(queries)
        out = []
        for q, a in zip(queries, named):
            if not a.size and not q.entity_keys:  # no entity given: link the mentions of the text
                if self._linker is None:
                    self._linker = MentionLinker(c.store, c.graph.degree())
                a = self._linker(q.text)
            out.append(a)
        # a query that names no entity of the KG (or only isolated ones) is anchored on the top-n
        # entities by cosine (the entity index)
        deg = c.graph.degree()
        links = np.bincount(np.repeat(np.arange(len(out)), [len(a) for a in out]),
                            weights=deg[np.concatenate(out)] if out else None, minlength=len(out))
        lost = np.flatnonzero(links == 0).tolist()
        if lost and c.config.top_n:
            for i, s in zip(lost, c.seeds.nearest_entities(vectors[lost], c.config.top_n)):
                out[i] = s
        return out

    def inputs(self, queries: Sequence[Query], vectors: np.ndarray) -> "AnchoredInputs":
        """What the ranking of each query reads besides the graph: its anchors, prior fold and example pair
        (computed once: the incremental retrieve digests them, then ranks the changed queries)."""
        c = self.ctx
        pairs = [q.example_keys if len(q.example_keys) == 2 else ["", ""] for q in queries]
        example_ids = c.store.entity_ids([k for p in pairs for k in p]).reshape(-1, 2) if c.prior is not None \
            else np.full((len(queries), 2), -1, np.int64)
        # a train row's own answer must not count in its prior: the prior of the other folds
        folds = np.array([q.prior_fold for q in queries], np.int64)
        return AnchoredInputs(self.anchors(queries, vectors), folds, example_ids)

    def rank(self, vectors: np.ndarray, inputs: "AnchoredInputs") -> list[SubgraphOutput]:
        from mmkg.retrieval.ranking import rank_anchored
        return rank_anchored(self.ctx, vectors, inputs.anchors, inputs.folds, inputs.example_ids,
                             self.ctx.entity_cosine, TIE_WEIGHT)

    def retrieve(self, queries: Sequence[Query], vectors: np.ndarray) -> list[SubgraphOutput]:
        return self.rank(vectors, self.inputs(queries, vectors))


@dataclass
class AnchoredInputs:
    anchors: list[np.ndarray]
    folds: np.ndarray        # (n,) prior fold per query
    example_ids: np.ndarray  # (n, 2) example pair's entity ids (-1: none or unknown)

    def take(self, rows: Sequence[int]) -> "AnchoredInputs":
        return AnchoredInputs([self.anchors[i] for i in rows], self.folds[list(rows)], self.example_ids[list(rows)])


# ---- what every retriever sees -------------------------------------------------------------------
class RetrieverContext:
    """The store-side state a retriever works on (loaded once per process): `score` / `pair_cosine`
    (triple vectors) for retrievers that declare `needs_vectors` ∋ "triple", `entity_cosine` else."""

    def __init__(self, *, store: KGStore, config: Any, triples: np.ndarray, seeds: Any, score: TripleScorer | None,
                 named: Any, answer_space: np.ndarray | None = None, prior: Any = None, entity_cosine: Any = None):
        from mmkg.kg_store.graph import CSRGraph
        self.store, self.config, self.triples, self.seeds = store, config, triples, seeds
        # plain ndarray views of the mmap-ed CSR: per-element access on a np.memmap is slow
        self.graph = CSRGraph(*(np.asarray(getattr(store.graph, f)).view(np.ndarray)
                                for f in ("indptr", "neighbor", "relation", "direction", "triple_id")))
        self.score, self.named = score, named
        from mmkg.retrieval.ranking import PairCosine
        self.pair_cosine = PairCosine(score.vectors, score.row_of) if score is not None else None
        self.entity_cosine = entity_cosine
        self.answer_space, self.prior = answer_space, prior


def resolve_retriever(name: str, ctx: RetrieverContext) -> Any:
    return retriever_registry.get(name)(ctx)
