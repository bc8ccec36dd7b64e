"""Content hashes used for manifests, config keys and blob names."""
import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 of a regular file (a FIFO or device is refused, never read: kg_store.safe_io)."""
    from kg_store.safe_io import open_regular
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
