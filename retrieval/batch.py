"""Batch retrieval of a whole dataset split into cached shards; engines `local` and `spark`.

Both engines run the same `SubgraphRetriever` over query batches (clip-retrieval C3: the
distributor is a swappable outer layer). Spark runs it in `mapInPandas`, one retriever (encoder,
mmaps, FAISS index) per Python worker process, kept across tasks; its tasks write the shard parts
themselves and send the driver per-query summaries for the reports (never the subgraphs), so
the driver's memory does not grow with queries × N. The local engine returns the subgraphs and
the driver writes them; both compute the reports from the same summaries.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow.parquet as pq

from mmkg.kg_store import KGStore, open_store
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.registry import family
from mmkg.pipeline.engines.base import check_engine
from mmkg.retrieval.datasets import Query, QuerySet, build_queries
from mmkg.retrieval.retriever import RetrievalConfig, SubgraphRetriever, retriever_class, vector_kinds_needed
from mmkg.kg_store.shards import ShardWriter
from mmkg.retrieval.shards import FilledShards, cached_shards, publish_subgraph_shards, write_subgraph_shards
from mmkg.retrieval.subgraph import SubgraphOutput

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
    from mmkg.retrieval.paths import read_prior
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


@dataclass
class ShardJob:
    """What an engine that writes the shard rows itself needs: where (the staged shard set's `parts/`
    folder), which queries (for the rows' dataset fields) and what the reports will ask."""

    staging: Path
    dataset: str
    split: str
    field_types: dict[str, Any]
    top_N: int                       # triples each shard row keeps (the ranking may go deeper)
    hops: int
    ranked_N: int


@dataclass
class WrittenShards:
    """A Spark run's result: the part files its tasks wrote (name, rows; query order) and the
    per-query summaries for the reports. Nothing on the driver grows with queries × N."""

    parts: list[tuple[str, int]]
    summaries: Any                   # mmkg.retrieval.reports.QuerySummaries


#: the summary row every Spark task returns per query (the shard rows go to Parquet parts)
_SUMMARY_SCHEMA = ("pos long, part string, part_rows long, kept long, score_sum double, top1 double, "
                   "num_candidates long, seeds array<long>, pool_hit boolean, hits array<boolean>, links boolean, "
                   "pool_drawn array<boolean>")


def _spark_batch(retriever: SubgraphRetriever, b: Any, job: ShardJob) -> Any:
    """One Arrow batch of queries on an executor: retrieve, write its shard part, summarise."""
    import json
    import pandas as pd
    from mmkg.kg_store import atomic
    from mmkg.retrieval.reports import summarize
    from mmkg.retrieval.summaries import report_ns
    from mmkg.retrieval.shards import subgraph_table
    qs = [Query(query_id=r.query_id, text=r.text, image_paths=list(r.image_paths), entity_keys=list(r.entity_keys),
                example_keys=list(r.example_keys), prior_fold=int(r.prior_fold), fields=json.loads(r.fields_json))
          for r in b.itertuples(index=False)]
    # the driver's query vectors: the local engine's bytes (an encoder's floats depend on its batch's padding)
    outs = retriever.retrieve_vectors(qs, np.stack(b["vector"].to_numpy()).astype(np.float32, copy=False))
    pos = b["pos"].to_numpy()
    table = subgraph_table(retriever.store, QuerySet(job.dataset, job.split, qs, [], job.field_types),
                           [o.head(job.top_N) for o in outs])
    # named by first query and row count: a retried task rewrites the same file with the same rows
    name = f"spark-{int(pos[0]):012d}-{len(qs):08d}.parquet"
    atomic.write_parquet(job.staging / name, table, compression="zstd")
    s = summarize(retriever.store.graph, retriever.triples, job.dataset, qs, outs, top_N=job.top_N, hops=job.hops,
                  ranked_N=job.ranked_N)
    n = len(qs)
    no = np.zeros(n, bool)
    ns = report_ns(job.top_N, job.ranked_N)
    return pd.DataFrame({
        "pos": pos, "part": [name] * n, "part_rows": np.full(n, n, np.int64), "kept": s.kept,
        "score_sum": s.score_sum, "top1": s.top1, "num_candidates": s.num_candidates,
        "seeds": [x.tolist() for x in s.seeds], "pool_hit": no if s.pool_hit is None else s.pool_hit,
        "hits": [list(row) for row in np.stack([s.hits.get(k, no) for k in ns], axis=1)],
        "links": no if s.links is None else s.links,
        "pool_drawn": [list(row) for row in np.stack([s.pool_drawn.get(k, no) for k in ns], axis=1)],
    })


@retrieval_engines.register("spark")
def run_spark(store: KGStore, config: RetrievalConfig, queries: Sequence[Query], *, shard_job: ShardJob,
              batch_size: int = 256, device: str = "cpu", spark: Any | None = None, partitions: int | None = None,
              answer_space: np.ndarray | None = None, prior_key: str | None = None, encoder: Any | None = None,
              **_: Any) -> WrittenShards:
    """`mapInPandas` over query batches, ranges of query positions per partition. Each task writes
    the shard rows of its batches as Parquet parts into `shard_job.staging` and returns one small
    summary row per query; the driver collects only those (`WrittenShards`). The query vectors are
    encoded on the driver (through the vector cache, in the local engine's batches) and travel with
    the query rows (a few KB each), so both engines rank the same vectors and write the same bytes."""
    import json
    import pandas as pd
    from contextlib import nullcontext
    from mmkg.pipeline.engines.spark import spark_session
    from mmkg.retrieval.datasets import datasets
    from mmkg.retrieval.summaries import QuerySummaries, report_ns

    from mmkg.pipeline.encoders import resolve_encoder
    from mmkg.retrieval.retriever import encode_query_batches
    enc = encoder if encoder is not None else resolve_encoder(config.encoder, device=device)
    vectors = encode_query_batches(enc, queries, image_weight=config.image_weight, batch_size=batch_size)
    with (nullcontext(spark) if spark is not None else spark_session(app_name="mmkg-retrieve")) as session:
        pdf = pd.DataFrame({
            "pos": np.arange(len(queries), dtype=np.int64),
            "query_id": [q.query_id for q in queries],
            "text": [q.text for q in queries],
            "image_paths": [list(q.image_paths) for q in queries],
            "entity_keys": [list(q.entity_keys) for q in queries],
            "example_keys": [list(q.example_keys) for q in queries],
            "prior_fold": np.array([q.prior_fold for q in queries], np.int64),
            "fields_json": [json.dumps(q.fields) for q in queries],
            "vector": list(vectors),
        })
        schema_in = "pos long, query_id string, text string, image_paths array<string>, entity_keys array<string>, " \
                    "example_keys array<string>, prior_fold long, fields_json string, vector array<float>"
        n_parts = partitions or max(1, min(session.sparkContext.defaultParallelism, len(queries) // batch_size + 1))
        # contiguous position ranges, sorted: each part file holds consecutive queries in order
        df = session.createDataFrame(pdf, schema=schema_in).repartitionByRange(n_parts, "pos") \
            .sortWithinPartitions("pos")
        del pdf
        root, version, cfg = str(store.root), store.kg_version, config.to_dict()
        space = None if answer_space is None else np.asarray(answer_space).tolist()

        def retrieve_batches(batches):
            retriever = _executor_retriever(root, version, cfg, device, space, prior_key)
            for b in batches:
                if len(b):
                    yield _spark_batch(retriever, b, shard_job)

        result = df.mapInPandas(retrieve_batches, schema=_SUMMARY_SCHEMA).toPandas().sort_values("pos")
    pos = result["pos"].to_numpy()
    if not np.array_equal(pos, np.arange(len(queries))):
        raise KGStoreError(f"the Spark retrieve returned {len(pos)} summaries for {len(queries)} queries "
                           "(lost or repeated rows); nothing was published")
    firsts = result.drop_duplicates("part")
    parts = list(zip(firsts["part"].tolist(), firsts["part_rows"].astype(int).tolist()))
    hits = np.array(result["hits"].tolist(), dtype=bool).reshape(len(result), -1)
    drawn = np.array(result["pool_drawn"].tolist(), dtype=bool).reshape(len(result), -1)
    ns = report_ns(shard_job.top_N, shard_job.ranked_N)
    # the answer figures travel for every dataset (False when unused); kept where it has them
    extra = datasets.get(shard_job.dataset).answer_summaries
    summaries = QuerySummaries(
        kept=result["kept"].to_numpy(np.int64), score_sum=result["score_sum"].to_numpy(np.float64),
        top1=result["top1"].to_numpy(np.float64), num_candidates=result["num_candidates"].to_numpy(np.int64),
        seeds=[np.asarray(x, np.int64) for x in result["seeds"]],
        pool_hit=result["pool_hit"].to_numpy(bool) if extra else None,
        hits={n: hits[:, i] for i, n in enumerate(ns)} if extra else {},
        links=result["links"].to_numpy(bool) if extra else None,
        pool_drawn={n: drawn[:, i] for i, n in enumerate(ns)} if extra else {})
    return WrittenShards(parts, summaries)


run_spark.writes_shards = True  # type: ignore[attr-defined]  # retrieve_dataset hands it a ShardJob


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
    queries_reused: int = 0          # queries whose ranked subgraph was kept (incremental retrieve)


def retrieve_dataset(kg: str | Path, dataset: str, config: RetrievalConfig, *, split: str | None = None,
                     limit: int | None = None, force: bool = False, engine: str = "local",
                     device: str = "cpu", batch_size: int = 256, progress: bool = False,
                     engine_kwargs: dict[str, Any] | None = None) -> RetrieveResult:
    """The retrieve stage (`mmkg retrieve` and the `mmkg run` DAG): subgraphs for `dataset`
    (`NAME:PATH`) into `<kg>/subgraphs/...`.

    A shard set with the same cache key (KG version, encoder, config, dataset bytes, limit) is
    reused as a whole. Otherwise an incremental retriever (the anchored one; local engine) reranks only
    the queries whose inputs changed (`mmkg.retrieval.incremental`), every other retriever every query; query texts already encoded (by
    an earlier run, or as KG text) come from the content-addressed vector cache, so a rerun after
    a small KG change costs little more than the CSR expansion and ranking.
    """
    from mmkg.pipeline.encoders import resolve_encoder
    from mmkg.pipeline.vector_cache import VectorCache, cached_text_encoder
    from mmkg.retrieval.reports import reports_from_summaries, run_reports

    t0 = time.perf_counter()
    store = open_store(kg)
    run: Callable[..., Any] = retrieval_engines.get(check_engine(engine, "retrieve"))
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
    # issue 31: a retriever that reads triple vectors (mrmkg, pcst) on a store embedded without them
    # gets them now, from the vector cache (the anchored retriever's configurations embed none)
    if "triple" in vector_kinds_needed(config):
        from mmkg.retrieval.index_search import ensure_vectors
        store = ensure_vectors(kg, config.encoder, "triple")
    encoder = resolve_encoder(config.encoder, device=device)
    if encoder.has_vision:  # a text encoder's query must name every entity by its label
        qs = build_queries(dataset, store=store, split=split, with_images=True, limit=limit)
    encoder = cached_text_encoder(encoder, VectorCache.for_encoder(kg, encoder))
    # the dataset says how deep its reports rank (MARS: max(REPORT_N), so one run gives N = 10
    # and 20, top-10 being the prefix of top-20); the shards keep the config's top_N
    ranked = dataclasses.replace(config, top_N=qs.kind.ranked_N(config.top_N))
    t_run = time.perf_counter()
    prior_key = None
    kind = retriever_class(config)
    if kind.uses_prior and qs.train_file is not None:
        from mmkg.retrieval.paths import assign_prior_folds, load_or_fit_prior
        _, prior_key = load_or_fit_prior(kg, qs.train_file, qs.answer_space, config.path_hops, config.prior_folds)
        assign_prior_folds(qs.queries, qs.train_file, config.prior_folds)
        store = open_store(kg)  # the fit may have committed the prior
    pool_hops = kind.pool_hops(config)
    kwargs = dict(batch_size=batch_size, device=device, progress=progress, encoder=encoder,
                  answer_space=qs.answer_space, prior_key=prior_key, **(engine_kwargs or {}))
    incremental = None  # issue 31: an incremental retriever (local engine) reranks only queries whose inputs changed
    if not getattr(run, "writes_shards", False):
        if engine == "local" and kind.incremental:
            from mmkg.retrieval.incremental import SIDECAR, run_local_incremental
            from mmkg.retrieval.shards import shard_dir
            incremental = run_local_incremental(store, ranked, qs, previous=None if force else
                                                shard_dir(store, qs, config, limit), **kwargs)
            outputs = incremental.outputs
        else:
            outputs = run(store, ranked, qs.queries, **kwargs)
        seconds = round(time.perf_counter() - t_run, 3)
        reports = run_reports(store, qs, outputs, top_N=config.top_N, hops=pool_hops, ranked_N=ranked.top_N)
        _finish_reports(reports, qs, seconds)
        outputs = [o.head(config.top_N) for o in outputs]
        path = write_subgraph_shards(store, qs, outputs, config, limit=limit, reports=reports, seconds=seconds,
                                     engine=engine, extra_tables=None if incremental is None else
                                     {SIDECAR: incremental.sidecar})
    else:
        # the executors write the shard rows into the staged set (under the store's writer
        # lock, which guards the staging folder); the driver gets per-query summaries only
        reports = {}

        def fill(sw: ShardWriter) -> FilledShards:
            job = ShardJob(sw.parts, qs.dataset, qs.split, dict(qs.field_types), config.top_N, pool_hops,
                           ranked.top_N)
            written = run(store, ranked, qs.queries, shard_job=job, **kwargs)
            seconds = round(time.perf_counter() - t_run, 3)
            sw.adopt_parts(written.parts)
            reports.update(reports_from_summaries(store, qs, written.summaries, top_N=config.top_N,
                                                 hops=pool_hops, ranked_N=ranked.top_N))
            _finish_reports(reports, qs, seconds)
            columns = pq.read_schema(sw.parts / "part-00000.parquet").names
            return FilledShards(int((written.summaries.kept == 0).sum()), columns, reports, seconds)

        path = publish_subgraph_shards(store, qs, config, fill, limit=limit, engine=engine)
    return RetrieveResult(path, False, len(qs.queries), reports, len(qs.rejects), encoder.hits, encoder.misses,
                          round(time.perf_counter() - t0, 3),
                          queries_reused=0 if incremental is None else incremental.reused)  # issue 31


def _finish_reports(reports: dict[str, Any], qs: QuerySet, seconds: float) -> None:
    reports["quality"]["retrieve_seconds"] = seconds
    if qs.rejects:  # bad records of the query file: one row each, beside the shards (rejects.json)
        reports["rejects"] = {"count": len(qs.rejects), "rows": qs.rejects}


def _read_reports(directory: Path) -> dict[str, Any]:
    import json
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json")) if p.name != "meta.json"}
