"""The project is one import namespace (`mmkg.*`): a user's own `model.py` shadows nothing, and
every checkout runs its own code although clones share one dependency venv."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kg_store", "pipeline", "retrieval", "model", "jobs")
BARE = re.compile(rf"^\s*(?:from|import) ({'|'.join(PACKAGES)})\b", re.M)


def test_no_code_imports_a_package_outside_the_mmkg_namespace():
    # a bare `import model` would load a second copy of the module (two registries, two configs)
    offenders = []
    for folder in (*PACKAGES, "tests", "benchmarks", "deploy", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            offenders += [f"{path.relative_to(REPO)}: {m.group(0).strip()}" for m in BARE.finditer(path.read_text())]
    assert offenders == []


def test_a_users_own_model_py_and_jobs_folder_shadow_nothing(tmp_path):
    (tmp_path / "model.py").write_text("raise SystemExit('the user model.py was imported')\n")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__init__.py").write_text("raise SystemExit('the user jobs/ was imported')\n")
    (tmp_path / "pipeline.py").write_text("raise SystemExit('the user pipeline.py was imported')\n")
    (tmp_path / "script.py").write_text(
        "import mmkg.jobs.plugins  # noqa: F401\nfrom mmkg.kg_store.registry import family\n"
        "print(','.join(family('ranker').names()))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "memory" in out.stdout.split(",") and "reranker" in out.stdout.strip().split(",")


def _clone(root: Path, who: str) -> Path:
    """A minimal checkout: what `scripts/ensure_venv.sh` reads, and an `mmkg` that says who it is."""
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "ensure_venv.sh", root / "scripts")
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        shutil.copy(REPO / name, root)
    (root / "mmkg").mkdir()
    (root / "mmkg" / "__init__.py").write_text(f"WHO = {who!r}\n")
    return root


def test_two_clones_sharing_the_dependency_venv_each_run_their_own_code(tmp_path):
    a, b = _clone(tmp_path / "a", "a"), _clone(tmp_path / "b", "b")
    for clone in (a, b, a):  # the last setup must not re-point the other clone
        subprocess.run(["bash", "scripts/ensure_venv.sh"], cwd=clone, check=True, capture_output=True)
    for clone, who in ((a, "a"), (b, "b")):
        out = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c", "import mmkg, torch; print(mmkg.WHO)"],
                             cwd="/", capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
        assert out.stdout.strip() == who, out.stderr
    # the deps venv is the same one (one torch install for every clone)
    sites = {(c / ".venv").resolve() for c in (a, b)}
    assert len(sites) == 2
