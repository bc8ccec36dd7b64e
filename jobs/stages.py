"""The stages of `mmkg run`: ingest → embed → index → retrieve (→ train → evaluate).

A stage is a pair of plain functions whose keyword arguments are its config block in the
pipeline YAML (PyKEEN K3): `fingerprint(ctx, **config)` names what the stage reads (input
hashes; cheap) and `run(ctx, **config)` does the work and returns counts. The runner
(`jobs/runner.py`) compares (config hash, fingerprint) with the last matching run in the manifest
and calls `run` only when they differ. Every `run` is incremental where the data allows it:

* ingest: only sources whose files are new or changed are ingested (the store appends; ids stay);
* embed: only texts/images the content-addressed cache has not seen are encoded (pipeline/incremental.py);
* index: new vectors are appended to Flat/IVF indexes whose old rows are unchanged; HNSW, a type
  change chosen by `auto`, or IVF lists outgrown 2× are rebuilt, and the reason is reported;
* retrieve: per query, the previous subgraph is reused when its seeds, query text and candidate pool
  cannot have changed (no new triple within `hops` of the seeds, old triple vectors byte-identical);
  only the others are recomputed.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kg_store import open_store
from kg_store.errors import KGStoreError
from kg_store.hashing import config_hash

log = logging.getLogger(__name__)

STAGE_ORDER = ("ingest", "embed", "index", "retrieve", "train", "evaluate")
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
                raise KGStoreError(f"{text!r} uses {{data}} but no data directory is configured (--data)")
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
    return config_hash({k: v for k, v in config.items() if k not in EXECUTION_KEYS})


def _file_sha(store, rel: str | None) -> str | None:
    return store.manifest["files"].get(rel, {}).get("sha256") if rel else None


# ==== ingest ====================================================================================
def ingest_sources(ctx: Context, sources: list[str] | str) -> list[str]:
    """Config sources → `FORMAT:ABSPATH` specs; `demo` means every demo input under the data dir."""
    from pipeline.demo_sources import demo_sources
    from pipeline.readers.base import parse_source

    if sources == "demo":
        if ctx.data is None:
            raise KGStoreError("ingest: `sources: demo` needs a data directory (`data:` or --data)")
        specs = demo_sources(ctx.data)
        if not specs:
            raise KGStoreError(f"ingest: no demo inputs under {ctx.data}")
    else:
        specs = [ctx.expand(s) for s in sources]
    out = []
    for s in specs:
        spec = parse_source(s)
        spec.path = str(Path(spec.path).expanduser().resolve())
        out.append(str(spec))
    return out


def _source_digest(entry: dict[str, Any]) -> str:
    return hashlib.sha256(";".join(f"{Path(f['path']).name}:{f['sha256']}" for f in entry["files"])
                          .encode()).hexdigest()[:16]


def ingest_fingerprint(ctx: Context, *, sources: list[str] | str = "demo", **_: Any) -> dict[str, Any]:
    """{spec: digest of its files' sha256} — reads every input once (no parsing)."""
    from pipeline.engines.plan import make_plan
    plan = make_plan(ingest_sources(ctx, sources), chunk_bytes=1 << 62)
    return {e["spec"]: _source_digest(e) for e in plan.inputs}


def ingested_sources(kg: Path) -> dict[str, str]:
    """{spec: digest} of everything the store has ingested (the last digest per spec wins)."""
    from pipeline.readers.base import parse_source
    if not (kg / "manifest.json").exists():
        return {}
    out = {}
    for e in open_store(kg).manifest.get("inputs", []):
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
    from pipeline.ingest import IngestRejectedError, ingest

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
        from jobs.cli import StrictRejectsError
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


# ==== embed =====================================================================================
def _vectors_rel(ctx: Context) -> str:
    from kg_store.vectors import vectors_dir
    return vectors_dir(ctx.encoder)


def embed_fingerprint(ctx: Context, **_: Any) -> dict[str, Any]:
    store = open_store(ctx.kg)
    tables = store.manifest["tables"]
    return {"kg_version": store.kg_version,
            **{name: _file_sha(store, tables.get(name)) for name in ("entities", "relations", "triples", "images")}}


def embed_run(ctx: Context, *, dtype: str = "float32", precision: str = "auto", engine: str = "local",
              batch_size: int = 64, device: str = "cpu", threads: int | None = None, chunk_size: int = 8192,
              spark_master: str | None = None) -> dict[str, Any]:
    from pipeline.incremental import embed_incremental, reused_counts
    meta = embed_incremental(ctx.kg, ctx.encoder, engine=engine, batch_size=batch_size, device=device, dtype=dtype,
                             precision=precision, threads=threads, chunk_size=chunk_size, spark_master=spark_master,
                             progress=ctx.progress)
    counts = reused_counts(meta)
    encoded = sum(v for k, v in counts.items() if k.endswith("_encoded"))
    reused = sum(v for k, v in counts.items() if k.endswith("_reused"))
    return {"counts": counts, "cache_hits": reused,
            "note": f"encoded {encoded:,} new texts/images, reused {reused:,} cached vectors"}


def embed_outputs(ctx: Context, **_: Any) -> list[str]:
    store = open_store(ctx.kg)
    base = _vectors_rel(ctx)
    return sorted(f for f in store.manifest["files"] if f.startswith(base + "/"))


# ==== index =====================================================================================
def index_fingerprint(ctx: Context, *, kinds: list[str] | None = None, **_: Any) -> dict[str, Any]:
    from retrieval.index import INDEXED_KINDS
    store = open_store(ctx.kg)
    base = _vectors_rel(ctx)
    return {k: _file_sha(store, f"{base}/{k}.npy") for k in (kinds or INDEXED_KINDS)
            if f"{base}/{k}.npy" in store.manifest["files"]}


def _append_plan(prev: dict[str, Any] | None, inc: dict[str, Any] | None, old_ids: np.ndarray | None,
                 ids: np.ndarray, spec_type: str, cfg_hash: str) -> tuple[bool, str]:
    """(append?, why) for one vector kind."""
    if prev is None:
        return False, "no previous index"
    if prev.get("dag_config_hash") != cfg_hash:
        return False, "index config changed"
    if prev.get("type") != spec_type:
        return False, f"index type changes from {prev.get('type')} to {spec_type} at this size"
    if prev["type"] == "hnsw":
        return False, "HNSW is rebuilt (inserting into a built graph would not equal a fresh build)"
    if not inc or inc.get("prev_sha256") != prev.get("vectors_sha256"):
        return False, "vectors were not derived from the indexed ones"
    n_old = int(prev["ntotal"])
    if inc.get("prefix_rows", 0) < n_old or old_ids is None or len(ids) < n_old \
            or not np.array_equal(old_ids, ids[:n_old]):
        return False, "indexed rows changed (e.g. an entity gained an image)"
    if prev["type"] in ("ivf", "ivfpq") and len(ids) > 2 * int(prev.get("trained_ntotal", n_old)):
        return False, "IVF lists outgrown (more than 2x the vectors they were trained on): retrained"
    return True, f"appended {len(ids) - n_old:,} vectors to {n_old:,}"


def _drop_self(found: np.ndarray, qrows: np.ndarray, k: int) -> np.ndarray:
    """Each query's own row removed from its hits, k kept (leave-one-out, as retrieval.index does)."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for i, (row, q) in enumerate(zip(found, qrows)):
        kept = row[row != q][:k]
        out[i, :len(kept)] = kept
    return out


def _recheck(vi: Any, x: np.ndarray, target: float, seed: int = 0, check_queries: int = 1000) -> None:
    """Recall@10 self-check of an appended index; raise nprobe (powers of two) if it fell below target.

    The lists were trained on the old vectors; new ones are assigned to the nearest list, so
    recall can drift as an IVF index grows: measured again after every append."""
    from retrieval.index import CHECK_K, exact_topk, recall_at_k
    n = len(x)
    if n < 2 or vi.meta.get("type") == "flat":
        vi.meta["self_check"] = {**vi.meta.get("self_check", {}), "recall": 1.0}
        return
    rng = np.random.default_rng(seed)
    qrows = np.sort(rng.choice(n, min(check_queries, n), replace=False))
    k = min(CHECK_K, n - 1)
    truth = _drop_self(exact_topk(x, x[qrows], k + 1), qrows, k)

    def recall() -> float:
        return recall_at_k(_drop_self(vi.index.search(x[qrows], k + 1)[1], qrows, k), truth)

    r = recall()
    params = vi.meta.setdefault("params", {})
    if vi.meta.get("type") in ("ivf", "ivfpq"):
        nprobe, nlist = int(params.get("nprobe") or 1), int(params["nlist"])
        while r < target and nprobe < nlist:
            nprobe = min(nprobe * 2, nlist)
            vi.apply_search_params({"nprobe": nprobe})
            r = recall()
        params["nprobe"] = nprobe
    vi.meta["self_check"] = {"k": k, "queries": int(len(qrows)), "recall": round(r, 4), "target": target}


def index_run(ctx: Context, *, kind: str = "auto", max_memory: int | str | None = None,
              target_recall: float = 0.95, kinds: list[str] | None = None, threads: int | None = None,
              use_gpu: bool | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    from kg_store import KGStore
    from kg_store.vectors import encoder_slug, load_vectors, vector_meta, vectors_dir
    from retrieval.index import (INDEXED_KINDS, VectorIndex, _as_float32, build_index, flat_spec, index_registry,
                                 indexes_dir, parse_memory)

    params = dict(params or {})
    cfg_hash = stage_config_hash({"kind": kind, "max_memory": max_memory, "target_recall": target_recall,
                                  "params": params})
    store = open_store(ctx.kg)
    vmeta = vector_meta(store, ctx.encoder)
    slug, base = encoder_slug(vmeta["encoder"]), indexes_dir(vmeta["encoder"])
    prev_art = store.artifact(base) or {}
    built: dict[str, Any] = {}
    decisions: dict[str, str] = {}
    counts: dict[str, int] = {}
    for vkind in kinds or INDEXED_KINDS:
        if not vmeta.get("kinds", {}).get(vkind, {}).get("count"):
            continue
        matrix, ids = load_vectors(store, slug, vkind)
        n, d = matrix.shape
        try:
            spec = index_registry.get(kind)(n, d, max_memory=parse_memory(max_memory), **params)
        except ValueError as e:
            raise KGStoreError(str(e)) from None
        if spec.type in ("ivf", "ivfpq") and n < spec.params["nlist"]:
            spec = flat_spec(n, d)
        prev = prev_art.get("kinds", {}).get(vkind)
        old_ids = None
        if prev is not None and f"{base}/{vkind}.ids.npy" in store.manifest["files"]:
            old_ids = np.load(store._checked(f"{base}/{vkind}.ids.npy"), allow_pickle=False)
        append, why = _append_plan(prev, (vmeta.get("incremental") or {}).get(vkind), old_ids, ids, spec.type, cfg_hash)
        vrel = f"{vectors_dir(slug)}/{vkind}.npy"
        t0 = time.perf_counter()
        if append:
            vi = VectorIndex.read(store.path(f"{base}/{vkind}"), meta=copy.deepcopy(prev))
            n_old = vi.ntotal
            new_rows = _as_float32(np.asarray(matrix[n_old:]))
            if len(new_rows):
                vi.index.add(new_rows)
            vi.ids = np.asarray(ids, np.int64)
            vi.meta["ntotal"] = int(vi.index.ntotal)
            _recheck(vi, _as_float32(np.asarray(matrix)), target_recall)
            vi.meta["appended"] = {"rows": int(len(new_rows)), "seconds": round(time.perf_counter() - t0, 3)}
            counts[f"{vkind}_appended"] = int(len(new_rows))
        else:
            vi = build_index(matrix, kind=kind, ids=ids, max_memory=max_memory, target_recall=target_recall,
                             threads=threads, use_gpu=use_gpu, encoder=vmeta["encoder"], **params)
            vi.meta["trained_ntotal"] = int(n)
            counts[f"{vkind}_built"] = int(n)
        vi.meta.update({"vector_kind": vkind, "vectors": vrel, "vectors_sha256": store.manifest["files"][vrel]["sha256"],
                        "dag_config_hash": cfg_hash, "update": "append" if append else "rebuild", "update_reason": why})
        decisions[vkind] = ("append: " if append else "rebuild: ") + why
        built[vkind] = vi
    if not built:
        raise KGStoreError(f"no vectors to index for encoder {ctx.encoder!r}; run the embed stage first")
    with KGStore.writer(ctx.kg) as w:
        files = []
        for vkind, vi in built.items():
            files += [str(p.relative_to(w.root)) for p in vi.save(w.root / base / vkind)]
        meta = {"encoder": vmeta["encoder"], "kinds": {k: vi.meta for k, vi in built.items()}}
        w.set_artifact(base, meta, files=files)
        w.record_stage("index", config={"encoder": vmeta["encoder"], "kind": kind, "max_memory": max_memory,
                                        "target_recall": target_recall, **params},
                       counts={k: vi.ntotal for k, vi in built.items()}, outputs=files, decisions=decisions)
        w.commit()
    appended = sum(v for k, v in counts.items() if k.endswith("_appended"))
    return {"counts": counts, "decisions": decisions,
            "note": "; ".join(f"{k} {v}" for k, v in decisions.items()), "cache_hits": appended}


def index_outputs(ctx: Context, **_: Any) -> list[str]:
    from retrieval.index import indexes_dir
    store = open_store(ctx.kg)
    base = indexes_dir(ctx.encoder)
    return sorted(f for f in store.manifest["files"] if f.startswith(base + "/"))


# ==== retrieve ==================================================================================
_RETRIEVAL_KEYS = ("top_n", "top_N", "hops", "seed_k", "named_entities", "image_weight")


def _datasets(ctx: Context, datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in datasets:
        if "dataset" not in d:
            raise KGStoreError(f"retrieve: each dataset needs `dataset: NAME:PATH`, got {d}")
        out.append({"dataset": ctx.expand(d["dataset"]), "split": d.get("split"), "limit": d.get("limit")})
    return out


def retrieve_fingerprint(ctx: Context, *, datasets: list[dict[str, Any]] = (), **_: Any) -> dict[str, Any]:
    from kg_store.hashing import sha256_file
    from retrieval.index import indexes_dir
    from retrieval.queries import parse_dataset_spec
    store = open_store(ctx.kg)
    fp: dict[str, Any] = {"graph": store.manifest.get("graph"),
                          **{n: _file_sha(store, store.manifest["tables"].get(n)) for n in ("entities", "relations")}}
    base, ibase = _vectors_rel(ctx), indexes_dir(ctx.encoder)
    fp["triple_vectors"] = _file_sha(store, f"{base}/triple.npy")
    fp["indexes"] = {k: _file_sha(store, f"{ibase}/{k}.faiss") for k in ("triple", "entity")}
    for d in _datasets(ctx, list(datasets)):
        _, path = parse_dataset_spec(d["dataset"])
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        fp[f"{d['dataset']}|{d['split']}|{d['limit']}"] = {f.name: sha256_file(f) for f in files}
    return fp


def _previous_outputs(old_dir: Path, qs: Any, config: Any, limit: int | None, store: Any,
                      tri_inc: dict[str, Any] | None, tri_sha: str | None) -> tuple[dict[str, Any] | None, str]:
    """The old shard rows by query id when they may be reused under the current vectors, else (None, why)."""
    from kg_store.shards import is_complete, read_meta, read_shards
    from retrieval.shards import cache_key
    if not is_complete(old_dir):
        return None, "no previous shards"
    meta = read_meta(old_dir)
    old_key, new_key = dict(meta.get("cache_key", {})), cache_key(store, config, qs, limit)
    old_key.pop("kg_version", None)
    new_key.pop("kg_version", None)
    if old_key != new_key:
        return None, "retrieval config or dataset changed"
    inc_file = old_dir / "incremental.json"
    if not inc_file.exists():
        return None, "previous shards carry no vector provenance"
    prov = json.loads(inc_file.read_text())
    n_old = int(prov["num_triples"])
    same = prov["triple_vectors_sha256"] == tri_sha
    derived = bool(tri_inc) and tri_inc.get("prev_sha256") == prov["triple_vectors_sha256"] \
        and int(tri_inc.get("prefix_rows", 0)) >= n_old
    if not (same or derived):
        return None, "triple vectors were re-encoded since"
    table = read_shards(old_dir)
    rows = {qid: i for i, qid in enumerate(table["query_id"].to_pylist())}
    return {"table": table, "rows": rows, "num_triples": n_old}, "ok"


def _output_from_row(table: Any, i: int) -> Any:
    from retrieval.subgraph import SubgraphOutput
    get = lambda c, dt: np.asarray(table[c][i].as_py() or [], dtype=dt)  # noqa: E731
    return SubgraphOutput(get("triple_ids", np.int64), get("head_ids", np.int64), get("relation_ids", np.int64),
                          get("tail_ids", np.int64), get("scores", np.float32), get("seed_entity_ids", np.int64),
                          int(table["num_candidates"][i].as_py()))


def retrieve_one(ctx: Context, store: Any, encoder: Any, config: Any, dataset: str, split: str | None,
                 limit: int | None, *, batch_size: int = 256) -> dict[str, Any]:
    """One dataset split: reuse the cached shard set, else recompute only the queries that can change."""
    from retrieval.queries import build_queries
    from retrieval.reports import run_reports
    from retrieval.retriever import SubgraphRetriever, encode_queries
    from retrieval.shards import cached_shards, shard_dir, write_subgraph_shards
    from retrieval.subgraph import expand_hops

    qs = build_queries(dataset, store=store, split=split, with_images=encoder.has_vision, limit=limit)
    if (hit := cached_shards(store, qs, config, limit)) is not None:
        return {"dir": str(hit), "queries": len(qs.queries), "reused": len(qs.queries), "recomputed": 0,
                "shard_set": "cached"}
    t0 = time.perf_counter()
    base = _vectors_rel(ctx)
    tri_sha = _file_sha(store, f"{base}/triple.npy")
    vmeta = store.artifact(base) or {}
    prev, why = _previous_outputs(shard_dir(store, qs, config, limit), qs, config, limit, store,
                                  (vmeta.get("incremental") or {}).get("triple"), tri_sha)
    retriever = SubgraphRetriever(store, config, encoder=encoder)
    vecs = np.concatenate([encode_queries(encoder, qs.queries[i:i + batch_size], image_weight=config.image_weight)
                           for i in range(0, len(qs.queries), batch_size)] or [np.zeros((0, encoder.dim), np.float32)])
    named = retriever.named_entities(qs.queries)
    seeds = retriever.seeds.seed_entities(vecs, named)
    from tqdm.auto import tqdm
    outputs, reused = [], 0
    for q, v, s in tqdm(list(zip(qs.queries, vecs, seeds)), desc=f"retrieve {qs.dataset}/{qs.split}", unit="query",
                        disable=not ctx.progress, leave=False):
        if prev is not None and (i := prev["rows"].get(q.query_id)) is not None:
            t = prev["table"]
            old_seeds = np.asarray(t["seed_entity_ids"][i].as_py() or [], np.int64)
            if t["query_text"][i].as_py() == q.text and np.array_equal(old_seeds, s):
                pool = expand_hops(store.graph, retriever.triples, s, config.hops)
                if not (pool >= prev["num_triples"]).any():  # no new triple can enter this subgraph
                    outputs.append(_output_from_row(t, i))
                    reused += 1
                    continue
        outputs.append(retriever.sampler.sample(v, s))
    seconds = round(time.perf_counter() - t0, 3)
    reports = run_reports(store, qs, outputs, top_N=config.top_N, hops=config.hops)
    reports["quality"]["retrieve_seconds"] = seconds
    reports["incremental"] = {"num_triples": int(len(retriever.triples)), "triple_vectors_sha256": tri_sha,
                              "kg_version": store.kg_version, "reused": reused,
                              "recomputed": len(outputs) - reused, "previous": why}
    path = write_subgraph_shards(store, qs, outputs, config, limit=limit, reports=reports, seconds=seconds,
                                 engine="local")
    return {"dir": str(path), "queries": len(outputs), "reused": reused, "recomputed": len(outputs) - reused,
            "shard_set": "updated" if prev is not None else f"computed ({why})"}


def retrieve_run(ctx: Context, *, datasets: list[dict[str, Any]] = (), top_n: int = 10, top_N: int = 10,
                 hops: int = 1, seed_k: int = 0, named_entities: bool = True, image_weight: float = 0.5,
                 engine: str = "local", device: str = "cpu", batch_size: int = 256) -> dict[str, Any]:
    from pipeline.encoders import resolve_encoder
    from pipeline.incremental import VectorCache, cached_text_encoder
    from retrieval.retriever import RetrievalConfig

    config = RetrievalConfig(encoder=ctx.encoder, top_n=top_n, top_N=top_N, hops=hops, seed_k=seed_k,
                             named_entities=named_entities, image_weight=image_weight)
    results: dict[str, Any] = {}
    if engine == "spark":
        # The Spark engine recomputes a changed shard set as a whole (retrieval.batch); the
        # per-query reuse below needs the previous rows in one process.
        from retrieval.batch import retrieve_dataset
        for d in _datasets(ctx, list(datasets)):
            res = retrieve_dataset(ctx.kg, d["dataset"], config, split=d["split"], limit=d["limit"], engine="spark",
                                   device=device, batch_size=batch_size, progress=ctx.progress)
            results[f"{d['dataset']}|{d['split']}"] = {"dir": str(res.shard_dir), "queries": res.queries,
                                                       "reused": res.queries if res.reused else 0,
                                                       "recomputed": 0 if res.reused else res.queries}
    else:
        enc = resolve_encoder(ctx.encoder, device=device)
        encoder = cached_text_encoder(enc, VectorCache.for_encoder(ctx.kg, enc))
        store = open_store(ctx.kg)
        from tqdm.auto import tqdm
        for d in tqdm(_datasets(ctx, list(datasets)), desc="retrieve", unit="split", disable=not ctx.progress):
            results[f"{d['dataset']}|{d['split']}"] = retrieve_one(ctx, store, encoder, config, d["dataset"],
                                                                  d["split"], d["limit"], batch_size=batch_size)
            store = open_store(ctx.kg)  # the shard write committed a new manifest
        results["_query_cache"] = {"hits": encoder.hits, "misses": encoder.misses}
    qc = results.pop("_query_cache", {})
    reused = sum(r["reused"] for r in results.values())
    recomputed = sum(r["recomputed"] for r in results.values())
    return {"counts": {"queries": reused + recomputed, "queries_reused": reused, "queries_recomputed": recomputed,
                       **({"query_vectors_cached": qc["hits"], "query_vectors_encoded": qc["misses"]} if qc else {})},
            "outputs": {k: v["dir"] for k, v in results.items()}, "shard_sets": results, "cache_hits": reused,
            "note": f"{recomputed:,} queries recomputed, {reused:,} reused"}


def retrieve_outputs(ctx: Context, **_: Any) -> list[str]:
    return []


# ==== train / evaluate (off by default) ============================================================
def _model_job(ctx: Context, config: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    from jobs.commands.model import load_job_config
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
    from kg_store.hashing import sha256_file
    store = open_store(ctx.kg)
    shards = {k: v.get("cache_key") for k, v in store.manifest["artifacts"].items() if k.startswith("subgraphs/")}
    return {"config": sha256_file(ctx.expand(config)), "shards": config_hash(shards)}


def _model_run(fn_path: str, ctx: Context, config: str, set: dict[str, Any] | None) -> dict[str, Any]:
    import importlib
    module, _, name = fn_path.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    out = fn(**_model_job(ctx, config, set))
    return {"counts": {k: v for k, v in (out or {}).items() if isinstance(v, (int, float))}, "result": out}


def train_run(ctx: Context, *, config: str, set: dict[str, Any] | None = None, enabled: bool = True) -> dict[str, Any]:
    return _model_run("model.training.train", ctx, config, set)


def evaluate_run(ctx: Context, *, config: str, set: dict[str, Any] | None = None,
                 enabled: bool = True) -> dict[str, Any]:
    return _model_run("model.evaluation.evaluate", ctx, config, set)


STAGES: dict[str, Stage] = {
    "ingest": Stage("ingest", ingest_fingerprint, ingest_run, ingest_outputs),
    "embed": Stage("embed", embed_fingerprint, embed_run, embed_outputs),
    "index": Stage("index", index_fingerprint, index_run, index_outputs),
    "retrieve": Stage("retrieve", retrieve_fingerprint, retrieve_run, retrieve_outputs),
    "train": Stage("train", model_fingerprint, train_run),
    "evaluate": Stage("evaluate", model_fingerprint, evaluate_run),
}
