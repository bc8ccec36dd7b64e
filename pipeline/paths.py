"""Confine paths taken from input files (image indexes, mapping files, web pages) to a root.

Index and mapping files are untrusted input: a line such as `../../etc/passwd`, `/etc/passwd`
or a symlink inside the data folder that points elsewhere must never make us read outside the
folder the user pointed us at. Every such path is refused with a `PathEscapeError` whose
`reason` is a short code that ingestion writes into the rejects table.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from mmkg.kg_store.errors import KGStoreError

PATH_ESCAPES_ROOT = "path-escapes-root"
SYMLINK_ESCAPES_ROOT = "symlink-escapes-root"
INVALID_PATH = "invalid-path"


class PathEscapeError(KGStoreError):
    """A path from input data points outside its root (or is not a usable path at all)."""

    def __init__(self, reason: str, relative: object, root: object, detail: str = ""):
        self.reason = reason
        self.relative = str(relative)
        self.root = str(root)
        self.detail = detail or f"{relative!s} is outside {root!s}"
        super().__init__(f"{reason}: {self.detail}")


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def safe_join(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """`root / relative`, resolved, guaranteed to lie inside `root` (after following symlinks).

    Refused (PathEscapeError): absolute paths, any `..` component (even one that would land
    back inside root: an index line with `..` is malformed, and refusing it keeps the rule
    simple to state), empty paths, NUL bytes, and paths whose symlinks resolve outside root.
    The file itself need not exist (the caller reports missing files separately).
    """
    rel = os.fspath(relative)
    if isinstance(rel, bytes):
        rel = os.fsdecode(rel)
    if not rel or rel.strip() == "" or "\x00" in rel:
        raise PathEscapeError(INVALID_PATH, rel, root, f"unusable path {rel!r}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or Path(rel).is_absolute() or Path(rel).drive:
        raise PathEscapeError(PATH_ESCAPES_ROOT, rel, root, f"absolute path {rel!r}")
    if ".." in pure.parts:
        raise PathEscapeError(PATH_ESCAPES_ROOT, rel, root, f"'..' in {rel!r}")
    real_root = Path(root).resolve()
    try:
        # strict=False: a missing file is the caller's concern, but every existing symlink on
        # the way is followed, so a link inside root pointing outside is caught here.
        resolved = (real_root / pure).resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise PathEscapeError(SYMLINK_ESCAPES_ROOT, rel, root, f"cannot resolve {rel!r}: {exc}") from None
    if not _is_within(resolved, real_root):
        raise PathEscapeError(SYMLINK_ESCAPES_ROOT, rel, root, f"{rel!r} resolves to {resolved}, outside {real_root}")
    return resolved


def safe_join_url(root: str | os.PathLike, url: str) -> Path:
    """Map a relative URL from a web page (`img src`) to a file under `root`, or refuse it.

    Percent-escapes are decoded *before* the check, so `%2e%2e/` cannot sneak past it; query
    and fragment are dropped. URLs with a scheme or host (http:, file:, //host/…) do not name
    a file under root and are refused with `path-escapes-root`.
    """
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        raise PathEscapeError(PATH_ESCAPES_ROOT, url, root, f"URL {url!r} is not relative to the page")
    return safe_join(root, unquote(parts.path))
