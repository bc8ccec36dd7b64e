"""Batch retrieval of a whole dataset split into cached shards; engines `local` and `spark`.

Both engines run the same `SubgraphRetriever` over query batches (clip-retrieval C3: the
distributor is a swappable outer layer). Spark runs it in `mapInPandas`, one retriever (encoder,
mmaps, FAISS index) per Python worker process, kept across tasks; the driver writes the shards.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kg_store import KGStore, open_store
from kg_store.errors import KGStoreError
from kg_store.registry import family
from pipeline.engines.base import check_engine
from retrieval.queries import Query, QuerySet, build_queries
from retrieval.retriever import RetrievalConfig, SubgraphRetriever
from retrieval.shards import cached_shards, write_subgraph_shards
from retrieval.subgraph import SubgraphOutput

logger = logging.getLogger(__name__)

retrieval_engines = family("retrieval_engine")


@retrieval_engines.register("local")
def run_local(store: KGStore, config: RetrievalConfig, queries: Sequence[Query], *, batch_size: int = 256,
              device: str = "cpu", progress: bool = False, encoder: Any | None = None,
              answer_space: np.ndarray | None = None, prior_key: str | None = None, **_: Any) -> list[SubgraphOutput]:
    """In-process retrieval (the default; one encoder, vectorised numpy per batch)."""
    retriever = SubgraphRetriever(store, config, encoder=encoder, device=device, answer_space=answer_space,
                                  prior=_committed_prior(store, prior_key))
    outputs = retriever.retrieve(queries, batch_size=batch_size, progress=progress)
    logger.info("retrieval seconds per step: %s", {k: round(v, 3) for k, v in retriever.step_seconds.items()})
    return outputs


# ---- spark ---------------------------------------------------------------------------------

_EXECUTOR_RETRIEVERS: dict[tuple[str, int, str], SubgraphRetriever] = {}


def _committed_prior(store: KGStore, prior_key: str | None) -> Any:
    """The learned path prior committed under `prior_key` (None: the retriever works without one)."""
    from retrieval.paths import read_prior
    return None if prior_key is None else read_prior(store, prior_key)


def _executor_retriever(root: str, kg_version: int, config: dict[str, Any], device: str,
                        answer_space: list[int] | None, prior_key: str | None) -> SubgraphRetriever:
    """One retriever per Python worker process (loading the encoder per task would dominate)."""
    cfg = RetrievalConfig(**config)
    key = (root, kg_version, cfg.config_hash, prior_key)
    if key not in _EXECUTOR_RETRIEVERS:
        store = open_store(root)
        _EXECUTOR_RETRIEVERS[key] = SubgraphRetriever(
            store, cfg, device=device, answer_space=None if answer_space is None else np.asarray(answer_space),
            prior=_committed_prior(store, prior_key))
    return _EXECUTOR_RETRIEVERS[key]


@retrieval_engines.register("spark")
def run_spark(store: KGStore, config: RetrievalConfig, queries: Sequence[Query], *, batch_size: int = 256,
              device: str = "cpu", spark: Any | None = None, partitions: int | None = None,
              answer_space: np.ndarray | None = None, prior_key: str | None = None,
              **_: Any) -> list[SubgraphOutput]:
    """`mapInPandas` over query batches; results come back ordered by query position."""
    import pandas as pd
    from contextlib import nullcontext
    from pipeline.engines.spark import spark_session

    with (nullcontext(spark) if spark is not None else spark_session(app_name="mmkg-retrieve")) as session:
        pdf = pd.DataFrame({
            "pos": np.arange(len(queries), dtype=np.int64),
            "query_id": [q.query_id for q in queries],
            "text": [q.text for q in queries],
            "image_paths": [list(q.image_paths) for q in queries],
            "entity_keys": [list(q.entity_keys) for q in queries],
            "example_keys": [list(q.example_keys) for q in queries],
        })
        schema_in = "pos long, query_id string, text string, image_paths array<string>, entity_keys array<string>, " \
                    "example_keys array<string>"
        n_parts = partitions or max(1, min(session.sparkContext.defaultParallelism, len(queries) // batch_size + 1))
        df = session.createDataFrame(pdf, schema=schema_in).repartition(n_parts)
        root, version, cfg = str(store.root), store.kg_version, config.to_dict()
        space = None if answer_space is None else np.asarray(answer_space).tolist()

        def retrieve_batches(batches):
            retriever = _executor_retriever(root, version, cfg, device, space, prior_key)
            for b in batches:
                qs = [Query(query_id=r.query_id, text=r.text, image_paths=list(r.image_paths),
                            entity_keys=list(r.entity_keys), example_keys=list(r.example_keys))
                      for r in b.itertuples(index=False)]
                outs = retriever.retrieve(qs, batch_size=batch_size)
                yield pd.DataFrame({
                    "pos": b["pos"].to_numpy(),
                    "triple_ids": [o.triple_ids.tolist() for o in outs],
                    "scores": [o.scores.tolist() for o in outs],
                    "seed_entities": [o.seed_entities.tolist() for o in outs],
                    "num_candidates": [o.num_candidates for o in outs],
                })

        schema_out = "pos long, triple_ids array<long>, scores array<float>, seed_entities array<long>, " \
                     "num_candidates long"
        result = df.mapInPandas(retrieve_batches, schema=schema_out).toPandas().sort_values("pos")
    triples = store.triples_array()
    outs = []
    for row in result.itertuples(index=False):
        tids = np.asarray(row.triple_ids, dtype=np.int64)
        h, r, t = triples[tids].T if tids.size else (np.empty(0, np.int64),) * 3
        outs.append(SubgraphOutput(tids, h.copy(), r.copy(), t.copy(), np.asarray(row.scores, np.float32),
                                   np.asarray(row.seed_entities, np.int64), int(row.num_candidates)))
    return outs


# ---- the whole stage -----------------------------------------------------------------------

@dataclass
class RetrieveResult:
    """What one retrieve run did for one dataset split."""

    shard_dir: Path
    reused: bool                     # the whole shard set was reused (same cache key)
    queries: int
    reports: dict[str, Any] = field(default_factory=dict)
    rejected: int = 0                # query records rejected (rows in rejects.json)
    query_vectors_cached: int = 0    # query texts answered by the vector cache
    query_vectors_encoded: int = 0
    seconds: float = 0.0


def retrieve_dataset(kg: str | Path, dataset: str, config: RetrievalConfig, *, split: str | None = None,
                     limit: int | None = None, force: bool = False, engine: str = "local",
                     device: str = "cpu", batch_size: int = 256, progress: bool = False,
                     engine_kwargs: dict[str, Any] | None = None) -> RetrieveResult:
    """The retrieve stage (`mmkg retrieve` and the `mmkg run` DAG): subgraphs for `dataset`
    (`NAME:PATH`) into `<kg>/subgraphs/...`.

    A shard set with the same cache key (KG version, encoder, config, dataset bytes, limit) is
    reused as a whole. Otherwise every query is retrieved again; query texts already encoded (by
    an earlier run, or as KG text) come from the content-addressed vector cache, so a rerun after
    a small KG change costs little more than the CSR expansion and ranking.
    """
    from pipeline.encoders import resolve_encoder
    from pipeline.vector_cache import VectorCache, cached_text_encoder
    from retrieval.reports import REPORT_N, run_reports

    t0 = time.perf_counter()
    store = open_store(kg)
    run: Callable[..., list[SubgraphOutput]] = retrieval_engines.get(check_engine(engine, "retrieve"))
    # The cache key does not depend on images (the encoder, in the config, fixes that), so the
    # check needs no model: the encoder is loaded only when there is work to do.
    qs: QuerySet = build_queries(dataset, store=store, split=split, with_images=False, limit=limit)
    if not qs.queries:
        first = f"; first: {qs.rejects[0]['location']}: {qs.rejects[0]['reason']}" if qs.rejects else ""
        raise KGStoreError(f"no valid query in {dataset} ({len(qs.rejects)} rejected{first})")
    if not force and (hit := cached_shards(store, qs, config, limit)) is not None:
        logger.info("reusing cached shards %s", hit)
        reports = _read_reports(hit)
        return RetrieveResult(hit, True, len(qs.queries), reports, reports.get("rejects", {}).get("count", 0),
                              seconds=round(time.perf_counter() - t0, 3))
    encoder = resolve_encoder(config.encoder, device=device)
    if encoder.has_vision:  # a text encoder's query must name every entity by its label
        qs = build_queries(dataset, store=store, split=split, with_images=True, limit=limit)
    encoder = cached_text_encoder(encoder, VectorCache.for_encoder(kg, encoder))
    # Rank at least max(REPORT_N) triples: the quality report then gives N = 10 and 20 from one
    # run (top-10 is the prefix of top-20); the shards keep the config's top_N.
    ranked = dataclasses.replace(config, top_N=max(config.top_N, *REPORT_N)) if qs.dataset == "mars" else config
    t_run = time.perf_counter()
    prior_key = None
    if config.retriever == "anchored" and qs.train_file is not None:
        from retrieval.paths import load_or_fit_prior
        _, prior_key = load_or_fit_prior(kg, qs.train_file, qs.answer_space, config.path_hops)
        store = open_store(kg)  # the fit may have committed the prior
    outputs = run(store, ranked, qs.queries, batch_size=batch_size, device=device, progress=progress,
                  encoder=encoder, answer_space=qs.answer_space, prior_key=prior_key, **(engine_kwargs or {}))
    seconds = round(time.perf_counter() - t_run, 3)
    pool_hops = config.path_hops if config.retriever == "anchored" else config.hops
    reports = run_reports(store, qs, outputs, top_N=config.top_N, hops=pool_hops, ranked_N=ranked.top_N)
    reports["quality"]["retrieve_seconds"] = seconds
    if qs.rejects:  # bad records of the query file: one row each, beside the shards (rejects.json)
        reports["rejects"] = {"count": len(qs.rejects), "rows": qs.rejects}
    outputs = [o.head(config.top_N) for o in outputs]
    path = write_subgraph_shards(store, qs, outputs, config, limit=limit, reports=reports, seconds=seconds,
                                 engine=engine)
    return RetrieveResult(path, False, len(qs.queries), reports, len(qs.rejects), encoder.hits, encoder.misses,
                          round(time.perf_counter() - t0, 3))


def _read_reports(directory: Path) -> dict[str, Any]:
    import json
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json")) if p.name != "meta.json"}
