"""`evaluate(**job)`: ScienceQA accuracy by category and MARS ranking, predictions as JSONL.

Every prediction line records the triples the model was given (after the top-N cut), so an
analyst can see which knowledge a right or wrong answer came with, and the prompt text the LLM
read (with knowledge as text: the facts that fit the budget).

Resumable: each query's prediction is appended to the JSONL and fsync'd as soon as it is
scored, and `<predictions>.meta.json` fingerprints the evaluation (model config, checkpoint
weights, shards, task, candidates, query selection). A rerun with the same fingerprint skips the
queries already in the file (a torn last line from a kill is dropped) and continues; a different
fingerprint starts the file over. `budget_minutes` stops a long run early on purpose; the next
run continues it. The metrics always cover every query in the file for this evaluation.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from kg_store import atomic, open_store
from kg_store.errors import ConfigError, KGStoreError
from model import checkpoint as ckpt
from model.base import MultimodalKGModel, model_registry, resolve_model
from model.batching import Collator
from model.data import build_task_dataset, resolve_shard_dirs
from model.kg_text import KGText
from model.metrics import TIE_RULES, rank_of_gold, ranking_metrics, scienceqa_accuracy
from model.runtime import init_runtime

logger = logging.getLogger(__name__)

MARS_CANDIDATES = "markg/MARS/analogy_entities.txt"


def read_candidates(path: str | Path) -> list[str]:
    keys = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not keys:
        raise KGStoreError(f"no candidate entities in {path}")
    return keys


def evaluate(*, kg: str, task: str, shards: Any, checkpoint: str | None = None, model: str = "mrmkg",
             model_kwargs: Mapping[str, Any] | None = None, predictions: str | None = None,
             candidates: str | None = None, limit: int | None = None, max_triples: int | None = None,
             device: str = "auto", amp: str = "auto", chunk_size: int = 256, ties: str = "optimistic",
             task_kwargs: Mapping[str, Any] | None = None, net: MultimodalKGModel | None = None,
             query_ids: Sequence[str] | None = None, resume: bool = True, budget_minutes: float | None = None,
             candidate_scores: bool = False, seed: int = 0, shortlist: Mapping[str, Any] | None = None,
             progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Score a trained checkpoint (or `net`, or an untrained `model`) on a task's shards.

    MARS: every query ranks the gold entity among all `candidates` (one QID a line, default the
    2,063 MARS analogy entities), unfiltered, ties optimistic unless `ties` says otherwise (each
    record also carries `rank_optimistic`, `rank_realistic` and `rank_pessimistic`);
    `candidate_scores` adds every candidate's score to the record (for late fusion).
    ScienceQA: the prediction is the highest-likelihood choice.
    `query_ids` evaluates only those shard rows, in that order; `resume` continues an interrupted `predictions`
    file (see the module doc); `budget_minutes` stops after that much wall time (`complete` is
    then false); `seed` seeds an untrained model's initialisation.
    `shortlist` (MARS) = {"ranker": NAME, "k": K, "train": TRAIN_JSON, "folds": 5}: the model scores
    only the top-K candidates of that no-LLM ranker (`model.rankers`); they rank above the rest,
    which keep the ranker's order (each record says whether the gold was in the shortlist).
    `progress(done, total, seconds per query of this run)` is called after each scored query.
    """
    if task not in ("mars", "scienceqa"):
        raise KGStoreError(f"evaluate supports the tasks mars and scienceqa, not {task!r}")
    if ties not in TIE_RULES:
        raise ConfigError(f"ties must be one of {TIE_RULES}, not {ties!r}")
    if checkpoint is None and net is None:
        model_registry.get(model)  # a configuration mistake fails before any data is read
    rt = init_runtime(device=device, amp=amp)
    store = open_store(kg)
    kg_text = KGText.from_store(store)
    dataset, graphs = build_task_dataset(kg=kg, kg_text=kg_text, shards=shards, task=task,
                                         task_kwargs=task_kwargs, max_triples=max_triples, limit=limit,
                                         query_ids=query_ids)
    if net is None:
        if checkpoint is not None:
            net = ckpt.load_model(checkpoint)
        else:
            torch.manual_seed(seed)
            kwargs = {"node_dim": int(graphs.dim), "num_relations": int(store.num_relations), **(model_kwargs or {})}
            net = resolve_model(model, **kwargs)
    net = net.to(rt.device).eval()
    collate = Collator.for_model(net, kg_text=kg_text)
    cand_keys = cand_labels = None
    if task == "mars":
        if candidates is None:
            raise KGStoreError("MARS evaluation needs `candidates` (markg/MARS/analogy_entities.txt)")
        cand_keys = read_candidates(candidates)
        cand_labels = [kg_text.entity_by_key(k) for k in cand_keys]
    short = _Shortlist(kg, cand_keys, shortlist) if shortlist and task == "mars" else None
    records: list[dict[str, Any]] = []
    out = None
    if predictions:
        fingerprint = _fingerprint(net=net, task=task, task_kwargs=task_kwargs,
                                   shards=[str(d.resolve()) for d in resolve_shard_dirs(kg, shards)],
                                   candidates=candidates, limit=limit, max_triples=max_triples,
                                   query_ids=sorted(query_ids) if query_ids is not None else None,
                                   candidate_scores=candidate_scores, seed=seed,
                                   shortlist=short.fingerprint if short else None)
        records = _open_predictions(Path(predictions), fingerprint, resume=resume)
        out = Path(predictions).open("a")
    ids = [ex.query_id for _, ex in _items(dataset)]
    order = list(range(len(dataset)))
    if query_ids is not None:  # the caller's order: a budget-stopped run has done the queries listed first
        pos = {str(q): k for k, q in enumerate(query_ids)}
        order.sort(key=lambda i: pos.get(str(ids[i]), len(pos)))
    id_set = set(ids)
    records = [r for r in records if r["query_id"] in id_set]
    done = {r["query_id"] for r in records}
    deadline = time.monotonic() + 60 * budget_minutes if budget_minutes else None
    t0, n_new, complete = time.monotonic(), 0, True
    try:
        for i in order:
            if ids[i] in done:
                continue
            if deadline is not None and time.monotonic() > deadline:
                complete = False
                logger.warning("evaluation budget of %s min spent: %d queries left for the next run",
                               budget_minutes, len(dataset) - len(records))
                break
            batch = collate([dataset[i]]).to(rt.device)
            ex = batch.examples[0]
            with torch.no_grad(), rt.autocast():
                if task == "mars":
                    rec = _score_mars(net, batch, ex, cand_keys, cand_labels, chunk_size=chunk_size, ties=ties,
                                      with_scores=candidate_scores, shortlist=short)
                else:
                    rec = _score_scienceqa(net, batch, ex)
            rec["triples"] = [list(t) for t in batch.triples[0]]
            records.append(rec)
            n_new += 1
            if out is not None:
                out.write(json.dumps(rec, default=_json_default) + "\n")
                out.flush()
                os.fsync(out.fileno())
            if progress is not None:
                progress(len(records), len(dataset), (time.monotonic() - t0) / n_new)
            if n_new % 10 == 0:
                logger.info("evaluated %d/%d (%.2f s/query)", len(records), len(dataset),
                            (time.monotonic() - t0) / n_new)
    finally:
        if out is not None:
            out.close()
    if task == "mars":
        # a resumed run may have been started under other `ties`: every record has all three ranks
        metrics = ranking_metrics(r.get(f"rank_{ties}", r["rank"]) for r in records)
        metrics["mrr_by_ties"] = {rule: ranking_metrics(r.get(f"rank_{rule}", r["rank"]) for r in records)["mrr"]
                                  for rule in TIE_RULES}
        if short is not None:
            metrics[f"recall@{short.k}"] = float(np.mean([r["in_shortlist"] for r in records])) if records else None
    else:
        metrics = scienceqa_accuracy(records)
    metrics.update(task=task, queries=len(records), ties=ties if task == "mars" else None,
                   seconds=round(time.monotonic() - t0, 2), new_queries=n_new, complete=complete,
                   remaining=len(dataset) - len(records))
    return metrics


def _items(dataset) -> list:
    """(graph index, example) pairs of a TaskDataset or ConcatDataset, without building graphs."""
    if hasattr(dataset, "items"):
        return dataset.items
    return [it for part in dataset.datasets for it in part.items]


def _fingerprint(*, net, **parts: Any) -> str:
    """What decides the predictions: model config and trainable weights, data, candidates, selection."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": type(net).__name__, "config": getattr(net, "config", None)}, sort_keys=True,
                        default=str).encode())
    for name, value in sorted(net.trainable_state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    if parts.get("candidates"):
        h.update(Path(parts["candidates"]).read_bytes())
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _open_predictions(path: Path, fingerprint: str, *, resume: bool) -> list[dict[str, Any]]:
    """Records already in `path` for this fingerprint (the file is cut after its last whole line);
    otherwise an empty file and a new meta file."""
    meta = path.with_name(path.name + ".meta.json")
    same = resume and path.exists() and meta.exists() and \
        json.loads(meta.read_text()).get("fingerprint") == fingerprint
    if not same:
        if path.exists() and resume:
            logger.warning("%s belongs to another evaluation (or has no meta file): starting it over", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, b"")
        atomic.write_json(meta, {"fingerprint": fingerprint})
        return []
    data = path.read_bytes()
    records, good = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn by a kill mid-write
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line)
    if good < len(data):
        with path.open("r+b") as f:
            f.truncate(good)
    logger.info("resuming %s: %d predictions already there", path, len(records))
    return records


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.generic,)):
        return o.item()
    return str(o)


class _Shortlist:
    """The top-K candidates of a no-LLM ranker for each query (`evaluate(shortlist=...)`)."""

    def __init__(self, kg: str, cand_keys: list[str], spec: Mapping[str, Any]):
        from kg_store.hashing import sha256_file
        from model.rankers import MarsContext, resolve_ranker
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


def _score_mars(net, batch, ex, cand_keys: list[str], cand_labels: list[str], *, chunk_size: int,
                ties: str, with_scores: bool = False, shortlist: _Shortlist | None = None) -> dict[str, Any]:
    if shortlist is not None:
        return _score_mars_shortlist(net, batch, ex, cand_keys, cand_labels, shortlist, chunk_size=chunk_size,
                                     ties=ties)
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
    rec = {"query_id": ex.query_id, "task": "mars", "prompt": prompt_text(ex) if prompt_text else ex.prompt,
           "gold": ex.gold_key, "gold_label": ex.target, "gold_in_candidates": gold_in, "gold_score": gold_score,
           "rank": by_rule[ties], **{f"rank_{rule}": r for rule, r in by_rule.items()},
           "top10": [{"key": cand_keys[j], "label": cand_labels[j], "score": float(cand_scores[j])} for j in top],
           "mode": ex.meta.get("mode")}
    if with_scores:  # candidate order = the candidates file (the gold's own score is gold_score)
        rec["scores"] = [round(float(x), 4) for x in cand_scores]
    return rec


def _score_mars_shortlist(net, batch, ex, cand_keys: list[str], cand_labels: list[str], short: _Shortlist, *,
                          chunk_size: int, ties: str) -> dict[str, Any]:
    """The model ranks the ranker's top-K; the others follow in the ranker's order."""
    from model.rankers import top_positions
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
    return {"query_id": ex.query_id, "task": "mars", "prompt": prompt_text(ex) if prompt_text else ex.prompt,
            "gold": ex.gold_key, "gold_label": ex.target, "gold_in_candidates": gold >= 0, "in_shortlist": in_short,
            "shortlist": {"ranker": short.name, "k": short.k}, "rank": by_rule[ties],
            **{f"rank_{rule}": r for rule, r in by_rule.items()},
            "top10": [{"key": cand_keys[j], "label": cand_labels[j]} for j in best], "mode": ex.meta.get("mode")}


def _score_scienceqa(net, batch, ex) -> dict[str, Any]:
    scores = net.score_candidates(batch, ex.choices).cpu().numpy()
    pred = int(np.argmax(scores))
    return {"query_id": ex.query_id, "task": "scienceqa", "prediction": pred, "answer": ex.answer_index,
            "correct": pred == ex.answer_index, "scores": [float(s) for s in scores], **ex.meta}
