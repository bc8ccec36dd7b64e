"""`mmkg ingest`: sources → a new version of the KG store (Spark by default, or in-process)."""
from __future__ import annotations

import json
import os
from typing import Any

import click

#: where `--master` comes from when not given: this env var, then the config file, then local[*]
MASTER_ENV = "MMKG_SPARK_MASTER"


def _load_config(path: str | None) -> dict[str, Any]:
    """The `ingest:` block of a YAML config (keyword arguments of `mmkg.pipeline.ingest.ingest`)."""
    if not path:
        return {}
    from mmkg.jobs.config import read_yaml_file
    doc = read_yaml_file(path, "ingest config") or {}
    if not isinstance(doc, dict):
        raise click.ClickException(f"{path}: expected a mapping")
    block = doc.get("ingest", doc.get("job", doc))
    if not isinstance(block, dict):
        raise click.ClickException(f"{path}: expected a mapping under 'ingest:'")
    return block


def print_summary(result, *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"counts": result.counts, "inputs": [
            {"source": i["source"], "counts": i["counts"]} for i in result.inputs],
            "kg_version": result.store.kg_version, "seconds": result.seconds, "phases": result.phases},
            sort_keys=True))
        return
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items())
    click.echo(f"kg_version {result.store.kg_version} at {result.store.root} ({result.seconds:.1f} s: {phases})")
    for i in result.inputs:
        c = i["counts"]
        click.echo(f"  {i['source']:<52} read {c['read']:>8,}  accepted {c['accepted']:>8,}  "
                   f"rejected {c['rejected']:>6,}  duplicates {c['duplicates']:>7,}")
    c = result.counts
    click.echo(f"  entities {c['entities']:,} ({c['merged_keys']:,} keys merged into {c['merged_entities']:,} "
               f"entities)  relations {c['relations']:,}  triples {c['triples']:,}  literals {c['literals']:,}  "
               f"images {c['images']:,}  rejects {c['rejects']:,}")
    click.echo(rejects_line(result))


def rejects_line(result) -> str:
    """The summary's rejects line: this ingest's count, its commonest reasons, where the rest are."""
    added = int(result.counts.get("rejects_added", 0))
    if not added:
        return "rejects: none in this ingest"
    from collections import Counter
    from mmkg.jobs.terminal import printable
    rows = result.store.table("rejects", ["reason"])
    top = Counter(rows.slice(rows.num_rows - added)["reason"].to_pylist()).most_common(3)
    reasons = "; ".join(f"{printable(str(r))[:80]} ({n:,})" for r, n in top)
    return (f"rejects: {added:,} input records rejected in this ingest: {reasons}"
            f"{' …' if len(top) == 3 else ''}; all of them: mmkg sql --kg {result.store.root} "
            "\"SELECT source, location, reason FROM rejects\"")


SOURCES_HELP = """\b
Source formats (FORMAT:PATH, options as FORMAT(k=v,...):PATH; docs/SOURCES.md):
  markg:DIR        MarKG entity/relation texts + wiki_tuple_ids.txt
  mmkg:FILE        MMKG `<h> <r> <t> .` entity triples
  sameas:FILE      MMKG sameAs links (merge entities)
  image-index:FILE MMKG `<uri> TAB DBIMG…` image folder ids
  literals:FILE    `entity TAB attribute TAB value`   (base=IRI)
  fbmap:FILE       FB15K mid → Wikidata/Wikipedia map
  openke:DIR       OpenKE entity2id/relation2id/*2id
  tsv:FILE         `head TAB relation TAB tail`; header columns head_label,
                   relation_label, tail_label, *_description add labels
  rdf:FILE         .nt .nq .ttl .trig .rdf .jsonld .trix .n3
                   (base=IRI, max_mib=N, format=F)
  images:DIR|TSV   DIR/<key>/<files> or a mapping TSV
                   (root=DIR, file_column=NAME, key_column=NAME)
  demo             every demo input under --data DIR; composes with the others
Wikidata IRIs (wd:, wdt:, …/entity/Q42, …/prop/direct/P31) become Q42 / P31
keys. Each source is named FORMAT:FILENAME, with parent folders where two
paths share a name. Rejected lines are counted per source and listed in the
store's `rejects` table.
"""


def _with_demo(sources: list[str], data_dir: str | None) -> list[str]:
    """`demo` (alone or among other specs) → every demo input present under the data folder."""
    if "demo" not in sources:
        return sources
    if not data_dir:
        raise click.UsageError("--source demo needs --data DIR (the shared data folder, e.g. ../shared/data)")
    from mmkg.pipeline.demo_sources import demo_sources
    return [x for s in sources for x in (demo_sources(data_dir) if s == "demo" else [s])]


@click.command(epilog=SOURCES_HELP)
@click.option("--kg", required=True, type=click.Path(file_okay=False), help="KG directory (created if missing).")
@click.option("--source", "sources", multiple=True, metavar="FORMAT:PATH",
              help="Input, repeatable; the formats and their options are listed below.")
@click.option("--engine", type=click.Choice(["spark", "local"]), default=None,
              help="spark (default; mapInArrow) or local (in-process pyarrow). Both give identical stores.")
@click.option("--master", default=None, help=f"Spark master URL (default: ${MASTER_ENV}, config, local[*]).")
@click.option("--shuffle-partitions", type=int, default=None, help="spark.sql.shuffle.partitions (default: by size).")
@click.option("--conf", "confs", multiple=True, metavar="KEY=VALUE", help="Extra Spark config, repeatable.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML whose `ingest:` block gives defaults for these options (sources, engine, master, …).")
@click.option("--strict", is_flag=True, help="Exit 3 and commit nothing if any record is rejected.")
@click.option("--base", default=None, metavar="IRI",
              help="Base IRI of relative IRIs in rdf: sources without their own rdf(base=IRI):FILE "
                   "(without one, relative IRIs are rejected).")
@click.option("--force", is_flag=True,
              help="Create the store even in a non-empty directory that is not a KG store (refused otherwise, exit 2).")
@click.option("--data", "data_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="The shared data folder that `--source demo` (every demo input) reads.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def ingest(kg, sources, engine, master, shuffle_partitions, confs, config_path, strict, base, force,
           data_dir, as_json) -> None:
    """Ingest sources into the KG store as a new version (ids of existing entities are kept)."""
    from mmkg.jobs.cli import StrictRejectsError
    from mmkg.pipeline.ingest import IngestRejectedError, ingest as run_ingest

    cfg = _load_config(config_path)
    sources = list(sources) or list(cfg.get("sources", []))
    if not sources:
        raise click.UsageError("give at least one --source FORMAT:PATH (or `sources:` in --config)")
    sources = _with_demo(sources, data_dir or cfg.get("data"))
    conf = dict(cfg.get("spark_conf", {}) or {})
    for item in confs:
        k, sep, v = item.partition("=")
        if not sep:
            raise click.UsageError(f"--conf {item!r}: expected KEY=VALUE")
        conf[k] = v
    try:
        result = run_ingest(
            kg, sources, engine=engine or cfg.get("engine", "spark"),
            master=master or os.environ.get(MASTER_ENV) or cfg.get("master"),
            shuffle_partitions=shuffle_partitions or cfg.get("shuffle_partitions"),
            spark_conf=conf or None, strict=strict, force=force, base=base or cfg.get("base"))
    except IngestRejectedError as e:
        raise StrictRejectsError(str(e)) from None
    print_summary(result, as_json=as_json)


commands = [ingest]
