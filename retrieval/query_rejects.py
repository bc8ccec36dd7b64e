"""Bad records in query files (`mmkg retrieve --dataset`): one reject each, the rest go on.

The query builders read JSONL/MARS files line by line through `numbered_lines` (the same line
rules as ingestion: invalid UTF-8, NUL bytes and over-long lines are rejected before parsing)
and collect a reject per bad record instead of failing the whole split; `retrieve` writes them
to the shard set's `rejects.json`. Image paths named by a query file go through `query_image`,
which confines them to the file's folder (mmkg.pipeline.paths.safe_join).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from mmkg.kg_store.safe_io import iter_lines, open_regular
from mmkg.pipeline.paths import PathEscapeError, safe_join
from mmkg.pipeline.readers.records import MAX_LINE_BYTES, line_problem, too_long

#: raw bytes kept per reject (as the ingest rejects table)
RAW_MAX = 1024


class BadRecord(Exception):
    """Raised by a builder's per-record code; becomes one reject with this message."""


def reject(path: Path, where: int | str, raw: bytes | str, reason: str) -> dict[str, Any]:
    text = raw[:RAW_MAX].decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)[:RAW_MAX]
    return {"stage": "retrieve", "location": f"{path}:{where}", "reason": reason, "raw": text}


def numbered_lines(path: Path, rejects: list[dict[str, Any]]) -> Iterator[tuple[int, int, str]]:
    """(line number, index among non-blank lines, text) of each usable non-blank line; bad lines
    are appended to `rejects`. The index keeps ids stable when a line before it is bad."""
    index = -1
    # mmkg.kg_store.safe_io: a regular file only (a FIFO never hangs), read in bounded blocks (a line
    # over MAX_LINE_BYTES is rejected without ever being held whole)
    with open_regular(path) as f:
        for n, (raw, length) in enumerate(iter_lines(f, MAX_LINE_BYTES), 1):
            if raw is None:
                index += 1
                rejects.append(reject(path, n, b"", too_long(length)))
                continue
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            index += 1
            problem = line_problem(raw)
            if problem is not None:
                rejects.append(reject(path, n, raw, problem))
                continue
            yield n, index, raw.decode("utf-8")


def query_image(folder: Path, relative: Any, *, allow_absolute: bool = False) -> str:
    """`folder/relative` for an image a query file names, once checked to stay inside that
    folder; BadRecord if it escapes (`..`, a symlink out, absolute unless `allow_absolute`) or
    is missing. The path is returned as joined, not resolved, so shard rows keep the paths the
    builders always gave. JSONL files are written by the user for their own run and may name
    images anywhere by absolute path; a *relative* path is read relative to the file and
    must not climb out of its folder."""
    if allow_absolute and Path(str(relative)).is_absolute():
        if not Path(str(relative)).is_file():
            raise BadRecord(f"image missing-file: {relative} does not exist")
        return str(relative)
    try:
        resolved = safe_join(folder, str(relative))
    except PathEscapeError as e:
        raise BadRecord(f"image {e.reason}: {e.detail}") from None
    if not resolved.is_file():
        raise BadRecord(f"image missing-file: {resolved} does not exist")
    return str(Path(folder) / str(relative))
