"""KG stores on object storage (issue 19), against a real S3 server on 127.0.0.1 (moto's server
mode, one per module, dummy credentials): a store at s3:// gives the same ingest → embed → index →
retrieve results as a local one, a kill -9 before the publish leaves the previous version, a lost
publish race is refused, sources are read from s3://. Real MarKG slice, the real MiniLM encoder."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmkg.kg_store import KGStore, open_store
from mmkg.kg_store.errors import LockedError
from tests.jobs.test_run_fixtures import make_sources

REPO = Path(__file__).resolve().parents[2]
def _mmkg(*args: str) -> None:
    from mmkg.jobs.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 0, args


def _upload_dir(client, bucket: str, local: Path, prefix: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(local).as_posix()}")


def _remote_manifest(client, bucket: str, prefix: str) -> tuple[bytes, dict]:
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read()
    return body, json.loads(body)


def _objects(client, bucket: str, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/objects/")
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


@pytest.fixture(scope="module")
def pair(s3, data_dir, tmp_path_factory):
    """(local store, s3 URL, sources): the same commands on a local store and on s3://kg/parity,
    the local one reading the MarKG slice from disk, the remote one from s3://kg/src/MarKG."""
    client, bucket, _ = s3
    tmp = tmp_path_factory.mktemp("remote-parity")
    src = make_sources(data_dir, tmp / "src")
    _upload_dir(client, bucket, src["base"], "src/MarKG")
    local, url = tmp / "local", f"s3://{bucket}/parity"
    for kg, source in ((str(local), f"markg:{src['base']}"), (url, f"markg:s3://{bucket}/src/MarKG")):
        _mmkg("ingest", "--kg", kg, "--source", source, "--engine", "local")
        _mmkg("embed", "--kg", kg, "--encoder", "minilm", "--batch-size", "32", "--no-progress")
        _mmkg("index", "--kg", kg, "--encoder", "minilm")
        _mmkg("retrieve", "--kg", kg, "--encoder", "minilm", "--dataset", f"mars:{data_dir}/markg/MARS",
              "--split", "dev", "--limit", "5", "--seed-triples", "10", "--triples", "10")
    return local, url, src


@pytest.mark.faiss
def test_s3_store_matches_local_store(pair, s3, tmp_path):
    """Same counts, ids, vectors, FAISS files and shard rows; every object named by its sha256."""
    from mmkg.kg_store.remote import open_remote_store
    local, url, src = pair
    client, bucket, _ = s3
    _, remote = _remote_manifest(client, bucket, "parity")
    mine = open_store(local).manifest
    # data files byte-identical (same sha256) under the same relative paths; reports differ in timings
    data = {rel: i["sha256"] for rel, i in mine["files"].items()
            if rel.endswith((".parquet", ".npy", ".faiss")) and not rel.startswith("subgraphs/") or "/part-" in rel}
    assert any(r.startswith("vectors/minilm/") for r in data) and any("/part-" in r for r in data)
    assert {rel: remote["files"][rel]["sha256"] for rel in data} == data
    assert _objects(client, bucket, "parity") >= {f"parity/objects/{s[:2]}/{s}" for s in data.values()}
    # provenance names the object-store source, not the local download
    assert remote["inputs"][0]["files"][0]["path"].startswith(f"s3://{bucket}/src/MarKG/")

    store = open_remote_store(url, cache_dir=tmp_path / "fresh")  # a second machine's view
    assert store.kg_version == 1 and store.stats() == open_store(local).stats()
    assert store.count("triples") == src["n_base"]
    for name in ("entities", "triples"):
        assert store.table(name).equals(open_store(local).table(name))
    shards = [rel for rel in data if "/part-" in rel]
    for rel in shards:
        assert pq.read_table(store.path(rel)).equals(pq.read_table(local / rel))
    _mmkg("verify", "--kg", url)


def _ingest_subprocess(url: str, source: str, env: dict, *, kill_at_publish: bool) -> subprocess.CompletedProcess:
    """`mmkg ingest --kg URL` in a child process; with `kill_at_publish` it kill -9s itself after
    uploading every new object and just before the conditional put of the manifest."""
    patch = ("import os, signal, mmkg.kg_store.remote as r\n"
             "r.RemoteStore.publish = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n") if kill_at_publish else ""
    code = patch + "from mmkg.jobs.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code, "ingest", "--kg", url, "--source", source,
                           "--engine", "local"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_kill_before_publish_keeps_previous_version(s3, data_dir, tmp_path):
    """A tsv source read from s3:// makes v1; an ingest killed -9 after its uploads, before the
    manifest put, leaves v1 readable and `verify` clean; the next ingest then publishes v2."""
    client, bucket, env = s3
    src = make_sources(data_dir, tmp_path / "src")
    client.upload_file(str(src["extra"]), bucket, "kill/in/extra.tsv")
    base_tsv = tmp_path / "base.tsv"
    base_tsv.write_text("head\trelation\ttail\n" + "\n".join(
        line for line in (src["base"] / "wiki_tuple_ids.txt").read_text().splitlines()[:40]) + "\n")
    client.upload_file(str(base_tsv), bucket, "kill/in/base.tsv")
    url = f"s3://{bucket}/kill/kg"

    _mmkg("ingest", "--kg", url, "--source", f"tsv:s3://{bucket}/kill/in/extra.tsv", "--engine", "local")
    before, manifest = _remote_manifest(client, bucket, "kill/kg")
    assert manifest["kg_version"] == 1 and manifest["inputs"][0]["source"] == "tsv:extra.tsv"  # as a local ingest
    assert manifest["inputs"][0]["files"][0]["path"] == f"s3://{bucket}/kill/in/extra.tsv"  # provenance: the URL
    objects = _objects(client, bucket, "kill/kg")

    res = _ingest_subprocess(url, f"tsv:s3://{bucket}/kill/in/base.tsv", env, kill_at_publish=True)
    assert res.returncode == -9, res.stderr
    assert _objects(client, bucket, "kill/kg") > objects  # it got as far as uploading the new files
    assert _remote_manifest(client, bucket, "kill/kg")[0] == before
    _mmkg("verify", "--kg", url)
    _mmkg("stats", "--kg", url, "--json")
    store = open_remote_store_fresh(url, tmp_path / "reader")
    assert store.kg_version == 1 and store.count("triples") == src["n_extra"]

    res = _ingest_subprocess(url, f"tsv:s3://{bucket}/kill/in/base.tsv", env, kill_at_publish=False)
    assert res.returncode == 0, res.stderr
    assert _remote_manifest(client, bucket, "kill/kg")[1]["kg_version"] == 2
    _mmkg("verify", "--kg", url)

    # verify re-reads the objects themselves (not the local cache): a damaged one fails it
    from mmkg.jobs.cli import main
    sha = _remote_manifest(client, bucket, "kill/kg")[1]["files"]["tables/triples.v000002.parquet"]["sha256"]
    key = f"kill/kg/objects/{sha[:2]}/{sha}"
    client.put_object(Bucket=bucket, Key=key, Body=b"damaged")
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--kg", url])
    assert exit_info.value.code == 1


def open_remote_store_fresh(url: str, cache: Path) -> KGStore:
    from mmkg.kg_store.remote import open_remote_store
    return open_remote_store(url, cache_dir=cache)


def _commit_artifact(root: Path, name: str, *, create: bool = False) -> None:
    with KGStore.writer(root, create=create) as w:
        (root / "runs").mkdir(exist_ok=True)
        rel = f"runs/{name}.json"
        (root / rel).write_text(json.dumps({"by": name}))
        w.set_artifact(name, {"by": name}, files=[rel])
        w.commit()


def test_lost_publish_race_is_refused(s3, tmp_path):
    """Two writers start from the same version (or both create the store): the second publish
    fails with RemoteConflictError (exit 4, a LockedError) and the first one's manifest stays."""
    from mmkg.kg_store.remote import RemoteConflictError, open_working_copy
    client, bucket, _ = s3
    url = f"s3://{bucket}/race-{uuid.uuid4().hex[:6]}"
    prefix = url.split("/", 3)[3]
    for create in (True, False):  # a new store (If-None-Match: *), then an update (If-Match: ETag)
        with pytest.raises(RemoteConflictError) as err:
            with open_working_copy(url, cache_dir=tmp_path / "a") as a:
                with open_working_copy(url, cache_dir=tmp_path / "b") as b:
                    _commit_artifact(b.path, f"b{create}", create=create)
                _commit_artifact(a.path, f"a{create}", create=create)
        assert isinstance(err.value, LockedError) and "another writer" in str(err.value)
        artifacts = _remote_manifest(client, bucket, prefix)[1]["artifacts"]
        assert f"b{create}" in artifacts and f"a{create}" not in artifacts
    # the loser's working copy is reset to the published version on its next use
    with open_working_copy(url, cache_dir=tmp_path / "a") as a:
        assert set(open_store(a.path).manifest["artifacts"]) == {"bTrue", "bFalse"}


def test_core_store_imports_no_object_store_client():
    """boto3/s3fs/moto are imported only when a URL is used (kg_store stays light)."""
    code = ("import sys, kg_store, mmkg.kg_store.remote, mmkg.jobs.cli\n"
            "print(sorted(m for m in ('boto3', 'botocore', 's3fs', 'moto', 'fsspec') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_scheme_without_conditional_put_is_read_through_fsspec_alone(s3, tmp_path):
    """fsspec's memory:// stands in for gs:// / abfs:// (no conditional-put adapter): a store copied
    there object for object is read through the fsspec layer alone; publishing to it is refused."""
    import fsspec
    from mmkg.kg_store.errors import ConfigError
    from mmkg.kg_store.remote import open_remote_store, open_working_copy
    client, bucket, _ = s3
    with open_working_copy(f"s3://{bucket}/copied", cache_dir=tmp_path / "w") as wc:
        _commit_artifact(wc.path, "made-on-s3", create=True)
    mem = fsspec.filesystem("memory")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="copied/"):
        for o in page["Contents"]:
            mem.pipe_file("/" + o["Key"], client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
    store = open_remote_store("memory://copied", cache_dir=tmp_path / "r")
    assert store.artifact("made-on-s3") == {"by": "made-on-s3"} and not store.verify()
    with pytest.raises(ConfigError, match="conditional put"):
        with open_working_copy("memory://copied", cache_dir=tmp_path / "r") as wc:
            _commit_artifact(wc.path, "made-on-memory")


def test_the_store_itself_opens_and_writes_a_url(s3, tmp_path):
    """Object storage is a backend of the store, not of the CLI: `KGStore.writer(URL)` works on the
    working copy and publishes when it exits; `open_store(URL)` reads the published version."""
    client, bucket, _ = s3
    prefix = f"api-{uuid.uuid4().hex[:6]}"
    url = f"s3://{bucket}/{prefix}"
    with KGStore.writer(url) as w:
        (w.root / "runs").mkdir(exist_ok=True)
        (w.root / "runs/a.json").write_text('{"by": "api"}\n')
        w.set_artifact("a", {"by": "api"}, files=["runs/a.json"])
        w.commit()
    assert _remote_manifest(client, bucket, prefix)[1]["artifacts"] == {"a": {"by": "api"}}
    store = open_store(url)
    assert store.artifact_meta("a") == {"by": "api"} and store.files() == ["runs/a.json"] and not store.verify()
