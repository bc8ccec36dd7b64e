"""KG versions as objects: snapshots, content-addressed copies of derived files, pins, rollback.

Every commit snapshots its manifest to `versions/v<NNNNNN>.json` (the newest manifest of that
KG version). Tables and graph arrays get a new name per version, so they are never overwritten;
derived files (vectors, indexes, shards, retriever priors) keep their paths and are replaced in
place by a later embed/index/retrieve. So that an older version stays restorable, every writer
first keeps a hard link of each committed derived file under `objects/<aa>/<sha256>` (content
addressed: one copy per content, shared by every version that has it; a link costs no space while
the file is still in place). `rollback` puts a version's files back from there and commits them as
a new version; `gc` deletes the objects no kept version names.

A reader that must keep its version readable while it runs (`mmkg serve`) writes a pin,
`pins/<pid>-<id>.json`; gc keeps every pinned version whose process is alive.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

from mmkg.kg_store import atomic
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.manifest import load_manifest_file, read_manifest, table_parts

VERSIONS, OBJECTS, PINS = "versions", "objects", "pins"
_SNAPSHOT = re.compile(r"v(\d{6,})\.json")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: files whose names carry their version or content: never replaced in place, so never copied
IMMUTABLE_PREFIXES = ("tables/", "graph/", "blobs/")


# ---- snapshots ----------------------------------------------------------------------------------
def _versions_dir(kg: Path) -> Path | None:
    from mmkg.kg_store.safe_io import real_dir
    return real_dir(kg / VERSIONS, "version folder")


def snapshot_path(kg: Path, version: int) -> Path:
    return kg / VERSIONS / f"v{int(version):06d}.json"


def write_snapshot(kg: str | Path, manifest: dict[str, Any]) -> Path:
    """`versions/v<NNNNNN>.json` := `manifest` (called by every commit)."""
    kg = Path(kg)
    _versions_dir(kg)  # a symlinked versions/ is refused, not written through
    path = snapshot_path(kg, manifest["kg_version"])
    atomic.write_json(path, manifest)
    return path


def repair_snapshot(kg: str | Path, manifest: dict[str, Any]) -> bool:
    """Rewrite the current version's snapshot when it is missing or older than `manifest`.

    A commit writes manifest.json and then its snapshot; a writer killed between the two leaves
    the committed version without (or with a stale) snapshot. The next writer calls this under
    the lock, so the gap heals before anything builds on it. True when it wrote."""
    path = snapshot_path(Path(kg), manifest["kg_version"])
    with contextlib.suppress(OSError, ValueError, KGStoreError):
        if path.is_file() and json.loads(path.read_text()) == manifest:
            return False
    write_snapshot(kg, manifest)
    return True


def snapshots(kg: str | Path) -> dict[int, Path]:
    """kg_version → snapshot file (regular files named v<NNNNNN>.json only)."""
    d = _versions_dir(Path(kg))
    if d is None:
        return {}
    out = {}
    for entry in os.scandir(d):
        m = _SNAPSHOT.fullmatch(entry.name)
        if m and entry.is_file(follow_symlinks=False):
            out[int(m.group(1))] = Path(entry.path)
    return out


def version_manifest(kg: str | Path, version: int) -> dict[str, Any]:
    """The manifest of `version` (the current one from manifest.json, older ones from snapshots)."""
    kg = Path(kg)
    current = read_manifest(kg)
    if int(version) == int(current["kg_version"]):
        return current
    snaps = snapshots(kg)
    if int(version) not in snaps:
        have = ", ".join(str(v) for v in sorted(snaps)) or "none"
        raise KGStoreError(f"no snapshot of kg_version {version} in {kg} (have: {have}; "
                           "`mmkg gc` drops versions outside --keep)")
    return load_manifest_file(snaps[int(version)], kg)


def open_version(kg: str | Path, version: int):
    """A read-only `KGStore` of one KG version (tables and graph): the current one, or an older one
    from its snapshot (`version_manifest`)."""
    from mmkg.kg_store.store import KGStore
    return KGStore(kg, version_manifest(kg, version))


# ---- which files a version reads ----------------------------------------------------------------
def live_files(manifest: dict[str, Any]) -> set[str]:
    """Files a manifest's version actually reads: every registered file, except table and graph
    files of earlier versions (each version's tables and graph get new names and the old ones stay
    registered until gc) and files of artifacts bound to another graph than this version's
    (`set_artifact(graph_bound=True)`: a path prior fitted on an older graph)."""
    tables = {rel for name in manifest.get("tables", {}) for rel in table_parts(manifest, name)}
    graph = manifest.get("graph")
    stale = tuple(name + sep for name, meta in manifest.get("artifacts", {}).items()
                  if isinstance(meta, dict) and meta.get("graph") not in (None, graph) for sep in ("/", "."))
    return {f for f in manifest.get("files", {})
            if (not f.startswith("tables/") or f in tables)
            and (not f.startswith("graph/") or (graph is not None and f.startswith(graph + "/")))
            and not (stale and f.startswith(stale))}


def object_rel(sha256: str) -> str:
    return f"{OBJECTS}/{sha256[:2]}/{sha256}"


def preserve_files(root: str | Path, manifest: dict[str, Any]) -> int:
    """Keep a content-addressed hard link (a copy across filesystems) of every committed file that
    a later writer may replace in place; returns how many objects were added. Files whose size
    differs from the manifest are skipped (`mmkg verify` reports them)."""
    from mmkg.kg_store.safe_io import UnsafeFileError, check_regular, real_dir
    root, added = Path(root), 0
    real_dir(root / OBJECTS, "kept-copies folder")  # a planted symlink is refused, never written through
    for rel, info in manifest.get("files", {}).items():
        sha = info.get("sha256", "")
        if rel.startswith(IMMUTABLE_PREFIXES) or not _SHA256.fullmatch(sha):
            continue
        obj = root / object_rel(sha)
        if os.path.lexists(obj):
            continue
        src = root / rel
        try:
            check_regular(src, root=root)  # a regular file inside the store, or nothing is kept
            if src.stat().st_size != info["bytes"]:
                continue
            real_dir(obj.parent, "kept-copies folder")
            obj.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src, obj)
            added += 1
        except (OSError, UnsafeFileError) as e:
            if isinstance(e, UnsafeFileError) and obj.parent.is_symlink():
                raise
            continue  # best effort: a version whose object is missing is refused by rollback, by name
    return added


def _link_or_copy(src: Path, dest: Path) -> None:
    tmp = atomic._tmp_sibling(dest)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


# ---- listing and rollback ---------------------------------------------------------------------------
def _row_count(root: Path, rel: str) -> int | None:
    import pyarrow.parquet as pq
    try:
        return pq.ParquetFile(root / rel).metadata.num_rows
    except Exception:  # noqa: BLE001 - a deleted or damaged file: the count is unknown
        return None


def describe(kg: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """One version's row of `mmkg versions`: time, what wrote it, counts per table, sources,
    and whether every file it reads is still there (in place or as an object)."""
    kg = Path(kg)
    counts: dict[str, int | None] = {}
    for name in sorted(manifest["tables"]):
        parts = [_row_count(kg, rel) for rel in table_parts(manifest, name)]
        counts[name] = None if None in parts else sum(parts)
    stages = manifest.get("stages") or []
    missing = missing_files(kg, manifest)
    return {"version": int(manifest["kg_version"]), "time": manifest.get("updated"),
            "last_stage": stages[-1].get("stage") if stages else None, "counts": counts,
            "sources": sorted({str(i.get("source")) for i in manifest.get("inputs", []) if i.get("source")}),
            "files": len(manifest["files"]), "restorable": not missing, "missing": missing[:5]}


def list_versions(kg: str | Path) -> list[dict[str, Any]]:
    """Every version with a snapshot (and the current one), oldest first."""
    kg = Path(kg)
    current = read_manifest(kg)
    rows = {}
    for v, path in sorted(snapshots(kg).items()):
        if v != int(current["kg_version"]):
            rows[v] = describe(kg, load_manifest_file(path, kg))
    rows[int(current["kg_version"])] = {**describe(kg, current), "current": True}
    return [rows[v] for v in sorted(rows)]


def missing_files(kg: Path, manifest: dict[str, Any]) -> list[str]:
    """Files `manifest`'s version reads that are neither in place with the same content nor kept
    as a content-addressed object. A derived file in place counts as the same content when it is
    the object's inode (a hard link) or the current manifest records the same sha256 for it."""
    try:
        now = read_manifest(kg)["files"]
    except KGStoreError:
        now = {}
    out = []
    for rel in sorted(live_files(manifest)):
        info = manifest["files"][rel]
        p, obj = kg / rel, kg / object_rel(info["sha256"])
        if p.is_file() and not p.is_symlink() and p.stat().st_size == info["bytes"] \
                and (rel.startswith(IMMUTABLE_PREFIXES) or now.get(rel) == info or _same_file(obj, p)):
            continue
        if not obj.is_file():
            out.append(rel)
    return out


def _existing_parent(p: Path) -> Path:
    """The nearest folder above `p` that exists (where a restore's mkdir would start)."""
    p = p.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def rollback(kg: str | Path, version: int, *, wait: float = 0.0) -> dict[str, Any]:
    """Make `version` current again: its files are put back (from their objects where a later
    version replaced them) and its manifest is committed as a new version. Refused, with nothing
    changed, when a file it reads is gone (`mmkg gc` reclaimed it)."""
    from mmkg.kg_store.hashing import sha256_file
    from mmkg.kg_store.lock import RunLock
    from mmkg.kg_store.store import KGStore
    kg = Path(kg)
    with RunLock(kg, wait=wait), KGStore.writer(kg, wait=wait, create=False) as w:
        current = int(w.manifest["kg_version"])
        if int(version) == current:
            raise KGStoreError(f"kg_version {version} is already the current version of {kg}")
        target = version_manifest(kg, version)
        live = live_files(target)
        missing = missing_files(kg, target)
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise KGStoreError(f"cannot roll back to kg_version {version}: {', '.join(missing[:3])}{more} "
                               "gone (reclaimed by `mmkg gc`); versions inside the gc --keep window can be restored")
        # first every kept copy to put back is checked, then anything is touched: a refusal
        # leaves the current version exactly as it was
        todo = []
        for rel in sorted(live):
            info = target["files"][rel]
            p, obj = kg / rel, kg / object_rel(info["sha256"])
            if rel.startswith(IMMUTABLE_PREFIXES) or _same_file(obj, p) or (
                    p.is_file() and p.stat().st_size == info["bytes"] and w.manifest["files"].get(rel) == info):
                continue
            if sha256_file(obj) != info["sha256"]:
                raise KGStoreError(f"cannot roll back to kg_version {version}: the kept copy of {rel} "
                                   f"({object_rel(info['sha256'])}) is damaged")
            if not Path(os.path.realpath(_existing_parent(p))).is_relative_to(kg.resolve()):
                raise KGStoreError(f"cannot roll back: {p.parent} leads outside {kg} (a symbolic link)")
            todo.append((rel, obj))
        for rel, obj in todo:
            (kg / rel).parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(obj, kg / rel)
        restored = [rel for rel, _ in todo]
        w.manifest = {**json.loads(json.dumps(target)), "kg_version": current}
        w.manifest["files"] = {rel: target["files"][rel] for rel in sorted(live)}
        w.record_stage("rollback", config={"to_version": int(version)}, counts={"restored_files": len(restored)},
                       outputs=restored, bumps_version=True, from_version=current)
        store = w.commit(bump_version=True)
    return {"from_version": current, "to_version": int(version), "kg_version": store.kg_version,
            "restored": restored, "files": len(live)}


# ---- pins -------------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Pin:
    """`pins/<pid>-<id>.json` naming the version a running reader shows; `release()` removes it."""

    def __init__(self, kg: str | Path, version: int):
        from mmkg.kg_store.safe_io import real_dir
        self.kg, self.version = Path(kg), int(version)
        real_dir(self.kg / PINS, "pin folder")  # a planted symlink is refused, never written through
        self.path = self.kg / PINS / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        atomic.write_json(self.path, {"pid": os.getpid(), "host": socket.gethostname(), "kg_version": self.version})

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def __enter__(self) -> "Pin":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def pinned_versions(kg: str | Path) -> set[int]:
    """Versions pinned by live processes; pins of dead processes on this host are removed."""
    from mmkg.kg_store.safe_io import UnsafeFileError, read_bounded, real_dir
    kg = Path(kg)
    d = real_dir(kg / PINS, "pin folder")
    if d is None:
        return set()
    out, host = set(), socket.gethostname()
    for entry in os.scandir(d):
        if not entry.name.endswith(".json") or not entry.is_file(follow_symlinks=False):
            continue
        try:  # a regular file inside the store, a few hundred bytes: anything else is ignored
            pin = json.loads(read_bounded(entry.path, 4096, root=kg))
            pid, version = int(pin["pid"]), int(pin["kg_version"])
        except (OSError, ValueError, KeyError, TypeError, UnsafeFileError):
            continue
        if pin.get("host") == host and not _alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)  # a stale pin: its server is gone
            continue
        out.add(version)
    return out


def pin_current(kg: str | Path) -> Pin:
    """Pin the current version. The manifest is read again after pinning: a gc that ran between
    the read and the pin and reclaimed that version is noticed, and the newer version pinned."""
    kg = Path(kg)
    while True:
        version = int(read_manifest(kg)["kg_version"])
        pin = Pin(kg, version)
        if int(read_manifest(kg)["kg_version"]) == version or version in snapshots(kg):
            return pin
        pin.release()


__all__ = ["Pin", "describe", "list_versions", "live_files", "missing_files", "object_rel", "open_version",
           "pin_current", "pinned_versions", "preserve_files", "rollback", "snapshot_path", "snapshots",
           "version_manifest", "write_snapshot"]
