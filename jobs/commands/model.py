"""Model commands: `mmkg train --config FILE` and `mmkg evaluate --config FILE`.

A config is YAML with a `metadata` block (free-form: title, paper, notes) and a `job` block that
is passed straight to `model.training.train(**job)` / `model.evaluation.evaluate(**job)`
(PyKEEN K3). `--set key=value` overrides a top-level job key (value parsed as YAML), handy for
ablations: `--set pretraining=false`, `--set max_triples=10`, `--set model_kwargs.use_kg=false`.
A job whose `model` is a learned ranker (`model.reranker_run.VARIANTS`: `reranker`) goes to
`model.reranker_run.train` / `.evaluate` instead (configs/reranker/).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from kg_store.errors import ConfigError


def load_job_config(path: str | Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `job` block of a config file with `--set` overrides applied (dotted keys nest)."""
    from jobs.config import load_yaml, read_config
    from jobs.terminal import printable
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
    """The function a job runs: `target` (model.training.train / model.evaluation.evaluate), or the
    same-named one of `model.reranker_run` for a learned ranker (a feature model, not a prompted LLM)."""
    import importlib
    from model.reranker_run import VARIANTS
    module, _, fn_name = target.rpartition(".")
    if job.get("model") in VARIANTS:
        module = "model.reranker_run"
    return getattr(importlib.import_module(module), fn_name)


_config = click.option("--config", "config", required=True, type=click.Path(exists=True, dir_okay=False),
                       help="YAML file with `metadata` and `job` blocks.")
_set = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a job key (repeatable).")


def _model_command(name: str, target: str, doc: str) -> click.Command:
    """`mmkg train` / `mmkg evaluate`: load the job config, check it fits the function, run it."""

    @click.command(name=name, help=doc)
    @_config
    @_set
    def command(config: str, overrides: tuple[str, ...]) -> None:
        job = load_job_config(config, overrides)
        fn = job_function(target, job)
        check_job(fn, job, config)
        click.echo(json.dumps(fn(**job), sort_keys=True))

    return command


train = _model_command("train", "model.training.train",
                       "Train a model variant on precomputed shards (stage 1 pretraining, stage 2 finetuning).")
evaluate = _model_command("evaluate", "model.evaluation.evaluate",
                          "Evaluate a checkpoint: ScienceQA accuracy by category, MARS Hits@k/MRR; predictions JSONL.")


commands = [train, evaluate]
