"""Text search and subgraph retrieval for the web view, when the store has embeddings.

Both need the encoder the vectors were made with (queries and nodes must share one space), so
they are optional: without `vectors/<slug>` artifacts, or without the retrieval package, the
pages say so instead of failing. The encoder and retriever are loaded once per process.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import KGStoreError

logger = logging.getLogger(__name__)

NO_EMBEDDINGS = "no embeddings yet: run `mmkg embed` (and `mmkg index`) on this KG to enable this"


class SemanticUnavailable(KGStoreError):
    """The store or this installation cannot answer text queries (shown as a message)."""


def embedded_encoders(store: KGStore) -> list[str]:
    """Encoder names with committed vectors in the store, in manifest order."""
    names = []
    for name, meta in store.artifacts("vectors/").items():
        if isinstance(meta, dict):
            names.append(meta.get("encoder") or name.split("/", 1)[1])
    return names


class Semantic:
    """Lazily built encoder, entity index and retriever of one store (thread-safe)."""

    def __init__(self, store: KGStore):
        self.store = store
        self._lock = threading.Lock()
        self._retrievers: dict[str, Any] = {}
        self._entity_search: dict[str, Any] = {}

    def encoder_name(self, kind: str) -> str:
        for name in embedded_encoders(self.store):
            meta = self.store.artifact(f"vectors/{name.replace('/', '__').replace(':', '__')}") or {}
            if kind in meta.get("kinds", {kind: None}):
                return name
        raise SemanticUnavailable(NO_EMBEDDINGS)

    # ---- search entities by text -------------------------------------------------------------
    def _entity_searcher(self, name: str):
        if name not in self._entity_search:
            try:
                from mmkg.retrieval.index_search import EntitySearcher
                self._entity_search[name] = EntitySearcher(self.store, name)
            except (ImportError, KGStoreError) as e:
                raise SemanticUnavailable(f"encoder {name!r} is not available here ({e})") from None
        return self._entity_search[name]

    def search_entities(self, text: str, k: int = 20) -> tuple[list[tuple[int, float]], str]:
        """[(entity id, cosine)] most similar to `text`, and the encoder used."""
        name = self.encoder_name("entity")
        with self._lock:
            pairs = self._entity_searcher(name).search(text, k)
        return pairs, name

    def _triple_scorer(self, name: str) -> Any:
        """Cosines of triples to the question, shown beside the rank score when the store has triple
        vectors (the anchored retriever itself does not read them)."""
        key = f"triple-scorer:{name}"
        if key not in self._retrievers:
            from mmkg.kg_store.vectors import load_vectors, vector_meta
            from mmkg.retrieval.retriever import row_lookup
            from mmkg.retrieval.subgraph import TripleScorer
            scorer = None
            if "triple" in vector_meta(self.store, name).get("kinds", {}):
                vecs, ids = load_vectors(self.store, name, "triple")
                scorer = TripleScorer(vecs, row_lookup(ids, self.store.count("triples")))
            self._retrievers[key] = scorer
        return self._retrievers[key]

    # ---- retrieve a subgraph for a question --------------------------------------------------
    def retrieve(self, question: str, top_n: int) -> dict[str, Any]:
        """The top-`top_n` triples for `question` (MR-MKG §3.2) with what the page shows about them:
        `triple_ids`, `scores` (the retriever's rank score), `cosines` (each triple's text cosine to
        the question: the anchored retriever ranks by a path prior first, so its scores can be equal
        to four digits and say little), `encoder`, `retriever` and its config."""
        name = self.encoder_name("entity")  # the anchored retriever reads entity vectors only
        try:
            from mmkg.retrieval.datasets import Query
            from mmkg.retrieval.retriever import RetrievalConfig, SubgraphRetriever, encode_queries
        except ImportError as e:
            raise SemanticUnavailable(f"retrieval is not installed here ({e})") from None
        with self._lock:
            if name not in self._retrievers:
                # one retriever with N = 20; N = 10 is its prefix (SubgraphOutput.head)
                try:
                    self._retrievers[name] = SubgraphRetriever(self.store, RetrievalConfig(encoder=name, top_N=20))
                except ImportError as e:
                    raise SemanticUnavailable(f"retrieval is not installed here ({e})") from None
                except KGStoreError as e:  # e.g. vectors but no FAISS index yet
                    raise SemanticUnavailable(f"retrieval is not ready for this KG: {e}") from None
            retriever = self._retrievers[name]
            queries = [Query(query_id="web", text=question)]
            vectors = encode_queries(retriever.encoder, queries, image_weight=retriever.config.image_weight)
            (out,) = retriever.retrieve_vectors(queries, vectors)
            out = out.head(top_n)
            tids = np.asarray(out.triple_ids)
            score = retriever.retriever.ctx.score or self._triple_scorer(name)  # None: no triple vectors
            cosine = dict(zip(*(a.tolist() for a in score(vectors[0], tids)))) if score is not None else {}
        cfg = retriever.config
        return {"triple_ids": tids, "scores": np.asarray(out.scores),
                "cosines": [cosine.get(int(t)) for t in tids.tolist()], "encoder": name,
                "retriever": cfg.retriever, "config": {"top_N": cfg.top_N, "path_hops": cfg.path_hops,
                                                       "hops": cfg.hops, "top_n": cfg.top_n}}
