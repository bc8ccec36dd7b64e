"""Safe image decoding and normalisation for entity images.

Every input image is treated as hostile: sizes are checked before reading, the header is
parsed (dimensions, format) before any pixel is decoded, and only then is the first frame
decoded, EXIF-transposed, converted to RGB and downscaled. The normalised image is encoded
deterministically (same input bytes → same output bytes) so that its sha256 can name a
content-addressed blob and a rerun reproduces the store bit for bit.

Nothing here raises for bad input: the result is an `ImageOutcome` with `ok=False` and a
short `reason` code (see REASONS) that ingestion writes into the rejects table.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from struct import error as struct_error
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmkg.kg_store.atomic import write_bytes
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.hashing import sha256_bytes
from mmkg.pipeline.paths import PathEscapeError, safe_join

# Pillow's bomb *warning* (between its limit and twice it) is an error: `_open_header` turns it
# into a `too-many-pixels` reject, instead of a stray warning line on stderr before the one-line
# refusal (issue 32) and a decode that goes on
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

MiB = 1 << 20
DEFAULT_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
BLOB_DIR = "blobs/images"

# Reject codes (machine-friendly; the human detail goes to ImageOutcome.detail).
REASONS = (
    "empty-file", "too-large", "missing-file", "not-a-file", "unreadable-file",
    "path-escapes-root", "symlink-escapes-root", "invalid-path",
    "not-an-image", "unsupported-format", "too-many-pixels", "bad-dimensions",
    "truncated", "decode-error", "unsupported-mode",
)

# Spellings people use in configs → Pillow's format ids.
_FORMAT_NAMES = {"JPG": "JPEG", "TIF": "TIFF"}
# Pillow names some JPEG files by their container; they are still JPEGs for our purposes.
_FORMAT_ALIASES = {"MPO": "JPEG"}

# Magic numbers of formats people commonly feed an image pipeline. Used only to tell
# "unsupported-format" from "not-an-image" for files that the allowed decoders refused:
# we never hand bytes to a decoder outside `limits.formats`.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF"), (b"%!PS", "EPS"),
    (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"), (b"qoif", "QOI"), (b"DDS ", "DDS"),
    (b"\xff\x4f\xff\x51", "JPEG2000"), (b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
)


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every image; all are checked before the expensive step they guard."""

    max_bytes: int = 20 * MiB          # file size, checked before reading
    max_pixels: int = 50_000_000       # width*height from the header, checked before decoding
    max_side: int = 1024               # normalised images: longer side <= this
    formats: frozenset[str] = DEFAULT_FORMATS
    # JPEG q95 4:4:4 rather than PNG: on the 150 real entity images PNG made the blobs 1.9x
    # the *input* size (48 MB vs 25 MB; JPEG 18 MB) and took 5x the CPU (11.5 s vs 2.2 s),
    # for no difference CLIP can see. Both are deterministic for a given Pillow build
    # (libjpeg-turbo / zlib with fixed settings and no metadata); "PNG" stays available.
    output_format: str = "JPEG"
    jpeg_quality: int = 95             # used only when output_format == "JPEG"

    def __post_init__(self) -> None:
        formats = frozenset(_FORMAT_NAMES.get(f.upper(), f.upper()) for f in self.formats)
        object.__setattr__(self, "formats", formats)
        object.__setattr__(self, "output_format", self.output_format.upper())
        if self.output_format not in ("PNG", "JPEG"):
            raise ValueError(f"output_format must be PNG or JPEG, not {self.output_format!r}")
        if min(self.max_bytes, self.max_pixels, self.max_side) <= 0:
            raise ValueError("image limits must be positive")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, not {self.jpeg_quality}")


def image_limits_from_config(config: Mapping[str, Any] | None) -> ImageLimits:
    """Build limits from a config dict (`max_bytes`, `max_mib`, `max_pixels`, `max_side`, `formats`, …)."""
    config = dict(config or {})
    kwargs: dict[str, Any] = {}
    if "max_mib" in config:
        kwargs["max_bytes"] = int(float(config.pop("max_mib")) * MiB)
    for key in ("max_bytes", "max_pixels", "max_side", "jpeg_quality"):
        if key in config:
            kwargs[key] = int(config.pop(key))
    if "formats" in config:
        kwargs["formats"] = frozenset(config.pop("formats"))
    if "output_format" in config:
        kwargs["output_format"] = str(config.pop("output_format"))
    if config:
        raise ValueError(f"unknown image limit(s): {sorted(config)}")
    return ImageLimits(**kwargs)


@dataclass
class ImageOutcome:
    """What became of one input image. `ok` → `data` holds the normalised bytes."""

    ok: bool
    sha256: str | None = None           # of the normalised bytes (the blob name)
    source_sha256: str | None = None    # of the input bytes (exact-duplicate detection)
    width: int | None = None            # of the normalised image
    height: int | None = None
    format: str | None = None           # original format (JPEG, PNG, …)
    data: bytes | None = None           # normalised image bytes
    reason: str | None = None           # reject code, one of REASONS
    detail: str | None = None           # human-readable detail of the reject
    name: str = ""                      # where it came from (path or URL), for rejects rows
    source_width: int | None = None     # as stored in the input file (before EXIF transpose)
    source_height: int | None = None
    source_mode: str | None = None      # Pillow mode of the input (CMYK, P, I;16, …)
    source_bytes: int | None = None
    animated: bool = False              # multi-frame input: only the first frame was kept
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "first-frame", "exif-transposed"

    @property
    def reject_reason(self) -> str | None:
        """`reason: detail` in one string, for the rejects table's `reason` column."""
        if self.ok:
            return None
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def _reject(reason: str, detail: str, **fields: Any) -> ImageOutcome:
    return ImageOutcome(ok=False, reason=reason, detail=detail, **fields)


# ---------------------------------------------------------------------------------- files


def process_image_file(path: str | os.PathLike, *, root: str | os.PathLike,
                       limits: ImageLimits = ImageLimits()) -> ImageOutcome:
    """Validate and normalise the image at `path` (relative to `root`, or absolute inside it)."""
    name = os.fspath(path)
    data_or_reject = _read_file(name, root, limits)
    if isinstance(data_or_reject, ImageOutcome):
        return data_or_reject
    return process_image_bytes(data_or_reject, name=name, limits=limits)


def _read_file(name: str, root: str | os.PathLike, limits: ImageLimits) -> bytes | ImageOutcome:
    """The bytes of `name` (confined to `root`), or a reject; never blocks, never follows a late link."""
    try:
        resolved = _confine(name, root)
    except PathEscapeError as exc:
        return _reject(exc.reason, exc.detail, name=name)
    # O_NOFOLLOW: the resolved path has no symlinks left, so a link appearing now is a race.
    # O_NONBLOCK: opening a FIFO must not hang the job; fstat then says it is not a file.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(resolved, flags)
    except FileNotFoundError:
        return _reject("missing-file", f"{name} does not exist", name=name)
    except IsADirectoryError:
        return _reject("not-a-file", f"{name} is a directory", name=name)
    except OSError as exc:
        return _reject("unreadable-file", f"{name}: {exc.strerror or exc}", name=name)
    try:
        return _read_regular_file(fd, name, limits)
    finally:
        os.close(fd)


def open_user_image(path: str | os.PathLike, *,
                    limits: ImageLimits = ImageLimits()) -> Image.Image | ImageOutcome:
    """An image the user named by path (a retrieval query image) as RGB pixels, or a reject.

    The path itself may go through symlinks (the user chose it); its target is then held to the
    rules of ingest, by the same code: a regular file (no FIFO, device, `/dev/zero`) opened
    non-blocking, at most max_bytes, a header within max_pixels and an allowed format before any
    pixel is decoded (pixel bombs), a full decode whose failure is a reject code, not an exception.
    """
    name = os.fspath(path)
    try:
        resolved = Path(name).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops
        return _reject("invalid-path", f"cannot resolve {name}: {exc}", name=name)
    data = _read_file(resolved.name, resolved.parent, limits)
    if isinstance(data, ImageOutcome):
        data.name = name
        return data
    base = {"name": name, "source_bytes": len(data), "source_sha256": sha256_bytes(data)}
    try:
        opened = _open_checked_header(data, limits, base)
        if isinstance(opened, ImageOutcome):
            return opened
        im, header = opened
        with im:
            failed = _decode_pixels(im, header)
            if failed is not None:
                return failed
            rgb = _to_rgb(im, [])
            if rgb is None:
                return _reject("unsupported-mode", f"cannot convert mode {im.mode} to RGB", **header)
            return rgb.copy() if rgb is im else rgb
    except MemoryError:
        return _reject("decode-error", "out of memory while decoding", **base)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on hostile input must not kill the job
        return _reject("decode-error", f"{type(exc).__name__}: {exc}", **base)


class ImageRejected(KGStoreError):  # the CLI prints one line
    """An image refused by the limits; `outcome` says why."""

    def __init__(self, outcome: ImageOutcome):
        self.outcome = outcome
        super().__init__(f"image {outcome.reject_reason}: {outcome.name}")


def load_image_rgb(path: str | os.PathLike, *, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """`open_user_image`, raising ImageRejected for a refused image."""
    out = open_user_image(path, limits=limits)
    if isinstance(out, ImageOutcome):
        raise ImageRejected(out)
    return out


def _read_regular_file(fd: int, name: str, limits: ImageLimits) -> bytes | ImageOutcome:
    """Size checks from fstat (nothing read yet), then at most max_bytes + 1 bytes."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return _reject("not-a-file", f"{name} is not a regular file", name=name)
    if st.st_size == 0:
        return _reject("empty-file", f"{name} has 0 bytes", name=name, source_bytes=0)
    if st.st_size > limits.max_bytes:
        return _reject("too-large", f"{st.st_size} bytes > max_bytes {limits.max_bytes}",
                       name=name, source_bytes=st.st_size)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limits.max_bytes + 1)  # +1: a file that grew since fstat is still caught
    except OSError as exc:
        return _reject("unreadable-file", f"{name}: {exc.strerror or exc}", name=name)


def _confine(name: str, root: str | os.PathLike) -> Path:
    """Resolve `name` under `root`; absolute names are allowed only if they lie under root."""
    p = Path(name)
    if p.is_absolute():
        root_abs = Path(os.path.abspath(root))
        p_abs = Path(os.path.abspath(p))  # lexical: `..` is judged before symlinks are followed
        if ".." in p.parts or not (root_abs == p_abs or root_abs in p_abs.parents):
            raise PathEscapeError("path-escapes-root", name, root, f"{name!r} is outside {root}")
        return safe_join(root, p_abs.relative_to(root_abs).as_posix() or ".")
    return safe_join(root, name)


# ---------------------------------------------------------------------------------- bytes


def process_image_bytes(data: bytes, *, name: str = "", limits: ImageLimits = ImageLimits()) -> ImageOutcome:
    """Validate and normalise an image given as bytes (Spark binaryFile rows, downloads)."""
    n = len(data)
    if n == 0:
        return _reject("empty-file", "0 bytes", name=name, source_bytes=0)
    if n > limits.max_bytes:
        return _reject("too-large", f"{n} bytes > max_bytes {limits.max_bytes}", name=name, source_bytes=n)
    base = {"name": name, "source_bytes": n, "source_sha256": sha256_bytes(data)}
    try:
        return _decode_and_normalise(data, limits, base)
    except MemoryError:
        return _reject("decode-error", "out of memory while decoding", **base)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on hostile input must not kill the job
        return _reject("decode-error", f"{type(exc).__name__}: {exc}", **base)


def _decode_pixels(im: Image.Image, header: dict[str, Any]) -> ImageOutcome | None:
    """Decode the pixels; a bomb or a broken file is a reject (None: decoded)."""
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _reject("too-many-pixels", str(exc), **header)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, IndexError, struct_error) as exc:
        return _reject(_classify_decode_error(exc), f"{type(exc).__name__}: {exc}", **header)
    return None


def _open_checked_header(data: bytes, limits: ImageLimits, base: dict[str, Any]) -> Any:
    """Pillow's lazy open (header only) under this job's pixel limit: (image, header) or a reject."""
    _allow_pixels(limits.max_pixels)
    return _open_header(data, limits, base)


def _decode_and_normalise(data: bytes, limits: ImageLimits, base: dict[str, Any]) -> ImageOutcome:
    # No warnings.catch_warnings here: it swaps process-global state and is not thread-safe
    # (ingestion decodes in a thread pool). Nothing depends on warnings: Pillow's bomb warning
    # fires only above MAX_IMAGE_PIXELS >= max_pixels, where our own header check rejects.
    opened = _open_checked_header(data, limits, base)
    if isinstance(opened, ImageOutcome):
        return opened
    im, header = opened
    with im:
        notes: list[str] = []
        animated = bool(getattr(im, "is_animated", False))
        if animated:
            im.seek(0)
            notes.append("first-frame")
        if header["format"] == "JPEG" and max(im.size) >= 2 * limits.max_side:
            # Let libjpeg decode at 1/2..1/8 scale: less memory and time, output >= max_side.
            im.draft(im.mode, (limits.max_side, limits.max_side))
            notes.append("jpeg-draft")
        failed = _decode_pixels(im, header)
        if failed is not None:
            return failed
        upright = _transpose(im, notes)
        if upright.mode in _RESIZE_FIRST:
            # Shrink before converting: compositing a 50 Mpx RGBA on white costs ~3x its size.
            upright = _bound_size(upright, limits.max_side, notes)
        rgb = _to_rgb(upright, notes)
        if rgb is None:
            return _reject("unsupported-mode", f"cannot convert mode {im.mode} to RGB", **header)
        rgb = _bound_size(rgb, limits.max_side, notes)
        out = _encode(rgb, limits)
    return ImageOutcome(ok=True, sha256=sha256_bytes(out), width=rgb.width, height=rgb.height,
                        data=out, animated=animated, notes=tuple(notes), **header)


def _open_header(data: bytes, limits: ImageLimits,
                 base: dict[str, Any]) -> tuple[Image.Image, dict[str, Any]] | ImageOutcome:
    """Parse the header only (no pixels decoded) and apply the format and pixel limits."""
    try:
        # Only decoders of allowed formats ever see the bytes (smaller attack surface).
        im = Image.open(io.BytesIO(data), formats=sorted(limits.formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired inside open(), before our check could see the header.
        return _reject("too-many-pixels", f"pillow guard: {exc}", format=sniff_format(data), **base)
    except UnidentifiedImageError:
        sniffed = sniff_format(data)
        if sniffed and sniffed not in limits.formats:
            return _reject("unsupported-format", f"{sniffed} is not in {sorted(limits.formats)}", **base)
        if sniffed:  # an allowed format whose header the decoder refused
            return _reject("truncated" if _looks_cut_off(data) else "decode-error",
                           f"{sniffed} header unreadable", format=sniffed, **base)
        return _reject("not-an-image", f"no image signature in first bytes {data[:8]!r}", **base)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct_error) as exc:
        return _reject(_classify_decode_error(exc), f"header: {type(exc).__name__}: {exc}", **base)

    fmt = _FORMAT_ALIASES.get(im.format or "", im.format or "?")
    w, h = im.size
    header = {**base, "format": fmt, "source_width": w, "source_height": h, "source_mode": im.mode}
    reject = None
    if fmt not in limits.formats:
        reject = _reject("unsupported-format", f"{fmt} is not in {sorted(limits.formats)}", **header)
    elif w <= 0 or h <= 0:
        reject = _reject("bad-dimensions", f"{w}x{h}", **header)
    elif w * h > limits.max_pixels:
        reject = _reject("too-many-pixels", f"{w}x{h} = {w * h} pixels > max_pixels {limits.max_pixels}", **header)
    if reject is not None:
        im.close()
        return reject
    return im, header


def _looks_cut_off(data: bytes) -> bool:
    """A file too short to hold more than a signature is a cut-off download, not garbage."""
    return len(data) < 64


# Pillow/libjpeg/zlib messages that mean "the data stopped early" rather than "the data is wrong".
_TRUNCATION_MESSAGES = ("truncated", "broken data stream", "premature end", "unexpected end", "not enough data",
                        "buffer is not large")


def _classify_decode_error(exc: BaseException) -> str:
    msg = str(exc).lower()
    if isinstance(exc, EOFError) or any(s in msg for s in _TRUNCATION_MESSAGES):
        return "truncated"
    return "decode-error"


def _allow_pixels(max_pixels: int) -> None:
    """Pillow's own bomb guard is global; raise it only if our (explicit) limit is higher.

    We keep Pillow's guard as a second line of defence: our header check runs first and is
    the one that normally rejects, with the configured limit.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def sniff_format(data: bytes) -> str | None:
    """Format from the magic number (content, never the file extension)."""
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return "HEIF/AVIF"
    stripped = head.lstrip()
    if stripped.startswith((b"<svg", b"<?xml")):
        return "SVG"
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


# ---------------------------------------------------------------------------------- normalise


def _transpose(im: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation so that the stored pixels are upright."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF: keep pixels as stored rather than reject
        notes.append("exif-unreadable")
        return im
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        try:
            out = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001
            notes.append("exif-unreadable")
            return im
        notes.append(f"exif-transposed-{orientation}")
        return out
    return im


# Pillow "converts" these to RGB by relabelling channels, which yields wrong colours; they are
# rare enough (LAB TIFFs) that a reject is more honest than a colour-managed conversion.
_NO_PLAIN_RGB = frozenset({"LAB", "HSV"})


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image | None:
    """RGB pixels from any mode Pillow decodes; None if there is no faithful conversion."""
    if im.mode == "RGB":
        return im
    notes.append(f"from-{im.mode}")
    if im.mode == "I" or im.mode.startswith("I;16"):
        # Pillow's I→L conversion clips at 255 (a 16-bit image turns white): scale 16→8 bits.
        arr = np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if im.mode in _NO_PLAIN_RGB:
        return None
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))  # composite on white: transparent → white
        notes.append("alpha-on-white")
        return white
    try:
        return im.convert("RGB")  # L, 1, P, CMYK (Adobe inversion done by the JPEG decoder), YCbCr, F
    except (ValueError, OSError):
        return None


def _has_alpha(im: Image.Image) -> bool:
    if im.mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return True
    if im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA":
        return True
    return im.mode in ("P", "L", "1") and "transparency" in im.info  # tRNS / GIF transparent index


# Modes Pillow resamples directly (alpha is premultiplied during resampling).
_RESIZE_FIRST = frozenset({"RGB", "RGBA", "L", "LA", "CMYK"})


def _bound_size(im: Image.Image, max_side: int, notes: list[str]) -> Image.Image:
    w, h = im.size
    if max(w, h) <= max_side:
        return im
    scale = max_side / max(w, h)
    size = (max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale))))
    notes.append("downscaled")
    # reducing_gap=3: box-reduce by an integer factor first (fast, little memory), then
    # Lanczos; Pillow documents >= 3 as indistinguishable from plain Lanczos.
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _encode(im: Image.Image, limits: ImageLimits) -> bytes:
    """Deterministic encoding: no metadata (EXIF, ICC, text, timestamps), fixed settings.

    ICC profiles are dropped, not applied: CLIP/LAION preprocessing ignores them too, so the
    pixels we embed are the ones the encoder was trained on (41 of the 150 real images carry
    a profile, almost all sRGB-like).
    """
    clean = im if im.mode == "RGB" else im.convert("RGB")
    clean.info = {}
    buf = io.BytesIO()
    if limits.output_format == "JPEG":
        clean.save(buf, "JPEG", quality=limits.jpeg_quality, optimize=False, progressive=False, subsampling=0)
    else:
        clean.save(buf, "PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# ---------------------------------------------------------------------------------- blobs


def blob_relpath(sha256: str) -> str:
    return f"{BLOB_DIR}/{sha256[:2]}/{sha256}"


def write_blob(store_root: str | os.PathLike, sha256: str, data: bytes) -> str:
    """Store `data` at `blobs/images/<sha[:2]>/<sha256>` (atomic); returns the relative path.

    Content-addressed: an existing blob of the right size is the same image (the name is its
    hash), so it is not rewritten — exact duplicates are stored once.
    """
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    rel = blob_relpath(sha256)
    path = Path(store_root) / rel
    try:
        if path.stat().st_size == len(data):
            return rel
    except FileNotFoundError:
        pass
    write_bytes(path, data)
    return rel


@dataclass(frozen=True)
class ImageSummary:
    """Counts over a batch: input = accepted + rejected; duplicates are among the accepted."""

    inputs: int
    accepted: int
    rejected: int
    unique_blobs: int            # distinct normalised sha256 = blobs stored
    duplicate_sources: int       # accepted inputs whose bytes equal an earlier input's
    duplicate_blobs: int         # accepted inputs whose normalised image equals an earlier one's
    rejects_by_reason: dict[str, int]


def summarise_outcomes(outcomes: Iterable[ImageOutcome]) -> ImageSummary:
    outcomes = list(outcomes)
    ok = [o for o in outcomes if o.ok]
    reasons = Counter(o.reason or "?" for o in outcomes if not o.ok)
    blobs = {o.sha256 for o in ok}
    sources = {o.source_sha256 for o in ok}
    return ImageSummary(inputs=len(outcomes), accepted=len(ok), rejected=len(outcomes) - len(ok),
                        unique_blobs=len(blobs), duplicate_sources=len(ok) - len(sources),
                        duplicate_blobs=len(ok) - len(blobs), rejects_by_reason=dict(sorted(reasons.items())))


__all__ = [
    "ImageLimits", "ImageOutcome", "ImageSummary", "REASONS", "process_image_file", "process_image_bytes",
    "open_user_image", "load_image_rgb", "ImageRejected",
    "write_blob", "blob_relpath", "summarise_outcomes", "image_limits_from_config", "sniff_format",
    "PathEscapeError", "safe_join",
]
