"""`evaluate(**job)`: ScienceQA accuracy by category and MARS ranking, predictions as JSONL.

Every prediction line records the triples the model was given (after the top-N cut), so an
analyst can see which knowledge a right or wrong answer came with.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from kg_store import atomic, open_store
from kg_store.errors import KGStoreError
from model import checkpoint as ckpt
from model.base import MultimodalKGModel, resolve_model
from model.batching import Collator
from model.data import build_task_dataset
from model.kg_text import KGText
from model.metrics import rank_of_gold, ranking_metrics, scienceqa_accuracy
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
             task_kwargs: Mapping[str, Any] | None = None, net: MultimodalKGModel | None = None) -> dict[str, Any]:
    """Score a trained checkpoint (or `net`, or an untrained `model`) on a task's shards.

    MARS: every query ranks the gold entity among all `candidates` (one QID a line, default the
    2,063 MARS analogy entities), unfiltered, ties optimistic unless `ties` says otherwise.
    ScienceQA: the prediction is the highest-likelihood choice.
    """
    if task not in ("mars", "scienceqa"):
        raise KGStoreError(f"evaluate supports the tasks mars and scienceqa, not {task!r}")
    rt = init_runtime(device=device, amp=amp)
    store = open_store(kg)
    kg_text = KGText.from_store(store)
    dataset, graphs = build_task_dataset(kg=kg, kg_text=kg_text, shards=shards, task=task,
                                         task_kwargs=task_kwargs, max_triples=max_triples, limit=limit)
    if net is None:
        if checkpoint is not None:
            net = ckpt.load_model(checkpoint)
        else:
            kwargs = {"node_dim": int(graphs.dim), "num_relations": int(store.num_relations), **(model_kwargs or {})}
            net = resolve_model(model, **kwargs)
    net = net.to(rt.device).eval()
    collate = Collator(kg_text=kg_text, image_transform=getattr(net, "image_transform", None))
    cand_keys = cand_labels = None
    if task == "mars":
        if candidates is None:
            raise KGStoreError("MARS evaluation needs `candidates` (markg/MARS/analogy_entities.txt)")
        cand_keys = read_candidates(candidates)
        cand_labels = [kg_text.entity_by_key(k) for k in cand_keys]
    records, ranks = [], []
    t0 = time.monotonic()
    for i in range(len(dataset)):
        batch = collate([dataset[i]]).to(rt.device)
        ex = batch.examples[0]
        with torch.no_grad(), rt.autocast():
            if task == "mars":
                rec = _score_mars(net, batch, ex, cand_keys, cand_labels, chunk_size=chunk_size, ties=ties)
                ranks.append(rec["rank"])
            else:
                rec = _score_scienceqa(net, batch, ex)
        rec["triples"] = [list(t) for t in batch.triples[0]]
        records.append(rec)
        if (i + 1) % 10 == 0:
            logger.info("evaluated %d/%d (%.2f s/query)", i + 1, len(dataset), (time.monotonic() - t0) / (i + 1))
    metrics = ranking_metrics(ranks) if task == "mars" else scienceqa_accuracy(records)
    metrics.update(task=task, queries=len(records), ties=ties if task == "mars" else None,
                   seconds=round(time.monotonic() - t0, 2))
    if predictions:
        lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in records)
        atomic.write_bytes(predictions, lines.encode())
    return metrics


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.generic,)):
        return o.item()
    return str(o)


def _score_mars(net, batch, ex, cand_keys: list[str], cand_labels: list[str], *, chunk_size: int,
                ties: str) -> dict[str, Any]:
    gold_in = ex.gold_key in cand_keys
    labels = cand_labels if gold_in else [*cand_labels, ex.target]
    scores = net.score_candidates(batch, labels, chunk_size=chunk_size).cpu().numpy()
    gold_score = float(scores[cand_keys.index(ex.gold_key)] if gold_in else scores[-1])
    cand_scores = scores[:len(cand_keys)]
    # unfiltered: the gold is ranked against every candidate, other correct answers included
    rank = rank_of_gold(cand_scores, gold_score, gold_in_candidates=gold_in, ties=ties)
    top = np.argsort(-cand_scores, kind="stable")[:10]
    return {"query_id": ex.query_id, "task": "mars", "prompt": ex.prompt, "gold": ex.gold_key,
            "gold_label": ex.target, "gold_in_candidates": gold_in, "gold_score": gold_score, "rank": rank,
            "top10": [{"key": cand_keys[j], "label": cand_labels[j], "score": float(cand_scores[j])} for j in top],
            "mode": ex.meta.get("mode")}


def _score_scienceqa(net, batch, ex) -> dict[str, Any]:
    scores = net.score_candidates(batch, ex.choices).cpu().numpy()
    pred = int(np.argmax(scores))
    return {"query_id": ex.query_id, "task": "scienceqa", "prediction": pred, "answer": ex.answer_index,
            "correct": pred == ex.answer_index, "scores": [float(s) for s in scores], **ex.meta}
