"""Run `mmkg` as a user would (a subprocess), kill it mid-run, and fingerprint stores.

Subprocesses rather than in-process calls because what is tested is what a user sees: exit
codes, stderr without tracebacks, and a process that really dies by SIGKILL with no
`finally` blocks run.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

#: keys of committed JSON side files (meta.json, reports) that record timings or per-run
#: progress, not content: two runs of the same inputs legitimately differ in them
VOLATILE_KEYS = frozenset({"seconds", "embed_seconds", "build_seconds", "retrieve_seconds", "created",
                           "finished", "updated", "rows_embedded_this_run", "rows_forwarded_this_run", "pid"})


@dataclass
class Run:
    args: list[str]
    rc: int
    stdout: str
    stderr: str
    max_rss_kib: int       # peak resident memory of the process (VmHWM polled from /proc, KiB)
    killed: bool = False   # we sent SIGKILL

    def __str__(self) -> str:  # what a failing assert prints
        return f"mmkg {' '.join(self.args)} → rc {self.rc}\n--- stdout\n{self.stdout[-3000:]}\n" \
               f"--- stderr\n{self.stderr[-3000:]}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"})
    return env


def _vm_hwm_kib(pid: int) -> int:
    # ru_maxrss is no good here: Linux carries the forking parent's peak (pytest with torch
    # loaded) across exec into the child's figure. VmHWM belongs to the child's own address space.
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def mmkg(*args: str, timeout: float = 180, kill_when=None, poll: float = 0.005, cwd: Path = REPO) -> Run:
    """`python -m mmkg.jobs.cli ARGS`; `kill_when()` (polled) → SIGKILL the process when it turns true."""
    args = [str(a) for a in args]
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mmkg-{os.getpid()}-{time.monotonic_ns()}"
    with open(f"{out_path}.out", "w+b") as out, open(f"{out_path}.err", "w+b") as err:
        proc = subprocess.Popen([PYTHON, "-m", "mmkg.jobs.cli", *args], stdout=out, stderr=err, cwd=cwd, env=_env(),
                                start_new_session=True)
        killed = False
        peak_kib = 0
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
            if kill_when is not None and not killed and kill_when():
                os.killpg(proc.pid, signal.SIGKILL)  # the group: Spark/loader children die too
                killed = True
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                raise TimeoutError(f"mmkg {' '.join(args)} still running after {timeout} s")
            time.sleep(poll)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    for suffix in (".out", ".err"):
        Path(f"{out_path}{suffix}").unlink(missing_ok=True)
    return Run(args, proc.returncode, stdout, stderr, peak_kib, killed)


def _matches(root: Path, pattern: str) -> set[Path]:
    """root.glob(pattern), retried when the job renames or removes a directory mid-walk
    (Python 3.11's glob raises FileNotFoundError from its scandir then; the job's staging
    directories are renamed into place exactly while a trigger polls them)."""
    while True:
        try:
            return set(root.glob(pattern))
        except FileNotFoundError:
            continue


def appears(root: Path, pattern: str):
    """A kill trigger: true once a file matching `pattern` (glob under root) exists."""
    root = Path(root)
    return lambda: bool(_matches(root, pattern))


def appears_new(root: Path, pattern: str):
    """A kill trigger: true once a file matching `pattern` exists that did not when it was made."""
    root = Path(root)
    before = _matches(root, pattern)
    return lambda: bool(_matches(root, pattern) - before)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def file_digest(path: Path) -> str:
    """sha256 of the file; for JSON side files, of its content without VOLATILE_KEYS."""
    data = path.read_bytes()
    if path.suffix == ".json":
        data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def store_files(root: Path, prefixes: Iterable[str] = ("",)) -> dict[str, str]:
    """rel path → digest of every committed file (manifest["files"]) under the given prefixes."""
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    return {rel: file_digest(Path(root) / rel) for rel in sorted(manifest["files"])
            if any(rel.startswith(p) for p in prefixes)}


def raw_differences(a: Path, b: Path) -> list[str]:
    """Committed files whose bytes differ between two stores (JSON timings included)."""
    ma = json.loads((Path(a) / "manifest.json").read_text())["files"]
    mb = json.loads((Path(b) / "manifest.json").read_text())["files"]
    return sorted(rel for rel in set(ma) | set(mb) if ma.get(rel, {}).get("sha256") != mb.get(rel, {}).get("sha256"))


def assert_no_traceback(run: Run) -> None:
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, str(run)
