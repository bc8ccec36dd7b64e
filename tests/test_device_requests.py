"""Honest fall-backs: a GPU request on a machine without one fails in one clear line, never runs on
the CPU instead; `auto` resolves to what is there and says so.

These run in the default tier, where `tests/conftest.py` hides every GPU (CUDA_VISIBLE_DEVICES=""),
and faiss is faiss-cpu: exactly a CPU-only machine. On a host where torch does see CUDA they skip.
The CLI is run in a subprocess once (stderr, exit code, no traceback) and in-process for the rest.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmkg.kg_store.errors import ConfigError, DeviceError
from mmkg.pipeline.device import resolve_device
from tests.jobs.test_run_fixtures import make_sources, pipeline_job, write_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device here")


def _cli(argv, capsys) -> tuple[int, str]:
    """Exit code and stderr of `mmkg ARGV` run in-process through the real entry point."""
    from mmkg.jobs.cli import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def _one_clear_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- the one resolution function ---------------------------------------------------------------
def test_resolve_device_auto_cpu_and_unmeetable_cuda(caplog):
    with caplog.at_level(logging.INFO, logger="mmkg.pipeline.device"):
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device(None) == torch.device("cpu")
    assert "device auto → cpu (" in caplog.text  # auto says what it picked, and why
    assert resolve_device("cpu") == resolve_device(" CPU ") == torch.device("cpu")
    for request in ("cuda", "cuda:0", " cuda:1", torch.device("cuda")):
        with pytest.raises(DeviceError, match=r"^device 'cuda(:\d)?' was requested but .*; use --device cpu or auto$"):
            resolve_device(request)
    for request in ("gpu", "cuda:x", "mps", "meta"):
        with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
            resolve_device(request)


def test_every_torch_device_request_goes_through_it(tmp_path):
    from mmkg.model.runtime import init_runtime
    from mmkg.model.runtime import resolve_device as runtime_resolve
    from mmkg.pipeline.encoders import resolve_encoder
    assert runtime_resolve is resolve_device  # the model layer re-exports the one function
    with pytest.raises(DeviceError, match="'cuda' was requested"):
        resolve_encoder("tiny-clip", device="cuda")
    with pytest.raises(DeviceError, match="'cuda:0' was requested"):
        init_runtime(device="cuda:0", amp="off")
    rt = init_runtime(device="auto", amp="auto")
    assert rt.device.type == "cpu"
    enc = resolve_encoder("tiny-clip", device="auto")
    assert str(enc.device) == "cpu" and enc.precision in ("float32", "onnx-float32")  # exact numerics on the CPU


def test_faiss_gpu_requests(tmp_path):
    from mmkg.retrieval.index import build_index, gpu_count, resolve_index_gpu
    assert gpu_count() == 0  # faiss-cpu in the default venv
    assert resolve_index_gpu(None) is False and resolve_index_gpu("auto") is False
    assert resolve_index_gpu(False) is False and resolve_index_gpu("cpu") is False
    for request in (True, "cuda"):
        with pytest.raises(DeviceError, match=r"^device cuda \(use_gpu\) for FAISS was requested but .*faiss"):
            resolve_index_gpu(request)
    with pytest.raises(ConfigError, match="use_gpu must be"):
        resolve_index_gpu("yes")
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    with pytest.raises(DeviceError):
        build_index(x, kind="flat", use_gpu=True)
    vi = build_index(x, kind="flat", use_gpu=None)
    assert vi.meta["gpu"] is False and "gpu_note" not in vi.meta


# ---- the CLI: one line, exit 1 (DeviceError), before any work ------------------------------------
def test_cli_embed_device_cuda_subprocess(tmp_path):
    """The real console entry point: one line on stderr, exit 1, nothing written."""
    kg = tmp_path / "kg"
    kg.mkdir()
    p = subprocess.run([sys.executable, "-m", "mmkg.jobs.cli", "embed", "--kg", str(kg), "--encoder", "tiny-clip",
                        "--device", "cuda"], capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 1, p.stderr
    _one_clear_line(p.stderr, "mmkg: device 'cuda' was requested but", "use --device cpu or auto")
    assert list(kg.iterdir()) == []


def test_cli_device_requests_in_process(tmp_path, capsys):
    kg = tmp_path / "kg"
    kg.mkdir()
    for argv in (["embed", "--kg", str(kg), "--encoder", "minilm", "--device", "cuda:0"],
                 ["search", "--kg", str(kg), "--encoder", "minilm", "--text", "zebra", "--device", "cuda"],
                 ["retrieve", "--kg", str(kg), "--dataset", "mars:/nonexistent", "--device", "cuda"]):
        code, err = _cli(argv, capsys)
        assert code == 1, (argv, err)
        _one_clear_line(err, "mmkg: device 'cuda", "was requested but")
    code, err = _cli(["embed", "--kg", str(kg), "--encoder", "minilm", "--device", "gpu"], capsys)
    assert code == 2
    _one_clear_line(err, "unknown device 'gpu'")
    assert list(kg.iterdir()) == []


def test_cli_train_and_evaluate_device_cuda(tmp_path, capsys):
    train_cfg = REPO / "configs" / "mrmkg" / "mars_tiny-t5.yaml"
    code, err = _cli(["train", "--config", str(train_cfg), "--set", f"output_dir={tmp_path / 'out'}",
                      "--set", "device=cuda"], capsys)
    assert code == 1
    _one_clear_line(err, "mmkg: device 'cuda' was requested but")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def small_store(data_dir, tmp_path_factory):
    """A ~200-triple MarKG store (ingest only, local engine): what the index/run requests need."""
    tmp = tmp_path_factory.mktemp("device")
    src = make_sources(data_dir, tmp / "src")
    job = pipeline_job(data_dir, tmp / "kg", [f"markg:{src['base']}"])
    return tmp, job


def test_run_with_a_cuda_stage_fails_in_one_line_and_the_report_says_why(small_store, capsys):
    tmp, job = small_store
    job = {**job, "embed": {**job["embed"], "device": "cuda"}}
    cfg = write_config(tmp / "cuda.yaml", job)
    code, err = _cli(["run", "--config", str(cfg)], capsys)
    assert code == 1
    # `mmkg run` reports progress on stderr ("== stage: why"); the failure itself is one line
    _one_clear_line("\n".join(line for line in err.splitlines() if not line.startswith("== ")),
                    "mmkg: device 'cuda' was requested but")
    reports = sorted((tmp / "kg" / "runs").glob("*.json"))
    report = json.loads(reports[-1].read_text())
    assert report["status"] == "failed" and "device 'cuda' was requested" in report["error"]
    assert "Traceback" in Path(report["log_file"]).read_text()  # the details stay in the run's log file
    assert not (tmp / "kg" / "vectors").exists()  # nothing was embedded on the CPU instead


def test_cli_index_device_cuda_without_faiss_gpu(tmp_path, capsys):
    code, err = _cli(["index", "--kg", str(tmp_path), "--encoder", "minilm", "--device", "cuda"], capsys)
    assert code == 1
    _one_clear_line(err, "mmkg: device cuda (use_gpu) for FAISS was requested but", "faiss")


def test_auto_says_what_it_picked_in_the_run_report(small_store, capsys):
    tmp, job = small_store
    kg = tmp / "kg-auto"
    job = {**{k: v for k, v in job.items() if k not in ("index", "retrieve", "train")}, "kg": str(kg),
           "embed": {**job["embed"], "device": "auto"}}
    code, err = _cli(["run", "--config", str(write_config(tmp / "auto.yaml", job))], capsys)
    assert code == 0, err
    report = json.loads(sorted((kg / "runs").glob("*.json"))[-1].read_text())
    embed = next(s for s in report["stages"] if s["name"] == "embed")
    assert embed["status"] == "ran" and embed["note"].endswith(" on cpu"), embed
    assert "device auto → cpu (" in Path(report["log_file"]).read_text()
    from mmkg.kg_store import open_store
    assert open_store(kg).artifact("vectors/minilm")["device"] == "cpu"
