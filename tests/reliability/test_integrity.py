"""Integrity: a corrupted Parquet / .npy / FAISS file is named by `mmkg verify` and reading it
through the CLI fails with one clear line (no traceback); nothing in a data path unpickles.

Corruptions are what really happens to files: truncation (a partial copy, a full disk) and
flipped bytes of the same size (bit rot, a bad transfer), in the header and in the body.
"""
from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.reliability.conftest import ENCODER
from tests.reliability.helpers import REPO, assert_no_traceback, mmkg

pytestmark = pytest.mark.faiss  # the reference store has FAISS indexes

DATA_PACKAGES = ("kg_store", "pipeline", "retrieval", "model", "jobs")


def _flip(offset_of: Callable[[int], int], n: int = 16) -> Callable[[Path], None]:
    def corrupt(p: Path) -> None:
        data = bytearray(p.read_bytes())
        at = offset_of(len(data))
        data[at:at + n] = bytes(b ^ 0xFF for b in data[at:at + n])
        p.write_bytes(bytes(data))
    return corrupt


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


flip_header = _flip(lambda size: 0)
flip_middle = _flip(lambda size: size // 2)
flip_footer = _flip(lambda size: size - 8, n=8)  # footer length + closing magic: a clobbered tail


def _file(store: Path, pattern: str) -> Path:
    hits = sorted(store.glob(pattern))
    assert hits, f"no {pattern} in {store}"
    return hits[0]


@pytest.fixture
def store_copy(reference_store, tmp_path) -> Path:
    dst = tmp_path / "kg"
    shutil.copytree(reference_store, dst, symlinks=True)
    return dst


def test_verify_names_every_corrupt_file(store_copy):
    targets = {
        "tables/triples.*.parquet": flip_middle,
        f"vectors/{ENCODER}/entity.npy": flip_middle,
        f"indexes/{ENCODER}/triple.faiss": flip_middle,
        "graph/*/indptr.npy": _truncate,
    }
    named = []
    for pattern, corrupt in targets.items():
        p = _file(store_copy, pattern)
        corrupt(p)
        named.append(str(p.relative_to(store_copy)))
    run = mmkg("verify", "--kg", store_copy)
    assert run.rc == 1, str(run)
    assert_no_traceback(run)
    for rel in named:
        assert f"BAD {rel}" in run.stdout, f"{rel} not named\n{run}"
    assert "4 of" in run.stderr


# (id, file pattern, corruption, command that reads the file)
READS = [
    ("parquet-truncated", "tables/triples.*.parquet", _truncate, ["stats"]),
    ("parquet-bitrot", "tables/triples.*.parquet", flip_middle, ["stats"]),
    # the footer (schema, row groups) is read on every open; a flip in a column that a command
    # does not read goes unnoticed until `mmkg verify` (the size check cannot see it)
    ("parquet-footer", "tables/entities.*.parquet", flip_footer, ["stats"]),
    ("npy-graph-header", "graph/*/indptr.npy", flip_header, ["stats"]),
    ("npy-vectors-header", f"vectors/{ENCODER}/entity.npy", flip_header, ["index", "--encoder", ENCODER]),
    ("npy-vectors-truncated", f"vectors/{ENCODER}/triple.npy", _truncate, ["index", "--encoder", ENCODER]),
    ("faiss-header", f"indexes/{ENCODER}/triple.faiss", flip_header,
     ["search", "--encoder", ENCODER, "--what", "triples", "--text", "x"]),
    ("faiss-bitrot", f"indexes/{ENCODER}/triple.faiss", flip_middle,
     ["search", "--encoder", ENCODER, "--what", "triples", "--text", "x"]),
    ("manifest", "manifest.json", flip_middle, ["stats"]),
]


@pytest.mark.parametrize("pattern,corrupt,command", [r[1:] for r in READS], ids=[r[0] for r in READS])
def test_reading_a_corrupt_file_fails_in_one_line(store_copy, pattern, corrupt, command):
    p = _file(store_copy, pattern)
    corrupt(p)
    run = mmkg(command[0], "--kg", store_copy, *command[1:], timeout=300)
    assert run.rc == 1, f"a corrupt {p.name} was read without error\n{run}"
    assert_no_traceback(run)
    lines = [ln for ln in run.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line\n{run}"
    assert p.name in lines[0] and "corrupt" in lines[0], f"the error does not name {p.name}\n{run}"


# ---- no pickle in any data path --------------------------------------------------------------
def _python_files(repo: Path):
    for pkg in DATA_PACKAGES:
        yield from sorted((repo / pkg).rglob("*.py"))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def pickle_problems(repo: Path) -> list[str]:
    """No pickle/dill/joblib/cloudpickle imports; torch.load only with weights_only=True;
    np.load never with allow_pickle=True; no pandas read_pickle/to_pickle."""
    problems = []
    for path in _python_files(repo):
        rel = path.relative_to(repo)
        tree = ast.parse(path.read_text(), str(rel))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                bad = [n for n in names if n and n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib",
                                                                      "cloudpickle", "shelve", "marshal")]
                if bad:
                    problems.append(f"{rel}:{node.lineno}: imports {bad}")
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            attr, owner = node.func.attr, node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if attr == "load" and owner_name == "torch" and not _is_true(_kw(node, "weights_only")):
                problems.append(f"{rel}:{node.lineno}: torch.load without weights_only=True")
            if attr == "load" and owner_name in ("np", "numpy") and _is_true(_kw(node, "allow_pickle")):
                problems.append(f"{rel}:{node.lineno}: np.load(allow_pickle=True)")
            if attr in ("read_pickle", "to_pickle"):
                problems.append(f"{rel}:{node.lineno}: pandas {attr}")
    return problems


def test_no_pickle_in_data_paths():
    problems = pickle_problems(REPO)
    assert not problems, "\n".join(problems)


def test_pickle_checker_finds_planted_calls(tmp_path):
    """The checker really flags what it looks for (a test of the test)."""
    pkg = tmp_path / "kg_store"
    pkg.mkdir()
    (pkg / "bad.py").write_text("import pickle\nimport torch\ntorch.load('x')\n"
                                "import numpy as np\nnp.load('y', allow_pickle=True)\n"
                                "torch.load('z', weights_only=True)\n")
    assert [p.split(": ", 1)[0] for p in pickle_problems(tmp_path)] == [
        "kg_store/bad.py:1", "kg_store/bad.py:3", "kg_store/bad.py:5"]


# ---- concurrency ------------------------------------------------------------------------------
def test_second_writer_exits_4_and_store_stays(store_copy):
    """A writer holds the KG lock (here: this test); `mmkg ingest` exits 4 naming the holder and
    commits nothing; readers still see the committed version."""
    from mmkg.kg_store import open_store
    from mmkg.kg_store.lock import StoreLock
    before = (store_copy / "manifest.json").read_bytes()
    src = store_copy.parent / "more.tsv"
    src.write_text("a\tb\tc\n")
    with StoreLock(store_copy):
        run = mmkg("ingest", "--kg", store_copy, "--engine", "local", "--source", f"tsv:{src}")
        assert open_store(store_copy).verify() == []
    assert run.rc == 4, str(run)
    assert_no_traceback(run)
    assert "locked" in run.stderr and "pid" in run.stderr, str(run)
    assert (store_copy / "manifest.json").read_bytes() == before


def test_two_ingests_at_once_do_not_interleave(tmp_path):
    """Two real `mmkg ingest` processes on one new KG dir: each either commits a whole version
    or exits 4; the store verifies and holds exactly the committed runs' data."""
    import subprocess
    from mmkg.kg_store import open_store
    from tests.reliability.helpers import _env
    kg = tmp_path / "kg"
    srcs = []
    for i in range(2):
        p = tmp_path / f"s{i}.tsv"
        p.write_text("".join(f"e{i}_{j}\tr\te{i}_{j + 1}\n" for j in range(2000)))
        srcs.append(p)
    procs = [subprocess.Popen([sys.executable, "-m", "mmkg.jobs.cli", "ingest", "--kg", str(kg), "--engine", "local",
                               "--source", f"tsv:{p}"], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in srcs]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc in (0, 4), err
        assert "Traceback" not in err, err
    ok = sum(rc == 0 for rc, _ in results)
    store = open_store(kg)
    assert store.verify() == []
    assert store.kg_version == ok
    assert store.count("triples") == 2000 * ok
    assert len(store.manifest["inputs"]) == ok
