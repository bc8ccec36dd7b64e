"""Model commands: `mmkg train --config FILE` and `mmkg evaluate --config FILE`.

A config is YAML with a `metadata` block (free-form: title, paper, notes) and a `job` block that
is passed straight to `model.training.train(**job)` / `model.evaluation.evaluate(**job)`
(PyKEEN K3). `--set key=value` overrides a top-level job key (value parsed as YAML), handy for
ablations: `--set pretraining=false`, `--set max_triples=10`, `--set model_kwargs.use_kg=false`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def load_job_config(path: str | Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `job` block of a config file with `--set` overrides applied (dotted keys nest)."""
    import yaml
    from jobs.config import read_config
    _, job = read_config(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise click.BadParameter(f"--set expects key=value, got {item!r}")
        target = job
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = yaml.safe_load(raw)
    return job


def check_job(fn, job: dict[str, Any], config: str) -> None:
    """Refuse unknown or missing job keys before any work starts (not a TypeError mid-run)."""
    import inspect
    try:
        inspect.signature(fn).bind(**job)
    except TypeError as e:
        raise click.ClickException(f"{config}: job block does not fit {fn.__name__}(): {e}") from None


_config = click.option("--config", "config", required=True, type=click.Path(exists=True, dir_okay=False),
                       help="YAML file with `metadata` and `job` blocks.")
_set = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a job key (repeatable).")


@click.command()
@_config
@_set
def train(config: str, overrides: tuple[str, ...]) -> None:
    """Train a model variant on precomputed shards (stage 1 pretraining, stage 2 finetuning)."""
    job = load_job_config(config, overrides)
    from model.training import train as run_train
    check_job(run_train, job, config)
    summary = run_train(**job)
    click.echo(json.dumps(summary, sort_keys=True))


@click.command()
@_config
@_set
def evaluate(config: str, overrides: tuple[str, ...]) -> None:
    """Evaluate a checkpoint: ScienceQA accuracy by category, MARS Hits@k/MRR; predictions JSONL."""
    job = load_job_config(config, overrides)
    from model.evaluation import evaluate as run_evaluate
    check_job(run_evaluate, job, config)
    metrics = run_evaluate(**job)
    click.echo(json.dumps(metrics, sort_keys=True))


commands = [train, evaluate]
