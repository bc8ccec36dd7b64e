"""The analyst's commands (issue 9): entity, neighbors, sparql, export, serve.

Heavy imports (rdflib, networkx, flask) happen inside the command bodies so `mmkg --help`
stays fast. Every command that prints data has `--json`; long listings page with
`--limit/--offset`, long exports draw a progress bar on stderr.
"""
from __future__ import annotations

import json
import sys

import click

from mmkg.jobs.terminal import printable as P, safe_json
from mmkg.kg_store import open_store
from mmkg.kg_store.errors import KGStoreError

_kg = click.option("--kg", required=True, type=click.Path(file_okay=False, exists=True), help="KG directory.")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _page_opts(default: int):
    def deco(f):
        f = click.option("--offset", default=0, type=click.IntRange(0), show_default=True, help="Rows to skip.")(f)
        return click.option("--limit", default=default, type=click.IntRange(1), show_default=True,
                            help="Rows to show.")(f)
    return deco


def _view(kg: str):
    from mmkg.jobs.web.queries import StoreView
    return StoreView(open_store(kg))


def _more(shown_to: int, total: int, offset_hint: str = "--offset") -> None:
    if shown_to < total:
        click.echo(f"… {total - shown_to:,} more (use {offset_hint} {shown_to})")


@click.command()
@click.argument("key_or_label")
@_kg
@_json
@click.option("--per-relation", default=10, type=click.IntRange(1), show_default=True,
              help="Neighbours shown per relation (the JSON always has all).")
def entity(key_or_label: str, kg: str, as_json: bool, per_relation: int) -> None:
    """One entity: label, description, sources, merged keys, images, neighbours by relation."""
    view = _view(kg)
    eid, others = view.resolve(key_or_label)
    card = view.card(eid)
    groups = view.neighbours(eid)
    if as_json:
        card["neighbours"] = groups
        card["same_label"] = [{"id": r["id"], "key": r["key"]} for r in view.entity_rows(others)] if others else []
        click.echo(safe_json(card))
        return
    # every KG string goes through P (jobs/terminal.printable): no escape sequence reaches the terminal
    click.echo(f"{P(card['label'])}  [{P(card['key'])}]  id {card['id']}, degree {card['degree']:,}")
    if card["description"]:
        click.echo(f"  {P(card['description'])}")
    click.echo(f"  sources: {', '.join(P(s) for s in card['sources']) or '-'}")
    if card["merged_keys"]:
        click.echo("  merged keys: " + ", ".join(f"{P(m['key'])} ({P(m['source'])})" for m in card["merged_keys"]))
    for img in card["images"]:
        click.echo(f"  image {P(img['sha256'][:12])}… {img['width']}x{img['height']} {P(img['format'])}  "
                   f"{P(img['source_uri'] or '')}")
    for lit in card["literals"]:
        click.echo(f"  {P(lit['attribute'])} = {P(lit['value'])}")
    if others:
        click.echo(f"  also labelled {P(repr(card['label']))}: "
                   + ", ".join(P(r["key"]) for r in view.entity_rows(others[:10])))
    for g in groups:
        arrow = "→" if g["direction"] == "out" else "←"
        names = [f"{P(n['label'])} [{P(n['key'])}]" for n in g["neighbours"][:per_relation]]
        extra = len(g["neighbours"]) - len(names)
        click.echo(f"  {arrow} {P(g['relation_label'])} ({P(g['relation'])}, {len(g['neighbours'])}): "
                   + "; ".join(names) + (f"; … {extra} more" if extra > 0 else ""))


@click.command()
@click.argument("key_or_label")
@_kg
@click.option("--hops", default=1, type=click.IntRange(1, 3), show_default=True, help="Neighbourhood radius.")
@_json
@_page_opts(50)
def neighbors(key_or_label: str, kg: str, hops: int, as_json: bool, limit: int, offset: int) -> None:
    """Triples within --hops of an entity (paged)."""
    from mmkg.kg_store.rdf import neighbourhood_triples
    view = _view(kg)
    eid, _ = view.resolve(key_or_label)
    tids = neighbourhood_triples(view.store, [eid], hops)
    rows = view.triple_rows(tids[offset:offset + limit])
    if as_json:
        click.echo(safe_json({"entity": view.entity_rows([eid])[0]["key"], "hops": hops, "total": int(tids.size),
                              "offset": offset, "triples": rows}))
        return
    for r in rows:
        click.echo(f"{P(r['head_label'])} [{P(r['head'])}]\t{P(r['relation_label'])} [{P(r['relation'])}]\t"
                   f"{P(r['tail_label'])} [{P(r['tail'])}]")
    _more(offset + len(rows), int(tids.size))


def read_query_arg(query: str) -> str:
    """QUERY as given: the text, @FILE (bounded, UTF-8) or - for stdin."""
    from mmkg.kg_store.safe_io import UnsafeFileError, read_bounded
    if query == "-":
        return sys.stdin.read(1 << 20)
    if query.startswith("@"):
        try:
            return read_bounded(query[1:], 1 << 20).decode("utf-8")
        except UnsafeFileError as e:
            raise KGStoreError(f"cannot read query file: {e.detail}") from None
        except UnicodeDecodeError:
            raise KGStoreError(f"cannot read query file {query[1:]}: not UTF-8") from None
    return query


def _memory(_ctx, _param, value: str) -> int:
    from mmkg.kg_store.sizes import parse_size
    return parse_size(value)


def _sparql_bounds(prefix: str, *, max_rows: int, memory: str, rows_help: str, memory_help: str):
    """The bounds of one SPARQL evaluation (time, rows, memory) as options, `--{prefix}timeout` etc.:
    one declaration for `mmkg sparql` and `mmkg serve`'s endpoint."""
    options = [
        click.option(f"--{prefix}timeout", default=30.0, type=click.FloatRange(0, min_open=True), show_default=True,
                     help="Seconds each query may evaluate; then it stops."),
        click.option(f"--{prefix}max-rows", default=max_rows, type=click.IntRange(1), show_default=True,
                     help=rows_help),
        click.option(f"--{prefix}memory", default=memory, show_default=True, callback=_memory, help=memory_help),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


@click.command()
@click.argument("query")
@_kg
@_json
@_page_opts(100)
@_sparql_bounds("", max_rows=100_000, memory="2G",
                rows_help="Row cap: --offset + --limit may not exceed it (CONSTRUCT/DESCRIBE: triples).",
                memory_help="Memory budget of the evaluation (intermediate results); past it the query stops.")
@click.option("--allow-service", is_flag=True,
              help="Permit SERVICE clauses (federated queries send KG data to that server; the whole "
                   "query, requests included, has --timeout). Refused by default.")
def sparql(query: str, kg: str, as_json: bool, limit: int, offset: int, timeout: float, max_rows: int,
           memory: int, allow_service: bool) -> None:
    """Run a SPARQL query over the KG's persistent store (Oxigraph). QUERY is the text, @FILE, or - for stdin.

    Prefixes wd:, wdt:, rdfs:, schema:, foaf: are predefined (see kg_store/rdf.py for URIs).
    The KG's literals are included. The store is built on first use per KG version (or by `mmkg
    run`). Only the rows shown are computed (plus one, to tell whether more follow). No request
    leaves the machine: SERVICE needs --allow-service, FROM is refused.
    """
    from mmkg.kg_store.errors import ConfigError
    # the fast path reads only the manifest: no table, no pyarrow (one-shot queries are mostly startup)
    from pathlib import Path

    from mmkg.kg_store.sparql_query import check_syntax, refuse_outbound, run_query, term_text
    from mmkg.kg_store.sparql_store import current_meta_at, ensure_sparql_store
    query = read_query_arg(query)
    if offset + limit > max_rows:
        raise ConfigError(f"--offset + --limit = {offset + limit} exceeds the row cap {max_rows} (--max-rows)")
    refuse_outbound(query, allow_service=allow_service)
    meta = current_meta_at(kg)
    if meta is None:  # first use of this version: check the query, then build
        from mmkg.kg_store.rdf import PREFIXES
        check_syntax(query, {k: str(v) for k, v in PREFIXES.items()})
        meta = ensure_sparql_store(kg, echo=lambda m: click.echo(m, err=True))
    answer = run_query(Path(kg) / meta["path"], query, prefixes=meta["prefixes"], offset=offset, limit=limit,
                       timeout=timeout, max_rows=max_rows, memory=memory, allow_service=allow_service)
    if answer.type == "ASK":
        click.echo(json.dumps({"boolean": answer.ask}) if as_json else str(answer.ask).lower())
        return
    if answer.type == "CONSTRUCT":
        click.echo("\n".join(answer.ntriples if as_json else (P(line) for line in answer.ntriples)))
        return
    names = answer.vars
    page = [[term_text(c) for c in r] for r in answer.rows]
    if as_json:
        click.echo(safe_json({"vars": names, "total": answer.total, "more": answer.more, "offset": offset,
                              "rows": [dict(zip(names, r)) for r in page]}))
        return
    page = [[None if c is None else P(c) for c in r] for r in page]
    widths = [min(60, max([len(n)] + [len(c or "") for r in page for c in r[i:i + 1]])) for i, n in enumerate(names)]
    click.echo("  ".join(P(n).ljust(w) for n, w in zip(names, widths)))
    click.echo("  ".join("-" * w for w in widths))
    for r in page:
        click.echo("  ".join(("" if c is None else c)[:60].ljust(w) for c, w in zip(r, widths)))
    if answer.more:
        click.echo(f"… more rows (use --offset {offset + len(page)})")
    else:
        click.echo(f"({answer.total:,} rows)")


@click.command()
@_kg
@click.option("--format", "fmt", required=True, type=click.Choice(["nt", "ttl", "graphml", "gexf"]),
              help="nt/ttl: RDF (Oxigraph / rdflib writers); graphml/gexf: networkx writers.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Output file (written atomically).")
@click.option("--subgraph", default=None, metavar="KEYS",
              help="Only the triples within --hops of these entities (comma-separated keys or labels).")
@click.option("--hops", default=1, type=click.IntRange(1, 3), show_default=True)
@click.option("--no-annotations", is_flag=True,
              help="nt/ttl: exactly the ingested statements, relational and attribute (no derived labels, "
                   "descriptions, images).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json
def export(kg: str, fmt: str, out: str, subgraph: str | None, hops: int, no_annotations: bool, quiet: bool,
           as_json: bool) -> None:
    """Export the KG, or the neighbourhood of some entities, as N-Triples, Turtle, GraphML or GEXF."""
    from mmkg.kg_store import rdf
    store = open_store(kg)
    tids = None
    if subgraph is not None:
        view = _view(kg)
        seeds = [view.resolve(k)[0] for k in subgraph.split(",") if k.strip()]
        if not seeds:
            raise click.BadParameter("give at least one key or label", param_hint="--subgraph")
        tids = rdf.neighbourhood_triples(store, seeds, hops)
    total = store.count("triples") if tids is None else int(tids.size)
    with click.progressbar(length=total, label=f"export {fmt}", file=sys.stderr,
                           hidden=quiet or total == 0) as bar:
        done = [0]

        def progress(n: int, _total: int) -> None:
            bar.update(n - done[0])
            done[0] = n

        summary = rdf.export(store, out, fmt, tids, annotations=not no_annotations, progress=progress)
    if as_json:
        click.echo(safe_json(summary))
    else:
        extra = f", {summary['literals']:,} literals" if summary.get("literals") else ""
        click.echo(f"wrote {summary['triples']:,} triples{extra} to {P(summary['path'])} ({summary['bytes']:,} bytes)")
        if summary.get("literals_omitted"):
            click.echo(f"note: {summary['literals_omitted']:,} literal rows are not in {fmt} "
                       "(nodes and relational triples only); export nt or ttl to include them", err=True)


@click.command()
@_kg
@click.option("--port", default=8000, type=click.IntRange(0, 65535), show_default=True,
              help="TCP port on 127.0.0.1 (0: any free port; the URL is printed).")
@click.option("--trusted-host", "trusted_hosts", multiple=True, metavar="NAME",
              help="Also answer requests whose Host is NAME (repeatable); 127.0.0.1, localhost and ::1 always are.")
@_sparql_bounds("sparql-", max_rows=10_000, memory="1G",
                rows_help="Rows a /sparql answer may have (more: 400, add a LIMIT).",
                memory_help="Memory budget of each /sparql evaluation.")
def serve(kg: str, port: int, trusted_hosts: tuple[str, ...], sparql_timeout: float, sparql_max_rows: int,
          sparql_memory: int) -> None:
    """Serve the read-only analyst web view on http://127.0.0.1:PORT (localhost only), with the SPARQL
    1.1 Protocol at /sparql and a query page at /query."""
    from werkzeug.serving import make_server

    from mmkg.jobs.web.app import LiveApp
    from mmkg.kg_store.sparql_store import ensure_sparql_store
    ensure_sparql_store(kg, echo=lambda m: click.echo(m, err=True))
    # the version it opened stays pinned (gc keeps it) until a newer one is committed and swapped in
    app = LiveApp(kg, trusted_hosts=trusted_hosts, sparql_timeout=sparql_timeout,
                  sparql_max_rows=sparql_max_rows, sparql_memory=sparql_memory)
    # Loopback only: the view is read-only but has no authentication.
    server = make_server("127.0.0.1", port, app, threaded=True)
    click.echo(f"serving {kg} on http://127.0.0.1:{server.server_port}/ (Ctrl-C stops)", err=False)
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.close()


commands = [entity, neighbors, sparql, export, serve]
