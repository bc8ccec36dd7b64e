"""`mmkg run --config pipeline.yaml` (the cached, incremental stage DAG) and `mmkg gc`.

Exit codes (jobs/cli.py): 0 ok (also when everything was cached), 1 a stage failed, 2 usage
error, 3 rejected records under `strict: true` in the ingest block, 4 another run holds the KG
directory's lock (after `--wait` seconds).
"""
from __future__ import annotations

import json

import click

from mmkg.jobs.terminal import printable

STAGE_NAMES = ("ingest", "sparql", "embed", "index", "retrieve", "train", "evaluate")


@click.command()
@click.option("--config", "config", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Pipeline YAML (`metadata` + `job` blocks), e.g. configs/pipeline.yaml.")
@click.option("--kg", default=None, type=click.Path(file_okay=False), help="KG directory (overrides job.kg).")
@click.option("--data", default=None, type=click.Path(file_okay=False, exists=True),
              help="Data directory substituted for {data} and `sources: demo` (overrides job.data).")
@click.option("--from", "from_stage", type=click.Choice(STAGE_NAMES), default=None,
              help="Consider only this stage and those downstream of it.")
@click.option("--only", type=click.Choice(STAGE_NAMES), default=None, help="Consider only this stage.")
@click.option("--force", is_flag=True, help="Run the considered stages even when cached (they stay incremental).")
@click.option("--dry-run", is_flag=True, help="Print the plan (what would run and why); change nothing.")
@click.option("--wait", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Seconds to wait for another run on the same KG before exiting 4.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON instead of the summary.")
@click.option("--no-progress", is_flag=True, help="No progress bars (cron, Airflow logs).")
def run(config, kg, data, from_stage, only, force, dry_run, wait, as_json, no_progress) -> None:
    """Run the stage DAG; stages whose config and inputs are unchanged are reported as cached."""
    from mmkg.jobs.report import human_summary
    from mmkg.jobs.runner import run_from_config

    echo = None if as_json else (lambda line: click.echo(line, err=True))
    report = run_from_config(config, kg=kg, data=data, from_stage=from_stage, only=only, force=force,
                             dry_run=dry_run, wait=wait, progress=not no_progress, echo=echo)
    if as_json:
        click.echo(json.dumps(report.to_dict(), sort_keys=True, default=str))
    else:
        from pathlib import Path
        click.echo(human_summary(report, Path(report.report_path) if report.report_path else None))


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False, exists=True), help="KG directory.")
@click.option("--keep", default=2, show_default=True, type=click.IntRange(1),
              help="Keep the files of this many most recent KG versions (the current one included).")
@click.option("--cache", is_flag=True, help="Also delete the embedding cache (re-encoding everything next time).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--wait", default=0.0, show_default=True, type=click.FloatRange(0), help="Seconds to wait for the lock.")
def gc(kg, keep, cache, dry_run, wait) -> None:
    """Delete files no longer referenced by the last --keep KG versions (or a version a running
    `mmkg serve` shows): old tables and graphs, superseded vectors, indexes, shards and retriever
    priors, and kept copies of derived files (objects/) no kept version needs."""
    from mmkg.kg_store.gc import collect_garbage
    out = collect_garbage(kg, keep=keep, dry_run=dry_run, cache=cache, wait=wait)
    verb = "would delete" if dry_run else "deleted"
    for rel, size in out.get("deleted") or []:
        click.echo(f"  {printable(rel)}  {size:,} bytes")
    click.echo(f"{verb} {out['files_deleted']} files, {out['sparql_stores_deleted']} SPARQL stores and "
               f"{out['snapshots_deleted']} version snapshots "
               f"({out['bytes_freed'] / 1e6:.1f} MB); kept versions {out['kept_versions'] or [out['kg_version']]}"
               + (f" (pinned by a running `mmkg serve`: {out['pinned_versions']})" if out.get("pinned_versions") else ""))


commands = [run, gc]
