"""The one way a benchmark reports: its JSON object on stdout, and atomically to `--out` when given."""
from __future__ import annotations

import json
from typing import Any


def emit(out: dict[str, Any], path: str | None, *, sort_keys: bool = True) -> None:
    text = json.dumps(out, sort_keys=sort_keys)
    print(text)
    if path:
        from mmkg.kg_store import atomic
        atomic.write_bytes(path, (text + "\n").encode())
