"""`make demo`: ingest everything in ../shared/data into one KG and print its stats.

`python -m jobs.demo --data DIR --kg DIR [--engine spark|local]`. The KG directory is rebuilt
from scratch on every run (only if it is a KG store or empty), so the demo is repeatable.
Later stages (embed, index, retrieve) append their steps to `run_demo`.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import click

from kg_store.errors import KGStoreError


def _fresh(kg: Path) -> None:
    if kg.exists() and any(kg.iterdir()):
        if not (kg / "manifest.json").exists():
            raise KGStoreError(f"{kg} exists and is not a KG store; refusing to overwrite it")
        shutil.rmtree(kg)


def run_demo(data: Path, kg: Path, *, engine: str = "spark", master: str | None = None) -> dict:
    from kg_store import open_store
    from pipeline.demo_sources import demo_sources
    from pipeline.ingest import ingest
    from jobs.commands.ingest import print_summary

    _fresh(kg)
    sources = demo_sources(data)
    if not sources:
        raise KGStoreError(f"no demo inputs under {data}")
    click.echo(f"== ingest ({engine}): {len(sources)} sources from {data}")
    t0 = time.perf_counter()
    result = ingest(kg, sources, engine=engine, master=master)
    print_summary(result, as_json=False)
    stats = open_store(kg).stats()
    click.echo("== stats")
    click.echo(json.dumps(stats, sort_keys=True))
    click.echo(f"== results in {kg.resolve()}: manifest.json, tables/*.parquet, graph/, blobs/images/ "
               f"(inspect with `mmkg stats --kg {kg}`) — {time.perf_counter() - t0:.1f} s")
    return {"stats": stats, "counts": result.counts, "seconds": result.seconds}


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="The shared data dir.")
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory to (re)build.")
@click.option("--engine", type=click.Choice(["spark", "local"]), default="spark")
@click.option("--master", default=None, help="Spark master URL (default local[*]).")
def main(data: str, kg: str, engine: str, master: str | None) -> None:
    """Ingest all demo data and print the stats."""
    try:
        run_demo(Path(data), Path(kg), engine=engine, master=master)
    except KGStoreError as e:
        click.echo(f"demo: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
