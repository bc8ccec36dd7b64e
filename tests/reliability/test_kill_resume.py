"""kill -9 at several points of ingest, embed, index and retrieve; rerun; the store must equal an
uninterrupted run (`reference_store`) file for file (sha256 of every committed file; JSON side
files compared without their timing fields, helpers.VOLATILE_KEYS), and after every kill the
last committed version must still verify and read (a half-written file is never taken as valid).

One store goes through the stages in order, as a user's would: each test continues the store
the previous one left. Kill points are file-system events of the running stage (its lock, the
first blob, the third embed chunk, …), so they land mid-stage rather than during the imports.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from mmkg.kg_store import open_store
from mmkg.kg_store.store import StoreWriter
from tests.reliability.conftest import embed_args, index_args, retrieve_args
from tests.reliability.helpers import appears, appears_new, mmkg, raw_differences, store_files

pytestmark = pytest.mark.faiss  # the reference store has FAISS indexes

STAGE_FILES = {"ingest": ("tables/", "graph/", "blobs/"), "embed": ("vectors/",), "index": ("indexes/",),
               "retrieve": ("subgraphs/",)}


@dataclass
class Chain:
    kg: Path
    log: list[str] = field(default_factory=list)   # what happened at each kill point (for failures)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Chain:
    return Chain(tmp_path_factory.mktemp("killed") / "kg")


def _committed(kg: Path, stage: str) -> bool:
    """Did `stage` commit its output (so a rerun would be a second, different run)?"""
    if not (kg / "manifest.json").exists():
        return False
    m = json.loads((kg / "manifest.json").read_text())
    if stage == "ingest":
        return m["kg_version"] >= 1
    return any(k.startswith({"embed": "vectors/", "index": "indexes/", "retrieve": "subgraphs/"}[stage])
               for k in m["artifacts"])


def _check_readable(kg: Path) -> None:
    """What a reader sees after a kill: the last committed version, whole and valid."""
    if not (kg / "manifest.json").exists():
        return
    store = open_store(kg)
    assert store.verify() == [], "a killed writer left a committed file invalid"
    for name in store.manifest["tables"]:
        store.table(name)


def kill_and_resume(chain: Chain, stage: str, args: list, triggers: list[tuple[str, Callable[[], bool]]],
                    reference: Path) -> None:
    kg = chain.kg
    killed_before_commit = 0
    for label, trigger in triggers:
        run = mmkg(*args, kill_when=trigger, timeout=300)
        if not run.killed:
            assert run.rc == 0, str(run)
            chain.log.append(f"{stage}/{label}: finished before the kill point")
        else:
            chain.log.append(f"{stage}/{label}: killed")
        _check_readable(kg)
        if _committed(kg, stage):
            break
        killed_before_commit += 1
    assert killed_before_commit, f"no kill landed before {stage} committed: {chain.log}"
    if not _committed(kg, stage):
        run = mmkg(*args, timeout=300)
        assert run.rc == 0, str(run)
    else:
        # the kill landed after the commit (e.g. while the version snapshot was written): the
        # stage's work is done; the next writer, whichever it is, must clear the litter and heal
        # the snapshot before building on it
        with StoreWriter(kg, create=False):
            pass
    assert not list(kg.rglob("*.tmp-*")), "temporary files of killed runs left behind"
    manifest = json.loads((kg / "manifest.json").read_text())
    snapshot = kg / "versions" / f"v{manifest['kg_version']:06d}.json"
    assert json.loads(snapshot.read_text()) == manifest, "the committed version has no current snapshot"
    got = store_files(kg, STAGE_FILES[stage])
    want = store_files(reference, STAGE_FILES[stage])
    assert got.keys() == want.keys(), f"{stage}: different files\n{chain.log}"
    differ = [rel for rel in want if got[rel] != want[rel]]
    assert not differ, f"{stage}: files differ from the uninterrupted run: {differ}\n{chain.log}"
    assert open_store(kg).verify() == []


def test_ingest_kill_resume(chain, pipeline_inputs, reference_store):
    kg = chain.kg
    kill_and_resume(chain, "ingest", pipeline_inputs.ingest_args(kg), [
        ("holding the lock", appears(kg, ".lock")),
        ("first image blob", appears(kg, "blobs/images/*/*")),
        ("first table file", appears(kg, "tables/*.parquet*")),
    ], reference_store)


def test_embed_kill_resume(chain, reference_store):
    kg = chain.kg
    # every embed run pays a torch import (the slow part on 2 shared cores): one kill, mid-chunks
    kill_and_resume(chain, "embed", embed_args(kg), [
        ("third text chunk", appears(kg, "work/embed/*/*/text/chunk-000002.done.json")),
    ], reference_store)


def test_index_kill_resume(chain, reference_store):
    kg = chain.kg
    kill_and_resume(chain, "index", index_args(kg), [
        ("writing the first index", appears(kg, "indexes/*/*")),
        ("writing the last index", appears(kg, "indexes/*/image.*")),
    ], reference_store)


def test_retrieve_kill_resume(chain, pipeline_inputs, reference_store):
    kg = chain.kg
    # _SUCCESS appears in the staging directory just before it is renamed into place and the
    # manifest commits: the kill lands on either side of the rename
    # On a fast machine the _SUCCESS window alone can close before the poll sees it, so the
    # query vectors reaching the vector cache (long before any shard is written) and the first
    # part file are kill points too.
    kill_and_resume(chain, "retrieve", retrieve_args(kg, pipeline_inputs), [
        ("query vectors cached", appears_new(kg, "cache/embeddings/*/*/*/seg-*.json")),
        ("first shard part", appears(kg, "subgraphs/*/*/*/parts/part-*")),
        ("publishing shards", appears(kg, "subgraphs/*/*/*/_SUCCESS")),
    ], reference_store)


def test_report_raw_byte_differences(chain, reference_store):
    """Not an assertion on content: lists committed files whose *bytes* differ only by timings
    (VOLATILE_KEYS), so the report can say exactly which files are not byte-reproducible."""
    if not (chain.kg / "manifest.json").exists():
        pytest.skip("chain did not run")
    diffs = raw_differences(chain.kg, reference_store)
    assert all(d.endswith(".json") for d in diffs), f"non-JSON files differ in bytes: {diffs}"
    print("byte-different JSON side files:", diffs, "\nkill log:", chain.log)
