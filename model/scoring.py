"""How each evaluable task scores one example and sums the metrics (`evaluate` calls these through
the task class's `scorer`, so the evaluation never tests a task's name).

MARS: every query ranks the gold entity among all candidates (one QID a line, the MARS analogy
entities), unfiltered, with the three tie rules; optionally over the shortlist of a no-LLM
ranker. ScienceQA: the prediction is the highest-likelihood choice; accuracy by category.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.model.metrics import TIE_RULES, rank_of_gold, ranking_metrics, scienceqa_accuracy


def read_candidates(path: str | Path) -> list[str]:
    keys = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not keys:
        raise KGStoreError(f"no candidate entities in {path}")
    return keys


class Shortlist:
    """The top-K candidates of a no-LLM ranker for each query (`evaluate(shortlist=...)`)."""

    def __init__(self, kg: str, cand_keys: list[str], spec: Mapping[str, Any]):
        from mmkg.kg_store.hashing import sha256_file
        from mmkg.model.rankers import MarsContext, resolve_ranker
        if set(spec) - {"ranker", "k", "train", "folds"} or "train" not in spec:
            raise ConfigError(f"shortlist takes ranker, k, train (the train split file) and folds; got {dict(spec)}")
        self.k, self.name = int(spec.get("k", 50)), str(spec.get("ranker", "memory>kg_prior"))
        folds = int(spec.get("folds", 5))
        self.ranker = resolve_ranker(self.name)
        self.ctx = MarsContext.build(kg, cand_keys, spec["train"], folds=folds)
        self.fingerprint = {"ranker": self.name, "k": self.k, "folds": folds, "prior": self.ctx.prior_key,
                            "train": sha256_file(spec["train"])}

    def scores(self, ex) -> np.ndarray:
        # the query's own row only (question, example pair): never its answer
        return self.ranker(self.ctx, self.ctx.query({"question": ex.meta["question"], "example": ex.meta["example"]}))


def score_mars(net, batch, ex, cand_keys: list[str], cand_labels: list[str], *, chunk_size: int,
               ties: str, with_scores: bool = False, shortlist: Shortlist | None = None,
               task: str) -> dict[str, Any]:
    if shortlist is not None:
        return score_mars_shortlist(net, batch, ex, cand_keys, cand_labels, shortlist, chunk_size=chunk_size,
                                     ties=ties, task=task)
    gold_in = ex.gold_key in cand_keys
    labels = cand_labels if gold_in else [*cand_labels, ex.target]
    scores = net.score_candidates(batch, labels, chunk_size=chunk_size).cpu().float().numpy()
    gold_score = float(scores[cand_keys.index(ex.gold_key)] if gold_in else scores[-1])
    cand_scores = scores[:len(cand_keys)]
    # unfiltered: the gold is ranked against every candidate, other correct answers included
    by_rule = {rule: rank_of_gold(cand_scores, gold_score, gold_in_candidates=gold_in, ties=rule)
               for rule in TIE_RULES}
    top = np.argsort(-cand_scores, kind="stable")[:10]
    prompt_text = getattr(net, "prompt_text", None)
    rec = {"query_id": ex.query_id, "task": task, "prompt": prompt_text(ex) if prompt_text else ex.prompt,
           "gold": ex.gold_key, "gold_label": ex.target, "gold_in_candidates": gold_in, "gold_score": gold_score,
           "rank": by_rule[ties], **{f"rank_{rule}": r for rule, r in by_rule.items()},
           "top10": [{"key": cand_keys[j], "label": cand_labels[j], "score": float(cand_scores[j])} for j in top],
           "mode": ex.meta.get("mode")}
    if with_scores:  # candidate order = the candidates file (the gold's own score is gold_score)
        rec["scores"] = [round(float(x), 4) for x in cand_scores]
    return rec


def score_mars_shortlist(net, batch, ex, cand_keys: list[str], cand_labels: list[str], short: Shortlist, *,
                         chunk_size: int, ties: str, task: str) -> dict[str, Any]:
    """The model ranks the ranker's top-K; the others follow in the ranker's order."""
    from mmkg.model.rankers import top_positions
    base = short.scores(ex)
    top = top_positions(base, short.k)
    llm = net.score_candidates(batch, [cand_labels[j] for j in top], chunk_size=chunk_size).cpu().float().numpy()
    gold = cand_keys.index(ex.gold_key) if ex.gold_key in cand_keys else -1
    in_short = gold >= 0 and bool(np.isin(gold, top))
    if in_short:
        g = float(llm[int(np.flatnonzero(top == gold)[0])])
        by_rule = {rule: rank_of_gold(llm, g, ties=rule) for rule in TIE_RULES}
    else:
        rest = np.setdiff1d(np.arange(len(base)), top)
        g = float(base[gold]) if gold >= 0 else -np.inf
        by_rule = {rule: len(top) + rank_of_gold(base[rest], g, gold_in_candidates=gold >= 0, ties=rule)
                   for rule in TIE_RULES}
    best = top[np.argsort(-llm, kind="stable")[:10]]
    prompt_text = getattr(net, "prompt_text", None)
    return {"query_id": ex.query_id, "task": task, "prompt": prompt_text(ex) if prompt_text else ex.prompt,
            "gold": ex.gold_key, "gold_label": ex.target, "gold_in_candidates": gold >= 0, "in_shortlist": in_short,
            "shortlist": {"ranker": short.name, "k": short.k}, "rank": by_rule[ties],
            **{f"rank_{rule}": r for rule, r in by_rule.items()},
            "top10": [{"key": cand_keys[j], "label": cand_labels[j]} for j in best], "mode": ex.meta.get("mode")}


def score_scienceqa(net, batch, ex, *, task: str) -> dict[str, Any]:
    scores = net.score_candidates(batch, ex.choices).cpu().numpy()
    pred = int(np.argmax(scores))
    return {"query_id": ex.query_id, "task": task, "prediction": pred, "answer": ex.answer_index,
            "correct": pred == ex.answer_index, "scores": [float(s) for s in scores], **ex.meta}


class MarsScorer:
    """Ranks every candidate entity per query; metrics: hits@k and MRR under the `ties` rule."""

    #: where the candidate file lies under the data directory (the task's answer space)
    DEFAULT_CANDIDATES = "markg/MARS/analogy_entities.txt"

    def __init__(self, *, task: str, kg: str, kg_text: Any, candidates: str | None,
                 shortlist: Mapping[str, Any] | None, ties: str, candidate_scores: bool):
        self.task = task
        if candidates is None:
            raise KGStoreError(f"MARS evaluation needs `candidates` ({self.DEFAULT_CANDIDATES})")
        self.cand_keys = read_candidates(candidates)
        self.cand_labels = [kg_text.entity_by_key(k) for k in self.cand_keys]
        self.short = Shortlist(kg, self.cand_keys, shortlist) if shortlist else None
        self.ties, self.with_scores = ties, candidate_scores
        #: what the predictions also depend on (the evaluation fingerprint)
        self.fingerprint = self.short.fingerprint if self.short else None

    def score(self, net, batch, ex, *, chunk_size: int) -> dict[str, Any]:
        return score_mars(net, batch, ex, self.cand_keys, self.cand_labels, chunk_size=chunk_size, ties=self.ties,
                          with_scores=self.with_scores, shortlist=self.short, task=self.task)

    def metrics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        # a resumed run may have been started under other `ties`: every record has all three ranks
        metrics = ranking_metrics(r.get(f"rank_{self.ties}", r["rank"]) for r in records)
        metrics["mrr_by_ties"] = {rule: ranking_metrics(r.get(f"rank_{rule}", r["rank"]) for r in records)["mrr"]
                                  for rule in TIE_RULES}
        if self.short is not None:
            metrics[f"recall@{self.short.k}"] = \
                float(np.mean([r["in_shortlist"] for r in records])) if records else None
        metrics["ties"] = self.ties
        return metrics


class ScienceQAScorer:
    """Picks the highest-likelihood choice; metrics: accuracy overall and by category."""

    def __init__(self, *, task: str, kg: str, kg_text: Any, candidates: str | None,
                 shortlist: Mapping[str, Any] | None, ties: str, candidate_scores: bool):
        self.task, self.fingerprint = task, None  # candidates, shortlist, ties: a ranking's, unused here

    def score(self, net, batch, ex, *, chunk_size: int) -> dict[str, Any]:
        return score_scienceqa(net, batch, ex, task=self.task)

    def metrics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {**scienceqa_accuracy(records), "ties": None}
