"""`make demo`: the whole pipeline DAG on ../shared/data, then where the results are.

`python -m mmkg.jobs.demo --data DIR --kg DIR [--engine spark|local] [--config FILE] [--fresh]`. Runs
`configs/pipeline.yaml` (ingest all demo inputs → MiniLM embed → auto index → MARS dev, the first
1,000 MARS train queries (the shards `mmkg train` reads) and ScienceQA test retrieval, N=10)
through the cached, incremental runner (`jobs/runner.py`): a second `make demo` finds every stage
cached and finishes in seconds. `--fresh` rebuilds the KG directory from scratch (only if it is a
KG store or empty).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import click

from mmkg.kg_store.errors import ConfigError, KGStoreError, LockedError, MMKGError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pipeline.yaml"


def _fresh(kg: Path) -> None:
    if kg.exists() and any(kg.iterdir()):
        if not (kg / "manifest.json").exists():
            raise KGStoreError(f"{kg} exists and is not a KG store; refusing to overwrite it")
        shutil.rmtree(kg)


def run_demo(data: Path, kg: Path, *, engine: str = "spark", master: str | None = None,
             config: Path = DEFAULT_CONFIG, fresh: bool = False) -> dict:
    from mmkg.kg_store import open_store
    from mmkg.jobs.report import human_summary
    from mmkg.jobs.runner import load_pipeline_config, run_pipeline

    if fresh:
        _fresh(kg)
    _, job = load_pipeline_config(config)
    job = {**job, "kg": kg, "data": data}
    job["ingest"] = {**job["ingest"], "engine": engine, **({"master": master} if master else {})}
    t0 = time.perf_counter()
    click.echo(f"== mmkg run --config {config} --kg {kg} --data {data}")
    report = run_pipeline(**job, config_path=config, echo=click.echo)
    click.echo(human_summary(report, Path(report.report_path) if report.report_path else None))
    store = open_store(kg)
    stats = store.stats()
    click.echo("== stats")
    click.echo(json.dumps(stats, sort_keys=True))
    shards = store.artifacts("subgraphs/")
    click.echo(f"== results in {kg.resolve()} ({time.perf_counter() - t0:.1f} s):")
    click.echo(f"   manifest.json, tables/*.parquet, graph/, blobs/images/  (mmkg stats --kg {kg})")
    for k in store.artifacts(("vectors/", "indexes/")):
        click.echo(f"   {k}/")
    for k, meta in shards.items():
        click.echo(f"   {k}/  ({meta.get('queries')} queries)")
    click.echo(f"   runs/{Path(report.report_path).name if report.report_path else ''}  (run report), logs/")
    if any(k.startswith("subgraphs/mars/train/") for k in shards):
        kg_opt = "" if Path(kg) == Path("build/demo-kg") else f" --kg {kg}"
        click.echo("== train on the shards (README, \"Train on the shards\"):")
        click.echo(f"   mmkg train --config configs/mrmkg/mars_tiny-t5.yaml{kg_opt} --max-steps 20")
        click.echo(f"   mmkg evaluate --config configs/mrmkg/mars_tiny-t5.evaluate.yaml{kg_opt} --limit 10")
    return {"stats": stats, "report": report.to_dict(), "seconds": report.seconds}


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="The shared data dir.")
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory (updated incrementally).")
@click.option("--engine", type=click.Choice(["spark", "local"]), default="spark", help="Ingest engine.")
@click.option("--master", default=None, help="Spark master URL (default local[*]).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), default=str(DEFAULT_CONFIG),
              show_default=True, help="Pipeline config.")
@click.option("--fresh", is_flag=True, help="Delete the KG directory first (full rebuild).")
def main(data: str, kg: str, engine: str, master: str | None, config: str, fresh: bool) -> None:
    """Run the whole pipeline DAG on the demo data and print where the results are."""
    try:
        run_demo(Path(data), Path(kg), engine=engine, master=master, config=Path(config), fresh=fresh)
    except LockedError as e:
        click.echo(f"demo: {e}", err=True)
        sys.exit(4)
    except ConfigError as e:  # a usage mistake (the config, --data): exit 2, as every command
        click.echo(f"demo: {e}", err=True)
        sys.exit(2)
    except MMKGError as e:
        click.echo(f"demo: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
