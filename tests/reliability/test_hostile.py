"""Issue 17, shared directories: locks, temp cleanup, gc, foreign folders, FIFOs and devices,
hostile ids and over-long lines (docs/RELIABILITY.md §7).

Every input is generated under tmp_path; `mmkg` runs in a subprocess where a hang or a
traceback is what the test must rule out, in-process (`run_cli`) elsewhere. Each test failed
on the code before the fix.
"""
from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pyarrow.compute as pc
import pytest

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import KGStoreError
from mmkg.pipeline.readers import records as R
from tests.pipeline.test_readers import parse_all
from tests.reliability.helpers import assert_no_traceback, mmkg
from tests.reliability.hostile_fixtures import run_cli, small_store, tree, write_markg


# ---- 1. lock files -----------------------------------------------------------------------------
@pytest.mark.parametrize("lock", [".lock", ".run.lock"])
def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path, capsys, lock):
    kg = small_store(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (kg / lock).unlink(missing_ok=True)
    (kg / lock).symlink_to(victim)
    # gc takes both locks; --dry-run used to clobber the target all the same
    rc, out, err = run_cli(capsys, "gc", "--kg", kg, "--dry-run")
    assert rc == 1 and "symbolic link" in err and len(err.strip().splitlines()) == 1, err
    if lock == ".lock":
        rc, out, err = run_cli(capsys, "ingest", "--kg", kg, "--engine", "local",
                               "--source", f"markg:{tmp_path / 'src' / 'MarKG'}")
        assert rc == 1 and "symbolic link" in err, err
    assert victim.read_text() == "precious\n"


def test_a_hard_linked_or_fifo_lock_file_is_refused(tmp_path, capsys):
    kg = small_store(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (kg / ".lock").unlink()
    os.link(victim, kg / ".lock")
    rc, _, err = run_cli(capsys, "gc", "--kg", kg)
    assert rc == 1 and "hard links" in err, err
    assert victim.read_text() == "precious\n"
    (kg / ".lock").unlink()
    os.mkfifo(kg / ".lock")
    with pytest.raises(KGStoreError, match="FIFO, not a regular file"):
        with KGStore.writer(kg):
            pass


# ---- 3. nothing outside the store is deleted ---------------------------------------------------------
def test_ingest_refuses_a_non_empty_directory_that_is_not_a_store(tmp_path, capsys):
    markg = write_markg(tmp_path / "src")
    home = tmp_path / "home"
    (home / "proj" / "build.tmp-12345678").mkdir(parents=True)
    (home / "proj" / "build.tmp-12345678" / "obj").write_text("object file")
    (home / "proj" / "draft.tmp-1").write_text("draft")
    (home / "notes.txt").write_text("mine")
    before = tree(home)
    rc, out, err = run_cli(capsys, "ingest", "--kg", home, "--engine", "local", "--source", f"markg:{markg}")
    assert rc == 2, err
    assert "not a KG store" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert tree(home) == before  # not even a lock file
    from mmkg.jobs.runner import run_pipeline
    with pytest.raises(KGStoreError, match="not a KG store"):  # a DAG run refuses it the same way
        run_pipeline(kg=home, ingest={"sources": [f"markg:{markg}"], "engine": "local"}, progress=False)
    assert tree(home) == before
    rc, out, err = run_cli(capsys, "ingest", "--kg", home, "--engine", "local", "--source", f"markg:{markg}",
                           "--force")
    assert rc == 0, err
    after = tree(home)
    assert {k: v for k, v in after.items() if k in before} == before  # the user's files all survive
    assert (home / "manifest.json").is_file()


def test_a_writer_removes_only_its_own_litter_in_its_own_folders(tmp_path):
    kg = small_store(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.parquet.tmp-deadbeef").write_text("someone else's")
    (kg / "work").symlink_to(outside, target_is_directory=True)
    (kg / "mine").mkdir()
    (kg / "mine" / "draft.tmp-1").write_text("user")
    (kg / "mine" / "cache.tmp-abcdef12").write_text("user")
    (kg / "tables" / "notes.tmp-old").write_text("not our name pattern")
    litter = [kg / "tables" / "entities.v000009.parquet.tmp-0badf00d", kg / "manifest.json.tmp-12345678"]
    for p in litter:
        p.write_bytes(b"half-written")
    (kg / "graph" / "v000009.tmp-cafebabe").mkdir()
    litter.append(kg / "graph" / "v000009.tmp-cafebabe")
    with KGStore.writer(kg):
        pass
    assert not any(p.exists() for p in litter)
    assert (outside / "x.parquet.tmp-deadbeef").read_text() == "someone else's"
    assert (kg / "mine" / "draft.tmp-1").exists() and (kg / "mine" / "cache.tmp-abcdef12").exists()
    assert (kg / "tables" / "notes.tmp-old").exists()


def test_gc_refuses_a_symlinked_data_folder(tmp_path, capsys):
    kg = small_store(tmp_path)
    shared = tmp_path / "shared_blobs"
    (shared / "images" / "ab").mkdir(parents=True)
    foreign = shared / "images" / "ab" / ("ab" + "0" * 62)
    foreign.write_bytes(b"another store's image")
    (kg / "blobs").symlink_to(shared, target_is_directory=True)
    for args in (["--dry-run"], []):
        rc, _, err = run_cli(capsys, "gc", "--kg", kg, *args)
        assert rc == 1 and "symbolic link" in err and "blobs" in err, err
    assert foreign.read_bytes() == b"another store's image"
    (kg / "blobs").unlink()
    rc, out, err = run_cli(capsys, "gc", "--kg", kg)  # a plain store collects as before
    assert rc == 0 and "deleted" in out, err


# ---- 4. unbounded time and memory ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_dev_zero_in_a_source_folder_fails_in_one_line(tmp_path, kind):
    markg = write_markg(tmp_path / "src")
    bad = markg / "entity2textlong.txt"  # an optional file of the format
    if kind == "fifo":
        os.mkfifo(bad)
    else:
        bad.symlink_to("/dev/zero")
    kg = tmp_path / "kg"
    run = mmkg("ingest", "--kg", kg, "--engine", "local", "--source", f"markg:{markg}", timeout=90)
    assert run.rc == 1, str(run)
    assert_no_traceback(run)
    assert ("FIFO" in run.stderr) if kind == "fifo" else ("/dev/zero" in run.stderr), str(run)
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (kg / "manifest.json").exists()


def test_openke_ids_are_not_list_indexes(tmp_path):
    d = tmp_path / "openke"
    d.mkdir()
    (d / "entity2id.txt").write_text("2\nQ1 0\nQ2 1000000000000000\n")  # 20 bytes used to ask for 8 PB
    (d / "relation2id.txt").write_text("1\nP1 0\n")
    (d / "train2id.txt").write_text("3\n0 1000000000000000 0\n0 123456789012345678901234567890 0\n0 5 0\n")
    t = parse_all(f"openke:{d}")
    tri = t.filter(pc.equal(t["kind"], R.TRIPLE))
    assert tri.select(["s", "p", "o"]).to_pylist() == [{"s": "Q1", "p": "P1", "o": "Q2"}]
    rej = t.filter(pc.equal(t["kind"], R.REJECT))
    assert sorted(rej["line_no"].to_pylist()) == [3, 4]
    assert set(rej["reason"].to_pylist()) == {"id not in entity2id/relation2id"}


def _sparse_long_line(path: Path, n_bytes: int, before: bytes, after: bytes) -> None:
    """`before`, one line of `n_bytes` NULs (a sparse hole: no disk used), then `after`."""
    with open(path, "wb") as f:
        f.write(before)
        f.truncate(len(before) + n_bytes)
        f.seek(0, 2)
        f.write(b"\n" + after)


@pytest.mark.parametrize("spec", ["openke", "rdf"])
def test_an_over_long_line_is_never_held_whole(tmp_path, spec):
    big = 256 << 20
    if spec == "openke":
        d = tmp_path / "openke"
        d.mkdir()
        _sparse_long_line(d / "entity2id.txt", big, b"2\nQ1 0\n", b"Q2 1\n")
        (d / "relation2id.txt").write_text("1\nP1 0\n")
        (d / "train2id.txt").write_text("1\n0 1 0\n")
        source = f"openke:{d}"
    else:
        nt = tmp_path / "g.nt"
        _sparse_long_line(nt, big, b"<http://x/a> <http://x/p> <http://x/b> .\n",
                          b"<http://x/b> <http://x/p> <http://x/c> .\n")
        source = f"rdf:{nt}"
    tracemalloc.start()
    try:
        t = parse_all(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20, f"peak {peak >> 20} MiB: a {big >> 20} MiB line was read whole"
    rej = t.filter(pc.equal(t["kind"], R.REJECT))
    assert any(r.startswith("line too long (268435456 bytes") for r in rej["reason"].to_pylist())
    assert t.filter(pc.equal(t["kind"], R.TRIPLE)).num_rows == (1 if spec == "openke" else 2)


def test_an_over_long_line_in_a_line_file_keeps_memory_bounded(tmp_path):
    tsv = tmp_path / "t.tsv"
    _sparse_long_line(tsv, 512 << 20, b"/m/a\t/r\t/m/b\n", b"/m/c\t/r\t/m/d\n")
    run = mmkg("ingest", "--kg", tmp_path / "kg", "--engine", "local", "--source", f"tsv:{tsv}", "--json",
               timeout=300)
    assert run.rc == 0, str(run)
    assert_no_traceback(run)
    # the whole process, pyarrow and all, stays well under the size of the line
    assert run.max_rss_kib < 400 << 10, f"peak {run.max_rss_kib >> 10} MiB"
    store = KGStore(tmp_path / "kg")
    assert store.count("triples") == 2
    assert store.table("rejects")["reason"].to_pylist() == ["line too long (536870912 bytes > 1048576)"]
