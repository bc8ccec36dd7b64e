"""Model commands: `mmkg train --config FILE` and `mmkg evaluate --config FILE`.

A config is YAML with a `metadata` block (free-form: title, paper, notes) and a `job` block that
is passed straight to `mmkg.model.training.train(**job)` / `mmkg.model.evaluation.evaluate(**job)`
(PyKEEN K3). `--set key=value` overrides a top-level job key (value parsed as YAML), handy for
ablations: `--set pretraining=false`, `--set max_triples=10`, `--set model_kwargs.use_kg=false`.
`--kg DIR` replaces the config's `kg` (the shipped configs name the demo's `build/demo-kg`);
`mmkg train --max-steps N` caps every stage at N steps, `mmkg evaluate --limit N` scores N
queries (a seeded random sample). Both print their progress on stderr (loss, throughput and ETA; s/query and ETA) and
the summary JSON on stdout.
A job whose `model` is a learned ranker (`mmkg.model.reranker_run.VARIANTS`: `reranker`) goes to
`mmkg.model.reranker_run.train` / `.evaluate` instead (configs/reranker/).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from mmkg.kg_store.errors import ConfigError


def load_job_config(path: str | Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `job` block of a config file with `--set` overrides applied (dotted keys nest)."""
    from mmkg.jobs.config import load_yaml, read_config
    from mmkg.jobs.terminal import printable
    _, job = read_config(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects key=value (dotted keys nest), got {printable(item)!r}")
        target = job
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {printable(key)}: {printable(p)!r} is not a mapping in the config")
        target[leaf] = load_yaml(raw, f"--set {printable(key)}")
    return job


def check_job(fn, job: dict[str, Any], config: str) -> None:
    """Refuse unknown or missing job keys before any work starts (not a TypeError mid-run)."""
    import inspect
    try:
        inspect.signature(fn).bind(**job)
    except TypeError as e:
        raise click.ClickException(f"{config}: job block does not fit {fn.__name__}(): {e}") from None


def job_function(target: str, job: dict[str, Any]):
    """The function a job runs: `target` (mmkg.model.training.train / mmkg.model.evaluation.evaluate), or the
    same-named one of `mmkg.model.reranker_run` for a learned ranker (a feature model, not a prompted LLM)."""
    import importlib
    from mmkg.model.reranker_run import VARIANTS
    module, _, fn_name = target.rpartition(".")
    if job.get("model") in VARIANTS:
        module = "mmkg.model.reranker_run"
    return getattr(importlib.import_module(module), fn_name)


_config = click.option("--config", "config", required=True, type=click.Path(exists=True, dir_okay=False),
                       help="YAML file with `metadata` and `job` blocks.")
_set = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a job key (repeatable).")
_kg = click.option("--kg", default=None, type=click.Path(file_okay=False),
                   help="KG directory (replaces the config's `kg`; the shipped configs name build/demo-kg).")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def print_train_progress(rec: dict[str, Any]) -> None:
    """One stderr line per logged training step: loss, speed, ETA of the whole run."""
    losses = "  ".join(f"{k} {v:.4f}" for k, v in rec.items() if k == "loss" or k.endswith("_loss"))
    speed = f"{rec['s_per_step']:.2f} s/step" + (f", {rec['examples_per_s']:.1f} ex/s" if rec.get("examples_per_s") else "")
    click.echo(f"train {rec['stage']} step {rec['step']}/{rec['total_steps']}  {losses}  {speed}  "
               f"ETA {_duration(rec.get('eta_s'))}", err=True)


class EvalProgress:
    """stderr lines while `evaluate` runs: done/total, s/query and ETA (at most one a `every` s)."""

    def __init__(self, every: float = 2.0):
        self.every, self.last = every, 0.0

    def __call__(self, done: int, total: int, s_per_query: float) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        click.echo(f"evaluate {done}/{total} queries  {s_per_query:.2f} s/query  "
                   f"ETA {_duration(s_per_query * (total - done))}", err=True)


def _model_command(name: str, target: str, doc: str, extra: list, apply) -> click.Command:
    """`mmkg train` / `mmkg evaluate`: load the job config, check it fits the function, run it."""

    def command(config: str, overrides: tuple[str, ...], kg: str | None, **options: Any) -> None:
        job = load_job_config(config, overrides)
        if kg is not None:
            job["kg"] = kg
        apply(job, options)
        fn = job_function(target, job)
        check_job(fn, job, config)
        progress = print_train_progress if name == "train" else EvalProgress()
        result = fn(**job, progress=progress)
        sys.stderr.flush()
        click.echo(json.dumps(result, sort_keys=True))

    for option in [_config, _set, _kg, *extra][::-1]:
        command = option(command)
    return click.command(name=name, help=doc)(command)


def _train_options(job: dict[str, Any], options: dict[str, Any]) -> None:
    if options["max_steps"] is not None:
        job["max_steps"] = options["max_steps"]


def _evaluate_options(job: dict[str, Any], options: dict[str, Any]) -> None:
    if options["limit"] is not None:
        job["limit"] = options["limit"]


train = _model_command(
    "train", "mmkg.model.training.train",
    "Train a model variant on precomputed shards (stage 1 pretraining, stage 2 finetuning). Loss, "
    "throughput and ETA go to stderr every `log_every` steps; the summary JSON to stdout.",
    [click.option("--max-steps", type=click.IntRange(min=1), default=None,
                  help="Stop every stage after N optimizer steps (a quick run without editing `stages`).")],
    _train_options)
evaluate = _model_command(
    "evaluate", "mmkg.model.evaluation.evaluate",
    "Evaluate a checkpoint: ScienceQA accuracy by category, MARS Hits@k/MRR; predictions JSONL. "
    "Progress (s/query, ETA) goes to stderr; the metrics JSON to stdout.",
    [click.option("--limit", type=click.IntRange(min=1), default=None, help="Score N queries (a seeded random sample, in shard order).")],
    _evaluate_options)


commands = [train, evaluate]
