"""What a reader is: a plan (which files, in which role) and a pure function over line batches.

`parse(batch, role, ctx)` must be a pure function of its arguments so that the local engine and
Spark's `mapInArrow` (which ships it to workers) give the same records. `prepare` runs once in
the driver for readers that need side tables (OpenKE id → key maps); its result must be small
and picklable. Readers of whole documents (RDF/XML, Turtle) set `line_based = False`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.registry import family
from mmkg.kg_store.safe_io import UnsafeFileError, check_regular

reader_registry = family("reader")


@dataclass(frozen=True)
class InputFile:
    """One file of a source and the role it plays there (e.g. MarKG `entity_label`)."""

    path: str
    role: str
    #: synthetic lines instead of the file's content (a directory listing for `images:DIR`)
    lines: tuple[str, ...] | None = None
    #: False for files that are only hashed and recorded (images read by the image stage)
    hashed_only: bool = False


@dataclass
class SourceSpec:
    """`FORMAT[(k=v,...)]:PATH` from the command line."""

    format: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.format}:{Path(self.path).name}"

    def __str__(self) -> str:
        opts = f"({','.join(f'{k}={v}' for k, v in self.options.items())})" if self.options else ""
        return f"{self.format}{opts}:{self.path}"


def parse_source(spec: str | SourceSpec) -> SourceSpec:
    """Parse `markg:DIR`, `literals(base=http://x/):FILE`; unknown formats list the valid ones."""
    if isinstance(spec, SourceSpec):
        return spec
    options: dict[str, str] = {}
    if "(" in spec.split(":", 1)[0]:
        head, _, rest = spec.partition(")")
        fmt, _, opts = head.partition("(")
        if not rest.startswith(":"):
            raise ConfigError(f"bad source {spec!r}: expected FORMAT(k=v,...):PATH")
        path = rest[1:]
        for item in filter(None, opts.split(",")):
            k, sep, v = item.partition("=")
            if not sep:
                raise ConfigError(f"bad source option {item!r} in {spec!r}: expected k=v")
            options[k.strip()] = v.strip()
    else:
        fmt, sep, path = spec.partition(":")
        if not sep:
            raise ConfigError(f"bad source {spec!r}: expected FORMAT:PATH, formats: {', '.join(reader_registry)}")
    if fmt not in reader_registry:
        raise ConfigError(f"unknown source format {fmt!r}; formats: {', '.join(reader_registry)}")
    if not path:
        raise ConfigError(f"bad source {spec!r}: empty path")
    return SourceSpec(format=reader_registry.get(fmt).name, path=path, options=options)


class Reader:
    """Base class; subclasses register with `@reader_registry.register("name")`."""

    name = "reader"
    line_based = True
    #: True: the reader reads a `base` option (relative IRIs), which `mmkg ingest --base` fills in
    takes_base = False

    def plan(self, path: Path, options: dict[str, str]) -> list[InputFile]:
        if not path.is_file():
            raise KGStoreError(f"{self.name}: {path} is not a file")
        return [InputFile(source_file(self.name, path), "data")]

    def prepare(self, files: list[InputFile], options: dict[str, str]) -> dict[str, Any]:
        return {}

    def parse(self, batch: pa.RecordBatch, role: str, ctx: dict[str, Any]) -> pa.RecordBatch:
        raise NotImplementedError

    def parse_file(self, path: str, role: str, ctx: dict[str, Any]) -> pa.RecordBatch:
        raise NotImplementedError


def source_file(reader: str, path: Path, root: Path | None = None) -> str:
    """The resolved path of an input file, checked without opening it (mmkg.kg_store.safe_io): a
    regular file, and inside `root` (a source folder) after every symlink is resolved. A FIFO,
    a device, a link to `/dev/zero` or out of the folder stops the source with one line
    instead of hanging or reading someone else's file; reads later go through `open_regular`."""
    try:
        return check_regular(path, root=root)
    except UnsafeFileError as e:
        raise KGStoreError(f"{reader}: {e}") from None


def require_dir(reader: str, path: Path) -> Path:
    if not path.is_dir():
        raise KGStoreError(f"{reader}: {path} is not a directory")
    return path
