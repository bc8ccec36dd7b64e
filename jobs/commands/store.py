"""Store-level commands: stats, verify, ls, and versions: versions, diff, rollback."""
from __future__ import annotations

import click

from mmkg.jobs.terminal import printable as P, safe_json
from mmkg.kg_store import open_store


def _counts_by(table, column: str) -> dict[str, int]:
    """Value counts of one column, most frequent first (nulls shown as "")."""
    if table.num_rows == 0:
        return {}
    vc = table[column].combine_chunks().value_counts()
    pairs = [("" if v is None else str(v), int(c)) for v, c in
             zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())]
    return dict(sorted(pairs, key=lambda p: (-p[1], p[0])))


def degree_summary(degree) -> dict:
    """Degree distribution: quantiles plus power-of-two buckets (degree is heavy-tailed)."""
    import numpy as np
    deg = np.asarray(degree, dtype=np.int64)
    if deg.size == 0:
        return {"nodes": 0}
    edges = [0, 1, 2]
    while edges[-1] <= deg.max():
        edges.append(edges[-1] * 2)
    counts, _ = np.histogram(deg, bins=edges)
    return {
        "nodes": int(deg.size), "isolated": int((deg == 0).sum()), "min": int(deg.min()),
        "max": int(deg.max()), "mean": round(float(deg.mean()), 3), "median": float(np.median(deg)),
        # rounded: percentiles interpolate, and 67.90000000000146 is noise to a reader
        "p90": round(float(np.percentile(deg, 90)), 2), "p99": round(float(np.percentile(deg, 99)), 2),
        "histogram": [{"lo": lo, "hi": hi - 1, "count": int(c)} for lo, hi, c in zip(edges, edges[1:], counts)],
    }


def relation_frequency(store, top: int | None = None) -> list[dict]:
    """Triples per relation, most frequent first: [{key, label, count}]."""
    import numpy as np
    r = store.table("triples", ["r"])["r"].to_numpy()
    counts = np.bincount(r, minlength=store.num_relations)
    from mmkg.kg_store.rdf import dense_by_id
    rel = dense_by_id(store.table("relations", ["id", "key", "label"]))  # row i = relation id i
    keys, labels = rel["key"].to_pylist(), rel["label"].to_pylist()
    order = sorted((i for i in range(len(counts)) if counts[i]), key=lambda i: (-counts[i], keys[i]))
    return [{"key": keys[i], "label": labels[i] or "", "count": int(counts[i])} for i in order[:top]]


def analyst_stats(store, top: int = 20) -> dict:
    """The analyst's counts beyond `store.stats()` (issue 9): per source, relations, degree,
    image coverage, rejects by reason. Cheap: column reads, the CSR indptr, no graph objects."""
    import pyarrow as pa
    import pyarrow.compute as pc
    by_source = {name: _counts_by(store.table(name, ["source"]), "source")
                 for name in ("entities", "relations", "triples", "same_as", "images", "literals")}
    from mmkg.kg_store.depictions import depiction_triples, entities_with_images
    with_images = int(entities_with_images(store).size)  # stored images and foaf:depiction triples, once each
    n_ent = store.num_entities
    rejects = store.table("rejects", ["stage", "reason"])
    joined = pa.table({"k": pc.binary_join_element_wise(
        pc.fill_null(rejects["stage"], ""), pc.fill_null(rejects["reason"], ""), "/")}) if rejects.num_rows else None
    out = {
        "by_source": {k: v for k, v in by_source.items() if v},
        "relation_frequency": relation_frequency(store, top),
        "relations_used": len(relation_frequency(store)),
        "image_coverage": {"entities_with_images": with_images, "entities": n_ent,
                           "fraction": round(with_images / n_ent, 4) if n_ent else 0.0,
                           "stored_images": store.count("images"),
                           "depiction_triples": int(depiction_triples(store).size)},
        "rejects_by_reason": _counts_by(joined, "k") if joined is not None else {},
    }
    if store.graph_rel:
        out["degree"] = degree_summary(store.graph.degree())
    return out


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--top", default=20, show_default=True, help="How many relations to list by frequency.")
def stats(kg: str, as_json: bool, top: int) -> None:
    """Counts of the committed KG version: totals, per source, relations, degree, images, rejects."""
    store = open_store(kg)
    s = store.stats()
    s.update(analyst_stats(store, top=top))
    if as_json:
        click.echo(safe_json(s, sort_keys=True))
        return
    for k, v in s.items():
        if isinstance(v, int):
            click.echo(f"{k:>14}: {v:,}")
        elif not isinstance(v, (dict, list)):
            click.echo(f"{k:>14}: {v}")
    for table, counts in s["by_source"].items():
        click.echo(f"{table} by source: " + ", ".join(f"{P(src) or '-'} {n:,}" for src, n in counts.items()))
    cov = s["image_coverage"]
    click.echo(f"image coverage: {cov['entities_with_images']:,} of {cov['entities']:,} entities "
               f"({100 * cov['fraction']:.1f} %)")
    if "degree" in s and s["degree"]["nodes"]:
        d = s["degree"]
        click.echo(f"degree: min {d['min']}, median {d['median']:g}, mean {d['mean']:g}, p99 {d['p99']:g}, "
                   f"max {d['max']}, isolated {d['isolated']:,}")
        for b in d["histogram"]:
            rng = f"{b['lo']}" if b["lo"] == b["hi"] else f"{b['lo']}-{b['hi']}"
            click.echo(f"  {rng:>11}: {b['count']:,}")
    click.echo(f"top {len(s['relation_frequency'])} of {s['relations_used']} relations used:")
    for rf in s["relation_frequency"]:
        click.echo(f"  {rf['count']:>9,}  {P(rf['key'])}  {P(rf['label'])}")
    if s["rejects_by_reason"]:
        click.echo("rejects by stage/reason:")
        for reason, n in s["rejects_by_reason"].items():
            click.echo(f"  {n:>9,}  {P(reason)}")


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory.")
def verify(kg: str) -> None:
    """Re-hash every committed file against the manifest (and recount the SPARQL store)."""
    from mmkg.kg_store.sparql_store import verify_sparql_store
    store = open_store(kg)
    problems = store.verify() + verify_sparql_store(store)
    for p in problems:
        click.echo(f"BAD {P(p)}")
    if problems:
        raise click.ClickException(f"{len(problems)} of {len(store.files())} files failed verification")
    click.echo(f"ok: {len(store.files())} files verified (kg_version {store.kg_version})")


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
def versions(kg: str, as_json: bool) -> None:
    """The KG's versions, oldest first: time, last stage, rows per table, sources, restorable."""
    from mmkg.kg_store.versions import list_versions
    rows = list_versions(kg)
    if as_json:
        click.echo(safe_json(rows, sort_keys=True))
        return
    for r in rows:
        counts = ", ".join(f"{n} {c:,}" if c is not None else f"{n} ?" for n, c in r["counts"].items() if c != 0)
        state = "current" if r.get("current") else "restorable" if r["restorable"] else \
            f"files gone ({P(', '.join(r['missing'][:2]))}…)"
        click.echo(f"v{r['version']:<4} {P(r['time'] or '-')}  {P(r['last_stage'] or '-'):<9} {state}")
        click.echo(f"      {counts or 'empty'}")
        click.echo(f"      sources: {P(', '.join(r['sources'])) or '-'}")


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory.")
@click.argument("a", type=int)
@click.argument("b", type=int)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0), help="Triples listed per side.")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="Skip this many triples per side.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def diff(kg: str, a: int, b: int, limit: int, offset: int, as_json: bool) -> None:
    """What changed from version A to version B: rows added/removed per table, and the
    added/removed triples with labels (paged with --limit/--offset)."""
    from mmkg.kg_store.version_diff import diff_versions
    out = diff_versions(kg, a, b, limit=limit, offset=offset)
    if as_json:
        click.echo(safe_json(out, sort_keys=True))
        return
    click.echo(f"v{a} → v{b}")
    for name, t in out["tables"].items():
        click.echo(f"  {name:>9}: +{t['added']:,} -{t['removed']:,}  ({t['rows_a']:,} → {t['rows_b']:,} rows)")
    tr = out["triples"]
    for sign, what in (("+", "added"), ("-", "removed")):
        rows = tr[what]
        if rows:
            shown = f"{offset + 1}-{offset + len(rows)} of {tr[what + '_total']:,}"
            click.echo(f"{what} triples ({shown}):")
        for r in rows:
            click.echo(f"  {sign} {P(r['h_key'])} ({P(r['h_label'] or '')})  {P(r['r_key'])} ({P(r['r_label'] or '')})"
                       f"  {P(r['t_key'])} ({P(r['t_label'] or '')})")


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory.")
@click.argument("version", type=int)
@click.option("--wait", default=0.0, show_default=True, type=click.FloatRange(0), help="Seconds to wait for the lock.")
def rollback(kg: str, version: int, wait: float) -> None:
    """Make VERSION current again, with every file it had (vectors, indexes, shards, priors),
    committed as a new version; refused when `mmkg gc` already reclaimed one of its files."""
    from mmkg.kg_store.versions import rollback as roll_back
    out = roll_back(kg, version, wait=wait)
    click.echo(f"rolled back to v{out['to_version']}: now kg_version {out['kg_version']} "
               f"({out['files']} files, {len(out['restored'])} restored from kept copies)")


@click.command(name="ls")
def list_registries() -> None:
    """List every registered plugin family and its names."""
    from mmkg.kg_store.registry import ALL
    import mmkg.jobs.plugins  # noqa: F401  (imports the modules that register plugins)
    for fam, reg in sorted(ALL.items()):
        click.echo(f"{fam}: {', '.join(reg.names())}")


commands = [stats, verify, list_registries, versions, diff, rollback]
