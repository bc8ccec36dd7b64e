"""One writer per KG directory: an fcntl lock on `<kg>/.lock` (and one run at a time: `.run.lock`).

The OS drops the lock when the holder dies (kill -9 included), so a crashed job never leaves
a stale lock behind. Readers take no lock: they read the last committed manifest.

A KG directory may be shared, so the lock file is treated as hostile (issue 17): it is opened
with `O_NOFOLLOW` (a symlink planted as `.lock` is refused, never followed to its target), never
truncated, and must be a regular file with one link (not a FIFO, device or hard link to someone
else's file); otherwise the command stops with one line saying what to remove.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from pathlib import Path

from mmkg.kg_store.errors import KGStoreError, LockedError
from mmkg.kg_store.layout import check_new_store_dir
from mmkg.kg_store.safe_io import file_kind

#: the holder line is written over the start of the file, padded, never truncated
_HOLDER_BYTES = 96


class StoreLock:
    name = ".lock"

    def __init__(self, root: str | Path, *, wait: float = 0.0):
        self.path = Path(root) / self.name
        self.wait = wait
        self._fd: int | None = None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
            | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise KGStoreError(f"lock file {self.path} is a symbolic link (to {os.path.realpath(self.path)}); "
                                   "refusing to follow it: remove the link and retry") from None
            raise KGStoreError(f"cannot open lock file {self.path}: {e.strerror or e}") from None
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = f"is a {file_kind(st.st_mode)}, not a regular file"
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} hard links (it may be another file)"
        if problem:
            os.close(fd)
            raise KGStoreError(f"lock file {self.path} {problem}; refusing to use it: remove it and retry")
        return fd

    def acquire(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._open()
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise LockedError(
                        f"{self.path.parent} is locked by another writer ({holder or 'unknown'}); "
                        "wait for it to finish or pass a longer --wait") from None
                time.sleep(0.2)
        holder = f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}"
        os.pwrite(fd, holder.encode()[:_HOLDER_BYTES].ljust(_HOLDER_BYTES), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunLock(StoreLock):
    """The whole-run lock, `<kg>/.run.lock` (separate from the per-commit store lock).

    A run may create the store: like a writer, it refuses a non-empty directory that is not
    one before it writes its lock or logs there (NotAStoreError, exit 2).
    """

    name = ".run.lock"

    def acquire(self) -> "RunLock":
        check_new_store_dir(self.path.parent)
        return super().acquire()
