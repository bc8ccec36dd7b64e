"""Issue 32: someone who can write to a store's bucket, or plant files in the remote cache, must
not reach the reader's disk. Real CLI (`mmkg.jobs.cli.main`, or a child process where memory or bytes
written are measured) against moto's S3 server on 127.0.0.1 (`s3` fixture, tests/kg_store/conftest.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mmkg.kg_store import KGStore
from mmkg.kg_store.hashing import sha256_bytes
from tests.reliability.helpers import mmkg
from tests.reliability.hostile_fixtures import run_cli

REPO = Path(__file__).resolve().parents[2]


def _commit(root: Path, rel: str, data: bytes, *, create: bool = False) -> None:
    """Commit one artifact file `rel` with `data` (the smallest store that has an object)."""
    with KGStore.writer(root, create=create) as w:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        w.set_artifact(rel, {"rel": rel}, files=[rel])
        w.commit()


def _store(s3, tmp_path: Path, data: bytes = b'{"by": "owner"}\n') -> tuple[str, str]:
    """(URL, prefix) of a fresh one-object store published to the bucket."""
    from mmkg.kg_store.remote import open_working_copy
    _, bucket, _ = s3
    prefix = f"hostile-{uuid.uuid4().hex[:8]}"
    url = f"s3://{bucket}/{prefix}"
    with open_working_copy(url, cache_dir=tmp_path / "owner") as wc:
        _commit(wc.path, "runs/a.json", data, create=True)
    return url, prefix


def _manifest(s3, prefix: str) -> dict:
    client, bucket, _ = s3
    return json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())


def _put_manifest(s3, prefix: str, manifest: dict) -> None:
    client, bucket, _ = s3
    client.put_object(Bucket=bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode())


def _one_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmkg: ") and "Traceback" not in err, err


@pytest.mark.parametrize("attack", ["absolute-sha", "dotdot-sha", "cache-folder", "work-folder"])
def test_hostile_manifest_entries_touch_no_disk(s3, tmp_path, capsys, attack):
    """A manifest entry whose sha256 is a path (absolute: a same-size local file became a cache
    hit hard-linked into the working copy; `../`: folders and a download outside the cache) or a
    file in the local-only `cache/`/`work/` folders: one line, exit 1, and nothing is created or
    linked outside the cache."""
    url, prefix = _store(s3, tmp_path)
    manifest = _manifest(s3, prefix)
    entry = manifest["files"]["runs/a.json"]
    victim = tmp_path / "victim" / "secret.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"x" * entry["bytes"])
    if attack == "absolute-sha":
        entry["sha256"] = str(victim)
    elif attack == "dotdot-sha":
        entry["sha256"] = f"../../escaped-{uuid.uuid4().hex[:8]}/" + "a" * 64
    else:
        folder = attack.split("-")[0]
        manifest["files"][f"{folder}/planted.bin"] = dict(entry)
    _put_manifest(s3, prefix, manifest)
    cache = tmp_path / "reader"
    code, out, err = run_cli(capsys, "--cache-dir", cache, "stats", "--kg", url)
    assert code == 1, (out, err)
    _one_line(err)
    assert os.stat(victim).st_nlink == 1  # never hard-linked into a working copy
    where = Path(os.path.normpath(cache / "objects" / entry["sha256"][:2] / entry["sha256"]))
    assert attack != "dotdot-sha" or not where.parent.exists(), where  # outside the cache
    work = list((cache / "work").glob("*/cache")) + list((cache / "work").glob("*/work"))
    assert not work, work


def _child_io(args: list[str], env: dict, io_file: Path) -> subprocess.CompletedProcess:
    """`mmkg ARGS` in a child that writes its /proc/self/io (bytes read and written) at exit."""
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: open({str(io_file)!r}, 'w').write(open('/proc/self/io').read()))\n"
            "from mmkg.jobs.cli import main\nmain(sys.argv[1:])\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)


def test_an_object_larger_than_its_entry_is_cut_off_at_the_entry_size(s3, tmp_path):
    """A 40 MB object under a 16-byte entry: the download stops after the entry's size (it was
    fetched whole before its size was compared); one line, exit 1."""
    client, bucket, env = s3
    url, prefix = _store(s3, tmp_path)
    sha = _manifest(s3, prefix)["files"]["runs/a.json"]["sha256"]
    client.put_object(Bucket=bucket, Key=f"{prefix}/objects/{sha[:2]}/{sha}", Body=b"\0" * (40 << 20))
    io_file = tmp_path / "io.txt"
    res = _child_io(["--cache-dir", str(tmp_path / "reader"), "stats", "--kg", url], env, io_file)
    written = dict(line.split(": ") for line in io_file.read_text().splitlines())
    assert int(written["wchar"]) < (4 << 20), written  # was ≥ 40 MB: the whole object went to disk
    assert res.returncode == 1, res.stderr
    _one_line(res.stderr)
    assert "more than the 16 bytes" in res.stderr


def test_a_huge_remote_manifest_is_refused_before_it_is_read(s3, tmp_path):
    """A 40 MB manifest of 700,000 entries (a parse costs ~35 times its size): refused from its
    length in one line; the child's peak memory stays low (it parsed it: well over 1 GB)."""
    client, bucket, _ = s3
    prefix = f"huge-{uuid.uuid4().hex[:8]}"
    entry = '"f%07d": {"bytes": 1, "sha256": "' + "0" * 8 + '"}'
    files = ", ".join(entry % i for i in range(700_000))
    body = ('{"format_version": 1, "kg_version": 1, "tables": {}, "inputs": [], "stages": [], "artifacts": {}, '
            f'"files": {{{files}}}}}').encode()
    assert len(body) > 32 << 20
    client.put_object(Bucket=bucket, Key=f"{prefix}/manifest.json", Body=body)
    run = mmkg("--cache-dir", tmp_path / "reader", "stats", "--kg", f"s3://{bucket}/{prefix}", timeout=120)
    assert run.max_rss_kib < 400_000, run.max_rss_kib
    assert run.rc == 1, run
    _one_line(run.stderr)
    assert "limit" in run.stderr


def test_symlinks_planted_in_the_remote_cache_are_refused(s3, tmp_path, capsys):
    """A symlink at `sources/<digest>` (an s3:// source ingest deleted the target's folder), at
    `work/<digest>` (a sync overwrote another store's manifest.json) or at `objects/<aa>`: one
    line, and the target is untouched."""
    from mmkg.kg_store.remote import _digest
    client, bucket, _ = s3
    url, prefix = _store(s3, tmp_path)
    cache = tmp_path / "shared-cache"
    other = tmp_path / "other-store"
    other.mkdir()
    (other / "manifest.json").write_text("precious")
    (other / "in.tsv").mkdir()
    (other / "in.tsv" / "keep.txt").write_text("precious")
    # work/<digest> → another store
    (cache / "work").mkdir(parents=True)
    (cache / "work" / _digest(url)).symlink_to(other)
    code, out, err = run_cli(capsys, "--cache-dir", cache, "stats", "--kg", url)
    assert code == 1 and "symbolic link" in err, (out, err)
    _one_line(err)
    assert (other / "manifest.json").read_text() == "precious"
    # sources/<digest> → a folder holding an entry with the source's name
    client.put_object(Bucket=bucket, Key=f"{prefix}-src/in.tsv", Body=b"Q1\tP1\tQ2\n")
    src_url = f"s3://{bucket}/{prefix}-src/in.tsv"
    (cache / "sources").mkdir()
    (cache / "sources" / _digest(src_url)).symlink_to(other)
    code, out, err = run_cli(capsys, "--cache-dir", cache, "ingest", "--kg", tmp_path / "kg",
                             "--source", f"tsv:{src_url}", "--engine", "local")
    assert code == 1 and "symbolic link" in err, (out, err)
    _one_line(err)
    assert (other / "in.tsv" / "keep.txt").read_text() == "precious"
    # objects/<aa> → elsewhere
    sha = _manifest(s3, prefix)["files"]["runs/a.json"]["sha256"]
    fresh = tmp_path / "cache2"
    (fresh / "objects").mkdir(parents=True)
    (fresh / "objects" / sha[:2]).symlink_to(other)
    code, out, err = run_cli(capsys, "--cache-dir", fresh, "stats", "--kg", url)
    assert code == 1 and "symbolic link" in err, (out, err)
    assert not (other / sha).exists()


def test_a_same_size_corruption_of_the_object_cache_is_never_used_and_verify_repairs_it(s3, tmp_path, capsys):
    """Someone rewrites a cached object with other bytes of the same size: the next command
    re-hashes it and downloads it again (it was trusted by its size); `verify --kg URL` repairs
    the cache from the bucket."""
    from mmkg.kg_store.remote import WorkingCopy
    url, prefix = _store(s3, tmp_path)
    cache = tmp_path / "reader"
    assert run_cli(capsys, "--cache-dir", cache, "stats", "--kg", url)[0] == 0
    wc = WorkingCopy(url, cache)
    entry = _manifest(s3, prefix)["files"]["runs/a.json"]
    obj = cache / "objects" / entry["sha256"][:2] / entry["sha256"]
    good = obj.read_bytes()
    os.unlink(wc.path / "runs/a.json")  # a new inode: the working copy's link is not the one damaged
    obj.write_bytes(b"X" * len(good))
    assert run_cli(capsys, "--cache-dir", cache, "stats", "--kg", url)[0] == 0
    assert (wc.path / "runs/a.json").read_bytes() == good and obj.read_bytes() == good
    obj.write_bytes(b"Y" * len(good))
    code, out, err = run_cli(capsys, "--cache-dir", cache, "verify", "--kg", url)
    assert code == 0, (out, err)
    assert sha256_bytes(obj.read_bytes()) == entry["sha256"]


def test_publishing_rechecks_an_object_that_is_already_there(s3, tmp_path):
    """A damaged object under the right name in the bucket: the next commit of the same bytes
    uploads them again (it was skipped because the name existed)."""
    from mmkg.kg_store.remote import open_working_copy
    client, bucket, _ = s3
    url, prefix = _store(s3, tmp_path, b"shared bytes\n")
    sha = sha256_bytes(b"shared bytes\n")
    key = f"{prefix}/objects/{sha[:2]}/{sha}"
    client.put_object(Bucket=bucket, Key=key, Body=b"damaged bytes")
    with open_working_copy(url, cache_dir=tmp_path / "owner") as wc:
        _commit(wc.path, "runs/b.json", b"shared bytes\n")
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"shared bytes\n"


def test_a_writer_that_loses_the_publish_race_prints_no_success_summary(s3, tmp_path):
    """Another writer publishes between this ingest's sync and its publish: exit 4 with one
    line, and no `kg_version 1 at …` summary on stdout (it was printed before the publish)."""
    _, bucket, env = s3
    url = f"s3://{bucket}/race-{uuid.uuid4().hex[:8]}"
    tsv = tmp_path / "in.tsv"
    tsv.write_text("head\trelation\ttail\nQ1\tP1\tQ2\n")
    # the rival's manifest appears just before this writer's conditional put
    code = ("import sys, mmkg.kg_store.remote as r\n"
            "put = r._S3Conditional.put\n"
            "def rival(self, data, etag):\n"
            "    put(self, data, etag)\n"
            "    return put(self, data, etag)\n"
            "r._S3Conditional.put = rival\n"
            "from mmkg.jobs.cli import main\nmain(sys.argv[1:])\n")
    res = subprocess.run([sys.executable, "-c", code, "--cache-dir", str(tmp_path / "c"), "ingest", "--kg", url,
                          "--source", f"tsv:{tsv}", "--engine", "local"], cwd=REPO,
                         env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 4, res.stderr
    assert "another writer" in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == "", res.stdout


def test_a_job_kg_url_is_handled_like_a_kg_url(s3, tmp_path, capsys, monkeypatch):
    """`job.kg: s3://…` in a pipeline YAML: the run works on the store's working copy and
    publishes it (it created `./s3:/…` in the current folder, then a traceback)."""
    _, bucket, _ = s3
    prefix = f"jobkg-{uuid.uuid4().hex[:8]}"
    tsv = tmp_path / "in.tsv"
    tsv.write_text("head\trelation\ttail\nQ1\tP1\tQ2\n")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(json.dumps({"metadata": {"title": "t"}, "job": {
        "kg": f"s3://{bucket}/{prefix}", "ingest": {"sources": [f"tsv:{tsv}"], "engine": "local"}}}))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "--cache-dir", tmp_path / "cache", "run", "--config", cfg, "--no-progress")
    assert code == 0, (out, err)
    assert _manifest(s3, prefix)["kg_version"] == 1
    assert not (tmp_path / "s3:").exists()
