"""Memory sizes as users write them (no numpy here: `mmkg sparql --memory` parses one at startup)."""
from __future__ import annotations

import re

from mmkg.kg_store.errors import ConfigError


def parse_size(text: str | int) -> int:
    """'256m', '1G', '2.5GB', '64KiB', '1000000' → bytes (memory settings: the CSR build, index budgets)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise ConfigError(f"cannot read memory size {text!r}; use e.g. 256M, 4G")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))
