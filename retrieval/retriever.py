"""`SubgraphRetriever`: encodes queries and runs the configured retriever (`mmkg.retrieval.retrievers`).

`RetrievalConfig` holds every knob, the retriever's name included; its hash names the shard
directory. The FAISS seed step (top-n triples by cosine → their entities, optionally the entities
the query names and top-k entities) is shared by the `mrmkg` and `pcst` retrievers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.hashing import cache_key
from mmkg.retrieval.datasets import Query
from mmkg.retrieval.subgraph import SubgraphOutput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalConfig:
    """Everything that changes what is retrieved.

    Args:
        encoder (str): encoder registry name; queries and KG vectors share its space. (default: "minilm")
        retriever (str): `retriever` registry name: anchored | mrmkg | pcst. (default: "anchored")
        top_n (int): seed triples taken by cosine from the triple index (the paper's n; mrmkg, pcst). (default: 10)
        top_N (int): triples kept per query (the paper's N, 10 or 20). (default: 10)
        hops (int): neighbourhood depth around the seeds (mrmkg, pcst). (default: 1)
        path_hops (int): longest path from an anchor (anchored; 1 or 2). (default: 2)
        seed_k (int): extra seed entities by cosine from the entity index; 0 = off. (default: 0)
        named_entities (bool): add the entities the query names to the seeds E′ (mrmkg; off in the
            paper's scheme; pcst always adds them, anchored always starts from them). (default: False)
        image_weight (float): weight of the mean image vector in the query vector. (default: 0.5)
        prior_folds (int): folds of the anchored retriever's path prior: a query that is a row of the
            prior's own train file is ranked with the prior of the other folds (1 = in-sample). (default: 5)
    """

    encoder: str = "minilm"
    retriever: str = "anchored"
    top_n: int = 10
    top_N: int = 10
    hops: int = 1
    path_hops: int = 2
    seed_k: int = 0
    named_entities: bool = False
    image_weight: float = 0.5
    prior_folds: int = 5

    def __post_init__(self) -> None:
        from mmkg.kg_store.errors import ConfigError
        if self.top_n < 0 or self.seed_k < 0 or self.top_N < 1 or self.hops < 1 or self.path_hops not in (1, 2):
            raise ConfigError(f"bad retrieval config {self}: need top_n ≥ 0, seed_k ≥ 0, top_N ≥ 1, hops ≥ 1, "
                              "path_hops 1 or 2")
        if self.prior_folds < 1:
            raise ConfigError(f"prior_folds must be ≥ 1, got {self.prior_folds}")
        if not 0.0 <= self.image_weight <= 1.0:
            raise ConfigError(f"image_weight must lie in [0, 1], got {self.image_weight}")
        from mmkg.retrieval.retrievers import retriever_registry
        if self.retriever not in retriever_registry:
            raise ConfigError(f"unknown retriever {self.retriever!r}; choose one of: "
                              f"{', '.join(retriever_registry.names())}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def config_hash(self) -> str:
        return cache_key(self.to_dict())


#: vector kinds every configuration embeds: entity search, the web view and the models read them
ALWAYS_EMBEDDED = frozenset({"entity", "relation", "image"})


def retriever_class(config: "RetrievalConfig") -> Any:
    """The configured retriever's class (`mmkg.retrieval.retrievers.Retriever`): what it reads and
    supports, asked by attribute, never by name."""
    from mmkg.retrieval.retrievers import retriever_registry
    return retriever_registry.get(config.retriever)


def vector_kinds_needed(config: "RetrievalConfig | None") -> frozenset[str]:
    """The vector kinds a configuration uses: the always-embedded ones, what its retriever declares
    (`needs_vectors`) and the entity index when `seed_k` adds seeds from it."""
    if config is None:
        return ALWAYS_EMBEDDED
    needs = set(retriever_class(config).needs_vectors)
    return ALWAYS_EMBEDDED | needs | ({"entity"} if config.seed_k else set())


def row_lookup(ids: np.ndarray, size: int) -> np.ndarray:
    """Inverse of a vector file's id array: row of each store id, -1 where the id has no row."""
    rows = np.full(size, -1, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    rows[ids] = np.arange(len(ids), dtype=np.int64)
    return rows


def encode_queries(encoder: Any, queries: Sequence[Query], *, image_weight: float = 0.5,
                   batch_size: int = 64) -> np.ndarray:
    """(m, d) float32 L2-normalised query vectors: text, mixed with the mean image vector if any.

    CLIP puts images and text in one space, so a weighted sum of the two unit vectors (then
    renormalised) ranks triples by both; text-only encoders never receive images.
    """
    from mmkg.pipeline.images import load_image_rgb
    from mmkg.pipeline.encoders import l2_normalize

    texts = [q.text for q in queries]
    out = np.concatenate([encoder.encode_text(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
                         or [np.zeros((0, encoder.dim), np.float32)])
    with_images = [i for i, q in enumerate(queries) if q.image_paths]
    if with_images and encoder.has_vision and image_weight > 0:
        for i in with_images:
            imgs = []
            for p in queries[i].image_paths:
                imgs.append(load_image_rgb(p))  # the ingest limits (pixel bombs refused from the header)
            img_vec = l2_normalize(encoder.encode_images(imgs).mean(0, keepdims=True))[0]
            out[i] = (1 - image_weight) * out[i] + image_weight * img_vec
        out = l2_normalize(out)
    return np.ascontiguousarray(out, dtype=np.float32)


def encode_query_batches(encoder: Any, queries: Sequence[Query], *, image_weight: float = 0.5,
                         batch_size: int = 256) -> np.ndarray:
    """`encode_queries` in batches of `batch_size`, as `SubgraphRetriever.retrieve` takes them: an ONNX
    encoder's floats depend on its batch's padding, so every engine that encodes up front (incremental,
    Spark's driver) uses these batches and ranks the same bytes."""
    return np.concatenate([encode_queries(encoder, queries[i:i + batch_size], image_weight=image_weight)
                           for i in range(0, len(queries), batch_size)] or [np.zeros((0, encoder.dim), np.float32)])


class FaissSeedRetriever:
    """Query vectors → seed entities: ends of the top-n triples (+ top-k entities) + named ones."""

    def __init__(self, *, triples: np.ndarray, triple_index: Any | None, top_n: int,
                 entity_index: Any | None = None, seed_k: int = 0):
        self.triples, self.triple_index, self.top_n = triples, triple_index, top_n
        self.entity_index, self.seed_k = entity_index, seed_k

    def nearest_entities(self, queries: np.ndarray, k: int) -> list[np.ndarray]:
        """The `k` entities nearest to each query vector (the entity index; anchors of a query that
        names no entity of the KG)."""
        if not len(queries) or k <= 0:
            return [np.empty(0, np.int64) for _ in range(len(queries))]
        _, eids = self.entity_index.search(queries, k)
        return [np.unique(row[row >= 0]).astype(np.int64) for row in eids]

    @property
    def exact_triples(self) -> bool:
        """The triple index is exact (Flat): its top-n is the top-n of one product with every vector."""
        return getattr(self.triple_index, "meta", {}).get("type") == "flat"

    def seed_entities(self, queries: np.ndarray, named: list[np.ndarray],
                      triple_hits: np.ndarray | None = None) -> list[np.ndarray]:
        """E′ of each query; `triple_hits`: its top-n triple ids when the caller has them already."""
        m = len(queries)
        parts: list[list[np.ndarray]] = [[np.asarray(n, np.int64)] for n in named]
        if self.top_n > 0 and m:
            tids = self.triple_index.search(queries, self.top_n)[1] if triple_hits is None else triple_hits
            for i in range(m):
                t = tids[i][tids[i] >= 0]
                parts[i].append(self.triples[t][:, [0, 2]].ravel())
        if self.seed_k > 0 and m:
            _, eids = self.entity_index.search(queries, self.seed_k)
            for i in range(m):
                parts[i].append(eids[i][eids[i] >= 0])
        return [np.unique(np.concatenate(p)).astype(np.int64) for p in parts]


class _LazyIndex:
    """A FAISS index loaded on its first search (the anchored retriever's entity seeding runs only
    for queries that name no entity of the KG)."""

    def __init__(self, store: KGStore, encoder: str, kind: str):
        self.store, self.encoder, self.kind, self._index = store, encoder, kind, None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            from mmkg.retrieval.index import load_index
            self._index = load_index(self.store, self.encoder, self.kind)
        return self._index.search(queries, k)


class SubgraphRetriever:
    """`QueryLoader` of PyG G5: encodes queries and runs the configured retriever over them.

    `answer_space` (entity ids every answer lies in) and `prior` (a learned `PathPrior`) come
    from the dataset (`mmkg.retrieval.datasets.QuerySet`), not from any query's answer."""

    def __init__(self, store: KGStore, config: RetrievalConfig, *, encoder: Any | None = None,
                 device: str = "cpu", answer_space: np.ndarray | None = None, prior: Any = None):
        from mmkg.kg_store.vectors import load_vectors
        from mmkg.pipeline.encoders import resolve_encoder
        from mmkg.retrieval.index import load_index
        from mmkg.retrieval.ranking import PairCosine
        from mmkg.retrieval.retrievers import RetrieverContext, resolve_retriever
        from mmkg.retrieval.subgraph import TripleScorer

        self.store, self.config = store, config
        self.encoder = resolve_encoder(encoder if encoder is not None else config.encoder, device=device)
        if self.encoder.name != config.encoder:
            raise KGStoreError(f"encoder {self.encoder.name!r} does not match the config's {config.encoder!r}")
        self.triples = store.triples_array()
        # only the vector kinds the retriever declares are read (a store may hold no triple vectors)
        needs = vector_kinds_needed(config)
        uses_triples = "triple" in needs
        score = entity_cosine = None
        if uses_triples:
            triple_vectors, triple_ids = load_vectors(store, self.encoder.slug, "triple")
            score = TripleScorer(triple_vectors, row_lookup(triple_ids, len(self.triples)))
        if "entity" in needs:
            entity_vectors, entity_ids = load_vectors(store, self.encoder.slug, "entity")
            entity_cosine = PairCosine(entity_vectors, row_lookup(entity_ids, store.num_entities), dense=False)
        self.seeds = FaissSeedRetriever(
            triples=self.triples, top_n=config.top_n, seed_k=config.seed_k,
            triple_index=load_index(store, self.encoder.name, "triple") if config.top_n and uses_triples else None,
            entity_index=_LazyIndex(store, self.encoder.name, "entity"))
        ctx = RetrieverContext(store=store, config=config, triples=self.triples, seeds=self.seeds, score=score,
                               entity_cosine=entity_cosine, named=self.named_entities, answer_space=answer_space,
                               prior=prior)
        self.retriever = resolve_retriever(config.retriever, ctx)
        #: seconds spent per step (encode = query vectors, retrieve = seeds/paths + ranking)
        self.step_seconds = {"encode": 0.0, "retrieve": 0.0}

    def named_entities(self, queries: Sequence[Query]) -> list[np.ndarray]:
        """Store ids of the entities each query names (its `entity_keys`; unknown keys dropped)."""
        keys = [k for q in queries for k in q.entity_keys]
        ids = self.store.entity_ids(keys) if keys else np.empty(0, np.int64)
        owner = np.repeat(np.arange(len(queries)), [len(q.entity_keys) for q in queries])
        known = ids >= 0
        bounds = np.r_[0, np.cumsum(np.bincount(owner[known], minlength=len(queries)))].tolist()
        ids = ids[known]
        return [ids[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]   # (slices: no split per query)

    def retrieve_vectors(self, queries: Sequence[Query], vectors: np.ndarray) -> list[SubgraphOutput]:
        t0 = time.perf_counter()
        out = self.retriever.retrieve(queries, vectors)
        self.step_seconds["retrieve"] += time.perf_counter() - t0
        return out

    def retrieve(self, queries: Sequence[Query], *, batch_size: int = 256,
                 progress: bool = False) -> list[SubgraphOutput]:
        """Subgraphs of `queries`, in order; time per step accumulates in `step_seconds`."""
        from tqdm.auto import tqdm

        out: list[SubgraphOutput] = []
        for i in tqdm(range(0, len(queries), batch_size), disable=not progress, desc="retrieve", unit="batch"):
            batch = queries[i:i + batch_size]
            t0 = time.perf_counter()
            vecs = encode_queries(self.encoder, batch, image_weight=self.config.image_weight)
            self.step_seconds["encode"] += time.perf_counter() - t0
            out.extend(self.retrieve_vectors(batch, vecs))
        return out
