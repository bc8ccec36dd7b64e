"""The embed stage (`mmkg embed`): entity, relation, triple and image vectors of one encoder.

Text rules (what each vector encodes):
* entity:   normalize(enc(label) + enc("label: description")) — the label's vector and the
            described label's vector averaged, renormalised; enc(label) alone when there is no
            description (or it repeats the label). The description disambiguates homonyms, the
            label term keeps an entity findable by its name (with MiniLM on MarKG, "label:
            description" alone puts the entity first for only ~79 % of exact-label queries);
* relation: "label: description" — the label alone when the description is empty or repeats it;
* triple:   "head label, relation label, tail label" (MR-MKG retrieves triples by cosine to this);
* image:    the image itself (vision encoders only), from `images.blob` under the store root.

Fusion rule (vision encoders, entities with images):
    entity = normalize(text_vec + normalize(mean(image vecs of the entity)))
i.e. the mean of the text vector and the entity's unit mean image vector, renormalised, so text
and images weigh equally however many images an entity has. Entities without images keep the
text vector; text-only encoders never see images.

Resumability (img2dataset I2): every kind is cut into fixed chunks of `chunk_size` rows; a chunk
is embedded as a whole in fixed batches and written to `<kg>/work/embed/<slug>/<run key>/` as
`<kind>/chunk-NNNNNN.npy` (float32, atomic), then its `.done.json` marker. A rerun skips chunks
with markers, so a killed run resumes and, with the same settings, produces byte-identical
matrices. The scratch directory is removed once the vectors are committed.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Sequence

import numpy as np
import pyarrow as pa

from mmkg.kg_store import KGStore, atomic, open_store
from mmkg.kg_store.errors import ConfigError, CorruptFileError, KGStoreError
from mmkg.kg_store.hashing import cache_key, sha256_bytes, sha256_file
from mmkg.kg_store.safe_io import check_cached_file, private_dir, read_bounded
from mmkg.kg_store.vectors import encoder_slug, load_vectors, write_vectors
from mmkg.pipeline.encoders.base import length_order as text_length_order, prefetch
from mmkg.pipeline.engines.base import check_engine

log = logging.getLogger(__name__)

ENTITY_TEXT_RULE = "normalize(enc(label) + enc('label: description')); enc(label) when no description"
RELATION_TEXT_RULE = "label: description (label alone when the description is empty or equals it)"
TRIPLE_TEXT_RULE = "head label, relation label, tail label"
FUSION_RULE = "entity = normalize(text + normalize(mean(entity image vectors))); text only when no images"
STORAGE_DTYPES = ("float16", "float32")
DEFAULT_CHUNK_SIZE = 8192
DEFAULT_BATCH_SIZE = 64


# ---- texts --------------------------------------------------------------------------------------
def labelled_text(label: str | None, description: str | None) -> str:
    """The entity/relation rule: "label: description"."""
    label = (label or "").strip()
    description = (description or "").strip()
    if not description or description.lower() == label.lower():
        return label
    return f"{label}: {description}" if label else description


def triple_text(head: str, relation: str, tail: str) -> str:
    """The triple rule: "head label, relation label, tail label"."""
    return f"{head}, {relation}, {tail}"


def _labels(table: pa.Table) -> list[str]:
    # A missing label falls back to the source key, so no vector encodes an empty string.
    labels = table["label"].to_pylist()
    keys = table["key"].to_pylist()
    return [lab if lab else key for lab, key in zip(labels, keys)]


@dataclass
class EmbedTask:
    """All rows of one vector kind: their store ids and the texts or image paths to encode."""

    kind: str
    modality: str  # "text" | "image"
    ids: np.ndarray
    items: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def check_kinds(kinds: Collection[str] | None) -> tuple[str, ...]:
    """The vector kinds to embed, in store order (None: every kind)."""
    from mmkg.kg_store.vectors import VECTOR_KINDS
    if kinds is None:
        return tuple(VECTOR_KINDS)
    unknown = sorted(set(kinds) - set(VECTOR_KINDS))
    if unknown:
        raise ConfigError(f"unknown vector kind(s) {', '.join(map(repr, unknown))}; kinds: {', '.join(VECTOR_KINDS)}")
    return tuple(k for k in VECTOR_KINDS if k in set(kinds))


def plan_tasks(store: KGStore, *, with_images: bool, limit: int | dict[str, int] | None = None,
               kinds: Collection[str] | None = None) -> list[EmbedTask]:
    """The texts/images of every kind (or of `kinds`), in store id order (the first `limit` rows of
    each, or of the kinds named when `limit` is a dict such as {"triple": 4096})."""
    wanted = set(check_kinds(kinds))
    return [t for t in _all_tasks(store, with_images=with_images and "image" in wanted, limit=limit,
                                  triples="triple" in wanted)
            if (t.kind if t.kind != "entity_text" else "entity") in wanted]


def _all_tasks(store: KGStore, *, with_images: bool, limit: int | dict[str, int] | None,
               triples: bool) -> list[EmbedTask]:
    def rows(kind: str) -> slice:
        return slice(None, limit.get(kind) if isinstance(limit, dict) else limit)

    sl = rows("entity")
    ents = store.table("entities", ["id", "key", "label", "description"])
    ent_labels = _labels(ents)
    ent_ids = ents["id"].to_numpy()
    if not np.array_equal(ent_ids, np.arange(len(ent_ids))):
        raise KGStoreError("entities table: ids are not dense 0..n-1 in row order")
    ent_ids = ent_ids[sl].astype(np.int64)
    ent_texts = [labelled_text(lab, d) for lab, d in zip(ent_labels[sl], ents["description"].to_pylist()[sl])]
    described = np.array([t != lab for t, lab in zip(ent_texts, ent_labels[sl])], dtype=bool)
    tasks = [EmbedTask("entity", "text", ent_ids, ent_labels[sl]),
             # scratch-only kind, fused into "entity" (ENTITY_TEXT_RULE)
             EmbedTask("entity_text", "text", ent_ids[described], [t for t, d in zip(ent_texts, described) if d])]
    rels = store.table("relations", ["id", "key", "label", "description"])
    rel_labels = _labels(rels)
    sl = rows("relation")
    rel_texts = [labelled_text(lab, d) for lab, d in zip(rel_labels[sl], rels["description"].to_pylist()[sl])]
    tasks.append(EmbedTask("relation", "text", rels["id"].to_numpy()[sl].astype(np.int64), rel_texts))
    tri = store.triples_array()[rows("triple")] if triples else np.empty((0, 3), np.int64)
    if triples:
            tasks.append(EmbedTask("triple", "text", np.arange(len(tri), dtype=np.int64),  # triple id = row index
                               [triple_text(ent_labels[h], rel_labels[r], ent_labels[t])
                                for h, r, t in tri.tolist()]))
    if with_images and store.count("images"):
        imgs = store.table("images", ["id", "entity_id", "blob"])
        sl = rows("image")
        blobs = imgs["blob"].to_pylist()[sl]
        tasks.append(EmbedTask("image", "image", imgs["id"].to_numpy()[sl].astype(np.int64),
                               [str(store.path(b)) for b in blobs],
                               extra={"entity_id": imgs["entity_id"].to_numpy()[sl].astype(np.int64)}))
    return tasks


# ---- chunk scratch ------------------------------------------------------------------------------
def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + chunk_size, n)) for lo in range(0, n, chunk_size)]


class ChunkScratch:
    """Per-chunk results of one embed run; a chunk counts only once its marker exists."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _npy(self, kind: str, i: int) -> Path:
        return self.root / kind / f"chunk-{i:06d}.npy"

    def _marker(self, kind: str, i: int) -> Path:
        return self.root / kind / f"chunk-{i:06d}.done.json"

    def _recorded(self, kind: str, i: int) -> dict[str, Any] | None:
        """The chunk's marker, if its .npy is still the file it recorded (re-hashed: issue 32,
        an overwritten chunk of the right size was committed as wrong vectors)."""
        import json
        marker, npy = self._marker(kind, i), self._npy(kind, i)
        if check_cached_file(marker, "embed scratch chunk") is None or check_cached_file(npy, "embed scratch chunk") is None:
            return None
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or npy.stat().st_size != info.get("bytes") or sha256_file(npy) != info.get("sha256"):
            log.warning("embed scratch %s differs from what its marker recorded: encoding it again", npy)
            return None
        return info

    def is_done(self, kind: str, i: int, rows: int) -> bool:
        info = self._recorded(kind, i)
        return info is not None and info.get("rows") == rows

    def write(self, kind: str, i: int, vectors: np.ndarray) -> None:
        npy = self._npy(kind, i)
        private_dir(npy.parent, root=self.root.parent, what="embed scratch folder")
        atomic.write_npy(npy, np.ascontiguousarray(vectors, dtype=np.float32))
        # The marker is written last: a kill between the two leaves an unmarked chunk, redone later.
        atomic.write_json(self._marker(kind, i), {"rows": int(len(vectors)), "bytes": npy.stat().st_size,
                                                  "sha256": sha256_file(npy)})

    def read(self, kind: str, i: int) -> np.ndarray:
        """A finished chunk, checked against its marker again (it may have changed since `is_done`)."""
        import io
        info = self._recorded(kind, i)
        if info is None:
            raise CorruptFileError(self._npy(kind, i), "changed after it was written; run the command again")
        data = read_bounded(self._npy(kind, i), int(info["bytes"]))
        if sha256_bytes(data) != info["sha256"]:
            raise CorruptFileError(self._npy(kind, i), "changed after it was written; run the command again")
        return np.load(io.BytesIO(data), allow_pickle=False)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---- one chunk, one batch -----------------------------------------------------------------------
def open_images(paths: Sequence[str]) -> list[Any]:
    from PIL import Image
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise KGStoreError(f"cannot read image {p}: {e}") from None
    return images


def prepare_batch(encoder, modality: str, items: Sequence[str]) -> Any:
    """CPU side of a batch (tokenise, or decode + resize); runs in the loader thread."""
    if modality == "image":
        return encoder.prepare_images(open_images(items))
    return encoder.prepare_text(items)


def forward_batch(encoder, modality: str, prepared: Any) -> np.ndarray:
    return encoder.forward_images(prepared) if modality == "image" else encoder.forward_text(prepared)


def length_order(modality: str, items: Sequence[str]) -> np.ndarray:
    """Texts of similar length batch together (as sentence-transformers does), so a batch pads
    to little more than its own length; images keep their order."""
    return text_length_order(items) if modality == "text" else np.arange(len(items))


def chunk_batches(modality: str, items: Sequence[str], batch_size: int) -> tuple[np.ndarray, list[list[str]]]:
    """The fixed batches of one chunk and the row order they follow."""
    order = length_order(modality, items)
    ordered = [items[i] for i in order]
    return order, [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


def unorder(order: np.ndarray, parts: list[np.ndarray], dim: int) -> np.ndarray:
    out = np.zeros((len(order), dim), np.float32)
    if parts:
        out[order] = np.concatenate(parts)
    return out


def embed_chunk(encoder, modality: str, items: Sequence[str], batch_size: int) -> np.ndarray:
    """One chunk, in the same fixed batches as the local engine (so both give equal vectors)."""
    order, batches = chunk_batches(modality, items, batch_size)
    parts = [forward_batch(encoder, modality, prepare_batch(encoder, modality, b)) for b in batches]
    return unorder(order, parts, encoder.dim)


# ---- engines ------------------------------------------------------------------------------------
@dataclass
class Pending:
    """A chunk still to embed."""

    task: EmbedTask
    index: int
    lo: int
    hi: int


def run_local(encoder, pending: list[Pending], scratch: ChunkScratch, *, batch_size: int,
              on_rows: Callable[[str, int], None] = lambda kind, n: None) -> None:
    """In-process engine: a prefetching loader thread feeds the torch forward, chunk by chunk."""

    def batches() -> Iterator[tuple[Pending, np.ndarray | None, Any]]:
        for p in pending:
            order, chunk = chunk_batches(p.task.modality, p.task.items[p.lo:p.hi], batch_size)
            for j, b in enumerate(chunk):
                yield p, order if j == len(chunk) - 1 else None, prepare_batch(encoder, p.task.modality, b)

    parts: list[np.ndarray] = []
    for p, last_order, prepared in prefetch(batches()):
        parts.append(forward_batch(encoder, p.task.modality, prepared))
        on_rows(p.task.kind, len(parts[-1]))
        if last_order is not None:
            scratch.write(p.task.kind, p.index, unorder(last_order, parts, encoder.dim))
            parts = []


def _spark_embed_partition(encoder_name: str, device: str, precision: str, batch_size: int, threads: int,
                           scratch_root: str) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The mapInPandas function: the encoder is resolved once per Python worker (lru cache)."""

    def run(frames: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd
        import torch
        from mmkg.pipeline.encoders import resolve_encoder
        torch.set_num_threads(threads)
        encoder = resolve_encoder(encoder_name, device=device, precision=precision)
        scratch = ChunkScratch(Path(scratch_root))
        frames = [f for f in frames if len(f)]
        if not frames:  # hash partitioning can leave a partition empty
            return
        rows = pd.concat(frames, ignore_index=True)
        out = []
        for (kind, modality, chunk), g in rows.groupby(["kind", "modality", "chunk"], sort=True):
            items = g.sort_values("pos")["item"].tolist()
            scratch.write(kind, int(chunk), embed_chunk(encoder, modality, items, batch_size))
            out.append((kind, int(chunk), len(items)))
        yield pd.DataFrame(out, columns=["kind", "chunk", "rows"])

    return run


def run_spark(encoder, pending: list[Pending], scratch: ChunkScratch, *, batch_size: int, threads: int,
              master: str | None = None, on_rows: Callable[[str, int], None] = lambda kind, n: None) -> None:
    """Spark engine: one partition per pending chunk, `mapInPandas` embeds it and writes the chunk
    file on the executor (the store must be on a filesystem every executor sees)."""
    import pandas as pd
    from mmkg.pipeline.engines.spark import spark_session
    with spark_session(master, app_name="mmkg-embed") as spark:
        frame = pd.DataFrame([
            {"kind": p.task.kind, "modality": p.task.modality, "chunk": p.index, "pos": i, "item": item}
            for p in pending for i, item in enumerate(p.task.items[p.lo:p.hi])])
        df = spark.createDataFrame(frame, schema="kind string, modality string, chunk int, pos int, item string")
        df = df.repartition(len(pending), "kind", "chunk")
        fn = _spark_embed_partition(encoder.name, str(encoder.device), encoder.precision, batch_size, threads,
                                    str(scratch.root))
        for row in df.mapInPandas(fn, schema="kind string, chunk int, rows long").toLocalIterator():
            on_rows(row["kind"], int(row["rows"]))


# ---- fusion -------------------------------------------------------------------------------------
def fuse_entity_text(label_vecs: np.ndarray, entity_ids: np.ndarray, text_vecs: np.ndarray,
                     text_ids: np.ndarray) -> np.ndarray:
    """ENTITY_TEXT_RULE: add the described-label vector to the label vector and renormalise."""
    from mmkg.pipeline.encoders.base import l2_normalize
    out = label_vecs.astype(np.float32, copy=True)
    if len(text_ids):
        rows = np.searchsorted(entity_ids, text_ids)  # both in id order
        out[rows] = l2_normalize(out[rows] + text_vecs)
    return out


def fuse_entity_images(entity_vecs: np.ndarray, entity_ids: np.ndarray, image_vecs: np.ndarray,
                       image_entity_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Apply FUSION_RULE; returns the fused matrix and how many entities had images."""
    from mmkg.pipeline.encoders.base import l2_normalize
    row_of = {int(e): i for i, e in enumerate(entity_ids)}
    rows = np.array([row_of.get(int(e), -1) for e in image_entity_ids], dtype=np.int64)
    keep = rows >= 0
    if not keep.any():
        return entity_vecs, 0
    sums = np.zeros_like(entity_vecs, dtype=np.float32)
    np.add.at(sums, rows[keep], image_vecs[keep].astype(np.float32))
    has = np.zeros(len(entity_vecs), bool)
    has[rows[keep]] = True
    fused = entity_vecs.astype(np.float32, copy=True)
    fused[has] = l2_normalize(fused[has] + l2_normalize(sums[has]))
    return fused, int(has.sum())


# ---- the stage ----------------------------------------------------------------------------------
def fuse_entity_arrays(arrays: dict[str, tuple[np.ndarray, np.ndarray]], tasks: list[EmbedTask], dtype: str
                       ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Fold the scratch-only "entity_text" vectors and the image vectors into the entity vectors
    (ENTITY_TEXT_RULE, FUSION_RULE) and cast to the storage dtype; returns (arrays, entities fused)."""
    arrays = dict(arrays)
    if "entity_text" in arrays:
        text_vecs, text_ids = arrays.pop("entity_text")
        arrays["entity"] = (fuse_entity_text(*arrays["entity"], text_vecs, text_ids), arrays["entity"][1])
    fused = 0
    image_task = next((t for t in tasks if t.kind == "image"), None)
    if image_task is not None and len(image_task):
        ent_vecs, ent_ids = arrays["entity"]
        ent_vecs, fused = fuse_entity_images(ent_vecs, ent_ids, arrays["image"][0], image_task.extra["entity_id"])
        arrays["entity"] = (ent_vecs, ent_ids)
    return {k: (m.astype(dtype), ids) for k, (m, ids) in arrays.items()}, fused


@dataclass
class EmbedResult:
    """What one embed run did: the committed vectors meta and per-kind counts."""

    meta: dict[str, Any]
    counts: dict[str, int]          # rows per kind in the committed vectors
    encoded: dict[str, int]         # rows per kind that were cache misses (encoded this run or resumed)
    reused: dict[str, int]          # rows per kind answered by the vector cache
    forwarded: int                  # distinct texts/images run through the encoder by this process
    outputs: list[str]
    seconds: float

    @property
    def cache_hits(self) -> int:
        return sum(self.reused.values())


def _task_keys(task: EmbedTask, store: KGStore) -> np.ndarray:
    from mmkg.pipeline.vector_cache import KEY_DTYPE, image_key, text_key
    if task.modality == "image":
        sha = store.table("images", ["id", "sha256"])
        by_id = dict(zip(sha["id"].to_pylist(), sha["sha256"].to_pylist()))
        return np.array([image_key(by_id[int(i)]) for i in task.ids], KEY_DTYPE)
    return np.array([text_key(t) for t in task.items], KEY_DTYPE)


def _missing_tasks(tasks: list[EmbedTask], keys: dict[str, np.ndarray], cache: Any) -> tuple[list[EmbedTask],
                                                                                            dict[str, int]]:
    """One task per modality holding every distinct cache miss once; and misses per kind."""
    from mmkg.pipeline.vector_cache import KEY_DTYPE
    missing: list[EmbedTask] = []
    encoded: dict[str, int] = {}
    for modality in ("text", "image"):
        ks, items = [], []
        seen: set[bytes] = set()
        for t in tasks:
            if t.modality != modality:
                continue
            found, _ = cache.lookup(keys[t.kind])
            encoded[t.kind] = int((~found).sum())
            for k, item, f in zip(keys[t.kind], t.items, found):
                if not f and k not in seen:
                    seen.add(k)
                    ks.append(k)
                    items.append(item)
        if ks and modality == "text":  # one length order over the whole stage, not per chunk (issue 18)
            order = text_length_order(items)
            ks, items = [ks[i] for i in order], [items[i] for i in order]
        if ks:
            missing.append(EmbedTask(modality, modality, np.arange(len(ks), dtype=np.int64), items,
                                     extra={"keys": np.array(ks, KEY_DTYPE)}))
    return missing, encoded


def _prefix_rows(old: np.ndarray | None, old_ids: np.ndarray | None, new: np.ndarray, new_ids: np.ndarray) -> int:
    """How many leading rows (ids and bytes) the new matrix shares with the previous one: what
    lets the index stage append instead of rebuilding and retrieval reuse unchanged subgraphs."""
    if old is None or old_ids is None or old.dtype != new.dtype or old.shape[1:] != new.shape[1:]:
        return 0
    n = min(len(old), len(new))
    same_ids = np.asarray(old_ids[:n]) == np.asarray(new_ids[:n])
    n = int(np.argmin(same_ids)) if not same_ids.all() else n
    block = 1 << 14  # compare in blocks: the first differing block bounds the prefix
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        eq = np.all(np.asarray(old[lo:hi]) == new[lo:hi], axis=1)
        if not eq.all():
            return lo + int(np.argmin(eq))
    return n


def embed_store(kg: str | Path, encoder: str, *, engine: str = "local", batch_size: int = DEFAULT_BATCH_SIZE,
                device: str = "cpu", dtype: str = "float32", precision: str = "auto", runtime: str = "auto",
                threads: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                limit: int | dict[str, int] | None = None, spark_master: str | None = None,
                progress: bool = True, kinds: Collection[str] | None = None) -> EmbedResult:
    """The embed stage (`mmkg embed` and the `mmkg run` DAG): embed every kind of the committed
    store (or the `kinds` its configuration uses, `mmkg.retrieval.retriever.vector_kinds_needed`) with
    `encoder` and commit `vectors/<slug>` (holding exactly those kinds).

    Only content the vector cache (`mmkg.pipeline.vector_cache`, `<kg>/cache/embeddings/`) has not seen
    is encoded, each distinct text/image once, in resumable chunks under `<kg>/work/embed/`; the
    meta records per kind how many rows were encoded or reused and how many leading rows are
    byte-identical to the previous vectors (`incremental.<kind>.prefix_rows`).
    """
    import torch
    from mmkg.pipeline.encoders import resolve_encoder
    from mmkg.pipeline.vector_cache import VectorCache

    check_engine(engine, "embed")
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"unsupported --dtype {dtype!r}; choose float16 or float32")
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError("--batch-size and --chunk-size must be positive")
    threads = threads or min(os.cpu_count() or 1, 16)
    torch.set_num_threads(threads)  # fixed: the same settings give the same bytes on a rerun
    t0 = time.perf_counter()
    kg = Path(kg)
    store = open_store(kg)
    enc = resolve_encoder(encoder, device=device, precision=precision, runtime=runtime)
    cache = VectorCache.for_encoder(kg, enc)
    tasks = plan_tasks(store, with_images=enc.has_vision, limit=limit, kinds=kinds)
    keys = {t.kind: _task_keys(t, store) for t in tasks}
    missing, encoded = _missing_tasks(tasks, keys, cache)
    # The scratch is keyed by what is missing, so a killed run resumes its finished chunks.
    run_key = cache_key({"encoder": enc.name, "precision": enc.precision, "chunk_size": chunk_size,
                           "batch_size": batch_size, "rules": [ENTITY_TEXT_RULE, TRIPLE_TEXT_RULE],
                           "keys": [sha256_bytes(t.extra["keys"].tobytes()) for t in missing]})
    scratch = ChunkScratch(store.path(f"work/embed/{enc.slug}/{run_key}"))
    chunks = {t.kind: chunk_bounds(len(t), chunk_size) for t in missing}
    pending = [Pending(t, i, lo, hi) for t in missing for i, (lo, hi) in enumerate(chunks[t.kind])
               if not scratch.is_done(t.kind, i, hi - lo)]
    total = sum(len(t) for t in missing)
    todo = sum(p.hi - p.lo for p in pending)
    log.info("embed %s with %s: %d distinct new texts/images, %d to do in %d chunks (run %s)", kg, enc.name, total,
             todo, len(pending), run_key)
    t_embed = time.perf_counter()
    if pending:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=total - todo, unit="row", desc=f"embed {enc.name}", disable=not progress)
        try:
            if engine == "local":
                run_local(enc, pending, scratch, batch_size=batch_size, on_rows=lambda kind, n: bar.update(n))
            else:
                run_spark(enc, pending, scratch, batch_size=batch_size, threads=threads, master=spark_master,
                          on_rows=lambda kind, n: bar.update(n))
        finally:
            bar.close()
    embed_seconds = time.perf_counter() - t_embed
    for t in missing:
        cache.add(t.extra["keys"], np.concatenate([scratch.read(t.kind, i) for i in range(len(chunks[t.kind]))]))

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for t in tasks:
        found, vecs = cache.lookup(keys[t.kind])
        if not found.all():
            raise KGStoreError(f"embed: {int((~found).sum())} {t.kind} vectors missing from the cache after encoding")
        arrays[t.kind] = (vecs, t.ids)
    rows = {t.kind: len(t) for t in tasks}
    arrays, fused = fuse_entity_arrays(arrays, tasks, dtype)

    slug = encoder_slug(enc.name)
    prev = store.artifact(f"vectors/{slug}")
    incremental: dict[str, Any] = {k: {"rows": n, "encoded": encoded.get(k, 0), "reused": n - encoded.get(k, 0)}
                                   for k, n in rows.items()}
    for kind, (matrix, ids) in arrays.items():
        old = old_ids = prev_sha = None
        if prev is not None and kind in prev.get("kinds", {}):
            old, old_ids = load_vectors(store, slug, kind)
            prev_sha = store.file_sha(f"vectors/{slug}/{kind}.npy")
        incremental[kind].update({"prefix_rows": _prefix_rows(old, old_ids, matrix, ids), "prev_sha256": prev_sha,
                                  "prev_rows": None if old is None else int(len(old))})
    seconds = round(time.perf_counter() - t0, 3)
    meta = {
        "encoder": enc.name, "slug": enc.slug, "dim": enc.dim, "dtype": dtype, "encoder_info": enc.describe(),
        "kg_version": store.kg_version, "rules": {"entity": ENTITY_TEXT_RULE, "relation": RELATION_TEXT_RULE,
                                                  "triple": TRIPLE_TEXT_RULE, "fusion": FUSION_RULE},
        "entities_with_images": fused, "engine": engine, "batch_size": batch_size, "chunk_size": chunk_size,
        "threads": threads, "device": str(enc.device), "limit": limit, "run_key": run_key,
        "kinds_requested": list(check_kinds(kinds)),
        "seconds": seconds, "embed_seconds": round(embed_seconds, 3), "rows_forwarded_this_run": todo,
        "incremental": incremental, "cache": {"entries": len(cache), "path": str(cache.root.relative_to(kg))},
    }
    with KGStore.writer(kg) as w:
        if w.store.kg_version != store.kg_version:
            raise KGStoreError(f"{kg} changed to kg_version {w.store.kg_version} during embedding; rerun embed")
        files = write_vectors(w, enc.name, arrays, meta)
        w.record_stage("embed", config={"encoder": enc.name, "dtype": dtype, "engine": engine, "limit": limit,
                                        "batch_size": batch_size, "chunk_size": chunk_size,
                                        "kinds": list(check_kinds(kinds))},
                       counts={k: len(v[1]) for k, v in arrays.items()}, outputs=files, seconds=seconds)
        committed = w.commit()
    scratch.clear()
    return EmbedResult(meta=committed.artifact(f"vectors/{slug}") or meta,
                       counts={k: len(v[1]) for k, v in arrays.items()},
                       encoded={k: v["encoded"] for k, v in incremental.items()},
                       reused={k: v["reused"] for k, v in incremental.items()},
                       forwarded=todo, outputs=files, seconds=seconds)
