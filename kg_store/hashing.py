"""Content hashes used for manifests, config keys and blob names."""
import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_CHUNK = 1 << 20
_U = np.uint64


def sha256_file(path: str | Path) -> str:
    """sha256 of a regular file (a FIFO or device is refused, never read: mmkg.kg_store.safe_io)."""
    from mmkg.kg_store.safe_io import open_regular
    with open_regular(path) as f:
        return sha256_fileobj(f)


def sha256_fileobj(f: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_hash(config: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able config: key order and whitespace do not matter."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


# ---- cache keys --------------------------------------------------------------------------------
# Every cache and fingerprint of the project (stage fingerprints, the run's config hash, shard
# sets, the path prior, the vector cache, the ONNX export, the weights cache, the evaluation's
# predictions) keys itself through `cache_key` (a JSON-able description, canonical) or, when
# it streams bytes (weights, file trees), through a `Fingerprint`. What goes in is declared by
# the owner of the data: a dataset its files (`mmkg.retrieval.datasets`), an encoder its weights, a
# stage its config.

def cache_key(parts: Any, length: int = 16) -> str:
    """The key of a JSON-able description: key order and whitespace do not matter (sha256 prefix).

    Same bytes as `config_hash`, so every key made before this helper existed stays valid."""
    return config_hash(parts, length)


class Fingerprint:
    """An incremental sha256 for what does not fit one JSON document (weights, file trees).

    `tag` names the scheme (and its version); `json`, `bytes` and `file_entry` append in order,
    so the digest of a given sequence never changes between releases."""

    def __init__(self, tag: str | None = None):
        self._h = hashlib.sha256()
        if tag is not None:
            self._h.update(f"{tag}\n".encode())

    def json(self, value: Any) -> "Fingerprint":
        self._h.update(json.dumps(value, sort_keys=True, default=str).encode())
        return self

    def bytes(self, data: bytes) -> "Fingerprint":
        self._h.update(data)
        return self

    def file_entry(self, name: str, sha256: str) -> "Fingerprint":
        """One file of a tree, by its name (relative, posix) and content sha256."""
        self._h.update(f"{name}\0{sha256}\n".encode())
        return self

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self, length: int | None = None) -> str:
        d = self._h.hexdigest()
        return d if length is None else d[:length]


_FILE_SHA: dict[tuple[str, int, int, int], str] = {}


def file_identity(path: str | Path) -> tuple[str, int, int, int]:
    """(resolved path, size, mtime ns, inode): what a per-process memo of a file's content is keyed
    by (a rewrite, even atomic by rename, changes the inode or the mtime)."""
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def file_sha256_memo(path: str | Path) -> str:
    """`sha256_file`, remembered in this process by (path, size, mtime, inode): a fingerprint that
    names a whole image folder then hashes each file once per process, not once per call."""
    key = file_identity(path)
    if key not in _FILE_SHA:
        _FILE_SHA[key] = sha256_file(path)
    return _FILE_SHA[key]


def files_digest(files: "list[Path]", base: str | Path | None = None) -> dict[str, str]:
    """{name: sha256} of `files` (names relative to `base`, else the file name), sorted by name."""
    out = {}
    for f in files:
        f = Path(f)
        name = f.relative_to(base).as_posix() if base is not None else f.name
        out[name] = file_sha256_memo(f)
    return dict(sorted(out.items()))


# ---- 64-bit mixing of arrays (per-row digests, keyed random draws) ----------------------------------
def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of each uint64 (wrapping arithmetic): equal inputs, equal outputs, and
    any input bit flips about half the output bits."""
    z = np.asarray(x, np.uint64) + _U(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
    return z ^ (z >> _U(31))


def string_keys(texts: Any, salt: int = 0) -> np.ndarray:
    """A uint64 per string (its blake2b prefix, mixed with `salt`): the same in every process."""
    raw = [hashlib.blake2b(str(t).encode(), digest_size=8).digest() for t in texts]
    return mix(np.frombuffer(b"".join(raw), "<u8").astype(np.uint64) + _U(salt))
