"""Issue 29: versions you can list, diff and roll back; a gc that reclaims superseded derived files;
a running `mmkg serve` that keeps its version pinned and follows new ones. The real CLI
(`mmkg.jobs.cli.main`, `mmkg serve` as a child process) on a real MarKG slice (tests/jobs/test_run_fixtures.py)
plus a small TSV of held-out MarKG triples."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmkg.kg_store import open_store
from tests.jobs.test_run_fixtures import make_sources

REPO = Path(__file__).resolve().parents[2]


def mmkg(capsys, *args) -> str:
    """stdout of one `mmkg` command that must succeed."""
    from mmkg.jobs.cli import main
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert e.value.code == 0, (args, out, err)
    return out


def mmkg_fails(capsys, *args) -> tuple[int, str]:
    from mmkg.jobs.cli import main
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, capsys.readouterr().err


def _extra_triples(src) -> set[tuple[str, str, str]]:
    rows = src["extra"].read_text().splitlines()[1:]
    return {tuple(r.split("\t")) for r in rows if r.strip()}


@pytest.fixture(scope="module")
def src(data_dir, tmp_path_factory):
    return make_sources(data_dir, tmp_path_factory.mktemp("versions") / "src")


@pytest.fixture
def two_versions(src, tmp_path, capsys):
    """v1 = the MarKG slice, v2 = v1 + the held-out TSV, both through `mmkg ingest`."""
    kg = tmp_path / "kg"
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"markg:{src['base']}", "--engine", "local")
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"tsv:{src['extra']}", "--engine", "local")
    return kg


def test_diff_of_an_added_source_has_its_exact_counts_and_triples(two_versions, src, capsys):
    kg = two_versions
    extra = _extra_triples(src)
    out = json.loads(mmkg(capsys, "diff", "--kg", kg, 1, 2, "--json", "--limit", 1000))
    t = out["tables"]
    assert t["triples"] == {"rows_a": src["n_base"], "rows_b": src["n_base"] + len(extra),
                            "added": len(extra), "removed": 0}
    assert len(extra) == src["n_extra"] > 5
    base_entities = open_store(kg).count("entities") - t["entities"]["added"]
    assert t["entities"]["removed"] == 0 and t["entities"]["rows_a"] == base_entities
    assert {(r["h_key"], r["r_key"], r["t_key"]) for r in out["triples"]["added"]} == extra
    assert out["triples"]["removed"] == []
    # labels come from the store: MarKG's entity2text / relation2text
    labels = dict(line.split("\t", 1) for line in (src["base"] / "relation2text.txt").read_text().splitlines())
    known = [r for r in out["triples"]["added"] if r["r_key"] in labels]
    assert known and all(r["r_label"] == labels[r["r_key"]].strip() for r in known)
    # paged: two pages of 4 are the first 8 of the sorted list; the reverse diff removes them
    p1 = json.loads(mmkg(capsys, "diff", "--kg", kg, 1, 2, "--json", "--limit", 4))["triples"]["added"]
    p2 = json.loads(mmkg(capsys, "diff", "--kg", kg, 1, 2, "--json", "--limit", 4, "--offset", 4))["triples"]["added"]
    assert p1 + p2 == out["triples"]["added"][:8]
    back = json.loads(mmkg(capsys, "diff", "--kg", kg, 2, 1, "--json"))
    assert back["tables"]["triples"]["removed"] == len(extra) and back["tables"]["triples"]["added"] == 0
    text = mmkg(capsys, "diff", "--kg", kg, 1, 2, "--limit", 2)
    assert f"triples: +{len(extra)} -0" in text and f"added triples (1-2 of {len(extra)})" in text


def test_a_kill_between_commit_and_snapshot_is_healed_by_the_next_writer(two_versions, capsys):
    """A commit writes manifest.json, then versions/v<N>.json: a kill in between leaves the current
    version without its snapshot and a temp file (what CI once caught in the kill/resume test).
    The next writer, under the lock, removes the litter and writes the snapshot; v2 diffs from v1."""
    from mmkg.kg_store.store import StoreWriter
    kg = two_versions
    snap = kg / "versions" / "v000002.json"
    litter = kg / "versions" / "v000002.json.tmp-0123abcd"
    snap.rename(litter)  # exactly what a kill mid-write leaves: no snapshot, a half-written temp
    with StoreWriter(kg, create=False):
        pass
    assert not litter.exists()
    assert json.loads(snap.read_text()) == json.loads((kg / "manifest.json").read_text())
    out = mmkg(capsys, "diff", "--kg", kg, "1", "2")
    assert "+" in out  # the restored snapshot serves a diff like any other


def test_versions_lists_counts_sources_and_the_current_one(two_versions, src, capsys):
    rows = json.loads(mmkg(capsys, "versions", "--kg", two_versions, "--json"))
    assert [r["version"] for r in rows] == [1, 2] and rows[1].get("current") and not rows[0].get("current")
    assert rows[0]["counts"]["triples"] == src["n_base"]
    assert rows[1]["counts"]["triples"] == src["n_base"] + src["n_extra"]
    assert rows[0]["sources"] == ["markg:MarKG"] and rows[1]["sources"] == ["markg:MarKG", "tsv:extra.tsv"]
    assert all(r["restorable"] and r["last_stage"] == "ingest" for r in rows)
    text = mmkg(capsys, "versions", "--kg", two_versions)
    assert "v2" in text and "current" in text and "tsv:extra.tsv" in text


def test_rollback_then_verify_and_outside_the_gc_window_a_one_line_refusal(two_versions, src, capsys):
    kg = two_versions
    out = mmkg(capsys, "rollback", "--kg", kg, 1)
    assert "rolled back to v1: now kg_version 3" in out
    store = open_store(kg)
    assert store.kg_version == 3 and store.count("triples") == src["n_base"]
    assert store.inputs == open_store(kg).inputs and [i["source"] for i in store.inputs] == ["markg:MarKG"]
    assert "ok:" in mmkg(capsys, "verify", "--kg", kg)
    # every writing command left its snapshot
    assert sorted(p.name for p in (kg / "versions").glob("v*.json")) == ["v000001.json", "v000002.json",
                                                                       "v000003.json"]
    # gc --keep 1 reclaims v2's tables: rolling forward to it is then refused in one line, nothing changed
    mmkg(capsys, "gc", "--kg", kg, "--keep", "1")
    code, err = mmkg_fails(capsys, "rollback", "--kg", kg, 2)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "no snapshot of kg_version 2" in err
    assert open_store(kg).kg_version == 3 and "ok:" in mmkg(capsys, "verify", "--kg", kg)


def test_rollback_refuses_when_a_kept_copy_is_gone(two_versions, capsys):
    kg = two_versions
    for p in (kg / "tables").glob("triples.v000001*"):
        p.unlink()  # as if reclaimed
    code, err = mmkg_fails(capsys, "rollback", "--kg", kg, 1)
    assert code == 1 and err.count("\n") == 1
    assert "cannot roll back to kg_version 1: tables/triples.v000001.parquet gone" in err
    assert open_store(kg).kg_version == 2


def _commit_derived(kg: Path, rel: str, data: bytes) -> None:
    """Commit a derived file at a fixed path (as embed/index/retrieve do: replaced in place)."""
    from mmkg.kg_store import KGStore, atomic
    with KGStore.writer(kg, create=False) as w:
        atomic.write_bytes(kg / rel, data)
        w.set_artifact(rel.rsplit("/", 1)[0], {"by": "test"}, files=[rel])
        w.commit()


def test_rollback_checks_every_kept_copy_before_it_touches_anything(src, tmp_path, capsys):
    """v1 and v2 each end with their own bytes at one derived path. A damaged kept copy of v1's
    bytes: rollback is refused in one line and v2 still verifies; repaired, the rollback puts v1's
    bytes back under that path."""
    from mmkg.kg_store.hashing import sha256_bytes
    kg, rel = tmp_path / "kg", "subgraphs/notes/k/summary.json"
    v1_bytes, v2_bytes = b'{"version": 1}\n', b'{"version": 2, "longer": true}\n'
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"markg:{src['base']}", "--engine", "local")
    _commit_derived(kg, rel, v1_bytes)
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"tsv:{src['extra']}", "--engine", "local")
    _commit_derived(kg, rel, v2_bytes)
    obj = kg / "objects" / sha256_bytes(v1_bytes)[:2] / sha256_bytes(v1_bytes)
    assert obj.read_bytes() == v1_bytes and (kg / rel).read_bytes() == v2_bytes
    obj.unlink()
    obj.write_bytes(b'{"version": 9}\n')  # same size, other bytes
    code, err = mmkg_fails(capsys, "rollback", "--kg", kg, 1)
    assert code == 1 and err.count("\n") == 1 and f"the kept copy of {rel}" in err and "damaged" in err
    assert (kg / rel).read_bytes() == v2_bytes and "ok:" in mmkg(capsys, "verify", "--kg", kg)
    obj.write_bytes(v1_bytes)
    mmkg(capsys, "rollback", "--kg", kg, 1)
    assert (kg / rel).read_bytes() == v1_bytes and "ok:" in mmkg(capsys, "verify", "--kg", kg)


@pytest.mark.slow
@pytest.mark.faiss
def test_rollback_restores_vectors_and_indexes_replaced_in_place(src, tmp_path, capsys):
    """embed + index on v1, ingest the TSV, embed + index again (vectors/minilm/*.npy and
    indexes/minilm/* replaced in place), roll back: v1's vectors and FAISS files are back byte for
    byte and `mmkg verify` passes; gc then reclaims v2's superseded vectors."""
    kg = tmp_path / "kg"
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"markg:{src['base']}", "--engine", "local")
    mmkg(capsys, "embed", "--kg", kg, "--encoder", "minilm", "--batch-size", "32", "--no-progress")
    mmkg(capsys, "index", "--kg", kg, "--encoder", "minilm")
    v1 = open_store(kg)
    derived = [*v1.files("vectors/minilm"), *v1.files("indexes/minilm")]
    old = {rel: v1.file_sha(rel) for rel in derived}
    assert any(rel.endswith(".faiss") for rel in old)
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"tsv:{src['extra']}", "--engine", "local")
    mmkg(capsys, "embed", "--kg", kg, "--encoder", "minilm", "--batch-size", "32", "--no-progress")
    mmkg(capsys, "index", "--kg", kg, "--encoder", "minilm")
    v2 = open_store(kg)
    assert v2.file_sha("vectors/minilm/triple.npy") != old["vectors/minilm/triple.npy"]
    assert v2.file_sha("indexes/minilm/triple.faiss") != old["indexes/minilm/triple.faiss"]
    mmkg(capsys, "rollback", "--kg", kg, 1)
    back = open_store(kg)
    assert {rel: back.file_sha(rel) for rel in [*back.files("vectors/minilm"), *back.files("indexes/minilm")]} == old
    assert back.verify() == [] and "ok:" in mmkg(capsys, "verify", "--kg", kg)
    from mmkg.kg_store.vectors import load_vectors
    assert load_vectors(back, "minilm", "triple")[0].shape[0] == src["n_base"]
    # keep 1: v2's superseded vectors (its kept copies) go; v1's vectors, now current, stay
    dry = mmkg(capsys, "gc", "--kg", kg, "--keep", "1", "--dry-run")
    sha2 = v2.file_sha("vectors/minilm/triple.npy")
    assert f"objects/{sha2[:2]}/{sha2}" in dry
    mmkg(capsys, "gc", "--kg", kg, "--keep", "1")
    assert not (kg / "objects" / sha2[:2] / sha2).exists()
    assert "ok:" in mmkg(capsys, "verify", "--kg", kg)


def test_gc_reclaims_a_superseded_path_prior(src, data_dir, tmp_path, capsys):
    """A path prior fitted on v1's graph is superseded when an ingest makes a new graph: `gc
    --dry-run` lists it with its bytes, `gc` deletes it, and the current version still verifies."""
    from mmkg.retrieval.paths import load_or_fit_prior, prior_file
    kg = tmp_path / "kg"
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"markg:{src['base']}", "--engine", "local")
    train = tmp_path / "train.json"  # the fixture's MARS rows, whose entities are all in the slice
    train.write_text("\n".join((data_dir / "markg/MARS/dev.json").read_text().splitlines()[:3]) + "\n")
    _, key = load_or_fit_prior(kg, train, None, folds=1)
    rel = prior_file(open_store(kg), key)  # the prior's table, named by its content
    size = (kg / rel).stat().st_size
    assert open_store(kg).has_file(rel)
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"tsv:{src['extra']}", "--engine", "local")
    assert not open_store(kg).has_file(rel) and (kg / rel).exists()  # dropped from v2, on disk for v1
    kept = mmkg(capsys, "gc", "--kg", kg, "--keep", "2", "--dry-run")
    assert rel not in kept  # v1 is inside the window
    # a pin of v1 left by a server that died (kill -9) does not keep v1: it is removed
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (kg / "pins").mkdir(exist_ok=True)
    import socket
    (kg / "pins" / "stale.json").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                        "kg_version": 1}))
    dry = mmkg(capsys, "gc", "--kg", kg, "--keep", "1", "--dry-run")
    assert f"  {rel}  {size:,} bytes" in dry and (kg / rel).exists() and "pinned" not in dry
    assert not (kg / "pins" / "stale.json").exists()
    mmkg(capsys, "gc", "--kg", kg, "--keep", "1")
    assert not (kg / rel).exists()
    assert "ok:" in mmkg(capsys, "verify", "--kg", kg)


def test_rollback_brings_back_the_prior_of_its_graph(src, data_dir, tmp_path, capsys):
    """A path prior belongs to the graph it was fitted on: v2 (new graph) drops it, a rollback to v1
    registers it again (and its graph), and `mmkg verify` passes."""
    from mmkg.retrieval.paths import PRIOR_DIR, load_or_fit_prior, prior_file
    kg = tmp_path / "kg"
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"markg:{src['base']}", "--engine", "local")
    train = tmp_path / "train.json"
    train.write_text("\n".join((data_dir / "markg/MARS/dev.json").read_text().splitlines()[:3]) + "\n")
    _, key = load_or_fit_prior(kg, train, None, folds=1)
    rel = f"{PRIOR_DIR}/{key}"
    v1 = open_store(kg)
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"tsv:{src['extra']}", "--engine", "local")
    assert open_store(kg).artifact_meta(rel) is None
    mmkg(capsys, "rollback", "--kg", kg, 1)
    back = open_store(kg)
    assert back.graph_rel == v1.graph_rel and back.artifact_meta(rel) == v1.artifact_meta(rel)
    assert back.file_sha(prior_file(back, key)) == v1.file_sha(prior_file(v1, key))
    assert load_or_fit_prior(kg, train, None, folds=1)[1] == key  # found, not fitted again
    assert open_store(kg).kg_version == 3 and "ok:" in mmkg(capsys, "verify", "--kg", kg)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as r:
        assert r.status == 200
        return r.read().decode()


def test_a_running_server_keeps_its_version_pinned_and_follows_new_ones(src, tmp_path, capsys):
    """`mmkg serve` on v1; an ingest commits v2 and a `gc --keep 1` runs while the server still
    shows v1: v1 is kept (pinned). The next page shows v2 without an error; once v1 is no longer
    served a gc reclaims it; the pin goes when the server stops."""
    kg = tmp_path / "kg"
    mmkg(capsys, "ingest", "--kg", kg, "--source", f"markg:{src['base']}", "--engine", "local")
    proc = subprocess.Popen([sys.executable, "-m", "mmkg.jobs.cli", "serve", "--kg", str(kg), "--port", "0"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        base = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        assert "<small>v1</small>" in _get(base)
        assert [p for p in (kg / "pins").iterdir()]
        mmkg(capsys, "ingest", "--kg", kg, "--source", f"tsv:{src['extra']}", "--engine", "local")
        out = mmkg(capsys, "gc", "--kg", kg, "--keep", "1")
        assert "pinned by a running `mmkg serve`: [1]" in out
        assert (kg / "tables/triples.v000001.parquet").exists()
        time.sleep(1.2)  # the server checks the manifest at most once a second
        page = _get(base)
        assert "<small>v2</small>" in page
        assert f"{src['n_base'] + src['n_extra']:,}" in page  # the new triple count
        assert "<small>v2</small>" in _get(base + "stats")
        out = mmkg(capsys, "gc", "--kg", kg, "--keep", "1")
        assert "pinned" not in out and not (kg / "tables/triples.v000001.parquet").exists()
        assert "<small>v2</small>" in _get(base + "search?q=dog")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert not list((kg / "pins").iterdir())
