"""What a KG directory holds, and the check before a store is created in a directory.

Both the lock (`RunLock` refuses a foreign directory before it writes `.run.lock`) and the store
(`StoreWriter`) need this check; it lives here so neither imports the other.
"""
from __future__ import annotations

import os
from pathlib import Path

from mmkg.kg_store import atomic
from mmkg.kg_store.errors import NotAStoreError

MANIFEST = "manifest.json"
#: what a directory may hold and still be taken for a new (or half-created) store
STORE_ENTRIES = frozenset({MANIFEST, ".lock", ".run.lock", *atomic.STORE_DIRS})


def check_new_store_dir(root: str | Path) -> None:
    """Refuse to create a store in a directory that holds anything a store does not (issue 17).

    Writers clean up their own temp files on start, so creating a store inside someone's
    home or data folder must not even begin: NotAStoreError (exit 2) unless `--force`.
    """
    root = Path(root)
    if (root / MANIFEST).exists() or (root / MANIFEST).is_symlink() or not root.exists():
        return
    if not root.is_dir():
        raise NotAStoreError(f"{root} is not a directory")
    foreign = sorted(n for n in os.listdir(root) if n not in STORE_ENTRIES and not atomic.TMP_NAME.fullmatch(n))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", … ({len(foreign)} entries)" if len(foreign) > 5 else "")
        raise NotAStoreError(f"{root} is not empty and is not a KG store (it holds {shown}); "
                             "give a new or empty directory, or `mmkg ingest --force` to create the store there anyway")
