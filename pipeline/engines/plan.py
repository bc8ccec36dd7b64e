"""Turn source specs into engine work: chunk tasks over line files, whole-file tasks, input hashes.

The driver reads every input once (sha256 for the manifest) and, in the same pass, cuts line
files into ~`chunk_bytes` byte ranges at newlines and counts the lines before each cut, so a
worker can number its lines without reading anything outside its range.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.safe_io import open_regular
from mmkg.pipeline.readers import records as R
from mmkg.pipeline.readers.base import InputFile, Reader, SourceSpec, parse_source, reader_registry

DEFAULT_CHUNK_BYTES = 32 << 20
_BLOCK = 8 << 20


@dataclass(frozen=True)
class ChunkTask:
    """Lines of one byte range of one file (or an inline listing) for one reader."""

    src: int
    file_seq: int
    path: str
    role: str
    start: int
    end: int
    first_line: int
    inline: tuple[str, ...] | None = None


@dataclass
class Plan:
    specs: list[SourceSpec]
    readers: list[Reader]
    contexts: list[dict[str, Any]]
    files: list[InputFile] = field(default_factory=list)     # by file_seq
    file_src: list[int] = field(default_factory=list)        # file_seq → source index
    inputs: list[dict[str, Any]] = field(default_factory=list)  # manifest "inputs" entries, per source
    tasks: list[ChunkTask] = field(default_factory=list)     # line-based work
    whole: list[tuple[int, int, str, str]] = field(default_factory=list)  # (src, file_seq, path, role)

    #: each source's name in the tables (`source` columns, rejects): see `source_names`
    names: list[str] = field(default_factory=list)

    def name_sources(self, prior_inputs: list[dict[str, Any]]) -> None:
        """Give every source its unique name against the store's earlier `inputs` (the writer
        calls this under its lock, before anything is parsed)."""
        self.names = source_names(self.specs, prior_inputs, [{f["path"] for f in e["files"]} for e in self.inputs])
        for entry, ctx, name in zip(self.inputs, self.contexts, self.names):
            entry["source"] = ctx["source"] = name

    def image_files(self) -> list[tuple[str, str]]:
        """(root, relative path) of every image file the plan names, as IMAGE records will name them."""
        out = []
        for f, src in zip(self.files, self.file_src):
            root = self.contexts[src].get("root")
            if f.role == "image" and root and f.path.startswith(root.rstrip("/") + "/"):
                out.append((root, f.path[len(root.rstrip("/")) + 1:]))
        return out


def _resolved(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if "://" not in path else path


def source_names(specs: list[SourceSpec], prior_inputs: list[dict[str, Any]] | None = None,
                 files: list[set[str]] | None = None) -> list[str]:
    """`FORMAT:NAME` of each source, unique by path (issue 29): the file or folder name, unless
    another path of that format and name is in this ingest or already in the store; then as many
    parent folders as tell them apart (`images:a/mapping.tsv`, `images:b/mapping.tsv`). A source
    the store already holds (same path, or one of the same input files: a spec written relative
    to another folder) keeps the name it was given."""
    taken: dict[str, str] = {}  # name → resolved path of every earlier input
    prior_files: list[tuple[str, str, set[str]]] = []  # (format, name, input file paths)
    for e in prior_inputs or []:
        if "spec" in e and "source" in e:
            taken.setdefault(e["source"], _resolved(parse_source(e["spec"]).path))
            prior_files.append((e.get("format", ""), e["source"], {f["path"] for f in e.get("files", [])}))
    known = {(path, name.partition(":")[0]): name for name, path in taken.items()}
    paths = [_resolved(s.path) for s in specs]
    out: list[str] = []
    for i, (spec, path) in enumerate(zip(specs, paths)):
        same = [n for fmt, n, fs in prior_files if fmt == spec.format and files and fs & files[i]]
        if (path, spec.format) in known or same:
            out.append(known.get((path, spec.format)) or same[-1])
            continue
        rivals = {p for p, s in zip(paths, specs) if s.format == spec.format and Path(p).name == Path(path).name}
        rivals |= {p for n, p in taken.items() if n.partition(":")[0] == spec.format and
                   Path(p).name == Path(path).name}
        parts = Path(path).parts
        depth = 1
        while depth < len(parts) and (any(Path(r).parts[-depth:] == parts[-depth:] for r in rivals - {path})
                                      or (depth == 1 and f"{spec.format}:{parts[-1]}" in taken)):
            depth += 1
        name = f"{spec.format}:{'/'.join(parts[-depth:])}"
        out.append(name)
        known[(path, spec.format)] = name
        taken.setdefault(name, path)
    return out


def scan_file(path: str, chunk_bytes: int) -> tuple[int, str, list[tuple[int, int, int]]]:
    """(bytes, sha256, [(start, end, first_line)]) with chunk ends on newlines."""
    h = hashlib.sha256()
    chunks: list[tuple[int, int, int]] = []
    start, first_line, pending, pos = 0, 1, 0, 0
    block_size = min(_BLOCK, chunk_bytes)
    with open_regular(path) as f:  # regular files only: a FIFO or /dev/zero never hangs the plan
        while block := f.read(block_size):
            h.update(block)
            end = pos + len(block)
            cut = block.rfind(b"\n")
            if end - start >= chunk_bytes and cut >= 0:
                chunks.append((start, pos + cut + 1, first_line))
                first_line += pending + block.count(b"\n", 0, cut + 1)
                start, pending = pos + cut + 1, block.count(b"\n", cut + 1)
            else:
                pending += block.count(b"\n")
            pos = end
    if pos > start or not chunks:
        chunks.append((start, pos, first_line))
    return pos, h.hexdigest(), chunks


def hash_file(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open_regular(path) as f:
        while block := f.read(_BLOCK):
            h.update(block)
            n += len(block)
    return n, h.hexdigest()


def make_plan(sources: list[str | SourceSpec], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
              base: str | None = None) -> Plan:
    """The files, tasks and reader contexts of `sources`; `base` (`mmkg ingest --base`) is the
    `base` option of every source whose reader takes one (`Reader.takes_base`) and has none."""
    specs = [parse_source(s) for s in sources]
    if base:
        specs = [replace(s, options={**s.options, "base": s.options.get("base", base)})
                 if reader_registry.get(s.format).takes_base else s for s in specs]
    if not specs:
        raise KGStoreError("no --source given")
    readers = [reader_registry.get(s.format)() for s in specs]
    plan = Plan(specs=specs, readers=readers, contexts=[], names=source_names(specs))
    for src, (spec, reader) in enumerate(zip(specs, readers)):
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise KGStoreError(f"source {spec}: {path} does not exist")
        files = reader.plan(path, spec.options)
        plan.contexts.append({**reader.prepare(files, spec.options), "source": plan.names[src]})
        entry = {"source": plan.names[src], "format": spec.format, "spec": str(spec), "files": [], "counts": {}}
        for f in files:
            seq = len(plan.files)
            plan.files.append(f)
            plan.file_src.append(src)
            if f.lines is not None:
                plan.tasks.append(ChunkTask(src, seq, f.path, f.role, 0, 0, 1, inline=f.lines))
                continue
            if f.hashed_only or not reader.line_based:
                size, digest = hash_file(f.path)
                if not f.hashed_only:
                    plan.whole.append((src, seq, f.path, f.role))
            else:
                size, digest, chunks = scan_file(f.path, chunk_bytes)
                plan.tasks += [ChunkTask(src, seq, f.path, f.role, a, b, line) for a, b, line in chunks]
            entry["files"].append({"path": f.path, "bytes": size, "sha256": digest})
        plan.inputs.append(entry)
    return plan


# ---- worker side ----------------------------------------------------------------------------
def read_lines(task: ChunkTask) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """(LINES batch of the non-blank lines, skipped/reject records for blank and bad lines).

    Bad lines (invalid UTF-8, NUL bytes, longer than R.MAX_LINE_BYTES) are rejected here, once
    for every reader, so no reader ever sees them.
    """
    bad_rows: dict[int, str] = {}
    if task.inline is not None:
        lines = pa.array(task.inline, pa.string())
    else:
        with open_regular(task.path) as f:
            f.seek(task.start)
            data, long_lines = _read_range(f, task.end - task.start)
        if data.endswith(b"\n"):
            data = data[:-1]
        if not data and task.end == task.start:
            return pa.RecordBatch.from_pylist([], schema=R.LINES), R.empty()
        raw = pc.list_flatten(pc.split_pattern(pa.array([data], pa.large_binary()), b"\n"))
        lines, bad_rows = _decode(raw, long_lines)
        if long_lines:
            raw = pc.if_else(pa.array([i in long_lines for i in range(len(raw))]),
                             pa.array([long_lines.get(i, (0, b""))[1] for i in range(len(raw))], raw.type), raw)
    line_no = pa.array(range(task.first_line, task.first_line + len(lines)), pa.int64())
    lines = pc.utf8_rtrim(lines, characters="\r")
    blank = pc.fill_null(R.is_blank(lines), False)
    extra = [R.make(R.HEADER, int(pc.sum(blank).as_py() or 0), line_no=line_no.filter(blank), primary=False,
                    reason="blank line")]
    keep = pc.and_(pc.invert(blank), pc.is_valid(lines))
    if bad_rows:
        rows = sorted(bad_rows)
        raw_text = pa.array([_raw_text(raw[i].as_py()) for i in rows], pa.string())
        extra.append(R.rejects(pc.take(line_no, pa.array(rows, pa.int64())), raw_text,
                               pa.array([bad_rows[i] for i in rows], pa.string())))
    batch = pa.RecordBatch.from_arrays([line_no.filter(keep), lines.filter(keep)], schema=R.LINES)
    return batch, R.concat(extra)


#: a task's byte range up to this size is read whole (fast path); a larger one can only come from
#: lines longer than a scan block, and is streamed so that no over-long line is ever held whole
_WHOLE_RANGE = 64 << 20


def _read_range(f, size: int) -> tuple[bytes, dict[int, tuple[int, bytes]]]:
    """`size` bytes of `f` with each line over R.MAX_LINE_BYTES replaced by an empty line;
    returns (data, {line index: (true length, first 1 KiB)}) for those lines."""
    if size <= _WHOLE_RANGE:
        return f.read(size), {}
    from mmkg.kg_store.safe_io import iter_lines

    class _Limited:  # the task's range only, in blocks
        def __init__(self, left: int):
            self.left = left

        def read(self, n: int) -> bytes:
            block = f.read(min(n, self.left)) if self.left > 0 else b""
            self.left -= len(block)
            return block

    head_pos = f.tell()
    out, long_lines, pos = [], {}, head_pos
    for i, (line, n) in enumerate(iter_lines(_Limited(size), R.MAX_LINE_BYTES)):
        if line is None:
            here = f.tell()
            f.seek(pos)
            long_lines[i] = (n, f.read(1024))
            f.seek(here)
            out.append(b"")
        else:
            out.append(line)
        pos += n + 1
    data = b"\n".join(out)
    if pos - head_pos <= size:  # the range ended with a newline
        data += b"\n"
    return data, long_lines


def _decode(raw: pa.Array, long_lines: dict[int, tuple[int, bytes]] | None = None) -> tuple[pa.Array, dict[int, str]]:
    """Lines as strings; rows that are too long, not UTF-8 or hold NUL bytes are null, with why."""
    bad: dict[int, str] = {i: R.too_long(n) for i, (n, _head) in (long_lines or {}).items()}
    lengths = pc.binary_length(raw)
    if (pc.max(lengths).as_py() or 0) > R.MAX_LINE_BYTES:
        long_rows = np.flatnonzero(pc.greater(lengths, R.MAX_LINE_BYTES).to_numpy(zero_copy_only=False))
        bad.update({int(i): R.too_long(int(lengths[int(i)].as_py())) for i in long_rows})
        # decode the others only: a long line may also be invalid UTF-8, but one reason is enough
        raw = pc.if_else(pc.greater(lengths, R.MAX_LINE_BYTES), pa.scalar(b"", raw.type), raw)
    try:
        lines = raw.cast(pa.large_string()).cast(pa.string())
    except pa.ArrowInvalid:
        lines, invalid = _decode_slowly(raw)
        bad.update({i: R.INVALID_UTF8 for i in invalid})
    nul = pc.fill_null(pc.match_substring(lines, "\x00"), False)
    if pc.any(nul).as_py():
        bad.update({int(i): R.NUL_BYTE for i in np.flatnonzero(nul.to_numpy(zero_copy_only=False))})
    if bad:
        mask = np.zeros(len(lines), bool)
        mask[list(bad)] = True
        lines = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), lines)
    return lines, bad


def _decode_slowly(raw: pa.Array) -> tuple[pa.Array, list[int]]:
    out, bad = [], []
    for i, b in enumerate(raw.to_pylist()):
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(None)
            bad.append(i)
    return pa.array(out, pa.string()), bad


def _raw_text(b: bytes) -> str:
    return b[:1024].decode("utf-8", errors="replace")


def run_task(task: ChunkTask, reader: Reader, ctx: dict[str, Any]) -> pa.RecordBatch:
    """Read and parse one task; the result carries src, file_seq and pos (LOCATED schema)."""
    lines, extra = read_lines(task)
    parsed = reader.parse(lines, task.role, ctx) if lines.num_rows else R.empty()
    return locate(R.concat([parsed, extra]), task.src, task.file_seq)


def locate(batch: pa.RecordBatch, src: int, file_seq: int) -> pa.RecordBatch:
    n = batch.num_rows
    pos = pc.add(pc.fill_null(batch["line_no"], 0), file_seq << R.LINE_BITS)
    cols = batch.columns + [pa.array([src] * n, pa.int32()), pa.array([file_seq] * n, pa.int32()), pos]
    return pa.RecordBatch.from_arrays(cols, schema=R.LOCATED)
