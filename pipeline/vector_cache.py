"""A content-addressed vector cache, so a new KG version encodes only new content.

A vector depends only on (encoder weights, runtime, precision, the exact text) or (the same, the
image bytes), never on the entity id or the KG version, so the cache key is the sha256 of the
content: `sha256("text\\0" + text)` or `sha256("image\\0" + image sha256)`, in a folder per
encoder identity. The cache lives in `<kg>/cache/embeddings/<encoder-slug>/<precision>/<runtime>-
<hash of precision and weights digest>/` (`Encoder.cache_identity`: vectors of a replaced graph or
other weights are never served) as append-only segments (`seg-NNNNNN.keys.npy` S32 digests,
`seg-NNNNNN.vecs.npy` float32, then `seg-NNNNNN.json` as the done marker, img2dataset I2), so a
killed run keeps every finished chunk and resumes from it. The marker records both files'
sha256; a segment that no longer matches is discarded (issue 32), and the folders are private
(0700, no symlink, this user's).
It is a cache, not committed data: deleting it only costs re-encoding. Query encoding reuses it
through `CachedTextEncoder`, so unchanged queries are not re-encoded either.

The embed stage (`mmkg.pipeline.embed.embed_store`) encodes only the cache misses.
"""
from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmkg.kg_store import atomic
from mmkg.kg_store.hashing import Fingerprint, sha256_bytes, sha256_file
from mmkg.kg_store.safe_io import UnsafeFileError, check_cached_file, private_dir, read_bounded

log = logging.getLogger(__name__)

KEY_DTYPE = "S32"
#: compact the cache into one segment when it has more than this many
MAX_SEGMENTS = 32

#: root → (segment files' stat signature, sorted keys, vectors): what this process last verified
#: there. A cache opened again (each retrieve stage of one `mmkg run`, after the embed stage) whose
#: files have the same (name, inode, size, mtime) is not read and hashed again; any change re-reads.
_VERIFIED: dict[Path, tuple[tuple, np.ndarray, np.ndarray]] = {}


def text_key(text: str) -> bytes:
    return Fingerprint().bytes(b"text\0" + text.encode("utf-8")).digest()


def image_key(image_sha256: str) -> bytes:
    return Fingerprint().bytes(b"image\0" + image_sha256.encode("ascii")).digest()


class VectorCache:
    """Append-only, content-addressed float32 vectors of one encoder + precision."""

    def __init__(self, root: str | Path, dim: int):
        self.root, self.dim = Path(root), int(dim)
        self._keys = np.empty(0, KEY_DTYPE)      # sorted
        self._vecs = np.zeros((0, self.dim), np.float32)
        self._load()

    @classmethod
    def for_encoder(cls, kg: str | Path, encoder: Any) -> "VectorCache":
        root = Path(kg) / "cache" / "embeddings" / encoder.slug / encoder.precision / encoder.cache_identity()
        private_dir(root, root=Path(kg) / "cache")
        return cls(root, encoder.dim)

    def _segments(self) -> list[Path]:
        return sorted(self.root.glob("seg-*.json")) if self.root.exists() else []

    def _signature(self) -> tuple:
        out = []
        for marker in self._segments():
            for path in (marker, *(Path(f"{marker.with_suffix('')}.{part}.npy") for part in ("keys", "vecs"))):
                try:
                    st = path.lstat()
                except OSError:
                    return ()  # a segment is being written or removed: never a memo hit
                out.append((path.name, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _remember(self) -> None:
        _VERIFIED[self.root] = (self._signature(), self._keys, self._vecs)

    def _load(self) -> None:
        seen = _VERIFIED.get(self.root)
        if seen is not None and seen[0] and seen[0] == self._signature() and seen[2].shape[1] == self.dim:
            self._keys, self._vecs = seen[1], seen[2]
            return
        keys, vecs = [], []
        for marker in self._segments():
            stem = marker.with_suffix("")
            k, v = self._verified(marker, "keys"), self._verified(marker, "vecs")
            if k is None or v is None or len(k) != len(v) or (len(v) and v.shape[1] != self.dim):
                log.warning("discarding cache segment %s: it is not what its marker recorded", stem)
                for suffix in (".json", ".keys.npy", ".vecs.npy"):
                    Path(f"{stem}{suffix}").unlink(missing_ok=True)
                continue
            keys.append(k)
            vecs.append(v)
        if keys:
            self._set(np.concatenate(keys), np.concatenate(vecs))
        self._remember()

    @staticmethod
    def _verified(marker: Path, part: str) -> np.ndarray | None:
        """One array of a segment if its bytes have the sha256 the marker recorded, else None."""
        path = Path(f"{marker.with_suffix('')}.{part}.npy")
        for p in (marker, path):
            check_cached_file(p, "vector cache entry")  # a symlink or a foreign file is refused
        try:
            recorded = json.loads(marker.read_text()).get(part)
            data = read_bounded(path, int(recorded["bytes"]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, UnsafeFileError):
            return None
        if sha256_bytes(data) != recorded.get("sha256"):
            return None
        return np.load(io.BytesIO(data), allow_pickle=False)

    def _set(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        keys, first = np.unique(keys, return_index=True)  # sorted, first occurrence wins
        self._keys, self._vecs = keys, np.ascontiguousarray(vecs[first], np.float32)

    def _merge(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        """`_set` of (held + new) without sorting what is held: the new keys not yet held (the
        held vector wins, as the first occurrence) are inserted at their sorted places."""
        keys, first = np.unique(keys, return_index=True)
        found, _ = self.lookup(keys)
        keys, vecs = keys[~found], np.asarray(vecs, np.float32)[first[~found]]
        at = np.searchsorted(self._keys, keys)
        self._keys = np.insert(self._keys, at, keys)
        self._vecs = np.ascontiguousarray(np.insert(self._vecs, at, vecs, axis=0), np.float32)

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
        atomic.write_json(f"{stem}.json", {"rows": int(len(keys)), "dim": self.dim, **self._write_arrays(stem, keys, vecs)})
        self._merge(keys, vecs)
        self._remember()

    @staticmethod
    def _write_arrays(stem: Path, keys: np.ndarray, vecs: np.ndarray) -> dict[str, Any]:
        """Write a segment's two arrays; what its marker records of them (bytes, sha256)."""
        out = {}
        for part, array in (("keys", keys), ("vecs", vecs)):
            path = f"{stem}.{part}.npy"
            atomic.write_npy(path, array)
            out[part] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
        return out

    def compact(self) -> None:
        """Rewrite all segments as one (new segment written before the old ones are removed)."""
        old = self._segments()
        if len(old) <= 1:
            return
        stem = self.root / f"seg-{int(time.time() * 1e6):016d}-{os.getpid()}-c"
        atomic.write_json(f"{stem}.json", {"rows": int(len(self._keys)), "dim": self.dim, "compacted": len(old),
                                           **self._write_arrays(stem, self._keys, self._vecs)})
        for marker in old:
            s = marker.with_suffix("")
            marker.unlink(missing_ok=True)  # marker first: a half-removed segment is never read
            for suffix in (".keys.npy", ".vecs.npy"):
                Path(f"{s}{suffix}").unlink(missing_ok=True)
        self._remember()


# ---- query encoding through the cache --------------------------------------------------------
def cached_text_encoder(encoder: Any, cache: VectorCache) -> Any:
    """An `Encoder` that answers `encode_text` from `cache` and encodes (and stores) only misses."""
    from mmkg.pipeline.encoders.base import Encoder

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


__all__ = ["VectorCache", "cached_text_encoder", "text_key", "image_key"]
