"""MARS candidate rankers that need no LLM and no KG text: the bars every model is judged against.

A ranker scores every candidate answer of a query from that query's own row (question entity and
example pair; never its answer or relation) and the training split only (`MarsContext`), so a query
ranked alone gets the rank it gets in a full run. Training rows are counted per fold: a query that
is itself a row of the training split (the reranker's training features) is scored with the counts
of the other folds (`MarsQuery.fold`), so its own answer never counts; a dev or test row is always
scored with every fold (whether it also occurs in train is never looked up: that needs its answer).

Registry `ranker` (larger score = better; ties ranked realistically by the caller):
* `memory` — how often (question, candidate) occurs in train as a question–answer or an example pair;
* `kg_prior` — the path-type prior of the anchored retriever (noisy-or over the paths of ≤ 2 hops
  from the question entity, conditioned on the types linking the example pair);
* `memory>kg_prior` — memory, then the prior, then the candidate's popularity as a train answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mmkg.kg_store.registry import family

rankers = family("ranker")


@dataclass(frozen=True)
class MarsQuery:
    """What a ranker may see of one query: entity keys of its question and example pair, and the
    fold to leave out (-1: the query is not a training row)."""

    question: str
    example: tuple[str, str]
    fold: int = -1


class MarsContext:
    """The candidates, the training split counted per fold, and the KG with its folded path prior."""

    def __init__(self, store: Any, candidates: Sequence[str], train_rows: Sequence[dict[str, Any]],
                 prior: Any, *, folds: int, group: str = "row"):
        from mmkg.retrieval.paths import fold_of, mars_row_digest
        self.store, self.prior, self.folds, self.group = store, prior, folds, group
        self.candidates = list(dict.fromkeys(candidates))
        self.position = {k: i for i, k in enumerate(self.candidates)}
        self.candidate_ids = store.entity_ids(self.candidates)
        # row identity → its fold (`group`: folds of single rows, or of whole (question, answer) pairs)
        self.train_digests = {mars_row_digest(r): fold_of(r, folds, group) for r in train_rows}
        C = len(self.candidates)
        # pair counts per fold: first key → {candidate position: counts (folds,)}; answers likewise
        self.pairs: dict[str, dict[int, np.ndarray]] = {}
        self.reverse: dict[str, dict[int, np.ndarray]] = {}  # second key → {first's position: counts}
        self.popularity = np.zeros((folds, C))
        for r in train_rows:
            f = self.train_digests[mars_row_digest(r)]
            for a, b in ((r["question"], r["answer"]), tuple(r["example"])):
                if b in self.position:
                    counts = self.pairs.setdefault(a, {}).setdefault(self.position[b], np.zeros(folds))
                    counts[f] += 1
                if a in self.position:
                    counts = self.reverse.setdefault(b, {}).setdefault(self.position[a], np.zeros(folds))
                    counts[f] += 1
            if r["answer"] in self.position:
                self.popularity[f, self.position[r["answer"]]] += 1
        self._space = np.unique(self.candidate_ids[self.candidate_ids >= 0])
        self.prior_key: str | None = None  # set by `build`
        # the learned `reranker` ranker's model (a LightGBM booster), its shortlist size and the
        # store's entity vectors its embedding features read (mmkg.model.reranker)
        self.reranker: Any = None
        self.reranker_k: int | None = None
        self.vectors: Any = None
        self.degree: Any = None  # (N,) entity degrees of the store (mmkg.model.reranker.entity_degree)
        self.kge: Any = None  # a mmkg.model.kge.KGEmbedding of the store (the reranker's KG-embedding features)

    @classmethod
    def build(cls, kg: str | Path, candidates: Sequence[str], train_file: str | Path, *, folds: int = 5,
              group: str = "row") -> "MarsContext":
        """The context of `candidates` and a MARS train file over the KG at `kg` (its folded prior is
        fitted and committed on first use; `prior_key` says which)."""
        from mmkg.kg_store import open_store
        from mmkg.retrieval.paths import load_or_fit_prior, read_mars_rows
        ids = open_store(kg).entity_ids(list(candidates))
        prior, key = load_or_fit_prior(kg, train_file, np.unique(ids[ids >= 0]), folds=folds, group=group)
        ctx = cls(open_store(kg), candidates, read_mars_rows(train_file), prior, folds=folds, group=group)
        ctx.prior_key = key
        return ctx

    @classmethod
    def from_files(cls, kg: str | Path, mars_dir: str | Path, *, folds: int = 5, group: str = "row") -> "MarsContext":
        """The context of a MARS folder (train.json, analogy_entities.txt) over the KG at `kg`."""
        mars_dir = Path(mars_dir)
        candidates = [k for k in (mars_dir / "analogy_entities.txt").read_text().split() if k]
        return cls.build(kg, candidates, mars_dir / "train.json", folds=folds, group=group)

    def query(self, row: dict[str, Any], *, train_row: bool = False) -> MarsQuery:
        """A ranker's view of a MARS row. `train_row`: the row is one of the training split (the
        reranker's training features), scored out of its fold; a dev or test row never is, so its
        score cannot depend on its answer."""
        from mmkg.retrieval.paths import mars_row_digest
        fold = self.train_digests[mars_row_digest(row)] if train_row else -1
        return MarsQuery(row["question"], (row["example"][0], row["example"][1]), fold)

    def gold(self, row: dict[str, Any]) -> int:
        """Position of the row's answer among the candidates (-1: not a candidate)."""
        return self.position.get(row["answer"], -1)

    # ---- features shared by the rankers and the reranker ------------------------------------------
    def out_of_fold(self, counts: np.ndarray, fold: int) -> np.ndarray:
        """Counts over every fold but `fold` (all folds for -1); counts has folds on axis 0."""
        total = counts.sum(axis=0)
        return total - counts[fold] if fold >= 0 else total

    def memory(self, q: MarsQuery, first: str | None = None) -> np.ndarray:
        """(C,) how often (first, candidate) is a train question–answer or example pair (first =
        the question by default)."""
        out = np.zeros(len(self.candidates))
        for pos, counts in self.pairs.get(q.question if first is None else first, {}).items():
            out[pos] = self.out_of_fold(counts, q.fold)
        return out

    def answer_popularity(self, q: MarsQuery) -> np.ndarray:
        return self.out_of_fold(self.popularity, q.fold)

    def prior_scores(self, q: MarsQuery) -> "PriorEvidence":
        """The path prior's score of each candidate (0 where no path reaches it), with the walk it
        came from (the reranker's path features reuse it rather than walking again)."""
        from mmkg.retrieval.paths import linking_types, paths_from
        R, graph = self.store.num_relations, self.store.graph
        out = np.zeros(len(self.candidates))
        qid = int(self.store.entity_ids([q.question])[0])
        if qid < 0:
            return PriorEvidence(out)
        paths = paths_from(graph, qid, R)
        paths = paths.select(np.isin(paths.endpoint, self._space))
        eh, et = self.store.entity_ids(list(q.example)).tolist()
        example_types = linking_types(graph, eh, et, R)
        prior = self.prior.for_fold(q.fold)
        path_scores = prior.path_scores(paths, example_types)
        ends, scores = prior.score_endpoints(paths, example_types, path_scores)
        if len(ends):  # `ends` is sorted
            at = np.clip(np.searchsorted(ends, self.candidate_ids), 0, len(ends) - 1)
            hit = ends[at] == self.candidate_ids
            out[hit] = scores[at[hit]]
        return PriorEvidence(out, paths, path_scores, example_types)


@dataclass
class PriorEvidence:
    """`MarsContext.prior_scores`: candidate scores (C,), and the walk behind them — the paths from
    the question entity into the candidates, each path's type precision, the example pair's types
    (all None when the question entity is not in the KG)."""

    scores: np.ndarray
    paths: Any = None
    path_scores: np.ndarray | None = None
    example_types: np.ndarray | None = None


def top_positions(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Candidate positions best first (score, then candidate-file order), the first `k` of them."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    return order if k is None else order[:k]


def lexicographic(*keys: np.ndarray) -> np.ndarray:
    """One score whose order is the lexicographic order of `keys` (first key most significant):
    each key is replaced by its dense rank, so no key can overtake a more significant one."""
    out = np.zeros(len(keys[0]), np.int64)
    for k in keys:
        _, dense = np.unique(k, return_inverse=True)
        out = out * (len(k) + 1) + dense
    return out.astype(np.float64)


@rankers.register("memory")
def memory_ranker(ctx: MarsContext, q: MarsQuery) -> np.ndarray:
    return ctx.memory(q)


@rankers.register("kg_prior")
def kg_prior_ranker(ctx: MarsContext, q: MarsQuery) -> np.ndarray:
    return ctx.prior_scores(q).scores


@rankers.register("memory>kg_prior")
def memory_then_prior_ranker(ctx: MarsContext, q: MarsQuery) -> np.ndarray:
    return lexicographic(ctx.memory(q), ctx.prior_scores(q).scores, ctx.answer_popularity(q))


def resolve_ranker(name: str) -> Callable[[MarsContext, MarsQuery], np.ndarray]:
    import mmkg.model.reranker  # noqa: F401  (registers the learned `reranker` beside the rankers here)
    return rankers.get(name)


def realistic_rank(scores: np.ndarray, gold: int) -> float:
    """Rank of the gold among all candidates: 1 + #higher + #tied others / 2 (the mean of the
    optimistic and the pessimistic rank); a gold outside the candidates ranks last."""
    if gold < 0:
        return float(len(scores))
    g = scores[gold]
    return float((scores > g).sum() + 1 + ((scores == g).sum() - 1) / 2)


def rank_rows(ctx: MarsContext, name: str, rows: Sequence[dict[str, Any]], *, train_rows: bool = False,
              progress: bool = False) -> list[float]:
    """The realistic rank of each row's answer under ranker `name`, each row scored on its own
    (`train_rows`: rows of the training split, scored out of fold)."""
    from tqdm.auto import tqdm
    ranker = resolve_ranker(name)
    return [realistic_rank(ranker(ctx, ctx.query(r, train_row=train_rows)), ctx.gold(r))
            for r in tqdm(rows, desc=name, disable=not progress, leave=False)]
