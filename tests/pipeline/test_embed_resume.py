"""A killed `mmkg embed` resumes from its finished chunks and ends byte-identical to a clean run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mmkg.kg_store import KGStore
from mmkg.kg_store.hashing import sha256_file
from mmkg.pipeline.embed import ChunkScratch, embed_store
from tests.stores import build_markg_store

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
LIMIT, CHUNK, BATCH = 1200, 100, 16
ARGS = ["--encoder", "minilm", "--limit", str(LIMIT), "--chunk-size", str(CHUNK), "--batch-size", str(BATCH),
        "--threads", "1", "--no-progress"]
KINDS = ("entity", "relation", "triple")


def _embed_cli(root, **kw):
    return subprocess.Popen([sys.executable, "-m", "mmkg.jobs.cli", "embed", "--kg", str(root), *ARGS], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _hashes(root):
    return {k: sha256_file(root / "vectors" / "minilm" / f"{k}.npy") for k in KINDS}


def test_chunk_marker_is_the_commit_point(tmp_path):
    scratch = ChunkScratch(tmp_path)
    scratch.write("entity", 0, np.ones((3, 4), np.float32))
    assert scratch.is_done("entity", 0, 3) and not scratch.is_done("entity", 0, 4)
    (tmp_path / "entity" / "chunk-000000.done.json").unlink()  # killed between data and marker
    assert not scratch.is_done("entity", 0, 3)
    assert not scratch.is_done("entity", 1, 3)


@pytest.mark.slow  # ~30 s of real MiniLM; tests/reliability/test_kill_resume.py kills and resumes embed in the default tier
def test_kill_and_resume_is_byte_identical(data_dir, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    build_markg_store(data_dir, clean)
    build_markg_store(data_dir, killed)
    clean_res = embed_store(clean, "minilm", limit=LIMIT, chunk_size=CHUNK, batch_size=BATCH, threads=1,
                            progress=False)

    proc = _embed_cli(killed)
    work = killed / "work" / "embed" / "minilm"
    deadline = time.monotonic() + 600
    while len(list(work.glob("*/*/*.done.json"))) < 2:
        assert proc.poll() is None, f"embed ended before it could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline, "no chunk finished in 10 minutes"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(work.glob("*/*/*.done.json")))
    # each distinct text is encoded once: labels, described labels, relations and triple texts
    total = -(-clean_res.forwarded // CHUNK)
    assert 2 <= done < total
    assert KGStore(killed).artifact("vectors/minilm") is None  # nothing committed by the killed run

    rerun = _embed_cli(killed)
    out, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err
    assert "vectors/minilm: entity 1,200, relation 192, triple 1,200" in out
    meta = KGStore(killed).artifact("vectors/minilm")
    # the rerun skipped the chunks finished before the kill
    assert meta["rows_forwarded_this_run"] == clean_res.forwarded - done * CHUNK
    assert _hashes(killed) == _hashes(clean)
    assert KGStore(killed).verify() == []
