"""KG strings on the terminal: control characters and escape sequences made visible (issue 17).

A label, key or literal from an input file may hold `ESC [ … m`, a carriage return or a
right-to-left override; echoed as they are, they recolour, rewrite or hide what the user sees.
Every CLI command prints KG strings through `printable` (human output) or `safe_json` (--json).
"""
from __future__ import annotations

import json
import re
from typing import Any

from mmkg.kg_store.unsafe_text import UNSAFE_CHARS

#: C0 and C1 controls, DEL, and the Unicode format characters that reorder or break lines
_UNSAFE = UNSAFE_CHARS
#: what json.dumps(ensure_ascii=False) leaves unescaped of the above (it escapes C0 itself)
_UNSAFE_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(value: Any) -> str:
    """`str(value)` with every control/format character written as `\\xNN` / `\\uNNNN`."""
    text = "" if value is None else str(value)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def printable_lines(value: Any) -> str:
    """`printable` line by line: a message made of several lines keeps its line breaks."""
    return "\n".join(printable(line) for line in ("" if value is None else str(value)).split("\n"))


def safe_json(obj: Any, **kwargs: Any) -> str:
    """`json.dumps(obj, ensure_ascii=False)` whose strings carry no raw control characters."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


__all__ = ["printable", "printable_lines", "safe_json"]
