"""`<kg>/manifest.json`: the commit point of the store.

A file exists for readers only once the manifest names it; the manifest is replaced
atomically, so readers see only committed versions. It records the store format version,
the KG version, every committed file (bytes, sha256), every input file and every stage run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kg_store import atomic
from kg_store.errors import CorruptFileError, KGStoreError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_manifest() -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "kg_version": 0,
        "created": now(),
        "updated": now(),
        "tables": {},      # name -> relative path of the current version's Parquet file
        "files": {},       # relative path -> {"bytes": int, "sha256": str}
        "inputs": [],      # {"source", "format", "files": [{"path","bytes","sha256"}], "counts"}
        "stages": [],      # every stage run: {"stage", "kg_version", "config", "config_hash", ...}
        "artifacts": {},   # stage outputs by name, e.g. "vectors/minilm" -> meta
    }


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise KGStoreError(f"{root} is not a KG store (no {MANIFEST}); create one with `mmkg ingest`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(path, f"not valid JSON ({e})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise KGStoreError(f"{root}: store format {version} is not supported (this code reads {FORMAT_VERSION})")
    return manifest


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = now()
    atomic.write_json(Path(root) / MANIFEST, manifest)


def last_stage(manifest: dict[str, Any], stage: str, **match: Any) -> dict[str, Any] | None:
    """The most recent run of `stage` whose fields equal `match` (e.g. config_hash=...)."""
    for run in reversed(manifest.get("stages", [])):
        if run.get("stage") == stage and all(run.get(k) == v for k, v in match.items()):
            return run
    return None
