"""`train(**job)`: the two MR-MKG stages on precomputed shards (PyKEEN-style config → function).

A run is a list of stages, each with its own task(s), shards and hyper-parameters; the paper's
are stage 1 knowledge pretraining (`kg-triple` + `kg-image` over MarKG shards, lr 2e-5, batch 8)
and stage 2 task finetuning (ScienceQA lr 4e-5 batch 1 × 3 epochs; MARS lr 5e-6 batch 4), all
with AdamW, weight decay 0.01. Only the trainable parts are optimised and checkpointed.

Resuming: `<output_dir>/checkpoints/latest.json` names the last complete checkpoint, whose
state says (stage, epoch, batch) — the run continues from the next batch with the optimizer
state restored; the shuffling is a pure function of (seed, stage, epoch), so the remaining
batches are exactly those an uninterrupted run would have seen.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mmkg.kg_store import open_store
from mmkg.kg_store.errors import ConfigError
from mmkg.model import checkpoint as ckpt
from mmkg.model.base import MultimodalKGModel, model_registry, resolve_model
from mmkg.model.batching import Collator
from mmkg.model.data import build_task_dataset
from mmkg.model.kg_text import KGText
from mmkg.model.runtime import Runtime, init_runtime
from mmkg.model.tasks import task_registry

logger = logging.getLogger(__name__)

#: the paper's hyper-parameters (MR-MKG §4.1), used when a stage gives none: pretraining's here,
#: fine-tuning's on each task class (`paper_defaults`); a task without them gets FINETUNE_DEFAULTS
PRETRAIN_DEFAULTS = {"lr": 2e-5, "batch_size": 8, "epochs": 1}
FINETUNE_DEFAULTS = {"lr": 5e-6, "batch_size": 4, "epochs": 1}


def _stage_defaults(stage: Mapping[str, Any]) -> dict[str, Any]:
    task = stage["task"]
    if stage.get("name") == "pretrain" or not isinstance(task, str):
        return {**PRETRAIN_DEFAULTS, **stage}
    return {**(getattr(task_registry.get(task), "paper_defaults", None) or FINETUNE_DEFAULTS), **stage}


def epoch_batches(n: int, batch_size: int, *, seed: int, stage: int, epoch: int, rank: int = 0,
                  world_size: int = 1, shuffle: bool = True) -> list[list[int]]:
    """The batches of one epoch for one rank: a seeded permutation split across ranks.

    Under DDP every rank must run the same number of steps (or the last all-reduce waits forever),
    so when n is not a multiple of world_size the permutation is padded by wrapping around (as
    torch's DistributedSampler does): a few examples are seen twice in that epoch."""
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + stage * 1009 + epoch))
    else:
        order = torch.arange(n)
    if world_size > 1 and n % world_size:
        order = torch.cat([order, order[:world_size - n % world_size]])
    mine = order[rank::world_size].tolist()
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def _infer_model_kwargs(model_kwargs: dict[str, Any], *, graphs, store) -> dict[str, Any]:
    out = dict(model_kwargs)
    out.setdefault("node_dim", int(graphs.dim))
    out.setdefault("num_relations", int(store.num_relations))
    return out


def train(*, kg: str, output_dir: str, stages: Sequence[Mapping[str, Any]], model: str = "mrmkg",
          model_kwargs: Mapping[str, Any] | None = None, weight_decay: float = 0.01, seed: int = 0,
          device: str = "auto", amp: str = "auto", max_triples: int | None = None, pretraining: bool = True,
          resume: bool = True, checkpoint_every: int = 500, keep_checkpoints: int = 2, log_every: int = 10,
          grad_clip: float | None = 1.0, budget_minutes: float | None = None, num_workers: int = 0,
          use_tqdm: bool = False, max_steps: int | None = None,
          progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train a `model` registry variant stage by stage; returns a summary (also written as JSON).

    Args:
        kg: KG root (labels, images, relation count; the shards live under it or elsewhere).
        output_dir: checkpoints, `train_log.jsonl`, `final/` and `summary.json` go here.
        stages: each `{name, task, shards, lr?, batch_size?, epochs?, max_steps?, limit?, task_kwargs?,
            query_ids?}` (`query_ids`: train on those shard rows only).
        model / model_kwargs: registry name and constructor kwargs (node_dim and num_relations are
            inferred from the shards and the store when absent). Ablations: `use_kg`, `use_image`,
            `use_alignment` there; `pretraining=False` skips stages named "pretrain"; `max_triples`
            keeps the top N = 10/20 triples of each subgraph.
        budget_minutes: stop training (all stages) after this much wall time; the run still saves.
        max_steps: cap every stage at this many optimizer steps (`mmkg train --max-steps N`).
        progress: called (main process) with each logged record: loss, `step`/`total_steps`,
            `s_per_step`, `examples_per_s` and `eta_s` (the CLI prints it on stderr).
        device: auto | cpu | cuda[:N] (`mmkg.pipeline.device.resolve_device`; cuda without CUDA is an error).

    The summary records the `device` and `amp` used and `loader_share`: seconds the loop waited for
    batches ÷ seconds of the loop (after each epoch's first batch). On CUDA batches are pinned and
    copied asynchronously; raise `num_workers` when the share is high.
    """
    model_registry.get(model)  # a configuration mistake fails before any data is read
    torch.manual_seed(seed)
    rt = init_runtime(device=device, amp=amp)
    out = Path(output_dir)
    ckpt_root = out / "checkpoints"
    store = open_store(kg)
    kg_text = KGText.from_store(store)
    stages = [_stage_defaults(s) for s in stages if pretraining or s.get("name") != "pretrain"]
    if not stages:
        raise ConfigError("no training stage left to run")
    if max_steps is not None:
        if int(max_steps) < 1:
            raise ConfigError(f"max_steps must be at least 1, not {max_steps}")
        stages = [{**s, "max_steps": min(int(s.get("max_steps") or max_steps), int(max_steps))} for s in stages]
    datasets = [build_task_dataset(kg=kg, kg_text=kg_text, shards=s["shards"], task=s["task"],
                                   task_kwargs=s.get("task_kwargs"), max_triples=max_triples, limit=s.get("limit"),
                                   query_ids=s.get("query_ids"))
                for s in stages]
    kwargs = _infer_model_kwargs(dict(model_kwargs or {}), graphs=datasets[0][1], store=store)
    net: MultimodalKGModel = resolve_model(model, **kwargs).to(rt.device)
    counts = net.parameter_counts()
    if counts["trainable"] == 0:
        raise ConfigError(f"model {model!r} has no trainable parameters with these settings (e.g. use_kg=false "
                          "and no vision tower): nothing to train. Evaluate it as is (`mmkg evaluate` without "
                          "--checkpoint), or add soft_prompt_tokens for an equal-budget control.")
    logger.info("model %s: %s trainable of %s parameters (%.3f %%)", model, f"{counts['trainable']:,}",
                f"{counts['total']:,}", counts["trainable_percent"])
    collate = Collator.for_model(net, kg_text=kg_text)
    total_steps = sum(_stage_steps(s, len(d), rt.world_size) for s, (d, _) in zip(stages, datasets))

    start = {"stage": 0, "epoch": 0, "batch": 0, "global_step": 0}
    latest = ckpt.latest_checkpoint(ckpt_root) if resume else None
    if latest is not None:
        ckpt.load_weights(latest, net)
        start = ckpt.read_progress(latest)
        logger.info("resuming from %s: stage %d epoch %d batch %d", latest.name, start["stage"], start["epoch"],
                    start["batch"])
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "job.json").write_text(json.dumps({"model": model, "model_kwargs": kwargs, "stages": stages,
                                                  "seed": seed, "max_triples": max_triples}, indent=2, default=str))
    ddp = _wrap_ddp(net, rt)
    deadline = time.monotonic() + 60 * budget_minutes if budget_minutes else math.inf
    log_file = (out / "train_log.jsonl").open("a") if rt.is_main else None
    global_step, stopped_early = start["global_step"], False
    pin = rt.device.type == "cuda"  # pinned host batches, copied to the GPU asynchronously
    loader_s = loop_s = 0.0
    run_t0, run_steps = time.monotonic(), 0  # this process's own steps (a resumed run has done others)
    try:
        for si, (stage, (dataset, _)) in enumerate(zip(stages, datasets)):
            params = [p for p in net.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=float(stage["lr"]), weight_decay=weight_decay)
            if si < start["stage"]:
                continue
            if latest is not None and si == start["stage"]:
                global_step = int(start["global_step"])
                # the optimizer state belongs to the stage that saved it (an end-of-stage
                # checkpoint points at the next stage, which starts with a fresh optimizer)
                if start.get("optimizer_stage") == si:
                    ckpt.load_training_state(latest, opt)
            scaler = rt.grad_scaler()
            net.train()
            position = {"stage": si, "epoch": 0, "batch": 0, "global_step": global_step, "optimizer_stage": si}
            steps_in_stage = 0
            for epoch in range(int(stage["epochs"])):
                if si == start["stage"] and epoch < start["epoch"]:
                    continue
                batches = epoch_batches(len(dataset), int(stage["batch_size"]), seed=seed, stage=si, epoch=epoch,
                                        rank=rt.rank, world_size=rt.world_size)
                first = start["batch"] if (si, epoch) == (start["stage"], start["epoch"]) else 0
                loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches[first:], collate_fn=collate,
                                                     num_workers=num_workers, pin_memory=pin)
                iterator = loader
                if use_tqdm and rt.is_main:
                    from tqdm import tqdm
                    iterator = tqdm(loader, desc=f"{stage['name']} epoch {epoch}", total=len(batches) - first)
                t0 = t_wait = time.monotonic()
                for bi, batch in enumerate(iterator, start=first):
                    # the loader's share of a step: time this loop waits for the next batch (not for
                    # an epoch's first batch, which also pays the workers' start-up)
                    if bi > first:
                        loader_s += time.monotonic() - t_wait
                    else:
                        t_wait = time.monotonic()
                    batch = batch.to(rt.device, non_blocking=pin)
                    with rt.autocast():
                        losses = ddp(batch)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(losses["loss"]).backward()
                    if grad_clip:
                        scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(params, grad_clip)
                    scaler.step(opt)
                    scaler.update()
                    global_step += 1
                    steps_in_stage += 1
                    run_steps += 1
                    limit_hit = bool(stage.get("max_steps")) and steps_in_stage >= int(stage["max_steps"])
                    out_of_time = time.monotonic() > deadline
                    if rt.is_main and (global_step % log_every == 0 or bi == len(batches) - 1 or limit_hit
                                       or out_of_time):
                        rec = {"stage": stage["name"], "epoch": epoch, "batch": bi + 1, "batches": len(batches),
                               "step": global_step, **{k: round(float(v.detach()), 5) for k, v in losses.items()},
                               "lr": float(stage["lr"]), "s_per_step": round((time.monotonic() - t0) / (bi + 1 - first), 3)}
                        logger.info("%s", rec)
                        log_file.write(json.dumps(rec) + "\n")
                        log_file.flush()
                        if progress is not None:
                            per_step = (time.monotonic() - run_t0) / run_steps
                            progress({**rec, "total_steps": total_steps, "examples_per_s":
                                      round(int(stage["batch_size"]) * rt.world_size / per_step, 2) if per_step else None,
                                      "eta_s": round(per_step * max(total_steps - global_step, 0), 1)})
                    position = {"stage": si, "epoch": epoch, "batch": bi + 1, "global_step": global_step,
                                "optimizer_stage": si}
                    if rt.is_main and global_step % checkpoint_every == 0:
                        _save(ckpt_root, net, model, opt, position, keep_checkpoints)
                    loop_s += time.monotonic() - t_wait
                    t_wait = time.monotonic()
                    if limit_hit or out_of_time:
                        stopped_early = out_of_time
                        break
                else:
                    continue
                break
            if rt.is_main:
                # out of time: resume where we stopped; else the next run starts the next stage
                done = position if stopped_early else {"stage": si + 1, "epoch": 0, "batch": 0,
                                                       "global_step": global_step, "optimizer_stage": si}
                _save(ckpt_root, net, model, opt, done, keep_checkpoints)
            if stopped_early:
                logger.warning("time budget of %s min spent during stage %s", budget_minutes, stage["name"])
                break
    finally:
        if log_file:
            log_file.close()
    summary = {"model": model, "global_step": global_step, "stopped_by_budget": stopped_early,
               "parameters": counts, "output_dir": str(out), "device": str(rt.device),
               "amp": str(rt.amp_dtype).removeprefix("torch.") if rt.amp_dtype else "off",
               "loader_seconds": round(loader_s, 3), "step_seconds": round(loop_s, 3),
               "loader_share": round(loader_s / loop_s, 4) if loop_s else None}
    if rt.is_main:
        ckpt.save_checkpoint(out / "final", model=net, model_name=model)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _stage_steps(stage: Mapping[str, Any], n: int, world_size: int) -> int:
    """Optimizer steps a stage will take (its epochs of batches, capped by its max_steps)."""
    per_epoch = math.ceil(math.ceil(n / world_size) / int(stage["batch_size"]))
    steps = per_epoch * int(stage["epochs"])
    return min(steps, int(stage["max_steps"])) if stage.get("max_steps") else steps


def _wrap_ddp(net: torch.nn.Module, rt: Runtime):
    if not rt.distributed:
        return net
    from torch.nn.parallel import DistributedDataParallel
    # images/alignment are absent from many batches, so some adapter weights get no gradient
    return DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                                   find_unused_parameters=True)


def _save(root: Path, net, model_name: str, opt, progress: dict[str, Any], keep: int) -> None:
    path = root / f"step-{progress['global_step']:08d}-s{progress['stage']}"
    ckpt.save_checkpoint(path, model=net, model_name=model_name, optimizer=opt,
                         state={**progress, "checkpoint": path.name})
    ckpt.mark_latest(root, path)
    old = sorted(p for p in root.glob("step-*") if p.is_dir() and ".tmp-" not in p.name and p != path)
    for p in old[:max(len(old) - keep + 1, 0)]:
        shutil.rmtree(p, ignore_errors=True)
