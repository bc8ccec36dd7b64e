"""The characters that must never reach a terminal raw (issue 17) nor name a record (issue 32).

C0 and C1 controls, DEL, and the Unicode format characters that reorder or break lines: echoed
as they are, they recolour, rewrite or hide what the user sees. `mmkg.jobs.terminal` escapes them in
everything the CLI prints; readers refuse them where a value becomes a name (JSONL query ids).
One definition, here at the bottom layer, so every layer can use it.
"""
from __future__ import annotations

import re

UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

__all__ = ["UNSAFE_CHARS"]
