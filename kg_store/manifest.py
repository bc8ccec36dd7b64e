"""`<kg>/manifest.json`: the commit point of the store.

A file exists for readers only once the manifest names it; the manifest is replaced
atomically, so readers see only committed versions. It records the store format version,
the KG version, every committed file (bytes, sha256), every input file and every stage run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path, PurePosixPath
from typing import Any

from mmkg.kg_store import atomic
from mmkg.kg_store.errors import CorruptFileError, KGStoreError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: a manifest (or version snapshot) larger than this is refused before it is read
MAX_MANIFEST_BYTES = 1 << 30


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_manifest() -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "kg_version": 0,
        "created": now(),
        "updated": now(),
        "tables": {},      # name -> relative path of the current version's Parquet file, or a list of part files
        "files": {},       # relative path -> {"bytes": int, "sha256": str}
        "inputs": [],      # {"source", "format", "files": [{"path","bytes","sha256"}], "counts"}
        "stages": [],      # every stage run: {"stage", "kg_version", "config", "config_hash", ...}
        "artifacts": {},   # stage outputs by name, e.g. "vectors/minilm" -> meta
    }


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise KGStoreError(f"{root} is not a KG store (no {MANIFEST}); create one with `mmkg ingest`")
    return load_manifest_file(path, root)


def load_manifest_file(path: str | Path, root: str | Path) -> dict[str, Any]:
    """Read and validate `manifest.json` or a version snapshot (`versions/v*.json`) of `root`.

    The manifest is the store's trust anchor but a file like any other (issue 17): it must be a
    regular file inside the store (no symlink, FIFO or device), of bounded size, valid JSON of
    the expected shape, and every path it names must be a plain relative path inside the store.
    Anything else is one `CorruptFileError` line, never a traceback or a read outside the store.
    """
    from mmkg.kg_store.safe_io import UnsafeFileError, read_bounded
    path = Path(path)
    try:
        data = read_bounded(path, MAX_MANIFEST_BYTES, root=root)
    except UnsafeFileError as e:
        raise CorruptFileError(path, e.detail) from None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptFileError(path, f"not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise CorruptFileError(path, f"expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise KGStoreError(f"{root}: store format {version} is not supported (this code reads {FORMAT_VERSION})")
    problem = manifest_problem(manifest)
    if problem:
        raise CorruptFileError(path, problem)
    return manifest


def check_relpath(rel: Any) -> str | None:
    """Why `rel` is not a path the store may name (relative, inside, plain), or None."""
    if not isinstance(rel, str) or not rel:
        return f"path {rel!r} is not a non-empty string"
    if "\x00" in rel or "\\" in rel or any(ord(c) < 32 for c in rel):
        return f"path {rel!r} holds control characters or backslashes"
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        return f"path {rel!r} is absolute"
    if any(part in ("..", ".", "") for part in rel.split("/")):
        return f"path {rel!r} is not a plain relative path (no '..', '.' or empty parts)"
    return None


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """Shape and path checks of a parsed manifest; the first problem found, or None."""
    types = {"kg_version": int, "tables": dict, "files": dict, "inputs": list, "stages": list, "artifacts": dict}
    for key, typ in types.items():
        if key not in manifest:
            return f"no {key!r} entry"
        if not isinstance(manifest[key], typ) or (typ is int and isinstance(manifest[key], bool)):
            return f"{key!r} is a {type(manifest[key]).__name__}, expected {typ.__name__}"
    for rel, info in manifest["files"].items():
        problem = check_relpath(rel)
        if problem:
            return f"files: {problem}"
        if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and not isinstance(info["bytes"], bool)
                and isinstance(info.get("sha256"), str)):
            return f"files: entry {rel!r} is not {{'bytes': int, 'sha256': str}}"
    for name, rel in manifest["tables"].items():
        parts = rel if isinstance(rel, list) else [rel]
        if not parts:
            return f"tables: {name!r} lists no part file"
        for part in parts:
            problem = check_relpath(part)
            if problem:
                return f"tables: {name!r}: {problem}"
    graph = manifest.get("graph")
    if graph is not None and check_relpath(graph):
        return f"graph: {check_relpath(graph)}"
    for name in manifest["artifacts"]:
        problem = check_relpath(name)
        if problem:
            return f"artifacts: {problem}"
    return None


def table_parts(manifest: dict[str, Any], name: str) -> list[str]:
    """A table's part files in row order: a table is one file (str) or a list of parts."""
    rel = manifest["tables"].get(name)
    return [] if rel is None else list(rel) if isinstance(rel, list) else [rel]


def table_fingerprint(manifest: dict[str, Any], name: str) -> str | None:
    """One sha256 for a table's content as committed (its parts' hashes), None if absent."""
    from mmkg.kg_store.hashing import config_hash
    parts = table_parts(manifest, name)
    if not parts:
        return None
    shas = [manifest["files"].get(rel, {}).get("sha256") for rel in parts]
    return shas[0] if len(shas) == 1 else config_hash(shas)


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = now()
    atomic.write_json(Path(root) / MANIFEST, manifest)


def last_stage(manifest: dict[str, Any], stage: str, **match: Any) -> dict[str, Any] | None:
    """The most recent run of `stage` whose fields equal `match` (e.g. config_hash=...)."""
    for run in reversed(manifest.get("stages", [])):
        if run.get("stage") == stage and all(run.get(k) == v for k, v in match.items()):
            return run
    return None
