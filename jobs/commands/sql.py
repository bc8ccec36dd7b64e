"""`mmkg sql QUERY`: SQL over the committed tables through DuckDB (kg_store/sql.py), issue 30."""
from __future__ import annotations

import sys

import click

from mmkg.jobs.terminal import printable as P, safe_json
from mmkg.kg_store import open_store


@click.command()
@click.argument("query")
@click.option("--kg", required=True, type=click.Path(file_okay=False, exists=True), help="KG directory.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "csv", "json", "arrow"]),
              help="table (terminal), csv, json (one object: columns, rows, more) or arrow (IPC file, needs --out).")
@click.option("--out", "-o", default=None, type=click.Path(dir_okay=False), help="Write here (atomically) instead of stdout.")
@click.option("--timeout", default=30.0, type=click.FloatRange(0, min_open=True), show_default=True,
              help="Interrupt the query after this many seconds.")
@click.option("--max-rows", default=100_000, type=click.IntRange(1), show_default=True,
              help="Row cap of the answer (more: say so, and keep the first rows).")
@click.option("--memory", default="1GB", show_default=True, help="DuckDB memory_limit.")
@click.option("--threads", default=2, type=click.IntRange(1), show_default=True, help="DuckDB threads.")
def sql(query: str, kg: str, fmt: str, out: str | None, timeout: float, max_rows: int, memory: str,
        threads: int) -> None:
    """Run SQL over the KG's tables. QUERY is the text, @FILE, or - for stdin.

    Views: entities, relations, triples (with head/relation/tail keys and labels), literals,
    images and same_as (with entity keys and labels), rejects. Read-only: the query can read only
    the current version's table files (no other file, no network).
    """
    from mmkg.jobs.commands.analyst import read_query_arg
    from mmkg.kg_store.sql import run_sql
    if fmt == "arrow" and out is None:
        raise click.UsageError("--format arrow writes a binary file: give --out FILE")
    answer = run_sql(open_store(kg), read_query_arg(query), timeout=timeout, max_rows=max_rows,
                     memory_limit=memory, threads=threads)
    table = answer.table
    if out is not None or fmt == "arrow":
        _write(table, fmt, out)
        click.echo(f"wrote {table.num_rows:,} rows to {P(out)}" + (" (more rows were cut at --max-rows)"
                                                                   if answer.more else ""), err=True)
        return
    if fmt == "json":
        click.echo(safe_json({"columns": table.column_names, "rows": table.to_pylist(), "more": answer.more},
                             default=str))
    elif fmt == "csv":
        import pyarrow.csv as pcsv
        pcsv.write_csv(table, sys.stdout.buffer) if table.num_rows or table.num_columns else None
    else:
        _print_table(table)
        click.echo(f"… more rows (cut at --max-rows {max_rows:,})" if answer.more else f"({table.num_rows:,} rows)")
    if answer.more and fmt != "table":
        click.echo(f"note: more than {max_rows:,} rows; the first {max_rows:,} are shown (--max-rows)", err=True)


def _write(table, fmt: str, out: str) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from mmkg.kg_store import atomic
    with atomic.atomic_path(out) as tmp:
        if fmt == "arrow":
            with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
                w.write_table(table)
        elif fmt == "csv":
            pcsv.write_csv(table, str(tmp))
        else:
            tmp.write_text(safe_json({"columns": table.column_names, "rows": table.to_pylist()}, default=str))


def _print_table(table) -> None:
    names = table.column_names
    rows = [["" if v is None else P(str(v)) for v in r.values()] for r in table.to_pylist()]
    widths = [min(50, max([len(n)] + [len(r[i]) for r in rows])) for i, n in enumerate(names)]
    click.echo("  ".join(P(n)[:50].ljust(w) for n, w in zip(names, widths)))
    click.echo("  ".join("-" * w for w in widths))
    for r in rows:
        click.echo("  ".join(c[:50].ljust(w) for c, w in zip(r, widths)))


commands = [sql]
