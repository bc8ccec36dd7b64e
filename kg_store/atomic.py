"""Atomic writes: everything goes to a temporary sibling and is renamed into place.

A reader therefore sees either the old file or the complete new one, never a half-written
file; a killed writer leaves only `*.tmp-*` litter that `cleanup_temp` removes.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # imported where used: reading a manifest (`mmkg sparql`) needs neither
    import numpy as np
    import pyarrow as pa

TMP_MARK = ".tmp-"
#: the exact names `_tmp_sibling` makes; cleanup never removes anything else
TMP_NAME = re.compile(r".+\.tmp-[0-9a-f]{8}")
#: the store's own folders (docs/ARCHITECTURE.md layout); temp cleanup looks only here and at the root
STORE_DIRS = ("tables", "graph", "blobs", "vectors", "indexes", "subgraphs", "retrievers", "objects", "pins",
              "versions", "work", "cache",
              "runs", "logs", "sparql")


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces `path` (file or directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if path.is_dir() and tmp.is_dir():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = _tmp_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    from mmkg.kg_store.safe_io import open_new
    with atomic_path(path) as tmp, open_new(tmp) as f:  # O_EXCL|O_NOFOLLOW: never a planted link
        f.write(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_parquet(path: str | Path, table: pa.Table, **kwargs: Any) -> None:
    import pyarrow.parquet as pq
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_npy(path: str | Path, array: np.ndarray) -> None:
    # np.save appends ".npy" to names without it, so write through an open file object.
    import numpy as np
    from mmkg.kg_store.safe_io import open_new
    with atomic_path(path) as tmp, open_new(tmp) as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def _remove(path: str) -> None:
    """Remove one temp entry without following links: a link is unlinked, never its target."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)  # rmtree never follows symlinks inside
    else:
        os.unlink(path)


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)  # lstat: a symlinked folder is not walked
    except OSError:
        return False


def cleanup_temp(root: str | Path) -> int:
    """Remove leftovers of killed writers in the store; returns how many were removed.

    Confined to what the store itself writes (issue 17): entries named exactly like
    `_tmp_sibling`'s output (`<name>.tmp-<8 hex>`), at the root or inside the store's own
    folders (`STORE_DIRS`); symlinked folders are never entered and links are never followed,
    so running a writer on a directory cannot delete anything outside it.
    """
    root = Path(root)
    n = 0
    tops = [root / d for d in STORE_DIRS if _real_dir(root / d)]
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if TMP_NAME.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    _remove(entry.path)
                    n += 1
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            for name in [*dirnames, *filenames]:
                if TMP_NAME.fullmatch(name):
                    with contextlib.suppress(OSError):
                        _remove(os.path.join(dirpath, name))
                        n += 1
            dirnames[:] = [d for d in dirnames if not TMP_NAME.fullmatch(d)]
    return n
