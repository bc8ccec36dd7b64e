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

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from mmkg.kg_store import atomic, open_store
from mmkg.kg_store.hashing import Fingerprint
from mmkg.kg_store.errors import ConfigError
from mmkg.model import checkpoint as ckpt
from mmkg.model.base import MultimodalKGModel, model_registry, resolve_model
from mmkg.model.batching import Collator
from mmkg.model.data import build_task_dataset, resolve_shard_dirs
from mmkg.model.kg_text import KGText
from mmkg.model.metrics import TIE_RULES
from mmkg.model.tasks import task_registry
from mmkg.model.runtime import init_runtime

logger = logging.getLogger(__name__)

def evaluate(*, kg: str, task: str, shards: Any, checkpoint: str | None = None, model: str = "mrmkg",
             model_kwargs: Mapping[str, Any] | None = None, predictions: str | None = None,
             candidates: str | None = None, limit: int | None = None, max_triples: int | None = None,
             device: str = "auto", amp: str = "auto", chunk_size: int = 256, ties: str = "optimistic",
             task_kwargs: Mapping[str, Any] | None = None, net: MultimodalKGModel | None = None,
             query_ids: Sequence[str] | None = None, resume: bool = True, budget_minutes: float | None = None,
             candidate_scores: bool = False, seed: int = 0, shortlist: Mapping[str, Any] | None = None,
             scoring: str = "loglik", facts_gate: Mapping[str, Any] | None = None,
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
    only the top-K candidates of that no-LLM ranker (`mmkg.model.rankers`); they rank above the rest,
    which keep the ranker's order (each record says whether the gold was in the shortlist).
    `scoring` (MARS) "loglik" or "pmi" (minus the label's log-likelihood after a null prompt);
    `facts_gate` (MARS, with `shortlist`) = {"signal": NAME, "threshold": T}: the retrieved facts
    reach the prompt only when the KG's signal (`mmkg.model.facts_gate`) is ≥ T (see `mmkg.model.scoring`).
    `progress(done, total, seconds per query of this run)` is called after each scored query.
    """
    scorer_of = {name: cls.scorer for name, cls in task_registry.items() if getattr(cls, "scorer", None)}
    if task not in scorer_of:
        raise ConfigError(f"evaluate supports the tasks {', '.join(scorer_of)}, not {task!r}")
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
    scorer = scorer_of[task](task=task_registry.get(task).name, kg=kg, kg_text=kg_text, candidates=candidates,
                             shortlist=shortlist, ties=ties, candidate_scores=candidate_scores,
                             scoring=scoring, facts_gate=facts_gate)
    records: list[dict[str, Any]] = []
    out = None
    if predictions:
        fingerprint = _fingerprint(net=net, task=task, task_kwargs=task_kwargs,
                                   shards=[str(d.resolve()) for d in resolve_shard_dirs(kg, shards)],
                                   candidates=candidates, limit=limit, max_triples=max_triples,
                                   query_ids=sorted(query_ids) if query_ids is not None else None,
                                   candidate_scores=candidate_scores, seed=seed,
                                   shortlist=scorer.fingerprint)
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
                rec = scorer.score(net, batch, ex, chunk_size=chunk_size)
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
    metrics = scorer.metrics(records)
    metrics.update(task=task, queries=len(records),
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
    h = Fingerprint().json({"model": type(net).__name__, "config": getattr(net, "config", None)})
    for name, value in sorted(net.trainable_state_dict().items()):
        h.bytes(name.encode()).bytes(value.detach().float().cpu().contiguous().numpy().tobytes())
    if parts.get("candidates"):
        h.bytes(Path(parts["candidates"]).read_bytes())
    return h.json(parts).hexdigest()


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


