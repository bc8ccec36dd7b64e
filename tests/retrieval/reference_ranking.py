"""The per-query reference of the bulk ranking (`mmkg.retrieval.ranking`): the retrievers' ranking as it
ran query by query before it was vectorised over a batch, and the path prior's fit as it ran train
row by train row (`mmkg.retrieval.paths.fit_mars_prior`). Tests compare them on real queries."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmkg.retrieval.datasets import Query
from mmkg.retrieval.ranking import mrmkg_seeds
from mmkg.retrieval.retrievers import TIE_WEIGHT, neighbourhood_with_links
from mmkg.retrieval.subgraph import SubgraphOutput, empty_output, rank_pool, subgraph_output


def mrmkg_reference(c: Any, queries: Sequence[Query], vectors: np.ndarray) -> list[SubgraphOutput]:
    # the seeds as the bulk ranking takes them (from one product with every triple vector when the
    # triple index is exact): what this reference checks is the pools and their order
    seeds, _ = mrmkg_seeds(c, vectors, c.named(queries) if c.config.named_entities else
                           [np.empty(0, np.int64)] * len(queries))
    return [rank_pool(c.score, c.triples, v, neighbourhood_with_links(c.graph, c.triples, s, c.config.hops), s,
                      c.config.top_N) for v, s in zip(vectors, seeds)]


def anchored_reference(retriever: Any, queries: Sequence[Query], vectors: np.ndarray) -> list[SubgraphOutput]:
    from mmkg.retrieval.paths import Paths, linking_types, paths_from
    c = retriever.ctx
    R = c.store.num_relations
    out = []
    anchors_of = retriever.anchors(queries, vectors)
    pairs = [q.example_keys if len(q.example_keys) == 2 else ["", ""] for q in queries]
    example_ids = c.store.entity_ids([k for p in pairs for k in p]).reshape(-1, 2) if c.prior is not None \
        else np.full((len(queries), 2), -1, np.int64)
    for q, v, anchors, (eh, et) in zip(queries, vectors, anchors_of, example_ids.tolist()):
        parts = [paths_from(c.graph, int(a), R, max_hops=c.config.path_hops) for a in anchors]
        if not parts or not sum(len(p) for p in parts):
            out.append(empty_output(anchors))
            continue
        # the entity each path's first step reaches: the other end of its first triple
        mids = np.concatenate([np.where(c.triples[p.t1, 0] == a, c.triples[p.t1, 2], c.triples[p.t1, 0])
                               for a, p in zip(anchors.tolist(), parts)])
        paths = parts[0] if len(parts) == 1 else Paths(*(np.concatenate([getattr(p, f) for p in parts])
                                                             for f in ("endpoint", "ptype", "t1", "t2")))
        if c.answer_space is not None:
            keep = np.isin(paths.endpoint, c.answer_space)
            if keep.any():
                paths, mids = paths.select(keep), mids[keep]
        ex = linking_types(c.graph, eh, et, R) if c.prior is not None else ()
        prior = c.prior.for_fold(q.prior_fold) if c.prior is not None else None
        out.append(_rank(c, v, paths, mids, anchors, ex, prior))
    return out


def _rank(c: Any, query: np.ndarray, paths: Any, mids: np.ndarray, anchors: np.ndarray, example_types: Any,
          path_prior_model: Any) -> SubgraphOutput:
    if not len(paths):
        return empty_output(anchors)
    if path_prior_model is not None:
        path_prior = path_prior_model.path_scores(paths, example_types)
        ends, prior = path_prior_model.score_endpoints(paths, example_types, path_prior)
    else:
        path_prior = np.where(paths.t2 < 0, 1.0, 0.5)
        ends = np.unique(paths.endpoint)
        prior = np.zeros(len(ends))
        np.maximum.at(prior, np.searchsorted(ends, paths.endpoint), path_prior)
    of_end = np.searchsorted(ends, paths.endpoint)
    # ties: an endpoint's entity cosine; a path's mean cosine of the entities it reaches
    best_cos = _entity_cosines(c, query, ends).astype(np.float64)
    end_cos = best_cos[of_end].astype(np.float32)
    pcos = np.where(paths.t2 >= 0, (_entity_cosines(c, query, mids) + end_cos) / 2, end_cos)
    order = np.lexsort((ends, -best_cos, -prior))
    by_end = np.lexsort((-pcos, -path_prior, of_end))
    starts = np.searchsorted(of_end[by_end], np.arange(len(ends) + 1))
    chosen: list[int] = []
    chosen_scores: list[float] = []
    have: set[int] = set()
    t1, t2 = paths.t1.tolist(), paths.t2.tolist()
    for e_i in order.tolist():
        group = by_end[starts[e_i]:starts[e_i + 1]].tolist()
        j = min(group, key=lambda j: (t1[j] not in have) + (t2[j] >= 0 and t2[j] not in have))
        new = [t for t in (t1[j], t2[j]) if t >= 0 and t not in have]
        if len(chosen) + len(new) > c.config.top_N:
            break
        score = (1 - TIE_WEIGHT) * float(prior[e_i]) + TIE_WEIGHT * (float(best_cos[e_i]) + 1) / 2
        for t in new:
            have.add(t)
            chosen.append(t)
            chosen_scores.append(score)
    tids = np.array(chosen, np.int64)
    scores = np.array(chosen_scores, np.float32)
    keep = np.argsort(-scores, kind="stable")
    return subgraph_output(c.triples, tids[keep], scores[keep], anchors, len(paths))


def _entity_cosines(c: Any, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """float32 cosine of each entity to the query (an entity without a vector counts 0)."""
    vectors, row_of = c.entity_cosine.vectors, c.entity_cosine.row_of
    rows = row_of[ids]
    out = np.zeros(len(ids), np.float32)
    out[rows >= 0] = np.asarray(vectors[rows[rows >= 0]], np.float32) @ np.asarray(query, np.float32)
    return out


def observe(prior: Any, paths: Any, answer: int, example_types: Sequence[int] = (),
            answer_space: np.ndarray | None = None) -> None:
    """Count one train query into `prior` (a `PathPrior`): each distinct (type, endpoint) pair once."""
    if answer_space is not None:
        paths = paths.select(np.isin(paths.endpoint, answer_space))
    pairs = np.unique(np.stack([paths.ptype, paths.endpoint], axis=1), axis=0) if len(paths) else \
        np.empty((0, 2), np.int64)
    ex = [int(x) for x in example_types]
    for ptype, endpoint in pairs.tolist():
        hit = float(endpoint == answer)
        for key in (ptype, *((e, ptype) for e in ex)):
            prior.seen[key] += 1.0
            prior.hits[key] += hit
    prior._compiled = None
    prior.base_seen += len(np.unique(pairs[:, 1])) if len(pairs) else 0
    prior.base_hits += float(answer in set(pairs[:, 1].tolist())) if len(pairs) else 0.0
    prior.queries += 1


def prior_reference(store: Any, train_file: Any, answer_space: np.ndarray | None, max_hops: int = 2,
                    folds: int = 5, group: str = "row") -> Any:
    """`fit_mars_prior` row by row: each train row's walk observed into the prior of its fold."""
    from mmkg.retrieval.paths import FoldedPrior, PathPrior, fold_of, linking_types, paths_from, read_mars_rows
    rows = read_mars_rows(train_file)
    keys = sorted({k for r in rows for k in (r["question"], r["answer"], *r["example"])})
    id_of = dict(zip(keys, store.entity_ids(keys).tolist()))
    graph, R = store.graph, store.num_relations
    parts = [PathPrior(R) for _ in range(folds)]
    for r in rows:
        q, a = id_of[r["question"]], id_of[r["answer"]]
        if q < 0 or a < 0:
            continue
        ex = linking_types(graph, id_of[r["example"][0]], id_of[r["example"][1]], R)
        observe(parts[fold_of(r, folds, group)], paths_from(graph, q, R, max_hops=max_hops), a, ex, answer_space)
    return FoldedPrior(parts)
