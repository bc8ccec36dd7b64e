"""Issue 32: the last unguarded inputs. `mmkg search --image` decodes through the guarded loader
`retrieve` uses (a FIFO hung it forever; a small PNG with a huge canvas cost a gigabyte), every
error line goes through the terminal escaping (the `--strict` reject list and retrieve's "no
valid query" line printed escape sequences raw), and JSONL query ids with control characters are
rejected. Real CLI: `mmkg.jobs.cli.main`, or a child process where a hang or memory is measured."""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from tests.reliability.helpers import mmkg
from tests.reliability.hostile_fixtures import run_cli, small_store

ESC = "\x1b[2J\x1b[31m"


def _huge_png(path: Path, side: int) -> None:
    """A grayscale PNG of side × side zero pixels, a few hundred KB on disk, written row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        parts.append(z.compress(row))
    parts.append(z.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """The small hostile store with tiny-clip entity vectors and index (an encoder with vision)."""
    from mmkg.jobs.cli import main
    kg = small_store(tmp_path_factory.mktemp("search"))
    for args in (["embed", "--kg", str(kg), "--encoder", "tiny-clip", "--no-progress"],
                 ["index", "--kg", str(kg), "--encoder", "tiny-clip"]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 0, args
    return kg


def test_search_image_is_read_by_the_guarded_loader(indexed, tmp_path):
    """A FIFO (Image.open blocked on it forever) and a 13,000² PNG (decoded whole: over 600 MB
    more): both refused in one line, from the header, before any model is loaded."""
    fifo = tmp_path / "query.png"
    os.mkfifo(fifo)
    run = mmkg("search", "--kg", indexed, "--encoder", "tiny-clip", "--image", fifo, timeout=60)
    assert run.rc == 1 and run.stderr.startswith("mmkg: image not-a-file"), run
    assert len(run.stderr.strip().splitlines()) == 1
    bomb = tmp_path / "bomb.png"
    _huge_png(bomb, 13_000)
    assert bomb.stat().st_size < 1 << 20
    run = mmkg("search", "--kg", indexed, "--encoder", "tiny-clip", "--image", bomb, timeout=120)
    assert run.max_rss_kib < 400_000, run.max_rss_kib
    assert run.rc == 1 and run.stderr.startswith("mmkg: image too-many-pixels"), run
    assert len(run.stderr.strip().splitlines()) == 1


def test_no_valid_query_line_and_query_ids_are_escaped_or_refused(tmp_path, capsys):
    """A JSONL query file with an escape sequence in its name whose only query is rejected, and
    one whose query id holds control characters: the one-line error shows the sequence escaped
    (it went to the terminal raw), and the id is rejected (it was accepted)."""
    kg = small_store(tmp_path)
    bad_image = tmp_path / f"queries{ESC}.jsonl"
    bad_image.write_text(json.dumps({"id": "q1", "text": "zebra", "image": "../../x.png"}) + "\n")
    code, out, err = run_cli(capsys, "retrieve", "--kg", kg, "--encoder", "minilm", "--dataset", f"jsonl:{bad_image}")
    assert code == 1 and "no valid query" in err, err
    assert "\x1b" not in err and "\\x1b[2J" in err
    bad_id = tmp_path / "ids.jsonl"
    bad_id.write_text(json.dumps({"id": f"q{ESC}1", "text": "zebra"}) + "\n")
    code, out, err = run_cli(capsys, "retrieve", "--kg", kg, "--encoder", "minilm", "--dataset", f"jsonl:{bad_id}")
    assert code == 1 and "query id is empty or holds control characters" in err, err


def test_the_strict_reject_list_is_escaped(tmp_path, capsys):
    """`ingest --strict` lists each reject's location; a file name with an escape sequence
    reached the terminal raw."""
    src = tmp_path / f"in{ESC}.tsv"
    src.write_text("head\trelation\ttail\nQ1\tP1\tQ2\nonly-two\tcolumns\n")
    code, out, err = run_cli(capsys, "ingest", "--kg", tmp_path / "kg", "--source", f"tsv:{src}", "--engine", "local",
                             "--strict")
    assert code == 3 and "rejected (--strict)" in err, err
    assert "\x1b" not in err and "\\x1b[2J" in err
