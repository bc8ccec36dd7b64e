"""What every dataset shares: `Query`, `QuerySet`, the `Dataset` base class and the `dataset`
registry, resolved from the `NAME:PATH` spec of `mmkg retrieve --dataset` and the DAG.

A dataset owns everything that differs between datasets: its query building, answer space, the
files that define it (`defining_files`: every file its queries, prior or reports read; their
sha256 `digest` is in every cache key and fingerprint that depends on the dataset), its split
names, how deep the reports rank, and its report and leakage hooks. The code above it (the
retrieve stage, the reports, the DAG) calls these hooks and never tests a dataset's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.hashing import cache_key, files_digest, sha256_file
from mmkg.kg_store.registry import family
from mmkg.pipeline.paths import PathEscapeError, safe_join
from mmkg.retrieval.query_rejects import reject

datasets = family("dataset")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}


#: the seed of the sample a `limit` takes (fixed: a run and its resume, or two variants, see the same rows)
LIMIT_SEED = 0


def limit_order(n: int, limit: int | None) -> Sequence[int]:
    """The order in which a `limit` draws from n rows: every row in order without one, else a seeded
    random permutation (a prefix of a MARS split would be a few relations: its files are sorted by
    mode and relation). Callers take the first `limit` usable rows of it and keep them in row order."""
    return range(n) if limit is None else np.random.default_rng(LIMIT_SEED).permutation(n)


def limit_sample(n: int, limit: int | None) -> list[int]:
    """The rows a `limit` keeps when every row is usable: the first `limit` of `limit_order`, in row order."""
    return sorted(int(k) for k in limit_order(n, limit)[:limit])


@dataclass
class Query:
    """One retrieval query; `fields` are copied verbatim into the shard row."""

    query_id: str
    text: str
    image_paths: list[str] = field(default_factory=list)
    entity_keys: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    #: the query's example pair (MARS: [head key, tail key]); a retriever may read it, never `fields`
    example_keys: list[str] = field(default_factory=list)
    #: identity of the query's own dataset row (MARS: `mmkg.retrieval.paths.mars_row_digest`); never read
    #: by a retriever, only by the stage that decides which prior a query may use
    row_digest: str = ""
    #: fold of the path prior to leave out (-1: the whole train file's prior): set for a query that
    #: is itself a row of the prior's train file, so its own answer never counts in its prior
    prior_fold: int = -1


@dataclass
class QuerySet:
    """The queries of one dataset split plus what identifies the input (for the cache key)."""

    dataset: str
    split: str
    queries: list[Query]
    source_files: list[Path]
    #: Arrow types of the `fields` columns (so empty lists and all-null columns keep their type)
    field_types: dict[str, pa.DataType] = field(default_factory=dict)
    #: one per bad record of the input (mmkg.retrieval.query_rejects.reject): location, reason, raw
    rejects: list[dict[str, Any]] = field(default_factory=list)
    #: entity ids every answer lies in, when the dataset declares them (MARS: the candidate file)
    answer_space: np.ndarray | None = None
    #: the dataset's train split file (a retriever may learn from it), when there is one
    train_file: Path | None = None
    #: the digest of every file that defines this split (`Dataset.digest`); set by `Dataset.build`
    digest: str | None = None
    #: the dataset's folder identity (`Dataset.identity`): two folders with the same name and
    #: split keep their shard sets apart
    identity: str | None = None

    def source_sha256(self) -> str:
        if self.digest is None:
            self.digest = ";".join(f"{p.name}:{sha256_file(p)}" for p in self.source_files)
        return self.digest

    @property
    def kind(self) -> type["Dataset"]:
        """The registered class of this query set's dataset (its report and leakage hooks)."""
        return datasets.get(self.dataset)


class Dataset:
    """One registered dataset format at one path. Subclasses set the class attributes and
    implement `defining_files` and `queries`; the hooks default to "nothing dataset-specific"."""

    name: ClassVar[str]
    #: split names: the one a prior or model learns from, the one tuned on, the one reported
    train_split: ClassVar[str | None] = None
    fit_split: ClassVar[str | None] = None
    eval_split: ClassVar[str | None] = None
    field_types: ClassVar[dict[str, pa.DataType]] = {}
    #: queries carry `answer_entity` / `question_entity`: the summaries record hits, pool and links
    answer_summaries: ClassVar[bool] = False
    #: `mmkg leakage` is defined for this dataset (`leakage`)
    has_leakage: ClassVar[bool] = False

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ---- what defines it ------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The folder the dataset's files are named relative to."""
        return self.path if self.path.is_dir() else self.path.parent

    def defining_files(self, split: str | None) -> list[Path]:
        """Every file that decides this split's queries and reports (sorted, existing files)."""
        raise NotImplementedError

    def digest(self, split: str | None) -> str:
        """sha256 prefix over (name, sha256) of every defining file: in every cache key of the split."""
        return cache_key({"dataset": self.name, "files": files_digest(self.defining_files(split), self.root)})

    def identity(self) -> str:
        """Which dataset folder this is (its resolved path), apart from its content."""
        return cache_key({"dataset": self.name, "path": str(self.path.resolve())}, 8)

    # ---- queries --------------------------------------------------------------------------------
    def queries(self, *, store: KGStore | None = None, split: str | None = None,
                with_images: bool = False) -> QuerySet:
        raise NotImplementedError

    def build(self, *, store: KGStore | None = None, split: str | None = None, with_images: bool = False,
              limit: int | None = None) -> QuerySet:
        """`queries` (a seeded random sample of `limit`, in file order, when given), stamped with the
        dataset's digest."""
        qs = self.queries(store=store, split=split, with_images=with_images)
        qs.digest, qs.identity = self.digest(split), self.identity()
        if limit is not None:
            qs.queries = [qs.queries[i] for i in limit_sample(len(qs.queries), limit)]
        if with_images:
            _check_query_images(qs)
        return qs

    # ---- reports --------------------------------------------------------------------------------
    @classmethod
    def ranked_N(cls, top_N: int) -> int:
        """How deep the retrieve stage ranks for the reports (the shards keep `top_N`)."""
        return top_N

    @classmethod
    def summarize(cls, s: Any, graph: Any, triples: np.ndarray, queries: Sequence[Query], outputs: Sequence[Any],
                  *, top_N: int, hops: int, ranked_N: int | None) -> None:
        """Add the dataset's per-query figures to `s` (a `QuerySummaries`); runs on executors too."""

    @classmethod
    def quality(cls, store: KGStore, qs: QuerySet, s: Any, report: dict[str, Any], *, top_N: int, hops: int,
                strata: dict[str, np.ndarray] | None, ranked_N: int | None) -> None:
        """Add the dataset's figures to the quality report."""

    @classmethod
    def run_leakage(cls, store: KGStore, qs: QuerySet,
                    s: Any) -> tuple[dict[str, Any] | None, dict[str, np.ndarray] | None]:
        """(leakage report beside the shards, per-query strata of the quality report), or Nones."""
        return None, None

    def leakage_splits(self) -> list[str]:
        """The splits `mmkg leakage` checks by default."""
        return [s for s in (self.fit_split, self.eval_split) if s]

    def leakage(self, store: KGStore, qs: QuerySet) -> dict[str, Any]:
        """`mmkg leakage` for one split."""
        defined = [n for n, c in datasets.items() if c.has_leakage]
        raise ConfigError(f"leakage is defined for {', '.join(defined)}, not {self.name}")


# ---- resolving a spec ------------------------------------------------------------------------------

def parse_dataset_spec(spec: str) -> tuple[str, Path]:
    """`NAME:PATH` → (the registered name, PATH); an unknown NAME is a one-line ConfigError."""
    name, sep, path = spec.partition(":")
    if not sep or not path:
        raise ConfigError(f"--dataset must look like NAME:PATH (one of {', '.join(datasets.names())}), "
                          f"got {spec!r}")
    if name not in datasets:
        raise ConfigError(f"unknown dataset kind {name!r}; choose one of: {', '.join(datasets.names())}")
    p = Path(path)
    if not p.exists():
        raise KGStoreError(f"dataset path {p} does not exist")
    return datasets.get(name).name, p


def resolve_dataset(spec: str) -> Dataset:
    """`NAME:PATH` → the registered dataset at PATH."""
    name, path = parse_dataset_spec(spec)
    return datasets.get(name)(path)


def build_queries(spec: str, *, store: KGStore | None = None, split: str | None = None,
                  with_images: bool = False, limit: int | None = None) -> QuerySet:
    """Resolve `NAME:PATH` and build its queries (a seeded random sample of `limit`, when given)."""
    return resolve_dataset(spec).build(store=store, split=split, with_images=with_images, limit=limit)


def _check_query_images(qs: QuerySet) -> None:
    """Query images go through the ingest limits (mmkg.pipeline.images: regular file, size, pixel
    bomb refused from the header, full decode): a query whose image fails becomes one reject
    row (`image <code>: detail`) instead of aborting the run when the encoder decodes it."""
    from mmkg.pipeline.images import ImageOutcome, open_user_image
    seen: dict[str, str | None] = {}
    kept = []
    for q in qs.queries:
        for p in q.image_paths:
            if p not in seen:
                out = open_user_image(p)
                seen[p] = out.reject_reason if isinstance(out, ImageOutcome) else None
            if seen[p] is not None:
                where = qs.source_files[0] if qs.source_files else Path(qs.dataset)
                qs.rejects.append(reject(where, q.query_id, p, f"image {seen[p]}"))
                break
        else:
            kept.append(q)
    qs.queries = kept


# ---- shared by the builders ----------------------------------------------------------------------

def tree_files(folder: Path) -> list[Path]:
    """Every regular file under `folder` (sorted; none when it is absent)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


class EntityLabels:
    """Source key → label, through the store (alias keys included)."""

    def __init__(self, store: KGStore):
        self.store = store
        self._labels = store.table("entities", ["label"])["label"].to_numpy(zero_copy_only=False)

    def __call__(self, keys: list[str]) -> list[str]:
        ids = self.store.entity_ids(keys)
        return [str(self._labels[i]) if i >= 0 and self._labels[i] else k for k, i in zip(keys, ids)]


def store_images(store: KGStore | None) -> dict[int, str]:
    """Entity id → path of its first stored (normalised) image blob."""
    if store is None or not store.has_table("images"):
        return {}
    imgs = store.table("images", ["entity_id", "blob"])
    out: dict[int, str] = {}
    for eid, blob in zip(imgs["entity_id"].to_pylist(), imgs["blob"].to_pylist()):
        if eid is not None and blob and eid not in out:
            out[eid] = str(store.path(blob))
    return out


def entity_image(key: str, eid: int, blobs: dict[int, str], image_dirs: list[Path]) -> str | None:
    """One image of an entity: a store blob if it has one, else the first file of `<dir>/<key>/`.

    MarT reads a random file per entity folder; we take the first in name order so that the
    query (and so the cache) is deterministic.
    """
    if eid in blobs:
        return blobs[eid]
    for d in image_dirs:
        try:
            safe_join(d, key)  # the key comes from the data file: "../x" must not leave the folder
        except PathEscapeError:
            continue
        folder = d / key
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if files:
                return str(files[0])
    return None
