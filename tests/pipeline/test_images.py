"""Image stage: hostile corpus outcomes, normalisation, determinism, bomb memory bound, real images."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmkg.kg_store.errors import KGStoreError
from mmkg.pipeline.images import (REASONS, ImageLimits, blob_relpath, image_limits_from_config, process_image_bytes,
                             process_image_file, summarise_outcomes, write_blob)
from mmkg.pipeline.paths import PathEscapeError, safe_join, safe_join_url
from tests.fixtures.hostile_images import exif_rotated_jpeg, photo, write_hostile_corpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root, cases = write_hostile_corpus(tmp_path_factory.mktemp("hostile"))
    outcomes = {c.name: process_image_file(c.path, root=root) for c in cases}
    return root, cases, outcomes


def _outcome(corpus, name):
    _, _, outcomes = corpus
    return outcomes[name]


def _pixels(outcome) -> Image.Image:
    im = Image.open(io.BytesIO(outcome.data))
    im.load()
    return im


def _close(a, b, tol=12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# ----------------------------------------------------------------------------- the corpus


def test_every_case_gets_its_expected_outcome(corpus):
    _, cases, outcomes = corpus
    assert len({c.name for c in cases}) == len(cases)
    wrong = []
    for c in cases:
        o = outcomes[c.name]
        got = None if o.ok else o.reason
        if got != c.expect:
            wrong.append(f"{c.name} ({c.why}): expected {c.expect or 'accepted'}, got {got or 'accepted'} {o.detail}")
    assert not wrong, "\n".join(wrong)


def test_counts_add_up_one_reject_per_bad_item(corpus):
    _, cases, outcomes = corpus
    summary = summarise_outcomes(outcomes.values())
    expected_bad = [c for c in cases if c.expect]
    assert summary.inputs == len(cases)
    assert summary.accepted == len(cases) - len(expected_bad) == 20
    assert summary.rejected == len(expected_bad)
    assert sum(summary.rejects_by_reason.values()) == summary.rejected
    assert summary.rejects_by_reason["too-many-pixels"] == 3
    assert summary.rejects_by_reason["path-escapes-root"] == 3
    assert summary.rejects_by_reason["symlink-escapes-root"] == 2
    # photo.jpg is also reached as an exact copy, through an inner symlink and by absolute path.
    assert summary.duplicate_sources == 3
    # Different files, same pixels, same blob: the lossless PNG/WEBP/BMP/TIFF of one picture,
    # and the white 8x8 of the 1-bit and the transparent LA image.
    lossless = {_outcome(corpus, n).sha256 for n in ("png_named_jpg", "webp", "bmp", "tiff")}
    assert len(lossless) == 1 and _outcome(corpus, "bilevel").sha256 == _outcome(corpus, "la").sha256
    assert summary.duplicate_blobs == 3 + 3 + 1
    assert summary.unique_blobs == summary.accepted - summary.duplicate_blobs
    for o in outcomes.values():
        assert o.ok or (o.reason in REASONS and o.detail and o.data is None and o.sha256 is None)


def test_accepted_images_are_rgb_bounded_and_content_addressed(corpus):
    _, _, outcomes = corpus
    for o in (o for o in outcomes.values() if o.ok):
        im = _pixels(o)
        assert (im.format, im.mode) == ("JPEG", "RGB"), o.name
        assert im.size == (o.width, o.height) and max(im.size) <= 1024
        assert o.sha256 == hashlib.sha256(o.data).hexdigest()
        assert not im.info.get("exif") and not im.info.get("icc_profile")  # metadata stripped


def test_wrong_extension_is_sniffed_by_content(corpus):
    o = _outcome(corpus, "png_named_jpg")
    assert o.ok and o.format == "PNG"


def test_exif_orientation_is_applied():
    o = process_image_bytes(exif_rotated_jpeg(), name="rot.jpg")
    assert o.ok and (o.source_width, o.source_height) == (40, 20) and (o.width, o.height) == (20, 40)
    im = _pixels(o)
    assert _close(im.getpixel((10, 5)), (255, 0, 0)) and _close(im.getpixel((10, 35)), (0, 0, 255))


def test_animated_gif_keeps_first_frame(corpus):
    o = _outcome(corpus, "animated")
    assert o.ok and o.animated and "first-frame" in o.notes
    assert _close(_pixels(o).getpixel((8, 8)), (255, 0, 0))


def test_mode_conversions(corpus):
    cmyk = _outcome(corpus, "cmyk")
    assert cmyk.source_mode == "CMYK" and _close(_pixels(cmyk).getpixel((8, 8)), (0, 255, 255))
    grey16 = _pixels(_outcome(corpus, "grey16"))  # scaled 16→8 bits, not clipped to white
    assert _close(grey16.getpixel((2, 2)), (128, 128, 128), 2) and _close(grey16.getpixel((14, 2)), (255,) * 3, 2)
    assert _close(_pixels(_outcome(corpus, "rgb16")).getpixel((4, 2)), (128, 64, 255))
    pal = _pixels(_outcome(corpus, "palette_transparent"))  # transparent index → white
    assert _close(pal.getpixel((1, 4)), (255, 0, 0)) and _close(pal.getpixel((6, 4)), (255, 255, 255))
    rgba = _pixels(_outcome(corpus, "rgba"))
    assert _close(rgba.getpixel((1, 4)), (0, 128, 0)) and _close(rgba.getpixel((6, 4)), (255, 255, 255))
    assert _close(_pixels(_outcome(corpus, "la")).getpixel((4, 4)), (255, 255, 255))
    assert _close(_pixels(_outcome(corpus, "grey")).getpixel((4, 4)), (77, 77, 77), 2)


def test_multi_picture_jpeg_is_a_jpeg(corpus):
    o = _outcome(corpus, "mpo")
    assert o.ok and o.format == "JPEG" and o.animated
    assert _close(_pixels(o).getpixel((8, 8)), (10, 20, 30), 4)


def test_large_image_is_downscaled_to_max_side(corpus):
    o = _outcome(corpus, "big")
    assert (o.source_width, o.source_height) == (3000, 1500) and (o.width, o.height) == (1024, 512)
    small = process_image_bytes(_outcome(corpus, "photo").data, limits=ImageLimits(max_side=32))
    assert (small.width, small.height) == (32, 24)


def test_normalisation_is_deterministic(corpus):
    root, cases, first = corpus
    again = {c.name: process_image_file(c.path, root=root) for c in cases}
    for key, o in first.items():
        assert (o.ok, o.reason, o.sha256, o.data) == (again[key].ok, again[key].reason, again[key].sha256,
                                                      again[key].data), key
    via_bytes = process_image_bytes((root / "ok/cmyk.jpg").read_bytes(), name="x")
    assert via_bytes.data == _outcome(corpus, "cmyk").data


def test_thread_pool_gives_the_same_outcomes(corpus):
    """Ingestion decodes in a thread pool: no shared state may leak between images."""
    root, cases, sequential = corpus
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda c: process_image_file(c.path, root=root), cases * 2))
    for c, o in zip(cases * 2, threaded):
        s = sequential[c.name]
        assert (o.ok, o.reason, o.sha256, o.notes) == (s.ok, s.reason, s.sha256, s.notes), c.name


def test_bomb_is_rejected_before_decoding_with_bounded_memory(corpus):
    """Peak RSS of a fresh process barely moves while it rejects 2.5 Gpx and 56 Mpx PNGs."""
    root, _, _ = corpus
    script = textwrap.dedent(f"""
        import json, resource
        from pathlib import Path
        from mmkg.pipeline.images import process_image_file, process_image_bytes
        root = Path({str(root)!r})
        bomb = (root / "bad/bomb.png").read_bytes()
        warm = process_image_file("ok/photo.jpg", root=root)  # imports/plugins loaded before the baseline
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outs = [process_image_file(p, root=root) for p in ("bad/bomb.png", "bad/over_limit.png", "bad/header_bomb.png")]
        outs.append(process_image_bytes(bomb, name="bomb"))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"grew_kib": after - before, "reasons": [o.reason for o in outs],
                          "bomb_bytes": len(bomb), "photo_sha": warm.sha256}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert res["reasons"] == ["too-many-pixels"] * 4
    assert res["bomb_bytes"] < 5 * (1 << 20)          # 2.5 Gpx described by ~2.4 MB
    assert res["grew_kib"] < 200 * 1024, res          # decoding it would take >= 2.5 GB
    assert res["photo_sha"] == _outcome(corpus, "photo").sha256  # same bytes in another process


def test_limits_are_enforced_from_bytes_too(corpus):
    root, _, _ = corpus
    jpeg = (root / "ok/photo.jpg").read_bytes()
    assert process_image_bytes(b"", name="e").reason == "empty-file"
    assert process_image_bytes(jpeg, limits=ImageLimits(max_bytes=100)).reason == "too-large"
    assert process_image_bytes(jpeg, limits=ImageLimits(max_pixels=64 * 47)).reason == "too-many-pixels"
    only_png = ImageLimits(formats=frozenset({"png"}))
    assert process_image_bytes(jpeg, limits=only_png).reason == "unsupported-format"
    assert process_image_file("ok/photo.jpg", root=root, limits=ImageLimits(max_bytes=100)).reason == "too-large"


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt TIFF tags we make
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_images_never_raise(data):
    """Byte flips and cuts of valid files: always an outcome, never an exception."""
    sources = _fuzz_sources()
    src = data.draw(st.sampled_from(sources))
    buf = bytearray(src[: data.draw(st.integers(0, len(src)))])
    for _ in range(data.draw(st.integers(0, 6))):
        if buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    o = process_image_bytes(bytes(buf), name="fuzz")
    assert o.ok or o.reason in REASONS
    if o.ok:
        assert Image.open(io.BytesIO(o.data)).mode == "RGB"


_FUZZ: list[bytes] = []


def _fuzz_sources() -> list[bytes]:
    if not _FUZZ:
        im = photo((24, 16))
        for fmt, kw in (("PNG", {}), ("JPEG", {}), ("GIF", {}), ("WEBP", {}), ("BMP", {}), ("TIFF", {})):
            b = io.BytesIO()
            im.save(b, fmt, **kw)
            _FUZZ.append(b.getvalue())
    return _FUZZ


# ----------------------------------------------------------------------------- blobs


def test_write_blob_stores_each_image_once(corpus, tmp_path):
    _, _, outcomes = corpus
    accepted = [o for o in outcomes.values() if o.ok]
    paths = [write_blob(tmp_path, o.sha256, o.data) for o in accepted]
    files = sorted(p for p in (tmp_path / "blobs/images").rglob("*") if p.is_file())
    assert len(files) == len(set(paths)) == summarise_outcomes(accepted).unique_blobs
    o = accepted[0]
    rel = blob_relpath(o.sha256)
    assert rel == f"blobs/images/{o.sha256[:2]}/{o.sha256}" and (tmp_path / rel).read_bytes() == o.data
    mtime = (tmp_path / rel).stat().st_mtime_ns
    assert write_blob(tmp_path, o.sha256, o.data) == rel and (tmp_path / rel).stat().st_mtime_ns == mtime
    (tmp_path / rel).write_bytes(b"half")  # a damaged blob (wrong size) is rewritten
    write_blob(tmp_path, o.sha256, o.data)
    assert (tmp_path / rel).read_bytes() == o.data
    with pytest.raises(ValueError):
        write_blob(tmp_path, "../../etc/passwd", b"x")


def test_limits_from_config():
    lim = image_limits_from_config({"max_mib": 1, "max_pixels": 10, "max_side": 64, "formats": ["png", "jpg"]})
    assert (lim.max_bytes, lim.max_pixels, lim.max_side, lim.formats) == (1 << 20, 10, 64, frozenset({"PNG", "JPEG"}))
    assert image_limits_from_config(None) == ImageLimits()
    with pytest.raises(ValueError):
        image_limits_from_config({"max_pixel": 3})


# ----------------------------------------------------------------------------- paths


def test_safe_join_confines_paths(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "x.png").write_bytes(b"x")
    (root / "out").symlink_to(outside)
    (root / "loop").symlink_to(root / "loop")
    assert safe_join(root, "a/x.png") == (root / "a/x.png").resolve()
    assert safe_join(root, "a/not-yet.png").name == "not-yet.png"  # missing is the caller's business
    cases = {"../outside/y": "path-escapes-root", "a/../../outside": "path-escapes-root",
             str(outside / "y"): "path-escapes-root", "out/y": "symlink-escapes-root",
             "loop/y": "symlink-escapes-root", "": "invalid-path", "a/\x00.png": "invalid-path"}
    for rel, reason in cases.items():
        with pytest.raises(PathEscapeError) as err:
            safe_join(root, rel)
        assert err.value.reason == reason, rel
        assert isinstance(err.value, KGStoreError)


def test_safe_join_url_decodes_before_checking(tmp_path):
    (tmp_path / "img").mkdir()
    assert safe_join_url(tmp_path, "img/a%20b.png?x=1#top") == (tmp_path / "img" / "a b.png").resolve()
    for url in ("%2e%2e/%2e%2e/etc/passwd", "http://example.org/a.png", "file:///etc/passwd", "//host/a.png"):
        with pytest.raises(PathEscapeError) as err:
            safe_join_url(tmp_path, url)
        assert err.value.reason == "path-escapes-root", url


# ----------------------------------------------------------------------------- real images


def test_real_entity_images_are_all_accepted(data_dir):
    roots = [data_dir / "entity_images/imagenet_markg_overlap/images", data_dir / "markg/MARS/images"]
    items = [(r, p.relative_to(r).as_posix()) for r in roots for p in sorted(r.rglob("*")) if p.is_file()]
    assert len(items) == 133 + 17  # READMEs: 133 ImageNet JPEGs, 8 + 9 MARS images
    outcomes = [process_image_file(rel, root=r) for r, rel in items]
    rejected = [(o.name, o.reason, o.detail) for o in outcomes if not o.ok]
    assert not rejected
    summary = summarise_outcomes(outcomes)
    distinct_files = {hashlib.sha256((r / rel).read_bytes()).hexdigest() for r, rel in items}
    assert summary.duplicate_sources == len(items) - len(distinct_files) == 0
    assert summary.unique_blobs == 150
    assert all(max(o.width, o.height) <= 1024 for o in outcomes)
    assert {o.format for o in outcomes} == {"JPEG", "PNG"}
