"""Opening files that someone else may control: regular files only, never blocking, bounded.

Every file the pipeline reads from an input folder or a KG directory goes through
`open_regular` (issue 17): a FIFO, a device (a link to `/dev/zero`), a socket or a directory is
refused from `fstat` before a single byte is read; the open itself is non-blocking (opening a
FIFO with no writer would hang) and does not follow a symlink in the last component; with a
`root`, the path must stay inside that root after every symlink is resolved. Reads are bounded:
`read_bounded` refuses a file over its limit from its size, and `iter_lines` never holds more
than `max_line` bytes of one line (a longer line is skipped while counting it, then reported).

Errors are `UnsafeFileError` (a `KGStoreError`, so the CLI prints one line); `reason` is the
same short code the image stage writes into the rejects table (`not-a-file`,
`symlink-escapes-root`, `missing-file`, …).
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from mmkg.kg_store.errors import KGStoreError

#: flags of every read-only open: no blocking on FIFOs, no symlink as the last component
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_BLOCK = 1 << 20


class UnsafeFileError(KGStoreError):
    """A file that must not be read (or written) as it is: `reason` is a short code."""

    def __init__(self, path: object, reason: str, detail: str):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{reason}: {detail}")


def file_kind(mode: int) -> str:
    """'FIFO', 'character device', … for a refusal message."""
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "special file"


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    p, r = os.fspath(path), os.fspath(root).rstrip("/") or "/"
    return p == r or p.startswith(r if r.endswith("/") else r + "/")


def confine(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """`path` with every symlink resolved, guaranteed inside `root` (also resolved)."""
    p = os.fspath(path)
    real_root = os.path.realpath(root)
    target = os.path.realpath(p)
    if not is_inside(target, real_root):
        lexical = os.path.abspath(p)
        reason = "path-escapes-root" if not is_inside(lexical, os.path.abspath(root)) else "symlink-escapes-root"
        raise UnsafeFileError(p, reason, f"{p} resolves to {target}, outside {real_root}")
    return target


def open_fd(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
            max_bytes: int | None = None) -> tuple[int, os.stat_result]:
    """(fd, fstat) of a regular file opened read-only; the caller closes the fd."""
    p = os.fspath(path)
    target = confine(p, root) if root is not None else p
    try:
        fd = os.open(target, READ_FLAGS)
    except FileNotFoundError:
        raise UnsafeFileError(p, "missing-file", f"{p} does not exist") from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink as the last component
            raise UnsafeFileError(p, "symlink-escapes-root" if root is not None else "not-a-file",
                                  f"{p} is a symbolic link (not followed)") from None
        raise UnsafeFileError(p, "unreadable-file", f"{p}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(p, "not-a-file", f"{p} is a {file_kind(st.st_mode)}, not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise UnsafeFileError(p, "too-large", f"{p} has {st.st_size} bytes > limit {max_bytes}")
        # a regular file never blocks; clear O_NONBLOCK so ordinary reads behave as usual
        import fcntl
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~getattr(os, "O_NONBLOCK", 0))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_regular(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
                 max_bytes: int | None = None) -> BinaryIO:
    """A binary file object of a regular file; see the module docstring for what is refused.

    Without `root`, symlinks in the path are followed (the user named this path), except
    that a symlink as the last component is resolved first and its target checked the same
    way (a link to `/dev/zero` is a character device and refused).
    """
    p = os.fspath(path)
    if root is None and os.path.islink(p):
        p = os.path.realpath(p)
    fd, _ = open_fd(p, root=root, max_bytes=max_bytes)
    return os.fdopen(fd, "rb")


def check_regular(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> str:
    """The resolved path of a regular file (inside `root`), from `stat` only: nothing is opened."""
    p = os.fspath(path)
    target = confine(p, root) if root is not None else os.path.realpath(p)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise UnsafeFileError(p, "missing-file", f"{p} does not exist") from None
    except OSError as e:
        raise UnsafeFileError(p, "unreadable-file", f"{p}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(p, "not-a-file", f"{p} is a {file_kind(st.st_mode)}, not a regular file")
    return target


def read_bounded(path: str | os.PathLike, max_bytes: int, *, root: str | os.PathLike | None = None) -> bytes:
    """The whole content of a regular file of at most `max_bytes` (checked before and while reading)."""
    with open_regular(path, root=root, max_bytes=max_bytes) as f:
        data = f.read(max_bytes + 1)  # +1: a file that grew since fstat is still caught
    if len(data) > max_bytes:
        raise UnsafeFileError(path, "too-large", f"{path} has more than {max_bytes} bytes")
    return data


def iter_lines(f: BinaryIO, max_line: int, *, block: int = _BLOCK) -> Iterator[tuple[bytes | None, int]]:
    """(line, length) for each `\\n`-terminated line of `f`, newline removed.

    A line longer than `max_line` bytes is never held whole: it is skipped while its length is
    counted and yielded as `(None, length)`. Memory stays below `max_line + block` bytes.
    """
    pending = bytearray()
    over = 0  # > 0: the current line is too long; its length so far
    while block_data := f.read(block):
        parts = block_data.split(b"\n")
        for i, piece in enumerate(parts):
            if over:
                over += len(piece)
            elif len(pending) + len(piece) > max_line:
                over = len(pending) + len(piece)
                pending.clear()
            else:
                pending += piece
            if i == len(parts) - 1:
                break  # the last piece has no newline after it (yet)
            if over:
                yield None, over
                over = 0
            else:
                yield bytes(pending), len(pending)
                pending.clear()
    if over:
        yield None, over
    elif pending:
        yield bytes(pending), len(pending)


def open_new(path: str | os.PathLike, mode: int = 0o644) -> BinaryIO:
    """Create `path` for writing; refuses to reuse anything already there (a planted symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise UnsafeFileError(path, "exists", f"{path} already exists (not overwritten)") from None
    return os.fdopen(fd, "wb")


def real_dir(path: str | os.PathLike, what: str = "folder") -> Path | None:
    """`path` if it is a real directory (not a symlink to one), None if it does not exist."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFileError(p, "symlink-escapes-root",
                              f"{what} {p} is a symbolic link to {os.path.realpath(p)}; refusing to follow it")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFileError(p, "not-a-file", f"{what} {p} is a {file_kind(st.st_mode)}, not a directory")
    return p


def _own_dir(p: Path, what: str) -> Path:
    """`p` (which exists) if it is a real directory owned by this user; else one refusal."""
    real_dir(p, what)
    owner = os.lstat(p).st_uid
    if hasattr(os, "geteuid") and owner != os.geteuid():
        raise UnsafeFileError(p, "foreign-owner", f"{what} {p} belongs to uid {owner}, not to this user; refusing to use it")
    return p


def private_dir(path: str | os.PathLike, *, root: str | os.PathLike | None = None, what: str = "cache folder") -> Path:
    """`path` as a cache folder this user alone controls (issue 32), created 0700 where missing.

    Someone who can write to a shared cache must not steer our writes elsewhere: `path` and,
    with `root`, every folder from `root` down to it must be a real directory (no symlink) owned
    by this user; missing ones are created with mode 0700. Folders above `root` (the user's own
    choice of cache location) are not checked.
    """
    p = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root)) if root is not None else p
    if not is_inside(p, base):
        raise UnsafeFileError(p, "path-escapes-root", f"{p} is outside {base}")
    chain = [base]
    for part in p.relative_to(base).parts:
        chain.append(chain[-1] / part)
    for d in chain:
        if real_dir(d, what) is None:
            if d == base:  # where the user put the cache: its parents are theirs to choose
                d.parent.mkdir(parents=True, exist_ok=True)
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:  # a concurrent creator: checked below like any existing folder
                pass
        _own_dir(d, what)
    return p


def check_cached_file(path: str | os.PathLike, what: str = "cache entry") -> os.stat_result | None:
    """lstat of a cache entry that is a regular file owned by this user; None if it is missing.

    A symlink, a special file or another user's file planted in a cache is refused (not used,
    never followed)."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(p, "not-a-file", f"{what} {p} is a {file_kind(st.st_mode)}, not a regular file; "
                                               "refusing to use it")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise UnsafeFileError(p, "foreign-owner", f"{what} {p} belongs to uid {st.st_uid}, not to this user")
    return st


__all__ = ["UnsafeFileError", "open_regular", "open_fd", "check_regular", "read_bounded", "iter_lines",
           "open_new", "confine", "is_inside", "real_dir", "private_dir", "check_cached_file", "file_kind",
           "READ_FLAGS"]
