"""Version snapshots and garbage collection of a KG directory (`mmkg gc` is a thin caller).

Every commit snapshots its manifest to `<kg>/versions/v<NNNNNN>.json` and keeps the derived files
it may replace as content-addressed objects (`mmkg.kg_store.versions`), so an older KG version stays
readable (`open_version`) and restorable (`rollback`) until `collect_garbage` drops it. gc keeps
the last `--keep` versions and every version a running `mmkg serve` pins.

Deletion is confined to the store (issue 17): gc only looks inside the store's own data folders
(`GC_DIRS`), refuses to run when one of them (or `versions/`, `cache/`) is a symbolic link (a
shared `blobs/` linked in from elsewhere would otherwise lose "unreferenced" files that belong to
someone else), never follows links while walking, and deletes only regular files and the empty
directories it leaves behind. Snapshots are read through the same checks as the manifest.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from mmkg.kg_store import atomic, versions
from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.lock import RunLock
from mmkg.kg_store.manifest import MANIFEST, load_manifest_file
from mmkg.kg_store.safe_io import real_dir
from mmkg.kg_store.store import KGStore
from mmkg.kg_store.versions import live_files, object_rel

#: what gc may delete: committed-data folders only (never runs/, logs/, work/ scratch of a resumable
#: stage, or the embedding cache unless asked); `objects/` holds the kept copies of derived files
GC_DIRS = ("tables", "graph", "vectors", "indexes", "subgraphs", "retrievers", "blobs")


def _regular_files(top: Path) -> list[Path]:
    """Regular files below `top`, walking without following any symlink."""
    out = []
    for dirpath, _dirs, files in os.walk(top, followlinks=False):
        for name in files:
            p = Path(dirpath) / name
            try:
                if stat.S_ISREG(os.lstat(p).st_mode):
                    out.append(p)
            except OSError:
                continue
    return out


def _remove_empty_dirs(top: Path) -> None:
    for dirpath, dirs, files in os.walk(top, topdown=False, followlinks=False):
        if Path(dirpath) == top:
            continue
        try:
            if not os.path.islink(dirpath) and not os.listdir(dirpath):
                os.rmdir(dirpath)
        except OSError:
            continue


def _unreferenced_sparql(kg: Path, manifests: list[dict[str, Any]]) -> list[Path]:
    """Entries of `sparql/` (database folders, their meta files, build litter) that no kept
    version's manifest names: a database is a folder of RocksDB files, collected whole."""
    from mmkg.kg_store.sparql_store import SPARQL_DIR, live_sparql_dirs
    top = real_dir(kg / SPARQL_DIR, "store folder")
    if top is None:
        return []
    live = live_sparql_dirs(manifests)
    return sorted(Path(e.path) for e in os.scandir(top) if f"{SPARQL_DIR}/{e.name}" not in live)


def _tree_bytes(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.stat().st_size for p in _regular_files(path))


def collect_garbage(kg: str | Path, *, keep: int = 2, dry_run: bool = False, cache: bool = False,
                    wait: float = 0.0) -> dict[str, Any]:
    """Delete files that neither the current version, the last `keep` version snapshots nor a
    version pinned by a running reader (`mmkg serve`) reads: superseded tables, graphs, vectors,
    indexes, shards and retriever priors, and the kept copies (`objects/`) only those named."""
    kg = Path(kg)
    if not (kg / MANIFEST).exists():
        raise KGStoreError(f"{kg} is not a KG store (no {MANIFEST})")
    if keep < 1:
        raise ConfigError("--keep must be at least 1 (the current version)")
    with RunLock(kg, wait=wait), KGStore.writer(kg, wait=wait, create=False) as w:
        # every folder gc may touch is checked before anything is deleted: one symlinked folder
        # stops the whole run (nothing half-done)
        tops = [t for t in (real_dir(kg / d, "store folder") for d in GC_DIRS) if t is not None]
        objects = real_dir(kg / versions.OBJECTS, "store folder")
        cache_dir = real_dir(kg / "cache", "cache folder") if cache else None
        current = int(w.manifest["kg_version"])
        snaps = versions.snapshots(kg)
        older = sorted(set(snaps) - {current})
        kept_versions = [*older[-(keep - 1):], current] if keep > 1 else [current]
        pinned = sorted(v for v in versions.pinned_versions(kg) if v in snaps and v not in kept_versions)
        kept_versions = sorted({*kept_versions, *pinned})
        kept_manifests = [w.manifest, *(load_manifest_file(snaps[v], kg) for v in kept_versions
                                        if v in snaps and v != current)]
        referenced: set[str] = set()
        for m in kept_manifests:
            live = live_files(m)
            referenced |= live | {object_rel(m["files"][rel]["sha256"]) for rel in live}
        doomed = [p for top in [*tops, *([objects] if objects else [])] for p in _regular_files(top)
                  if p.relative_to(kg).as_posix() not in referenced]
        doomed_sparql = _unreferenced_sparql(kg, kept_manifests)
        dropped = [p for v, p in sorted(snaps.items()) if v not in kept_versions]
        freed = sum(p.stat().st_size for p in doomed) + sum(_tree_bytes(p) for p in doomed_sparql)
        cache_bytes = sum(p.stat().st_size for p in _regular_files(cache_dir)) if cache_dir is not None else 0
        if not dry_run:
            # unregister first, commit, then delete: a crash in between leaves only unreferenced litter
            for p in doomed + doomed_sparql:
                w.manifest["files"].pop(p.relative_to(kg).as_posix(), None)
            w.commit()
            for p in doomed + dropped:
                p.unlink(missing_ok=True)
            for p in doomed_sparql:
                atomic._remove(str(p))  # a database folder: rmtree, which never follows links
            for top in [*tops, *([objects] if objects else [])]:  # empty directories left behind, deepest first
                _remove_empty_dirs(top)
            if cache_dir is not None:
                shutil.rmtree(cache_dir)  # rmtree does not follow symlinks inside
    return {"kg_version": current, "kept_versions": kept_versions, "pinned_versions": pinned,
            "files_deleted": len(doomed),
            "sparql_stores_deleted": len([p for p in doomed_sparql if not p.name.endswith(".json")]),
            "snapshots_deleted": len(dropped), "bytes_freed": freed + cache_bytes, "dry_run": dry_run,
            "files": sorted(p.relative_to(kg).as_posix() for p in doomed)[:50],
            # what goes (or would go), each with its bytes: `mmkg gc --dry-run` lists them
            "deleted": sorted([p.relative_to(kg).as_posix(), p.stat().st_size if p.exists() else 0] for p in doomed)
            if dry_run else None}


__all__ = ["GC_DIRS", "collect_garbage"]
