"""Store-level commands: stats, verify, ls."""
from __future__ import annotations

import json

import click

from kg_store import open_store


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(kg: str, as_json: bool) -> None:
    """Counts of the committed KG version."""
    s = open_store(kg).stats()
    if as_json:
        click.echo(json.dumps(s, sort_keys=True))
    else:
        for k, v in s.items():
            click.echo(f"{k:>14}: {v:,}" if isinstance(v, int) else f"{k:>14}: {v}")


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory.")
def verify(kg: str) -> None:
    """Re-hash every committed file against the manifest."""
    store = open_store(kg)
    problems = store.verify()
    for p in problems:
        click.echo(f"BAD {p}")
    if problems:
        raise click.ClickException(f"{len(problems)} of {len(store.manifest['files'])} files failed verification")
    click.echo(f"ok: {len(store.manifest['files'])} files verified (kg_version {store.kg_version})")


@click.command(name="ls")
def list_registries() -> None:
    """List every registered plugin family and its names."""
    from kg_store.registry import ALL
    import jobs.plugins  # noqa: F401  (imports the modules that register plugins)
    for fam, reg in sorted(ALL.items()):
        click.echo(f"{fam}: {', '.join(reg.names())}")


commands = [stats, verify, list_registries]
