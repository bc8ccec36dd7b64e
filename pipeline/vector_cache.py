"""Incremental embedding: a content-addressed vector cache, so a new KG version encodes only new content.

A vector depends only on (encoder, precision, the exact text) or (encoder, precision, the image
bytes), never on the entity id or the KG version, so the cache key is the sha256 of the content:
`sha256("text\\0" + text)` or `sha256("image\\0" + image sha256)`. The cache lives in
`<kg>/cache/embeddings/<encoder-slug>/<precision>/` as append-only segments
(`seg-NNNNNN.keys.npy` S32 digests, `seg-NNNNNN.vecs.npy` float32, then `seg-NNNNNN.json` as the
done marker, img2dataset I2), so a killed run keeps every finished chunk and resumes from it.
It is a cache, not committed data: deleting it only costs re-encoding. Query encoding reuses it
through `CachedTextEncoder`, so unchanged queries are not re-encoded either.

`embed_incremental` is the embed stage the DAG runs: same texts, fusion and output artifact as
`pipeline.embed.embed_store` (it reuses its task planning, engines and fusion), but it encodes only
cache misses, and records per kind how many leading rows are byte-identical to the previous
committed vectors (`incremental.<kind>.prefix_rows`), which is what lets the index stage append
instead of rebuilding and the retrieve stage reuse unchanged subgraphs.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kg_store import KGStore, atomic, open_store
from kg_store.errors import KGStoreError
from kg_store.hashing import config_hash
from kg_store.vectors import encoder_slug, load_vectors, write_vectors

log = logging.getLogger(__name__)

KEY_DTYPE = "S32"
#: compact the cache into one segment when it has more than this many
MAX_SEGMENTS = 32


def text_key(text: str) -> bytes:
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).digest()


def image_key(image_sha256: str) -> bytes:
    return hashlib.sha256(b"image\0" + image_sha256.encode("ascii")).digest()


class VectorCache:
    """Append-only, content-addressed float32 vectors of one encoder + precision."""

    def __init__(self, root: str | Path, dim: int):
        self.root, self.dim = Path(root), int(dim)
        self._keys = np.empty(0, KEY_DTYPE)      # sorted
        self._vecs = np.zeros((0, self.dim), np.float32)
        self._load()

    @classmethod
    def for_encoder(cls, kg: str | Path, encoder: Any) -> "VectorCache":
        return cls(Path(kg) / "cache" / "embeddings" / encoder.slug / encoder.precision, encoder.dim)

    def _segments(self) -> list[Path]:
        return sorted(self.root.glob("seg-*.json")) if self.root.exists() else []

    def _load(self) -> None:
        keys, vecs = [], []
        for marker in self._segments():
            stem = marker.with_suffix("")
            k = np.load(f"{stem}.keys.npy", allow_pickle=False)
            v = np.load(f"{stem}.vecs.npy", allow_pickle=False)
            if len(k) != len(v) or (len(v) and v.shape[1] != self.dim):
                log.warning("ignoring inconsistent cache segment %s", stem)
                continue
            keys.append(k)
            vecs.append(v)
        if keys:
            self._set(np.concatenate(keys), np.concatenate(vecs))

    def _set(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        keys, first = np.unique(keys, return_index=True)  # sorted, first occurrence wins
        self._keys, self._vecs = keys, np.ascontiguousarray(vecs[first], np.float32)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask (n,), vectors (n, dim) float32 with zero rows where missing)."""
        keys = np.asarray(keys, KEY_DTYPE)
        out = np.zeros((len(keys), self.dim), np.float32)
        if not len(self._keys) or not len(keys):
            return np.zeros(len(keys), bool), out
        pos = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
        found = self._keys[pos] == keys
        out[found] = self._vecs[pos[found]]
        return found, out

    def add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        """Persist one segment (atomic files, marker last) and merge it in memory."""
        keys = np.asarray(keys, KEY_DTYPE)
        if not len(keys):
            return
        vecs = np.ascontiguousarray(vecs, np.float32)
        self.root.mkdir(parents=True, exist_ok=True)
        n = len(self._segments())
        if n >= MAX_SEGMENTS:
            self.compact()
            n = 1
        stem = self.root / f"seg-{int(time.time() * 1e6):016d}-{os.getpid()}"
        atomic.write_npy(f"{stem}.keys.npy", keys)
        atomic.write_npy(f"{stem}.vecs.npy", vecs)
        atomic.write_json(f"{stem}.json", {"rows": int(len(keys)), "dim": self.dim})
        self._set(np.concatenate([self._keys, keys]), np.concatenate([self._vecs, vecs]))

    def compact(self) -> None:
        """Rewrite all segments as one (new segment written before the old ones are removed)."""
        old = self._segments()
        if len(old) <= 1:
            return
        stem = self.root / f"seg-{int(time.time() * 1e6):016d}-{os.getpid()}-c"
        atomic.write_npy(f"{stem}.keys.npy", self._keys)
        atomic.write_npy(f"{stem}.vecs.npy", self._vecs)
        atomic.write_json(f"{stem}.json", {"rows": int(len(self._keys)), "dim": self.dim, "compacted": len(old)})
        for marker in old:
            s = marker.with_suffix("")
            marker.unlink(missing_ok=True)  # marker first: a half-removed segment is never read
            for suffix in (".keys.npy", ".vecs.npy"):
                Path(f"{s}{suffix}").unlink(missing_ok=True)


# ---- query encoding through the cache --------------------------------------------------------
def cached_text_encoder(encoder: Any, cache: VectorCache) -> Any:
    """An `Encoder` that answers `encode_text` from `cache` and encodes (and stores) only misses."""
    from pipeline.encoders.base import Encoder

    class CachedTextEncoder(Encoder):
        # Delegates everything to the wrapped encoder; only encode_text goes through the cache.
        def __init__(self) -> None:
            self.name, self.device, self.precision = encoder.name, encoder.device, encoder.precision
            self.dim, self.has_vision = encoder.dim, encoder.has_vision
            self.context_length = getattr(encoder, "context_length", 77)
            self.inner, self.cache, self.hits, self.misses = encoder, cache, 0, 0

        def __getattr__(self, item: str) -> Any:
            return getattr(encoder, item)

        def prepare_text(self, texts: Sequence[str]) -> Any:
            return encoder.prepare_text(texts)

        def forward_text(self, batch: Any) -> np.ndarray:
            return encoder.forward_text(batch)

        def prepare_images(self, images: Sequence[Any]) -> Any:
            return encoder.prepare_images(images)

        def forward_images(self, batch: Any) -> np.ndarray:
            return encoder.forward_images(batch)

        def encode_text(self, texts: Sequence[str]) -> np.ndarray:
            keys = np.array([text_key(t) for t in texts], KEY_DTYPE)
            found, out = self.cache.lookup(keys)
            self.hits += int(found.sum())
            miss = np.flatnonzero(~found)
            if miss.size:
                self.misses += int(miss.size)
                uniq, inverse = np.unique(keys[miss], return_inverse=True)
                first = {k: i for i, k in zip(miss[::-1], keys[miss][::-1])}
                vecs = encoder.encode_text([texts[first[k]] for k in uniq])
                self.cache.add(uniq, vecs)
                out[miss] = vecs[inverse]
            return out

    return CachedTextEncoder()


# ---- the incremental embed stage -------------------------------------------------------------
def _task_keys(task: Any, store: KGStore) -> np.ndarray:
    if task.modality == "image":
        sha = store.table("images", ["id", "sha256"])
        by_id = dict(zip(sha["id"].to_pylist(), sha["sha256"].to_pylist()))
        return np.array([image_key(by_id[int(i)]) for i in task.ids], KEY_DTYPE)
    return np.array([text_key(t) for t in task.items], KEY_DTYPE)


def _encode_missing(kg: Path, enc: Any, tasks: list[Any], keys: dict[str, np.ndarray], cache: VectorCache, *,
                    engine: str, batch_size: int, chunk_size: int, threads: int, spark_master: str | None,
                    progress: bool) -> dict[str, int]:
    """Encode every distinct cache miss once (through pipeline.embed's engines) and add it to the cache."""
    from pipeline.embed import ChunkScratch, EmbedTask, Pending, chunk_bounds, run_local, run_spark

    missing: list[Any] = []
    encoded: dict[str, int] = {}
    for modality in ("text", "image"):
        ks, items = [], []
        seen: set[bytes] = set()
        for t in tasks:
            if t.modality != modality:
                continue
            found, _ = cache.lookup(keys[t.kind])
            for k, item, f in zip(keys[t.kind], t.items, found):
                if not f and k not in seen:
                    seen.add(k)
                    ks.append(k)
                    items.append(item)
            encoded[t.kind] = int((~found).sum())
        if ks:
            missing.append(EmbedTask(f"missing-{modality}", modality, np.arange(len(ks), dtype=np.int64), items,
                                     extra={"keys": np.array(ks, KEY_DTYPE)}))
    if not missing:
        return encoded
    # The scratch is keyed by what is missing, so a killed run resumes its finished chunks.
    run_key = config_hash({"encoder": enc.name, "precision": enc.precision, "chunk_size": chunk_size,
                           "batch_size": batch_size, "keys": [hashlib.sha256(t.extra["keys"].tobytes()).hexdigest()
                                                              for t in missing]})
    scratch = ChunkScratch(kg / "work" / "embed-incremental" / enc.slug / run_key)
    chunks = {t.kind: chunk_bounds(len(t), chunk_size) for t in missing}
    pending = [Pending(t, i, lo, hi) for t in missing for i, (lo, hi) in enumerate(chunks[t.kind])
               if not scratch.is_done(t.kind, i, hi - lo)]
    total = sum(len(t) for t in missing)
    log.info("embed %s: %d distinct new texts/images to encode (%d chunks pending)", enc.name, total, len(pending))
    if pending:
        from tqdm.auto import tqdm
        todo = sum(p.hi - p.lo for p in pending)
        bar = tqdm(total=total, initial=total - todo, unit="row", desc=f"embed {enc.name} (new only)",
                   disable=not progress)
        try:
            if engine == "local":
                run_local(enc, pending, scratch, batch_size=batch_size, on_rows=lambda kind, n: bar.update(n))
            else:
                run_spark(enc, pending, scratch, batch_size=batch_size, threads=threads, master=spark_master,
                          on_rows=lambda kind, n: bar.update(n))
        finally:
            bar.close()
    for t in missing:
        vecs = np.concatenate([scratch.read(t.kind, i) for i in range(len(chunks[t.kind]))])
        cache.add(t.extra["keys"], vecs)
    scratch.clear()
    return encoded


def _prefix_rows(old: np.ndarray | None, old_ids: np.ndarray | None, new: np.ndarray, new_ids: np.ndarray) -> int:
    """How many leading rows (ids and bytes) the new matrix shares with the previous one."""
    if old is None or old_ids is None or old.dtype != new.dtype or old.shape[1:] != new.shape[1:]:
        return 0
    n = min(len(old), len(new))
    same_ids = np.asarray(old_ids[:n]) == np.asarray(new_ids[:n])
    n = int(np.argmin(same_ids)) if not same_ids.all() else n
    # compare in blocks: the first differing block bounds the prefix
    block = 1 << 14
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        eq = np.all(np.asarray(old[lo:hi]) == new[lo:hi], axis=1)
        if not eq.all():
            return lo + int(np.argmin(eq))
    return n


def embed_incremental(kg: str | Path, encoder: str, *, engine: str = "local", batch_size: int = 64,
                      device: str = "cpu", dtype: str = "float32", precision: str = "auto",
                      threads: int | None = None, chunk_size: int = 8192, spark_master: str | None = None,
                      progress: bool = True) -> dict[str, Any]:
    """Embed the committed store with `encoder`, encoding only content the cache has not seen.

    Commits `vectors/<slug>` exactly like `mmkg embed` (same texts, fusion, meta keys) plus
    `incremental` (per kind: rows, reused, encoded, prefix_rows, prev_sha256). Returns the meta.
    """
    import torch
    from pipeline.embed import (ENTITY_TEXT_RULE, FUSION_RULE, RELATION_TEXT_RULE, STORAGE_DTYPES, TRIPLE_TEXT_RULE,
                                fuse_entity_arrays, plan_tasks)
    from pipeline.encoders import resolve_encoder

    if dtype not in STORAGE_DTYPES:
        raise KGStoreError(f"unsupported dtype {dtype!r}; choose float16 or float32")
    if engine not in ("local", "spark"):
        raise KGStoreError(f"unknown embed engine {engine!r}; choose local or spark")
    threads = threads or min(os.cpu_count() or 1, 16)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    kg = Path(kg)
    store = open_store(kg)
    enc = resolve_encoder(encoder, device=device, precision=precision)
    cache = VectorCache.for_encoder(kg, enc)
    tasks = plan_tasks(store, with_images=enc.has_vision)
    keys = {t.kind: _task_keys(t, store) for t in tasks}
    encoded = _encode_missing(kg, enc, tasks, keys, cache, engine=engine, batch_size=batch_size,
                              chunk_size=chunk_size, threads=threads, spark_master=spark_master, progress=progress)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for t in tasks:
        found, vecs = cache.lookup(keys[t.kind])
        if not found.all():
            raise KGStoreError(f"embed: {int((~found).sum())} {t.kind} vectors missing from the cache after encoding")
        arrays[t.kind] = (vecs, t.ids)
    # Scratch-only kinds (pipeline.embed's "entity_text": the described label, fused into the
    # entity vector by ENTITY_TEXT_RULE) are folded in exactly as embed_store does.
    counted = {t.kind: (len(t), encoded.get(t.kind, 0)) for t in tasks}
    arrays, fused = fuse_entity_arrays(arrays, tasks, dtype)

    slug = encoder_slug(enc.name)
    prev = store.artifact(f"vectors/{slug}")
    incremental: dict[str, Any] = {kind: {"rows": n, "encoded": e, "reused": n - e}
                                   for kind, (n, e) in counted.items() if kind not in arrays}
    for kind, (matrix, ids) in arrays.items():
        old = old_ids = None
        prev_sha = None
        if prev is not None and kind in prev.get("kinds", {}):
            old, old_ids = load_vectors(store, slug, kind)
            prev_sha = store.manifest["files"][f"vectors/{slug}/{kind}.npy"]["sha256"]
        n_enc = encoded.get(kind, 0)
        incremental[kind] = {"rows": int(len(ids)), "encoded": n_enc, "reused": int(len(ids)) - n_enc,
                             "prefix_rows": _prefix_rows(old, old_ids, matrix, ids), "prev_sha256": prev_sha,
                             "prev_rows": None if old is None else int(len(old))}
    seconds = round(time.perf_counter() - t0, 3)
    meta = {
        "encoder": enc.name, "slug": enc.slug, "dim": enc.dim, "dtype": dtype, "encoder_info": enc.describe(),
        "kg_version": store.kg_version, "rules": {"entity": ENTITY_TEXT_RULE, "relation": RELATION_TEXT_RULE,
                                                  "triple": TRIPLE_TEXT_RULE, "fusion": FUSION_RULE},
        "entities_with_images": fused, "engine": engine, "batch_size": batch_size, "chunk_size": chunk_size,
        "threads": threads, "device": str(enc.device), "limit": None, "seconds": seconds,
        "rows_embedded_this_run": {k: v["encoded"] for k, v in incremental.items()},
        "incremental": incremental, "cache": {"entries": len(cache), "path": str(cache.root.relative_to(kg))},
    }
    with KGStore.writer(kg) as w:
        if w.store.kg_version != store.kg_version:
            raise KGStoreError(f"{kg} changed to kg_version {w.store.kg_version} during embedding; rerun")
        files = write_vectors(w, enc.name, arrays, meta)
        w.record_stage("embed", config={"encoder": enc.name, "dtype": dtype, "engine": engine, "incremental": True,
                                        "batch_size": batch_size, "chunk_size": chunk_size},
                       counts={k: len(v[1]) for k, v in arrays.items()}
                       | {f"{k}_encoded": v["encoded"] for k, v in incremental.items()},
                       outputs=files, seconds=seconds)
        committed = w.commit()
    return committed.artifact(f"vectors/{slug}") or meta


def reused_counts(meta: dict[str, Any]) -> dict[str, int]:
    """{kind_encoded, kind_reused} of an incremental vectors meta (for run reports)."""
    out: dict[str, int] = {}
    for kind, info in (meta.get("incremental") or {}).items():
        out[f"{kind}_encoded"] = int(info["encoded"])
        out[f"{kind}_reused"] = int(info["reused"])
    return out


__all__ = ["VectorCache", "cached_text_encoder", "embed_incremental", "text_key", "image_key", "reused_counts"]
