"""Subgraph outputs → shard rows → `<kg>/subgraphs/<dataset>/<split>/<key>/`, with a cache.

The directory name is the shard key: the retrieval config, the query limit and the dataset
folder's identity (`Dataset.identity`, so two folders of one dataset with a split of the same
name keep their shard sets apart); `meta.json` also stores the full cache key (KG version,
encoder, config, the digest of every file the dataset split is defined by, query limit, path
prior). Same key and `_SUCCESS` → the shards are reused; anything else → recomputed and
replaced atomically. The shard set is registered in the manifest (`artifacts["subgraphs/..."]`)
so `mmkg verify` covers it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from mmkg.kg_store import KGStore
from mmkg.kg_store.hashing import cache_key
from mmkg.kg_store.shards import BASE_SCHEMA, ShardWriter, is_complete, read_meta, subgraph_rel
from mmkg.retrieval.datasets import QuerySet
from mmkg.retrieval.datasets.base import LIMIT_SEED
from mmkg.retrieval.retriever import RetrievalConfig
from mmkg.retrieval.subgraph import SubgraphOutput

logger = logging.getLogger(__name__)


def limit_rule(limit: int | None) -> Any:
    """How a limited shard set's queries were chosen, as the keys record it: a seeded random sample
    (`mmkg.retrieval.datasets.base.limit_order`). Sets cut by the earlier rule (the first `limit`
    queries, keyed by the bare number) no longer match a key, so they are recomputed, never reused."""
    return None if limit is None else {"sample": limit, "seed": LIMIT_SEED}


def shard_key(config: RetrievalConfig, limit: int | None = None, identity: str | None = None) -> str:
    """Directory name: the config hash, with the query limit and the dataset folder folded in."""
    if limit is None and identity is None:
        return config.config_hash
    return cache_key({"config": config.to_dict(), "limit": limit_rule(limit),
                      **({"dataset_folder": identity} if identity is not None else {})})


def shard_cache_key(store: KGStore, config: RetrievalConfig, qs: QuerySet, limit: int | None) -> dict[str, Any]:
    """Everything the shards depend on; the learned path prior (a retriever that `uses_prior`) by its own hash."""
    from mmkg.retrieval.paths import prior_key
    from mmkg.retrieval.retriever import retriever_class
    learned = prior_key(store, qs.train_file, qs.answer_space, config.path_hops, config.prior_folds) \
        if retriever_class(config).uses_prior and qs.train_file is not None else None
    return {"kg_version": store.kg_version, "encoder": config.encoder, "config": config.to_dict(),
            "config_hash": config.config_hash, "dataset": qs.dataset, "split": qs.split,
            "dataset_sha256": qs.source_sha256(), "limit": limit_rule(limit), "path_prior": learned}


def shard_rel(qs: QuerySet, config: RetrievalConfig, limit: int | None = None) -> str:
    return subgraph_rel(qs.dataset, qs.split, shard_key(config, limit, qs.identity))


def shard_dir(store: KGStore, qs: QuerySet, config: RetrievalConfig, limit: int | None = None) -> Path:
    return store.path(shard_rel(qs, config, limit))


def cached_shards(store: KGStore, qs: QuerySet, config: RetrievalConfig, limit: int | None = None) -> Path | None:
    """The finished shard directory for exactly this cache key, else None."""
    d = shard_dir(store, qs, config, limit)
    key = shard_cache_key(store, config, qs, limit)
    art = store.artifact(shard_rel(qs, config, limit))
    if art is None or art.get("cache_key") != key:
        # `_SUCCESS` on disk is not enough: a run killed between publishing the directory and
        # committing the manifest leaves a set no manifest names (and `verify` cannot cover)
        return None
    if not is_complete(d):
        return None
    meta = read_meta(d)
    if meta.get("cache_key") != key:
        logger.info("shards in %s are stale (cache key differs); recomputing", d)
        return None
    return d


def _list_column(values: np.ndarray, offsets: np.ndarray, type_: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, type_.value_type), type=type_)


_LABELS: dict[tuple[str, str | None, str | None], tuple[np.ndarray, ...]] = {}


def _key_label_arrays(store: KGStore) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entity keys, entity labels, relation keys, relation labels as object arrays indexed by id;
    kept per process for the tables' content (a Spark worker writes many batches of rows)."""
    key = (str(store.root), store.table_fingerprint("entities"), store.table_fingerprint("relations"))
    if key not in _LABELS:
        ents = store.table("entities", ["key", "label"])
        rels = store.table("relations", ["key", "label"])
        _LABELS.clear()
        _LABELS[key] = (*(ents[c].to_numpy(zero_copy_only=False) for c in ("key", "label")),
                        *(rels[c].to_numpy(zero_copy_only=False) for c in ("key", "label")))
    return _LABELS[key]  # type: ignore[return-value]


def subgraph_table(store: KGStore, qs: QuerySet, outputs: Sequence[SubgraphOutput]) -> pa.Table:
    """One row per query: base columns (mmkg.kg_store.shards.BASE_SCHEMA), then the dataset's fields."""
    ekey, elabel, rkey, rlabel = _key_label_arrays(store)
    lengths = np.array([len(o) for o in outputs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    cat = lambda name: np.concatenate([getattr(o, name) for o in outputs] or [np.empty(0, np.int64)])  # noqa: E731
    h, r, t, tid = cat("heads"), cat("relations"), cat("tails"), cat("triple_ids")
    scores = np.concatenate([o.scores for o in outputs] or [np.empty(0, np.float32)]).astype(np.float32)
    seed_len = np.array([len(o.seed_entities) for o in outputs], dtype=np.int64)
    seed_off = np.concatenate([[0], np.cumsum(seed_len)])
    seeds = np.concatenate([o.seed_entities for o in outputs] or [np.empty(0, np.int64)])
    s = BASE_SCHEMA
    n = len(outputs)
    cols: dict[str, pa.Array] = {
        "query_id": pa.array([q.query_id for q in qs.queries], pa.string()),
        "dataset": pa.array([qs.dataset] * n, pa.string()),
        "split": pa.array([qs.split] * n, pa.string()),
        "query_text": pa.array([q.text for q in qs.queries], pa.string()),
        "seed_entity_ids": _list_column(seeds, seed_off, s.field("seed_entity_ids").type),
    }
    for name, vals in (("triple_ids", tid), ("head_ids", h), ("relation_ids", r), ("tail_ids", t)):
        cols[name] = _list_column(vals, offsets, s.field(name).type)
    for name, table, ids in (("head_keys", ekey, h), ("relation_keys", rkey, r), ("tail_keys", ekey, t),
                             ("head_labels", elabel, h), ("relation_labels", rlabel, r),
                             ("tail_labels", elabel, t)):
        cols[name] = _list_column(table[ids].astype(object) if ids.size else np.empty(0, object), offsets,
                                  s.field(name).type)
    cols["scores"] = _list_column(scores, offsets, s.field("scores").type)
    cols["num_candidates"] = pa.array([o.num_candidates for o in outputs], pa.int64())
    cols["empty"] = pa.array([o.empty for o in outputs], pa.bool_())
    base = pa.Table.from_pydict(cols, schema=BASE_SCHEMA)
    if n and qs.queries[0].fields:
        names = [k for k in qs.queries[0].fields if k not in base.column_names]
        schema = pa.schema([(k, qs.field_types.get(k, pa.string())) for k in names])
        fields = pa.Table.from_pylist([{k: q.fields.get(k) for k in names} for q in qs.queries], schema=schema)
        for name in names:
            base = base.append_column(name, fields[name])
    return base


def write_subgraph_shards(store: KGStore, qs: QuerySet, outputs: Sequence[SubgraphOutput],
                          config: RetrievalConfig, *, limit: int | None = None,
                          reports: dict[str, Any] | None = None, seconds: float | None = None,
                          engine: str = "local", wait: float = 60.0,
                          extra_tables: dict[str, pa.Table] | None = None) -> Path:
    """Write, publish and register one shard set; `reports` become JSON files beside the parts,
    `extra_tables` Parquet files (the incremental retrieve's `ranked.parquet`)."""
    table = subgraph_table(store, qs, outputs)

    def fill(sw: ShardWriter) -> FilledShards:
        sw.write(table)
        for name, extra in (extra_tables or {}).items():
            import pyarrow.parquet as pq
            pq.write_table(extra, sw.staging / name, compression="zstd")
        return FilledShards(int(np.sum(table["empty"].to_numpy())), table.column_names, reports or {}, seconds)

    return publish_subgraph_shards(store, qs, config, fill, limit=limit, engine=engine, wait=wait)


@dataclass
class FilledShards:
    """What the rows put into a staged shard set amount to (for meta.json)."""

    empty: int                       # queries with an empty subgraph
    columns: list[str]
    reports: dict[str, Any]
    seconds: float | None = None


def publish_subgraph_shards(store: KGStore, qs: QuerySet, config: RetrievalConfig,
                            fill: Callable[[ShardWriter], FilledShards], *, limit: int | None = None,
                            engine: str = "local", wait: float = 60.0) -> Path:
    """Stage a shard set with `fill` (it writes or adopts the part files), then publish and
    register it. `fill` runs under the store's writer lock: the staging folder is a temp name
    that a writer starting meanwhile would clean up (the Spark engine's executors fill it)."""
    rel = shard_rel(qs, config, limit)
    key = shard_cache_key(store, config, qs, limit)
    with KGStore.writer(store.root, wait=wait, create=False) as w:
        with ShardWriter(w.root / rel) as sw:
            filled = fill(sw)
            meta = {"cache_key": key, "dataset": qs.dataset, "split": qs.split, "encoder": config.encoder,
                    "config": config.to_dict(), "config_hash": config.config_hash, "kg_version": store.kg_version,
                    "queries": sw.num_rows, "empty": filled.empty, "engine": engine, "seconds": filled.seconds,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "columns": filled.columns,
                    "reports": sorted(filled.reports)}
            for name, report in filled.reports.items():
                sw.add_file(f"{name}.json", report)
            sw.close(meta)
        w.drop(rel)  # files of a replaced shard set must leave the manifest, or `verify` would flag them
        files = sorted(str(p.relative_to(w.root)) for p in (w.root / rel).rglob("*") if p.is_file())
        w.set_artifact(rel, {k: meta[k] for k in ("cache_key", "queries", "empty", "engine", "created")}, files)
        w.record_stage("retrieve", config={**config.to_dict(), "dataset": qs.dataset, "split": qs.split,
                                           "limit": limit}, counts={"queries": meta["queries"],
                                                                    "empty": meta["empty"]},
                       inputs={str(p): key["dataset_sha256"] for p in qs.source_files}, outputs=[rel],
                       seconds=filled.seconds)
        w.commit()
    return store.path(rel)
