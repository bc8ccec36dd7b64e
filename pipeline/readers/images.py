"""`images:DIR` (DIR/<entity key>/<image files>, as MARS `images/Q1501/…`) and `images:FILE`
(a mapping TSV with a header: image file → entity key(s), as `entity_images/…/mapping.tsv`).

The reader only says which file belongs to which entity (an IMAGE record: s = key, o = path
relative to the image root, dt = that root); decoding, validation and blob storage happen in
the image stage (`mmkg.pipeline.image_stage`), which turns each record into an image row or a reject.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.safe_io import iter_lines, open_regular
from mmkg.pipeline.readers import records as R
from mmkg.pipeline.readers.base import InputFile, Reader, reader_registry

FILE_COLUMNS = ("file", "path", "image", "filename", "image_path")
KEY_COLUMNS = ("entity", "entity_key", "key", "keys", "qid", "qids", "markg_qids", "entities", "entity_keys")


def _listing(root: Path) -> list[str]:
    lines = []
    for p in sorted(root.rglob("*")):
        if p.is_dir():
            continue
        rel = p.relative_to(root).as_posix()
        key = rel.split("/", 1)[0] if "/" in rel else ""
        lines.append(f"{key}\t{rel}")
    return lines


def _mapping_lines(path: Path, *, skip_header: bool = False):
    """Decoded lines of a mapping file, read through mmkg.kg_store.safe_io (regular file, bounded
    lines); over-long lines are skipped here (read_lines rejects them as records)."""
    with open_regular(path) as f:
        for i, (raw, _n) in enumerate(iter_lines(f, R.MAX_LINE_BYTES)):
            if raw is None or (skip_header and i == 0):
                continue
            yield raw.decode("utf-8", errors="replace").rstrip("\r")


def _regular_inside(candidate: Path, root: Path) -> bool:
    """A regular file (after symlinks) that resolves inside root; safe to open and hash."""
    try:
        return candidate.is_file() and root in candidate.resolve().parents
    except (OSError, RuntimeError):  # symlink loops, names the OS refuses
        return False


def _columns(header: list[str], options: dict[str, str]) -> tuple[int, int]:
    names = [h.strip().lower() for h in header]

    def pick(option: str, candidates: tuple[str, ...], default: int) -> int:
        if option in options:
            if options[option] not in names:
                raise KGStoreError(f"images: mapping has no column {options[option]!r} (columns: {', '.join(names)})")
            return names.index(options[option])
        return next((names.index(c) for c in candidates if c in names), default)

    return pick("file_column", FILE_COLUMNS, 0), pick("key_column", KEY_COLUMNS, 1)


@reader_registry.register("images")
class ImagesReader(Reader):
    name = "images"

    def plan(self, path: Path, options):
        if path.is_dir():
            root = path.resolve()
            lines = _listing(root)
            # only regular files inside the root are hashed now: a FIFO or a link to /dev/zero
            # would block the plan forever, a link out of the root would read a foreign file.
            # Every listed entry still becomes a record, so the image stage rejects the others.
            files = [InputFile(str(root / rel), "image", hashed_only=True)
                     for rel in (ln.split("\t", 1)[1] for ln in lines) if _regular_inside(root / rel, root)]
            return [InputFile(str(root), "listing", lines=tuple(lines)), *files]
        if not path.is_file():
            raise KGStoreError(f"images: {path} is neither a directory nor a mapping file")
        root = self._root(path.resolve(), options)
        mapping = InputFile(str(path.resolve()), "mapping")
        ctx = self.prepare([mapping], options)
        files = []
        for line in _mapping_lines(path, skip_header=True):
            parts = line.split("\t")
            if len(parts) > ctx["file_col"] and parts[ctx["file_col"]].strip():
                candidate = root / parts[ctx["file_col"]].strip()
                if _regular_inside(candidate, root):
                    files.append(InputFile(str(candidate.resolve()), "image", hashed_only=True))
        return [mapping, *files]

    @staticmethod
    def _root(mapping: Path, options) -> Path:
        if "root" in options:
            return Path(options["root"]).resolve()
        return (mapping.parent / "images") if (mapping.parent / "images").is_dir() else mapping.parent

    def prepare(self, files, options):
        first = files[0]
        if first.role == "listing":
            return {"root": first.path}
        header = next(_mapping_lines(Path(first.path)), "").split("\t")
        file_col, key_col = _columns(header, options)
        return {"root": str(self._root(Path(first.path), options)), "file_col": file_col, "key_col": key_col}

    def parse(self, batch, role, ctx):
        keys, rels, line_nos, primary, rejects = [], [], [], [], []
        for line_no, line in zip(batch["line_no"].to_pylist(), batch["line"].to_pylist()):
            if role == "mapping":
                if line_no == 1:
                    continue  # the header; reported as skipped below
                parts = line.split("\t")
                if len(parts) <= max(ctx["file_col"], ctx["key_col"]):
                    rejects.append((line_no, line, "mapping line lacks the file or key column"))
                    continue
                rel = parts[ctx["file_col"]].strip()
                line_keys = [R.normalize_key(k) for k in parts[ctx["key_col"]].split(",")]
            else:
                key, _, rel = line.partition("\t")
                line_keys = [R.normalize_key(key)]
            line_keys = [k for k in line_keys if k]  # `<>` normalises to nothing: no key
            if not rel or not line_keys:
                reason = "image not inside an <entity key>/ folder" if role == "listing" else "no entity key"
                rejects.append((line_no, line, reason))
                continue
            for i, k in enumerate(line_keys):
                keys.append(k)
                rels.append(rel)
                line_nos.append(line_no)
                primary.append(i == 0)
        out = [R.make(R.IMAGE, len(keys), s=keys, p=rels, o=rels, dt=ctx["root"], line_no=line_nos, primary=primary)]
        if rejects:
            ln, raw, reason = zip(*rejects)
            out.append(R.rejects(pa.array(ln, pa.int64()), pa.array(raw, pa.string()), pa.array(reason, pa.string())))
        if role == "mapping" and batch.num_rows and batch["line_no"][0].as_py() == 1:
            out.append(R.make(R.HEADER, 1, line_no=[1], primary=False, reason="header"))
        return R.concat(out)
