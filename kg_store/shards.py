"""Subgraph shard format: `subgraphs/<dataset>/<split>/<key>/` = `parts/part-NNNNN.parquet` + `meta.json`,
the reports (`quality.json`, `rejects.json` …) + `_SUCCESS`.

The Parquet parts sit alone in `parts/`, so `pandas.read_parquet(<key>/parts)`, `pyarrow.dataset`
and Hugging Face `datasets` read that folder as it is (JSON among the parts broke them, issue 29);
shard sets written before that have their parts beside `meta.json`, and `part_files` reads both.

pyarrow/numpy only, so that readers (the model, notebooks, analysts) need neither torch nor
the encoders. A shard directory exists for readers only once `_SUCCESS` is there: it is
written last, after every part file and `meta.json` (img2dataset I2).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mmkg.kg_store import atomic
from mmkg.kg_store.errors import KGStoreError

SUCCESS = "_SUCCESS"
META = "meta.json"
#: the sub-folder of a shard set that holds its Parquet parts and nothing else
PARTS = "parts"
SHARD_FORMAT = 1

_ids = pa.list_(pa.int64())
_keys = pa.list_(pa.string())
#: the columns every shard row has; datasets add their own fields after these
BASE_SCHEMA = pa.schema([
    ("query_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()),
    ("query_text", pa.string()), ("seed_entity_ids", _ids),
    ("triple_ids", _ids), ("head_ids", _ids), ("relation_ids", _ids), ("tail_ids", _ids),
    ("head_keys", _keys), ("relation_keys", _keys), ("tail_keys", _keys),
    ("head_labels", _keys), ("relation_labels", _keys), ("tail_labels", _keys),
    ("scores", pa.list_(pa.float32())), ("num_candidates", pa.int64()), ("empty", pa.bool_()),
])


#: the per-triple list columns of a row, parallel to each other (one entry per kept triple)
TRIPLE_LIST_COLUMNS = ("triple_ids", "head_ids", "relation_ids", "tail_ids", "head_keys", "relation_keys",
                       "tail_keys", "head_labels", "relation_labels", "tail_labels", "scores")


def subgraph_rel(dataset: str, split: str, key: str) -> str:
    """Store-relative directory of one shard set."""
    return f"subgraphs/{dataset}/{split}/{key}"


def is_complete(directory: str | Path) -> bool:
    return (Path(directory) / SUCCESS).exists()


def parts_dir(directory: str | Path) -> Path:
    """The folder of a shard set's Parquet parts (the set itself for sets written before `parts/`)."""
    directory = Path(directory)
    return directory / PARTS if (directory / PARTS).is_dir() else directory


def part_files(directory: str | Path) -> list[Path]:
    """Part files in write order (zero-padded names sort by number)."""
    return sorted(parts_dir(directory).glob("part-*.parquet"))


def read_meta(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not is_complete(directory):
        raise KGStoreError(f"{directory} is not a finished shard directory (no {SUCCESS})")
    from mmkg.kg_store.errors import CorruptFileError
    from mmkg.kg_store.safe_io import UnsafeFileError, read_bounded
    try:  # a regular file inside the directory, bounded (issue 17)
        return json.loads(read_bounded(directory / META, 64 << 20, root=directory).decode("utf-8"))
    except UnsafeFileError as e:
        raise CorruptFileError(directory / META, e.detail) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(directory / META, f"not valid JSON ({e})") from None


def read_shards(directory: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All rows of a finished shard directory, in query order."""
    directory = Path(directory)
    read_meta(directory)  # refuses unfinished directories
    parts = part_files(directory)
    if columns and parts:
        have = pq.read_schema(parts[0]).names
        if missing := [c for c in columns if c not in have]:
            raise KGStoreError(f"{directory} has no column(s) {', '.join(missing)}; columns: {', '.join(have)}")
    tables = [pq.read_table(p, columns=columns, memory_map=True) for p in parts]
    if not tables:
        return BASE_SCHEMA.empty_table() if columns is None else BASE_SCHEMA.empty_table().select(columns)
    return pa.concat_tables(tables, promote_options="default")


def iter_batches(directory: str | Path, columns: list[str] | None = None,
                 batch_size: int = 1024) -> Iterator[pa.RecordBatch]:
    """Stream the rows of a finished shard directory without loading it all."""
    read_meta(directory)
    for p in part_files(directory):
        yield from pq.ParquetFile(p).iter_batches(batch_size=batch_size, columns=columns)


class ShardWriter:
    """Write part files into a staging directory; `close(meta)` publishes it atomically.

    Part files, then `meta.json`, then `_SUCCESS`; then the staging directory is renamed onto
    the final one, so readers never see a half-written shard set.
    """

    def __init__(self, directory: str | Path, *, rows_per_part: int = 10_000):
        self.directory = Path(directory)
        self.rows_per_part = rows_per_part
        self._ctx = atomic.atomic_path(self.directory)
        self.staging = self._ctx.__enter__()
        #: where the part files go (executors that write parts write them here)
        self.parts = self.staging / PARTS
        self.parts.mkdir(parents=True)
        self.num_parts = 0
        self.num_rows = 0
        self._closed = False

    def write(self, table: pa.Table) -> None:
        for start in range(0, max(table.num_rows, 1), self.rows_per_part):
            chunk = table.slice(start, self.rows_per_part)
            if chunk.num_rows == 0 and self.num_parts > 0:
                break
            pq.write_table(chunk, self.parts / f"part-{self.num_parts:05d}.parquet", compression="zstd")
            self.num_parts += 1
            self.num_rows += chunk.num_rows

    def adopt_parts(self, written: list[tuple[str, int]]) -> None:
        """Take part files that others (Spark executors) wrote into `parts` as this set's parts:
        `written` is (file name, rows) in row order, as the successful tasks reported them. They
        are renamed `part-NNNNN.parquet` in that order; anything else there (a failed or
        speculative task attempt's file, temp litter) is removed, so only reported rows publish."""
        import os
        from mmkg.kg_store.errors import CorruptFileError
        names = [name for name, _ in written]
        if self.num_parts or len(set(names)) != len(names) or any(
                "/" in n or n.startswith("part-") or not n.endswith(".parquet") for n in names):
            raise KGStoreError(f"cannot adopt part files {names[:5]} into {self.directory}")
        for name, rows in written:
            try:
                have = pq.ParquetFile(self.parts / name).metadata.num_rows
            except (pa.ArrowInvalid, OSError) as e:
                raise CorruptFileError(self.parts / name, f"unreadable Parquet part ({e})") from None
            if have != rows:
                raise CorruptFileError(self.parts / name, f"{have} rows, the task reported {rows}")
        for entry in os.listdir(self.parts):
            if entry not in names:
                p = self.parts / entry
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for i, name in enumerate(names):  # never named part-…, so no rename overwrites another part
            os.replace(self.parts / name, self.parts / f"part-{i:05d}.parquet")
        self.num_parts = len(names)
        self.num_rows = sum(rows for _, rows in written)

    def add_file(self, name: str, obj: Any) -> None:
        """A JSON side file (reports) that belongs to the shard set, beside `parts/`."""
        (self.staging / name).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def close(self, meta: dict[str, Any]) -> Path:
        meta = {"shard_format": SHARD_FORMAT, "rows": self.num_rows, "parts": self.num_parts, **meta}
        self.add_file(META, meta)
        (self.staging / SUCCESS).write_text("")
        self._closed = True
        self._ctx.__exit__(None, None, None)
        return self.directory

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            # throwing into atomic_path makes it delete the staging directory, not publish it
            err = RuntimeError("shard writing aborted")
            self._ctx.__exit__(RuntimeError, err, None)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()
