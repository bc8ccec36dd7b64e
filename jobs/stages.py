"""The stages of `mmkg run`: ingest → sparql → embed → index → retrieve (→ train → evaluate).

A stage is a pair of plain functions whose keyword arguments are its config block in the
pipeline YAML (PyKEEN K3): `fingerprint(ctx, **config)` names what the stage reads (input
hashes; cheap) and `run(ctx, **config)` does the work and returns counts. The runner
(`jobs/runner.py`) compares (config hash, fingerprint) with the last matching run in the manifest
and calls `run` only when they differ. Every `run` is incremental where the data allows it:

* ingest: only sources whose files are new or changed are ingested (the store appends; ids stay);
* sparql: the persistent SPARQL store is rebuilt only when the tables it reads changed;
* embed: only texts/images the content-addressed cache has not seen are encoded;
* index: new vectors are appended to Flat/IVF indexes whose old rows are unchanged;
* retrieve: a shard set whose cache key is unchanged is reused; query vectors come from the cache.

Each `run` is a thin adapter over the one function of its stage in the layer that owns it
(`mmkg.pipeline.ingest.ingest`, `mmkg.pipeline.embed.embed_store`, `mmkg.retrieval.index.build_store_indexes`,
`mmkg.retrieval.batch.retrieve_dataset`, `mmkg.model.training.train`, `mmkg.model.evaluation.evaluate`), which
the stage's `mmkg` command calls too: the DAG adds only fingerprints, caching, locks and reports.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmkg.kg_store import open_store
from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.hashing import cache_key

log = logging.getLogger(__name__)

STAGE_ORDER = ("ingest", "sparql", "embed", "index", "retrieve", "train", "evaluate")
#: config keys that change how a stage runs but not what it produces: not part of its cache key
EXECUTION_KEYS = {"engine", "master", "shuffle_partitions", "spark_conf", "threads", "device", "spark_master",
                  "batch_size", "chunk_size", "use_gpu", "progress", "wait", "image_threads"}


@dataclass
class Context:
    """What every stage sees besides its own block: the KG root, the data dir, the encoder."""

    kg: Path
    data: Path | None
    encoder: str
    progress: bool = True

    def expand(self, text: str) -> str:
        """`{data}` in a config string → the data directory (so configs stay machine-independent)."""
        if "{data}" in text:
            if self.data is None:
                raise ConfigError(f"{text!r} uses {{data}} but no data directory is configured (--data)")
            return text.replace("{data}", str(self.data))
        return text


@dataclass
class Stage:
    name: str
    fingerprint: Callable[..., dict[str, Any]]
    run: Callable[..., dict[str, Any]]
    #: outputs recorded by the stage that must still be committed for a cache hit
    outputs: Callable[..., list[str]] = lambda ctx, **cfg: []


def stage_config_hash(config: dict[str, Any]) -> str:
    return cache_key({k: v for k, v in config.items() if k not in EXECUTION_KEYS})


def _file_sha(store, rel: str | None) -> str | None:
    return store.file_sha(rel)


# ==== ingest ====================================================================================
def ingest_sources(ctx: Context, sources: list[str] | str) -> list[str]:
    """Config sources → `FORMAT:ABSPATH` specs; `demo` (alone or as one entry of a list) means every
    demo input under the data dir, so a config can keep the demo inputs and add its own."""
    from mmkg.pipeline.demo_sources import demo_sources
    from mmkg.pipeline.readers.base import parse_source

    specs: list[str] = []
    for s in ([sources] if isinstance(sources, str) else list(sources)):
        if s != "demo":
            specs.append(ctx.expand(s))
            continue
        if ctx.data is None:
            raise ConfigError("ingest: `sources: demo` needs a data directory (`data:` or --data)")
        demo = demo_sources(ctx.data)
        if not demo:
            raise ConfigError(f"ingest: no demo inputs under {ctx.data}")
        specs.extend(demo)
    out = []
    for s in specs:
        spec = parse_source(s)
        spec.path = str(Path(spec.path).expanduser().resolve())
        out.append(str(spec))
    return out


def _source_digest(entry: dict[str, Any]) -> str:
    # the same digest on both sides of the comparison (the plan's files, the manifest's inputs)
    return cache_key([[Path(f["path"]).name, f["sha256"]] for f in entry["files"]])


def ingest_fingerprint(ctx: Context, *, sources: list[str] | str = "demo", **_: Any) -> dict[str, Any]:
    """{spec: digest of its files' sha256} — reads every input once (no parsing)."""
    from mmkg.pipeline.engines.plan import make_plan
    plan = make_plan(ingest_sources(ctx, sources), chunk_bytes=1 << 62)
    return {e["spec"]: _source_digest(e) for e in plan.inputs}


def ingested_sources(kg: Path) -> dict[str, str]:
    """{spec: digest} of everything the store has ingested (the last digest per spec wins)."""
    from mmkg.pipeline.readers.base import parse_source
    if not (kg / "manifest.json").exists():
        return {}
    out = {}
    for e in open_store(kg).inputs:
        if "spec" not in e:
            continue
        spec = parse_source(e["spec"])  # normalised like ingest_sources, so `../data/x` and `/abs/x` match
        spec.path = str(Path(spec.path).expanduser().resolve())
        out[str(spec)] = _source_digest(e)
    return out


def ingest_pending(ctx: Context, fingerprint: dict[str, str]) -> tuple[list[str], list[str]]:
    """(new specs, changed specs): what an ingest run must read."""
    have = ingested_sources(ctx.kg)
    new = [s for s in fingerprint if s not in have]
    changed = [s for s in fingerprint if s in have and have[s] != fingerprint[s]]
    return new, changed


def ingest_run(ctx: Context, *, sources: list[str] | str = "demo", engine: str = "local", master: str | None = None,
               shuffle_partitions: int | None = None, spark_conf: dict[str, str] | None = None,
               strict: bool = False, image_threads: int = 4) -> dict[str, Any]:
    from mmkg.pipeline.ingest import IngestRejectedError, ingest

    fp = ingest_fingerprint(ctx, sources=sources)
    new, changed = ingest_pending(ctx, fp)
    todo = [s for s in fp if s in new or s in changed]
    if changed:
        # The store is append-only (ids are stable), so a changed source adds its new records;
        # records it no longer has stay in the KG. Say so rather than pretend to delete them.
        log.warning("ingest: %d source(s) changed since they were ingested (%s); their new records are "
                    "appended, removed records are not deleted (rebuild into a fresh --kg for that)",
                    len(changed), ", ".join(changed))
    if not todo:
        return {"counts": {"sources_ingested": 0}, "note": "every source already ingested"}
    try:
        result = ingest(ctx.kg, todo, engine=engine, master=master or os.environ.get("MMKG_SPARK_MASTER"), shuffle_partitions=shuffle_partitions,
                        spark_conf=spark_conf, strict=strict, image_threads=image_threads)
    except IngestRejectedError as e:
        from mmkg.jobs.cli import StrictRejectsError
        raise StrictRejectsError(str(e)) from None
    c = result.counts
    return {"counts": {"sources_ingested": len(todo), "sources_new": len(new), "sources_changed": len(changed),
                       **{k: c[k] for k in ("entities", "entities_added", "relations", "relations_added", "triples",
                                            "triples_added", "images_added", "rejects_added", "duplicates")}},
            "rejects": int(c["rejects_added"]), "kg_version": result.store.kg_version,
            "note": f"ingested {len(todo)} of {len(fp)} sources"
                    + (" (the others were already in the store)" if len(todo) < len(fp) else "")}


def ingest_outputs(ctx: Context, **_: Any) -> list[str]:
    return []


# ==== sparql ====================================================================================
def sparql_fingerprint(ctx: Context, **_: Any) -> dict[str, Any]:
    from mmkg.kg_store.sparql_store import SOURCE_TABLES
    store = open_store(ctx.kg)
    return {name: store.table_fingerprint(name) for name in SOURCE_TABLES}


def sparql_run(ctx: Context, **_: Any) -> dict[str, Any]:
    from mmkg.kg_store.sparql_store import build_sparql_store
    meta = build_sparql_store(ctx.kg)
    return {"counts": {"statements": meta["statements"]}, "cache_hits": int(not meta["built"]),
            "note": (f"built {meta['path']}: {meta['statements']:,} statements in {meta['seconds']:.1f} s"
                     if meta["built"] else f"{meta['path']} already current (built on first use)")}


def sparql_outputs(ctx: Context, **_: Any) -> list[str]:
    from mmkg.kg_store.sparql_store import ARTIFACT
    meta = open_store(ctx.kg).artifact(ARTIFACT)
    return [meta["path"] + ".json"] if meta else []


# ==== embed =====================================================================================
def _vectors_rel(ctx: Context) -> str:
    from mmkg.kg_store.vectors import vectors_dir
    return vectors_dir(ctx.encoder)


def embed_fingerprint(ctx: Context, **_: Any) -> dict[str, Any]:
    store = open_store(ctx.kg)
    return {"kg_version": store.kg_version,
            **{name: store.table_fingerprint(name) for name in ("entities", "relations", "triples", "images")}}


def embed_kinds(retrieve: dict[str, Any] | None) -> list[str]:
    """The vector kinds a pipeline configuration uses (what its embed stage embeds unless its block
    names `kinds`): entity, relation and image vectors always, the rest as its retriever declares."""
    from mmkg.retrieval.retriever import RetrievalConfig, vector_kinds_needed
    from mmkg.kg_store.vectors import VECTOR_KINDS
    config = None
    if retrieve is not None and retrieve.get("enabled", True):
        config = RetrievalConfig(retriever=retrieve.get("retriever", "anchored"), seed_k=retrieve.get("seed_k", 0))
    needed = vector_kinds_needed(config)
    return [k for k in VECTOR_KINDS if k in needed]


def embed_run(ctx: Context, *, dtype: str = "float32", precision: str = "auto", runtime: str = "auto",
              engine: str = "local", batch_size: int = 64, device: str = "cpu", threads: int | None = None,
              chunk_size: int = 8192, spark_master: str | None = None,
              kinds: list[str] | None = None) -> dict[str, Any]:
    from mmkg.pipeline.embed import embed_store
    res = embed_store(ctx.kg, ctx.encoder, engine=engine, batch_size=batch_size, device=device, dtype=dtype,
                      precision=precision, runtime=runtime, threads=threads, chunk_size=chunk_size,
                      spark_master=spark_master, progress=ctx.progress, kinds=kinds)
    counts = {f"{k}_{what}": v for what, d in (("encoded", res.encoded), ("reused", res.reused)) for k, v in d.items()}
    return {"counts": counts, "cache_hits": res.cache_hits,
            "note": f"encoded {res.forwarded:,} new texts/images, reused {res.cache_hits:,} cached vectors "
                    f"on {res.meta.get('device', device)}"}  # device auto says here what it picked


def embed_outputs(ctx: Context, **_: Any) -> list[str]:
    store = open_store(ctx.kg)
    return store.files(_vectors_rel(ctx))


# ==== index =====================================================================================
def index_fingerprint(ctx: Context, *, kinds: list[str] | None = None, **_: Any) -> dict[str, Any]:
    from mmkg.retrieval.index import INDEXED_KINDS
    store = open_store(ctx.kg)
    base = _vectors_rel(ctx)
    return {k: _file_sha(store, f"{base}/{k}.npy") for k in (kinds or INDEXED_KINDS)
            if store.has_file(f"{base}/{k}.npy")}


def index_run(ctx: Context, *, kind: str = "auto", max_memory: int | str | None = None,
              target_recall: float = 0.95, kinds: list[str] | None = None, threads: int | None = None,
              use_gpu: bool | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    from mmkg.retrieval.index import build_store_indexes
    res = build_store_indexes(ctx.kg, ctx.encoder, kind=kind, max_memory=max_memory, target_recall=target_recall,
                              kinds=kinds, threads=threads, use_gpu=use_gpu, **(params or {}))
    on_gpu = sorted(k for k, m in res.meta.get("kinds", {}).items() if m.get("gpu"))
    return {"counts": res.counts, "decisions": res.decisions, "cache_hits": res.appended,
            "note": "; ".join(f"{k} {v}" for k, v in res.decisions.items())
                    + (f"; built on the GPU: {', '.join(on_gpu)}" if on_gpu else "")}


def index_outputs(ctx: Context, **_: Any) -> list[str]:
    from mmkg.retrieval.index import indexes_dir
    store = open_store(ctx.kg)
    return store.files(indexes_dir(ctx.encoder))


# ==== retrieve ==================================================================================
def _datasets(ctx: Context, datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in datasets:
        if "dataset" not in d:
            raise KGStoreError(f"retrieve: each dataset needs `dataset: NAME:PATH`, got {d}")
        out.append({"dataset": ctx.expand(d["dataset"]), "split": d.get("split"), "limit": d.get("limit")})
    return out


def retrieve_fingerprint(ctx: Context, *, datasets: list[dict[str, Any]] = (), **_: Any) -> dict[str, Any]:
    from mmkg.retrieval.datasets import resolve_dataset
    from mmkg.retrieval.index import indexes_dir
    from mmkg.retrieval.shards import limit_rule
    store = open_store(ctx.kg)
    fp: dict[str, Any] = {"graph": store.graph_rel,
                          **{n: store.table_fingerprint(n) for n in ("entities", "relations")}}
    base, ibase = _vectors_rel(ctx), indexes_dir(ctx.encoder)
    fp["triple_vectors"] = _file_sha(store, f"{base}/triple.npy")
    fp["entity_vectors"] = _file_sha(store, f"{base}/entity.npy")  # the anchored retriever's tie-break
    fp["indexes"] = {k: _file_sha(store, f"{ibase}/{k}.faiss") for k in ("triple", "entity")}
    for d in _datasets(ctx, list(datasets)):
        # every file the dataset split is defined by (MARS: the split, analogy_entities.txt,
        # train.json, the images folder): the digest the shard cache key holds too; a limit by the
        # rule that samples it (the shard key's `limit_rule`; no limit keeps the bare "None")
        fp[f"{d['dataset']}|{d['split']}|{limit_rule(d['limit'])}"] = resolve_dataset(d["dataset"]).digest(d["split"])
    return fp


def retrieve_run(ctx: Context, *, datasets: list[dict[str, Any]] = (), retriever: str = "anchored",
                 top_n: int = 10, top_N: int = 10, hops: int = 1, path_hops: int = 2, seed_k: int = 0,
                 named_entities: bool = False, image_weight: float = 0.5, prior_folds: int = 5, engine: str = "local",
                 device: str = "cpu", batch_size: int = 256) -> dict[str, Any]:
    from mmkg.retrieval.batch import retrieve_dataset
    from mmkg.retrieval.retriever import RetrievalConfig

    config = RetrievalConfig(encoder=ctx.encoder, retriever=retriever, top_n=top_n, top_N=top_N, hops=hops,
                             path_hops=path_hops, seed_k=seed_k, named_entities=named_entities,
                             image_weight=image_weight, prior_folds=prior_folds)
    results = {}
    for d in _datasets(ctx, list(datasets)):
        results[f"{d['dataset']}|{d['split']}"] = retrieve_dataset(
            ctx.kg, d["dataset"], config, split=d["split"], limit=d["limit"], engine=engine, device=device,
            batch_size=batch_size, progress=ctx.progress)
    queries = sum(r.queries for r in results.values())
    reused = sum(r.queries if r.reused else r.queries_reused for r in results.values())
    cached = sum(r.query_vectors_cached for r in results.values())
    return {"counts": {"queries": queries, "queries_reused": reused, "queries_recomputed": queries - reused,
                       "query_vectors_cached": cached,
                       "query_vectors_encoded": sum(r.query_vectors_encoded for r in results.values())},
            "rejects": sum(r.rejected for r in results.values()),
            "outputs": {k: str(r.shard_dir) for k, r in results.items()}, "cache_hits": reused,
            "note": f"{queries - reused:,} queries retrieved ({cached:,} query vectors from the cache), "
                    f"{reused:,} reused from cached shard sets"}


def retrieve_outputs(ctx: Context, **_: Any) -> list[str]:
    return []


# ==== train / evaluate (off by default) ============================================================
def _model_job(ctx: Context, config: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    from mmkg.jobs.commands.model import load_job_config
    job = load_job_config(ctx.expand(config))
    for k, v in (overrides or {}).items():
        target = job
        *parents, leaf = k.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = v
    job["kg"] = str(ctx.kg)  # the pipeline's KG, whatever the model config names
    return job


def model_fingerprint(ctx: Context, *, config: str, set: dict[str, Any] | None = None, enabled: bool = True,
                      **_: Any) -> dict[str, Any]:
    from mmkg.kg_store.hashing import sha256_file
    store = open_store(ctx.kg)
    shards = {k: v.get("cache_key") for k, v in store.artifacts("subgraphs/").items()}
    return {"config": sha256_file(ctx.expand(config)), "shards": cache_key(shards)}


def _model_run(fn_path: str, ctx: Context, config: str, set: dict[str, Any] | None) -> dict[str, Any]:
    import importlib
    module, _, name = fn_path.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    out = fn(**_model_job(ctx, config, set))
    return {"counts": {k: v for k, v in (out or {}).items() if isinstance(v, (int, float))}, "result": out}


def train_run(ctx: Context, *, config: str, set: dict[str, Any] | None = None, enabled: bool = True) -> dict[str, Any]:
    return _model_run("mmkg.model.training.train", ctx, config, set)


def evaluate_run(ctx: Context, *, config: str, set: dict[str, Any] | None = None,
                 enabled: bool = True) -> dict[str, Any]:
    return _model_run("mmkg.model.evaluation.evaluate", ctx, config, set)


STAGES: dict[str, Stage] = {
    "ingest": Stage("ingest", ingest_fingerprint, ingest_run, ingest_outputs),
    "sparql": Stage("sparql", sparql_fingerprint, sparql_run, sparql_outputs),
    "embed": Stage("embed", embed_fingerprint, embed_run, embed_outputs),
    "index": Stage("index", index_fingerprint, index_run, index_outputs),
    "retrieve": Stage("retrieve", retrieve_fingerprint, retrieve_run, retrieve_outputs),
    "train": Stage("train", model_fingerprint, train_run),
    "evaluate": Stage("evaluate", model_fingerprint, evaluate_run),
}
