"""One writer per KG directory: an fcntl lock on `<kg>/.lock`.

The OS drops the lock when the holder dies (kill -9 included), so a crashed job never leaves
a stale lock behind. Readers take no lock: they read the last committed manifest.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from kg_store.errors import LockedError


class StoreLock:
    def __init__(self, root: str | Path, *, wait: float = 0.0):
        self.path = Path(root) / ".lock"
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode(), 0)
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
