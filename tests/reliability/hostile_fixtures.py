"""Helpers of the issue-17 tests (`test_hostile*.py`): generated inputs, a recording TCP listener
on 127.0.0.1, an in-process `mmkg` runner and a small store with hostile strings in it.
"""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

#: labels with terminal escape sequences and XML-illegal characters (line readers accept them)
ESC_LABEL = "bad \x1b[31mred\x07 label"
CTRL_RELATION = "parent \x01 taxon"


class Listener:
    """A TCP server on 127.0.0.1 that records every connection it accepts.

    `hold=False` closes each connection at once (a client gets an error, never a hang);
    `hold=True` reads the request and never answers (a client must time out by itself).
    """

    def __init__(self, *, hold: bool = False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.hold = hold
        self.requests: list[bytes] = []
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(1.0)
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            self.requests.append(data)
            if self.hold:
                self._open.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self._open:
            c.close()


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """`mmkg ARGS` in this process through `mmkg.jobs.cli.main` (exit code, stdout, stderr).

    Any exception other than the SystemExit main() ends with (i.e. a traceback a user would
    see) propagates and fails the test.
    """
    from mmkg.jobs.cli import main
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def write_markg(root: Path) -> Path:
    """A three-entity MarKG folder whose labels hold escape sequences and control characters."""
    d = root / "MarKG"
    d.mkdir(parents=True)
    (d / "entity2text.txt").write_text(f"Q1\tzebra\nQ2\t{ESC_LABEL}\nQ3\thorse\n")
    (d / "relation2text.txt").write_text(f"P1\t{CTRL_RELATION}\n")
    (d / "wiki_tuple_ids.txt").write_text("Q1\tP1\tQ3\nQ2\tP1\tQ3\n")
    return d


def small_store(root: Path) -> Path:
    """Ingest (in-process) the MarKG folder above plus one literal row; returns the KG dir."""
    from mmkg.pipeline.ingest import ingest
    src = root / "src"
    markg = write_markg(src)
    lit = src / "lit.tsv"
    lit.write_text("Q1\thttp://ex.org/height\t1.4\n")
    kg = root / "kg"
    ingest(kg, [f"markg:{markg}", f"literals:{lit}"], engine="local")
    return kg


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry below `root` (links not followed): file → bytes, link → 'link:<target>', dir → 'dir'."""
    out: dict[str, bytes | str] = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = f"link:{p.readlink()}"
        elif p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out
