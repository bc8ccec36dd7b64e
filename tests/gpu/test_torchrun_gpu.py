"""`torchrun` on one node, one process per GPU: `mmkg train --config` under DDP (NCCL) on the real
shards with a tiny backbone — the launch path README documents for multi-GPU training."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.gpu.helpers import requires_cuda
from tests.model.test_training import TINY

pytestmark = [pytest.mark.gpu, requires_cuda]
REPO = Path(__file__).resolve().parents[2]


def test_torchrun_one_process_per_gpu(real_shards, tmp_path):
    gpus = min(torch.cuda.device_count(), 8)  # the fixture shards hold 8 MARS queries
    out = tmp_path / "run"
    examples, batch_size = 8, 1
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"metadata": {"title": "torchrun smoke"}, "job": {
        "kg": str(real_shards["kg"]), "output_dir": str(out), "device": "cuda", "amp": "bf16", "seed": 0,
        "num_workers": 1, "log_every": 1,
        "model_kwargs": {**TINY, "backbone": "tiny-llama", "backbone_kwargs": {"dtype": "bfloat16"}},
        "stages": [{"name": "finetune", "task": "mars", "shards": str(real_shards["mars/dev"]),
                    "batch_size": batch_size, "epochs": 1, "limit": examples}]}}))
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                        "-m", "mmkg.jobs.cli", "train", "--config", str(cfg)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())  # written by rank 0 only
    assert summary["device"].startswith("cuda") and summary["amp"] == "bfloat16"
    # each rank takes an equal share of every epoch's batches (mmkg.model.training.epoch_batches)
    assert 1 <= summary["global_step"] <= math.ceil(examples / gpus / batch_size)
    assert (out / "final" / "model.safetensors").exists()
    printed = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == gpus and all(s["global_step"] == summary["global_step"] for s in printed)
