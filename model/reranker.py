"""A learned MARS candidate reranker: LightGBM lambdarank over KG, train-memory and embedding features.

It reranks the top-K candidates of the `memory>kg_prior` ranker (the rest keep that ranker's order
below them), from per-(query, candidate) features computed by `MarsContext` from the query's own
row and the train split only. Training rows are featurised out of fold (their own fold's counts and
prior left out), so the model learns from features as they look at test time. Registered as the
ranker `reranker` (it needs a trained model: `MarsContext.reranker`).

Feature groups (each can be left out for the ablation):
* kg — path prior score, best path precision, paths reaching the candidate, hop distance, whether
  a path type linking the example pair also links question → candidate, the prior's rank;
* memory — (question, candidate) and (candidate, question) train-pair counts, answer popularity,
  how often the example pair and the question occur in train;
* embedding — cosine of question and candidate and the analogy offset (candidate · (question +
  example tail − example head)) in the store's entity vectors (MiniLM of labels), when present;
* degree — log(1 + the candidate's degree in the KG);
* kge — a TransE embedding of the KG's triples (`mmkg.model.kge`): the analogy score −‖q + (t − h) − c‖
  of the example pair (h, t) and the best link score between question and candidate over relations.

The shortlist is the base ranker's top `DEFAULT_K` = 1000 (recall on dev: 0.80 at 200, 0.89 at 500,
0.96 at 1000; the unseen pairs' 0.68, 0.82, 0.93), chosen on dev MRR over seeds 0-2 (see `DEFAULT_K`).

Tried and left out on dev (they did not raise dev MRR): the candidate against the example tail — label
and TransE cosines, the cosine of their (relation, direction) edge-kind sets, shared instance-of /
subclass-of classes, an edge of the kind the tail has towards the example head; a type-conditioned
answer prior (how often the candidate ends a train pair, out of fold, linked by the same KG path-type
set as the example pair, or by one of its types: dev 0.509 with it, 0.511 without, K = 200, seed 0; even
the answers of the query's true relation rank the gold at 0.04 MRR); averaging the scores of 3 or 5
boosters of different seeds (K = 200: dev 0.512 and 0.509 against 0.511 for seed 0 alone).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmkg.model.rankers import MarsContext, MarsQuery, PriorEvidence, lexicographic, rankers, top_positions

FEATURES: dict[str, tuple[str, ...]] = {
    "kg": ("prior", "best_path", "paths", "hops", "analogy_type", "prior_rank"),
    "memory": ("memory", "memory_reverse", "popularity", "example_seen", "question_seen", "base_rank"),
    "embedding": ("cos_question", "cos_analogy"),
    "degree": ("degree",),
    "kge": ("kge_analogy", "kge_link"),
}
GROUPS = tuple(FEATURES)
#: features read from the query's row, the KG and the embeddings alone (no walk, no train counts):
#: computed from a cached shortlist rather than stored with it (`featurize_cached`)
ROW_FEATURES = ("degree", "kge_analogy", "kge_link")
#: candidates the model reranks (the base ranker's top K); the rest keep the base order below them.
#: 1000: chosen on dev MRR (seeds 0, 1, 2, early stopping on dev): 200 → 0.511, 0.468, 0.511;
#: 500 → 0.516, 0.531, 0.525; 1000 → 0.528, 0.532, 0.532
DEFAULT_K = 1000


def feature_names(groups: Sequence[str] = GROUPS) -> list[str]:
    return [f for g in GROUPS if g in groups for f in FEATURES[g]]


def available_groups(vectors: "EntityVectors | None", kge: Any) -> list[str]:
    """The feature groups a store can feed: label embeddings need its entity vectors, kge a KG embedding."""
    return [g for g in GROUPS if (g != "embedding" or (vectors is not None and vectors.ok))
            and (g != "kge" or kge is not None)]


class EntityVectors:
    """Unit entity vectors of the store by entity id (zeros where an entity has none)."""

    def __init__(self, store: Any, encoder_slug: str = "minilm"):
        from mmkg.kg_store.vectors import load_vectors
        self.ok = store.artifact(f"vectors/{encoder_slug}") is not None
        if self.ok:
            vec, ids = load_vectors(store, encoder_slug, "entity")
            self.matrix = np.zeros((store.count("entities"), vec.shape[1]), np.float32)
            self.matrix[np.asarray(ids)] = np.asarray(vec, np.float32)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        out = np.zeros((len(ids), self.matrix.shape[1] if self.ok else 1), np.float32)
        if self.ok:
            out[ids >= 0] = self.matrix[ids[ids >= 0]]
        return out

    def candidates(self, ctx: MarsContext) -> np.ndarray:
        """The vectors of `ctx`'s candidates, gathered once (every query scores the same 2,063)."""
        if getattr(self, "_for", None) is not ctx:
            self._for, self._candidates = ctx, self(ctx.candidate_ids)
        return self._candidates


def entity_degree(ctx: MarsContext) -> np.ndarray:
    """(N,) each entity's degree in `ctx`'s KG (edges in or out), counted once per context."""
    if ctx.degree is None:
        t = ctx.store.triples_array()
        ctx.degree = np.bincount(np.r_[t[:, 0], t[:, 2]], minlength=ctx.store.count("entities")).astype(np.float64)
    return ctx.degree


def row_features(ctx: MarsContext, q: MarsQuery, cand_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The `ROW_FEATURES` of each candidate id (the query's row and the KG only): its degree and the
    KG embedding's scores."""
    degree = entity_degree(ctx)
    out = {"degree": np.where(cand_ids >= 0, np.log1p(degree[np.maximum(cand_ids, 0)]), 0.0)}
    out["kge_analogy"], out["kge_link"] = kge_features(ctx, q, cand_ids)
    return out


def analogy_cosines(ctx: MarsContext, q: MarsQuery, vectors: EntityVectors | None) -> tuple[np.ndarray, np.ndarray]:
    """(C,) cosine of each candidate to the question, and to the analogy offset question + tail − head."""
    C = len(ctx.candidates)
    if vectors is None or not vectors.ok:
        return np.zeros(C), np.zeros(C)
    qh, eh, et = vectors(ctx.store.entity_ids([q.question, *q.example]))
    offset = qh + et - eh
    cv = vectors.candidates(ctx)
    return cv @ qh, cv @ (offset / (np.linalg.norm(offset) or 1.0))


def base_scores(ctx: MarsContext, q: MarsQuery, vectors: EntityVectors | None = None
                ) -> tuple[np.ndarray, dict[str, np.ndarray], PriorEvidence]:
    """The shortlist's order (memory, then the prior, then the analogy cosine in the entity vectors,
    or answer popularity without them), the per-candidate pieces the features reuse, and the prior's walk."""
    memory, popularity = ctx.memory(q), ctx.answer_popularity(q)
    evidence = ctx.prior_scores(q)
    cos_q, cos_a = analogy_cosines(ctx, q, vectors)
    last = cos_a if vectors is not None and vectors.ok else popularity
    return lexicographic(memory, evidence.scores, last), {
        "memory": memory, "popularity": popularity, "prior": evidence.scores, "cos_question": cos_q,
        "cos_analogy": cos_a}, evidence


def features(ctx: MarsContext, q: MarsQuery, cands: np.ndarray, *, base: np.ndarray, parts: dict[str, np.ndarray],
             evidence: PriorEvidence) -> dict[str, np.ndarray]:
    """Every feature of each candidate position in `cands` (a dict of equal-length arrays)."""
    C = len(ctx.candidates)
    cand_ids = ctx.candidate_ids[cands]
    out: dict[str, np.ndarray] = {"prior": parts["prior"][cands], "memory": parts["memory"][cands],
                                  "popularity": parts["popularity"][cands]}
    # ranks among all candidates (1 = best), ties by position
    out["prior_rank"] = _ranks(parts["prior"])[cands]
    out["base_rank"] = _ranks(base)[cands]
    reverse = np.zeros(C)
    for pos, counts in ctx.reverse.get(q.question, {}).items():
        reverse[pos] = ctx.out_of_fold(counts, q.fold)
    out["memory_reverse"] = reverse[cands]
    ex_seen = ctx.memory(q, first=q.example[0])
    et = ctx.position.get(q.example[1], -1)
    out["example_seen"] = np.full(len(cands), ex_seen[et] if et >= 0 else 0.0)
    out["question_seen"] = np.full(len(cands), float(sum(ctx.out_of_fold(c, q.fold).sum()
                                                         for c in ctx.pairs.get(q.question, {}).values())))
    best, n_paths, hops, analogy = (np.zeros(len(cands)) for _ in range(4))
    hops[:] = 3.0
    paths = evidence.paths
    if paths is not None and len(paths):  # the prior's own walk: the same paths, precisions, example types
        ex_types, p_scores = evidence.example_types, evidence.path_scores
        order = np.argsort(cand_ids)
        sorted_ids = cand_ids[order]
        at = np.searchsorted(sorted_ids, paths.endpoint)
        at_c = np.clip(at, 0, len(sorted_ids) - 1)
        hit = sorted_ids[at_c] == paths.endpoint
        which = order[at_c[hit]]
        np.maximum.at(best, which, p_scores[hit])
        np.add.at(n_paths, which, 1.0)
        np.minimum.at(hops, which, np.where(paths.t2[hit] < 0, 1.0, 2.0))
        np.add.at(analogy, which, np.isin(paths.ptype[hit], ex_types).astype(float))
    out.update(best_path=best, paths=n_paths, hops=hops, analogy_type=analogy)
    out["cos_question"], out["cos_analogy"] = parts["cos_question"][cands], parts["cos_analogy"][cands]
    out.update(row_features(ctx, q, cand_ids))
    return out


def kge_features(ctx: MarsContext, q: MarsQuery, cand_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The KG embedding's analogy and link scores of each candidate id (zeros without `ctx.kge`)."""
    if ctx.kge is None:
        return np.zeros(len(cand_ids)), np.zeros(len(cand_ids))
    qid, eh, et = ctx.store.entity_ids([q.question, *q.example]).tolist()
    return ctx.kge.analogy_scores(qid, eh, et, cand_ids), ctx.kge.link_scores(qid, cand_ids)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every candidate in `top_positions` order."""
    order = top_positions(scores)
    r = np.empty(len(scores))
    r[order] = np.arange(1, len(scores) + 1)
    return r


def query_matrix(ctx: MarsContext, q: MarsQuery, k: int, names: Sequence[str],
                 vectors: EntityVectors | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base scores (C,), shortlist positions (k,), feature matrix (k, F)) of one query."""
    base, parts, evidence = base_scores(ctx, q, vectors)
    top = top_positions(base, k)
    f = features(ctx, q, top, base=base, parts=parts, evidence=evidence)
    return base, top, np.stack([f[n] for n in names], axis=1).astype(np.float32)


def final_scores(base: np.ndarray, top: np.ndarray, model_scores: np.ndarray) -> np.ndarray:
    """One score per candidate: the shortlist by the model's score above the rest in base order."""
    out = lexicographic(base)  # dense ranks: 0 .. C
    out = out - out.max() - 1.0  # every non-shortlisted candidate below 0
    if len(top):
        out[top] = 1.0 + lexicographic(model_scores)
    return out


@dataclass
class Featurized:
    """The shortlist features of a list of rows, computed once (the ablations pick columns)."""

    names: list[str]
    x: np.ndarray                      # (sum of shortlist sizes, F)
    y: np.ndarray                      # 1 for the gold candidate
    sizes: list[int]                   # shortlist size of each row
    base: list[np.ndarray]             # the base ranker's scores of each row (C,)
    top: list[np.ndarray]              # shortlist positions of each row
    gold: list[int]                    # the gold's candidate position (-1: not a candidate)
    seen: list[bool]                   # the gold's (question, answer) pair counted in train (as featurised)

    def select(self, rows: Sequence[int]) -> "Featurized":
        """The rows `rows`, in that order."""
        ends = np.cumsum([0, *self.sizes])
        take = np.concatenate([np.arange(ends[i], ends[i + 1]) for i in rows]) if len(rows) else np.empty(0, int)
        pick = [self.sizes, self.base, self.top, self.gold, self.seen]
        return Featurized(self.names, self.x[take], self.y[take], *([p[i] for i in rows] for p in pick))

    @staticmethod
    def concat(parts: Sequence["Featurized"]) -> "Featurized":
        return Featurized(parts[0].names, np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                          *([v for p in parts for v in getattr(p, f)] for f in ("sizes", "base", "top", "gold",
                                                                              "seen")))


def featurize(ctx: MarsContext, rows: Sequence[dict[str, Any]], *, train_rows: bool, k: int = DEFAULT_K,
              vectors: EntityVectors | None = None, progress: bool = False) -> Featurized:
    """Features of every row's shortlist; `train_rows`: rows of the training split, out of fold."""
    from tqdm.auto import tqdm
    names = feature_names()
    xs, ys, out = [], [], Featurized(names, np.empty(0), np.empty(0), [], [], [], [], [])
    for r in tqdm(rows, disable=not progress, desc="features", leave=False):
        base, top, x = query_matrix(ctx, ctx.query(r, train_row=train_rows), k, names, vectors)
        gold = ctx.gold(r)
        xs.append(x)
        ys.append((top == gold).astype(np.float32))
        out.sizes.append(len(top))
        out.base.append(base)
        out.top.append(top)
        out.gold.append(gold)
        out.seen.append(bool(gold >= 0 and x[top == gold, names.index("memory")].sum() > 0))
    out.x, out.y = np.concatenate(xs), np.concatenate(ys)
    return out


def walk_names() -> list[str]:
    """The features a cached shortlist stores (those that need the prior's walk or the train counts)."""
    return [n for n in feature_names() if n not in ROW_FEATURES]


#: bump when a stored feature's definition changes (it is part of every cached feature file's key)
FEATURE_VERSION = 1


def feature_cache_key(ctx: MarsContext, rows: Sequence[dict[str, Any]], *, train_rows: bool, k: int,
                      vectors: EntityVectors | None) -> str:
    """What a featurised row list's stored (walk) features depend on: the rows, the KG version, the prior
    (train split, folds, grouping), the entity vectors, K and the feature definitions."""
    import json

    from mmkg.kg_store.hashing import cache_key, sha256_bytes
    return cache_key({"version": FEATURE_VERSION, "names": walk_names(), "k": k, "train_rows": train_rows,
                      "rows": sha256_bytes(json.dumps(list(rows), sort_keys=True).encode()),
                      "kg_version": ctx.store.kg_version, "graph": str(ctx.store.graph_rel), "prior": ctx.prior_key,
                      "folds": ctx.folds, "group": ctx.group, "vectors": bool(vectors is not None and vectors.ok),
                      "candidates": sha256_bytes("\n".join(ctx.candidates).encode())})


def save_featurized(path: str | Path, f: Featurized) -> None:
    """Atomically, as npz (no pickle); the base scores are kept as dense ranks (same order and ties)."""
    import io

    from mmkg.kg_store import atomic
    buf = io.BytesIO()
    np.savez(buf, names=np.array(f.names), x=f.x, y=f.y, sizes=np.asarray(f.sizes, np.int64),
             top=np.concatenate(f.top) if f.top else np.empty(0, np.int64), gold=np.asarray(f.gold, np.int64),
             seen=np.asarray(f.seen, bool), base=np.stack([lexicographic(b) for b in f.base]).astype(np.int32))
    atomic.write_bytes(path, buf.getvalue())


def load_featurized(path: str | Path) -> Featurized:
    with np.load(path, allow_pickle=False) as z:
        sizes = z["sizes"].tolist()
        ends = np.cumsum([0, *sizes])
        top, base = z["top"], z["base"].astype(np.float64)
        return Featurized([str(n) for n in z["names"]], z["x"], z["y"], sizes, list(base),
                          [top[ends[i]:ends[i + 1]] for i in range(len(sizes))], z["gold"].tolist(),
                          z["seen"].tolist())


def featurize_cached(ctx: MarsContext, rows: Sequence[dict[str, Any]], *, train_rows: bool, k: int = DEFAULT_K,
                     vectors: EntityVectors | None = None, cache: str | Path | None = None,
                     progress: bool = False) -> Featurized:
    """`featurize`, read from / written to `cache`/<key>.npz when a cache folder is given (the file
    holds the walk features; the cheap `ROW_FEATURES` are recomputed from its shortlists)."""
    if cache is None:
        return featurize(ctx, rows, train_rows=train_rows, k=k, vectors=vectors, progress=progress)
    path = Path(cache) / f"{feature_cache_key(ctx, rows, train_rows=train_rows, k=k, vectors=vectors)}.npz"
    if not path.is_file():
        f = featurize(ctx, rows, train_rows=train_rows, k=k, vectors=vectors, progress=progress)
        stored = walk_names()
        save_featurized(path, Featurized(stored, _columns(f, stored), f.y, f.sizes, f.base, f.top, f.gold, f.seen))
        return f
    f = load_featurized(path)
    extra = [row_features(ctx, ctx.query(r, train_row=train_rows), ctx.candidate_ids[t])
             for r, t in zip(rows, f.top)]
    names = feature_names()
    cols = {n: f.x[:, i] for i, n in enumerate(f.names)}
    cols.update({n: np.concatenate([e[n] for e in extra]) if extra else np.empty(0) for n in ROW_FEATURES})
    f.names, f.x = names, np.stack([cols[n] for n in names], axis=1).astype(np.float32)
    return f


def training_set(ctx: MarsContext, kg: str | Path, mars_dir: str | Path, train_rows: Sequence[dict[str, Any]], *,
                 target_seen_share: float, k: int = DEFAULT_K, vectors: EntityVectors | None = None, seed: int = 0,
                 cache: str | Path | None = None, progress: bool = False) -> tuple[Featurized, dict[str, Any]]:
    """The reranker's training rows, featurised out of fold, and how they were mixed.

    Out of fold by row, a train row's (question, answer) pair is nearly always counted in the other
    folds (MARS train repeats 779 pairs over 10,641 rows); out of fold by pair it never is, as for an
    unseen test pair. The set is every row by pair folds plus a seeded sample of rows by row folds,
    so that its share of seen pairs is `target_seen_share` (the validation split's)."""
    ctx_pair = MarsContext.from_files(kg, mars_dir, folds=ctx.folds, group="pair")
    ctx_pair.kge, ctx_pair.degree = ctx.kge, ctx.degree
    by_pair = featurize_cached(ctx_pair, train_rows, train_rows=True, k=k, vectors=vectors, cache=cache,
                               progress=progress)
    s_pair, s_row = float(np.mean(by_pair.seen)), float(np.mean(_seen_by_memory(ctx, train_rows)))
    target = target_seen_share
    extra = 0 if target <= s_pair else int(len(train_rows) * (target - s_pair) / max(s_row - target, 1e-9))
    pick = np.sort(np.random.default_rng(seed).choice(len(train_rows), min(extra, len(train_rows)), replace=False))
    # only the sampled rows are featurised by row folds (the walk is the cost)
    by_row = featurize_cached(ctx, [train_rows[i] for i in pick], train_rows=True, k=k, vectors=vectors, cache=cache,
                              progress=progress)
    train = Featurized.concat([by_pair, by_row])
    mixture = {"pair_rows": len(train_rows), "row_rows": int(len(pick)), "seen_share": float(np.mean(train.seen)),
               "dev_seen_share": target, "seen_share_by_pair": s_pair, "seen_share_by_row": s_row}
    return train, mixture


def _seen_by_memory(ctx: MarsContext, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """`Featurized.seen` of train rows out of fold without the walk: the gold's out-of-fold memory count
    (a counted gold heads the base order, and far fewer than K candidates of a question are ever
    counted, so it is in the shortlist: the share equals the walked one, 0.9967 on MARS train)."""
    out = []
    for r in rows:
        gold = ctx.gold(r)
        out.append(bool(gold >= 0 and ctx.memory(ctx.query(r, train_row=True))[gold] > 0))
    return out


def _columns(f: Featurized, names: Sequence[str]) -> np.ndarray:
    return f.x[:, [f.names.index(n) for n in names]]


#: LightGBM parameters of the reranker (`fit_reranker`'s `params` override them); 7 leaves: chosen on dev
#: (0.513 MRR against 0.496 with 31, 0.504 with 15, 0.500 with 63)
PARAMS: dict[str, Any] = {"objective": "lambdarank", "metric": "map", "learning_rate": 0.05, "num_leaves": 7,
                          "min_data_in_leaf": 50, "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1}


def fit_reranker(train: Featurized, names: Sequence[str], *, valid: Featurized | None = None, seed: int = 0,
                 rounds: int = 500, params: dict[str, Any] | None = None) -> Any:
    """LightGBM lambdarank on the training rows' shortlists (a row whose gold is outside its
    shortlist teaches nothing and is left out); `valid` (dev) stops the boosting early."""
    import lightgbm as lgb

    def dataset(f: Featurized, reference: Any = None) -> Any:
        keep = np.repeat([bool(s) and g >= 0 and g in set(t.tolist()) for s, g, t in zip(f.sizes, f.gold, f.top)],
                         f.sizes)
        sizes = [s for s, g, t in zip(f.sizes, f.gold, f.top) if g >= 0 and g in set(t.tolist())]
        return lgb.Dataset(_columns(f, names)[keep], f.y[keep], group=sizes, feature_name=list(names),
                           reference=reference, free_raw_data=False)
    params = {**PARAMS, "eval_at": [max(train.sizes)], **(params or {}), "seed": seed, "deterministic": True,
              "force_row_wise": True, "num_threads": 2, "verbose": -1}
    train_set = dataset(train)
    valid_sets, callbacks = [], []
    if valid is not None:
        valid_sets = [dataset(valid, train_set)]
        callbacks = [lgb.early_stopping(50, first_metric_only=True, verbose=False)]
    return lgb.train(params, train_set, num_boost_round=rounds, valid_sets=valid_sets, callbacks=callbacks)


def rank_featurized(f: Featurized, booster: Any) -> list[float]:
    """Realistic rank of each row's gold: the shortlist by the model, the rest in base order."""
    from mmkg.model.rankers import realistic_rank
    x = _columns(f, booster.feature_name())
    pred = booster.predict(x, num_threads=2) if len(x) else np.empty(0)
    ends = np.cumsum([0, *f.sizes])
    return [realistic_rank(final_scores(f.base[i], f.top[i], pred[ends[i]:ends[i + 1]]), f.gold[i])
            for i in range(len(f.sizes))]


def load_reranker(path: str | Path) -> Any:
    import lightgbm as lgb
    return lgb.Booster(model_file=str(path))


@rankers.register("reranker")
def reranker_ranker(ctx: MarsContext, q: MarsQuery) -> np.ndarray:
    """The trained reranker of `ctx.reranker` (a LightGBM booster) over the base shortlist."""
    from mmkg.kg_store.errors import ConfigError
    booster = ctx.reranker
    if booster is None:
        raise ConfigError("the reranker ranker needs a trained model: ctx.reranker = load_reranker(PATH)")
    names = booster.feature_name()
    if ctx.vectors is None and any(n in FEATURES["embedding"] for n in names):
        ctx.vectors = EntityVectors(ctx.store)
        if not ctx.vectors.ok:
            raise ConfigError("this reranker reads entity vectors: embed the KG first "
                              "(mmkg embed --kg KG --encoder minilm)")
    if ctx.kge is None and any(n in FEATURES["kge"] for n in names):
        from mmkg.model.kge import load_or_train_kge
        ctx.kge = load_or_train_kge(ctx.store.root)[0]
    base, top, x = query_matrix(ctx, q, ctx.reranker_k or DEFAULT_K, names, ctx.vectors)
    return final_scores(base, top, booster.predict(x, num_threads=1))


def reproduce(args: Any, ctx: MarsContext, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """{line: rank} of the listed lines under a committed reranker (`benchmarks/mars_eval.py --reproduce`)
    and, beside it, the committed KG embedding its kge features read."""
    from mmkg.model.kge import load_kge
    from mmkg.model.rankers import rank_rows
    model = Path(args.out).with_name(f"mars_{args.variant}.lgb.txt")
    ctx.reranker = load_reranker(model)
    kge = Path(args.out).with_name("mars_kge.safetensors")
    if any(n in FEATURES["kge"] for n in ctx.reranker.feature_name()):
        ctx.kge = load_kge(kge)
    lines = [int(x) for x in args.reproduce.split(",") if x.strip()]
    return {str(i): r for i, r in zip(lines, rank_rows(ctx, "reranker", [rows[i] for i in lines]))}
