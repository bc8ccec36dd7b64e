"""`mmkg retrieve` (subgraph shards for a dataset split) and `mmkg leakage` (train/test overlap)."""
from __future__ import annotations

import json

import click


def _one_of(name: str, value, alias_name: str, alias, default):
    """An option given under its name or its old (hidden) alias, not both."""
    if value is not None and alias is not None and value != alias:
        raise click.UsageError(f"{name} and {alias_name} are the same option; give one")
    return value if value is not None else alias if alias is not None else default


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False, exists=True), help="KG directory.")
@click.option("--encoder", default="minilm", show_default=True, help="Encoder whose vectors and index to use.")
@click.option("--dataset", required=True, help="scienceqa:PATH | mars:PATH | jsonl:PATH")
@click.option("--split", default=None, help="Split (ScienceQA `split` field, MARS file stem); default test/file.")
@click.option("--seed-triples", "top_n", default=None, type=click.IntRange(0),
              help="Seed triples taken by cosine from the triple index (the paper's n)  [default: 10]")
@click.option("--triples", "top_N", default=None, type=click.IntRange(1),
              help="Triples kept per query (the paper's N; 10 or 20)  [default: 10]")
@click.option("--top-n", "top_n_alias", default=None, type=click.IntRange(0), hidden=True)
@click.option("--top-N", "top_N_alias", default=None, type=click.IntRange(1), hidden=True)
@click.option("--hops", default=1, show_default=True, type=click.IntRange(1), help="Expansion depth on the graph.")
@click.option("--seed-k", default=0, show_default=True, type=click.IntRange(0),
              help="Extra seed entities by cosine from the entity index (0 = off).")
@click.option("--retriever", default="anchored", show_default=True,
              help="anchored (paths from the query's entities, learned path-type prior) | mrmkg (the paper's "
                   "scheme) | pcst (G-Retriever).")
@click.option("--path-hops", default=2, show_default=True, type=click.IntRange(1, 2),
              help="Longest path from an anchor (anchored).")
@click.option("--prior-folds", default=5, show_default=True, type=click.IntRange(1),
              help="Folds of the path prior (anchored): a query that is a row of the prior's own train split is "
                   "ranked with the prior fitted on the other folds; 1 = in-sample.")
@click.option("--named-entities/--no-named-entities", default=False, show_default=True,
              help="Add the entities the query names to the seeds (mrmkg; off in the paper's scheme).")
@click.option("--limit", default=None, type=click.IntRange(1),
              help="Only N queries, a seeded random sample kept in file order (trials).")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True)
@click.option("--device", default="cpu", show_default=True,
              help="Device of the query encoder: auto (CUDA when present) | cpu | cuda[:N] (an error without CUDA).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--force", is_flag=True, help="Recompute even when cached shards match.")
def retrieve(kg, encoder, dataset, split, top_n, top_N, top_n_alias, top_N_alias, hops, seed_k, retriever, path_hops,
             prior_folds, named_entities, limit, engine, device, batch_size, force) -> None:
    """Retrieve each query's top-N 1-hop subgraph into shards; prints the shard directory."""
    from mmkg.pipeline.device import resolve_device
    from mmkg.retrieval.batch import retrieve_dataset
    from mmkg.retrieval.retriever import RetrievalConfig

    top_n = _one_of("--seed-triples", top_n, "--top-n", top_n_alias, 10)
    top_N = _one_of("--triples", top_N, "--top-N", top_N_alias, 10)
    resolve_device(device)  # a device this machine lacks fails now, in one line, before any work

    config = RetrievalConfig(encoder=encoder, retriever=retriever, top_n=top_n, top_N=top_N, hops=hops,
                             path_hops=path_hops, seed_k=seed_k, named_entities=named_entities,
                             prior_folds=prior_folds)
    res = retrieve_dataset(kg, dataset, config, split=split, limit=limit, force=force, engine=engine,
                           device=device, batch_size=batch_size, progress=True)
    q = res.reports.get("quality", {})
    if res.reused:
        click.echo(f"reusing cached shards ({res.queries} queries, key {res.shard_dir.name}); "
                   "--force recomputes", err=True)
    else:
        click.echo(f"retrieved {res.queries} queries ({q.get('empty', 0)} empty) in "
                   f"{q.get('retrieve_seconds')} s with {engine}", err=True)
    rejected = res.reports.get("rejects", {}).get("count", 0)
    if rejected:
        click.echo(f"{rejected} query record(s) rejected: see {res.shard_dir / 'rejects.json'}", err=True)
    for n, h in sorted(q.get("hits", {}).items(), key=lambda kv: int(kv[0])):
        click.echo(f"answer in subgraph @N={n}: {h['answer_in_subgraph']:.3f} "
                   f"(random from the same pool {h['random_pool_baseline']:.3f})", err=True)
    click.echo(str(res.shard_dir))


@click.command()
@click.option("--kg", required=True, type=click.Path(file_okay=False, exists=True), help="KG directory.")
@click.option("--dataset", required=True, help="scienceqa:PATH | mars:PATH (a directory covers its splits)")
@click.option("--split", "splits", multiple=True, help="Splits to check (default: MARS dev+test, ScienceQA val+test).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
def leakage(kg, dataset, splits, out) -> None:
    """Train/KG leakage per split, plus direct question–answer triples in existing MARS shards."""
    from mmkg.kg_store import atomic, open_store
    from mmkg.retrieval.reports import leakage_for_dataset

    report = leakage_for_dataset(open_store(kg), dataset, list(splits) or None)
    text = json.dumps(report, indent=2, sort_keys=True)
    if out:
        atomic.write_bytes(out, (text + "\n").encode())
    click.echo(text)


commands = [retrieve, leakage]
