"""How each evaluable task scores one example and sums the metrics (`evaluate` calls these through
the task class's `scorer`, so the evaluation never tests a task's name).

MARS: every query ranks the gold entity among all candidates (one QID a line, the MARS analogy
entities), unfiltered, with the three tie rules; optionally over the shortlist of a no-LLM
ranker. ScienceQA: the prediction is the highest-likelihood choice; accuracy by category.

MARS options: `scoring` "loglik" (the candidate's summed log-likelihood) or "pmi" (that minus its
log-likelihood after the task's null prompt, computed once per label: the label's own prior no
longer decides the order); `facts_gate` (with a shortlist, `mmkg.model.facts_gate`): the retrieved
facts reach the prompt only when the KG's own confidence opens the gate, else the prompt is
exactly the no-facts one.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Mapping

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
        if set(spec) - {"ranker", "k", "train", "folds", "model"} or "train" not in spec:
            raise ConfigError("shortlist takes ranker, k, train (the train split file), folds and model (a "
                              f"learned ranker's `mmkg train` folder); got {dict(spec)}")
        self.k, self.name = int(spec.get("k", 50)), str(spec.get("ranker", "memory>kg_prior"))
        folds = int(spec.get("folds", 5))
        self.ranker = resolve_ranker(self.name)
        self.ctx = MarsContext.build(kg, cand_keys, spec["train"], folds=folds)
        model = None
        if spec.get("model"):  # a learned ranker (the reranker) reads its trained run
            from mmkg.model.reranker_run import MODEL_FILE, attach_run
            attach_run(self.ctx, spec["model"])
            model = sha256_file(Path(spec["model"]) / MODEL_FILE)
        # the query's path walk is reused by a facts gate that reads the prior (one query at a time)
        self.ctx.prior_scores = functools.lru_cache(maxsize=1)(self.ctx.prior_scores)
        self.fingerprint = {"ranker": self.name, "k": self.k, "folds": folds, "prior": self.ctx.prior_key,
                            "train": sha256_file(spec["train"]), **({"model": model} if model else {})}

    def scores(self, ex) -> np.ndarray:
        # the query's own row only (question, example pair): never its answer
        return self.ranker(self.ctx, self.ctx.query({"question": ex.meta["question"], "example": ex.meta["example"]}))


#: a candidate labels → null log-likelihoods function (PMI scoring), or None for plain log-likelihood
NullScores = Callable[[list[str]], np.ndarray] | None


def llm_scores(net, batch, labels: list[str], *, chunk_size: int, null: NullScores = None) -> np.ndarray:
    """The model's score of each label: log-likelihood, minus the null prompt's (PMI) when `null`."""
    scores = net.score_candidates(batch, labels, chunk_size=chunk_size).cpu().float().numpy()
    return scores - null(labels) if null is not None else scores


def score_mars(net, batch, ex, cand_keys: list[str], cand_labels: list[str], *, chunk_size: int,
               ties: str, with_scores: bool = False, shortlist: Shortlist | None = None,
               task: str, null: NullScores = None) -> dict[str, Any]:
    if shortlist is not None:
        return score_mars_shortlist(net, batch, ex, cand_keys, cand_labels, shortlist, chunk_size=chunk_size,
                                     ties=ties, task=task, null=null)
    gold_in = ex.gold_key in cand_keys
    labels = cand_labels if gold_in else [*cand_labels, ex.target]
    scores = llm_scores(net, batch, labels, chunk_size=chunk_size, null=null)
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
                         chunk_size: int, ties: str, task: str, null: NullScores = None,
                         base: np.ndarray | None = None) -> dict[str, Any]:
    """The model ranks the ranker's top-K; the others follow in the ranker's order (`base`: the
    ranker's scores when the caller has them already)."""
    from mmkg.model.rankers import top_positions
    base = short.scores(ex) if base is None else base
    top = top_positions(base, short.k)
    llm = llm_scores(net, batch, [cand_labels[j] for j in top], chunk_size=chunk_size, null=null)
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
            "top10": [{"key": cand_keys[j], "label": cand_labels[j]} for j in best], "mode": ex.meta.get("mode"),
            # the model's score of each shortlist candidate, in the ranker's order (re-ranking offline)
            "shortlist_scores": [[cand_keys[j], round(float(x), 5)] for j, x in zip(top, llm)]}


def score_scienceqa(net, batch, ex, *, task: str) -> dict[str, Any]:
    scores = net.score_candidates(batch, ex.choices).cpu().numpy()
    pred = int(np.argmax(scores))
    return {"query_id": ex.query_id, "task": task, "prediction": pred, "answer": ex.answer_index,
            "correct": pred == ex.answer_index, "scores": [float(s) for s in scores], **ex.meta}


class MarsScorer:
    """Ranks every candidate entity per query; metrics: hits@k and MRR under the `ties` rule."""

    #: where the candidate file lies under the data directory (the task's answer space)
    DEFAULT_CANDIDATES = "markg/MARS/analogy_entities.txt"

    #: PMI's null prompt: the question template with its entity names left out
    NULL_PROMPT = "Analogy: is to as is to"
    SCORINGS = ("loglik", "pmi")

    def __init__(self, *, task: str, kg: str, kg_text: Any, candidates: str | None,
                 shortlist: Mapping[str, Any] | None, ties: str, candidate_scores: bool,
                 scoring: str = "loglik", facts_gate: Mapping[str, Any] | None = None):
        from mmkg.model.facts_gate import FactsGate
        self.task = task
        if candidates is None:
            raise ConfigError(f"MARS evaluation needs `candidates` ({self.DEFAULT_CANDIDATES})")
        if scoring not in self.SCORINGS:
            raise ConfigError(f"scoring must be one of {self.SCORINGS}, not {scoring!r}")
        if facts_gate and not shortlist:
            raise ConfigError("facts_gate reads the shortlist's candidates: give a shortlist too")
        self.cand_keys = read_candidates(candidates)
        self.cand_labels = [kg_text.entity_by_key(k) for k in self.cand_keys]
        self.short = Shortlist(kg, self.cand_keys, shortlist) if shortlist else None
        self.gate = FactsGate(facts_gate) if facts_gate else None
        self.ties, self.with_scores, self.scoring = ties, candidate_scores, scoring
        self._null: dict[str, float] = {}  # label → log-likelihood after the null prompt
        #: what the predictions also depend on (the evaluation fingerprint; the defaults keep old ones)
        self.fingerprint = self.short.fingerprint if self.short else None
        if scoring != "loglik" or self.gate:
            self.fingerprint = {"shortlist": self.fingerprint, "scoring": scoring,
                                "null_prompt": self.NULL_PROMPT if scoring == "pmi" else None,
                                "facts_gate": self.gate.fingerprint if self.gate else None}

    def null_scores(self, net, labels: list[str], *, chunk_size: int = 256) -> np.ndarray:
        """Each label's log-likelihood after the null prompt (computed once per label per run)."""
        new = list(dict.fromkeys(lb for lb in labels if lb not in self._null))
        if new:
            got = net.score_after_text(self.NULL_PROMPT, new, chunk_size=chunk_size).cpu().float().numpy()
            self._null.update(zip(new, got.tolist()))
        return np.array([self._null[lb] for lb in labels], dtype=np.float32)

    def score(self, net, batch, ex, *, chunk_size: int) -> dict[str, Any]:
        null = functools.partial(self.null_scores, net, chunk_size=chunk_size) if self.scoring == "pmi" else None
        if self.gate is None:
            return score_mars(net, batch, ex, self.cand_keys, self.cand_labels, chunk_size=chunk_size,
                              ties=self.ties, with_scores=self.with_scores, shortlist=self.short, task=self.task,
                              null=null)
        from mmkg.model.rankers import top_positions
        base = self.short.scores(ex)
        signals = self.gate.values(self.short, ex, top_positions(base, self.short.k), batch.graph)
        value = signals[self.gate.name]
        is_open = self.gate.opens(value)
        if not is_open:  # the control prompt: no facts (the graph prefix, if any, is the model's own)
            ex = dataclasses.replace(ex, facts=[])
            batch = dataclasses.replace(batch, examples=[ex])
        rec = score_mars_shortlist(net, batch, ex, self.cand_keys, self.cand_labels, self.short,
                                   chunk_size=chunk_size, ties=self.ties, task=self.task, null=null, base=base)
        rec["gate"] = {"signal": self.gate.name, "value": value, "open": is_open, "signals": signals}
        return rec

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
                 shortlist: Mapping[str, Any] | None, ties: str, candidate_scores: bool,
                 scoring: str = "loglik", facts_gate: Mapping[str, Any] | None = None):
        # candidates, shortlist, ties, scoring, facts_gate: a ranking's, unused here
        self.task, self.fingerprint = task, None

    def score(self, net, batch, ex, *, chunk_size: int) -> dict[str, Any]:
        return score_scienceqa(net, batch, ex, task=self.task)

    def metrics(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {**scienceqa_accuracy(records), "ties": None}
