"""The GPU figures of issue 20, each against a same-run baseline; writes benchmarks/out/gpu.json.

* FAISS: exact Flat search over `--n` × `--dim` vectors on the GPU vs the same Flat index on
  `--cpu-threads` CPU threads (goal: GPU ≥ 20× the 2-core CPU), both built by
  `mmkg.retrieval.index.build_index` (the GPU one moved back to the CPU would be what is saved);
* CLIP ViT-B-32 (random weights: speed only) on CUDA, fp16: the embed stage ÷ the raw forward on
  the same texts and images (goal ≥ 0.95), measured by `benchmarks/embed.py`'s `compare`;
* MR-MKG training on CUDA (frozen LLM bf16, adapters fp32, bf16 autocast) over real shards with
  `--workers` loader workers and pinned memory: the loader's share of a step as `train` reports
  it (`loader_share`; goal < 5 %).

Without a CUDA device it prints one JSON object saying so and exits 0 (so `make bench` and
`make gpu-check` stay green on CPU-only machines); nothing is written then.

    python benchmarks/gpu.py [--n 1000000] [--dim 512] [--cpu-queries 1000] [--gpu-queries 10000]
                             [--cpu-threads 2] [--backbone smollm2-135m] [--workers 4] [--only faiss,embed,train]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("MMKG_SHARED_DATA", REPO.parent / "shared" / "data"))
OUT = REPO / "benchmarks" / "out" / "gpu.json"
GOALS = {"faiss_flat_gpu_over_cpu": 20.0, "clip_embed_stage_over_raw": 0.95, "loader_share": 0.05}


def _embed_bench():
    spec = importlib.util.spec_from_file_location("bench_embed", REPO / "benchmarks" / "embed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _best_qps(vi, queries: np.ndarray, k: int, repeats: int) -> tuple[float, np.ndarray]:
    vi.search(queries[:16], k)  # warm-up (GPU kernels, OpenMP threads)
    best, ids = 0.0, None
    for _ in range(repeats):
        t = time.perf_counter()
        _, ids = vi.search(queries, k)
        best = max(best, len(queries) / (time.perf_counter() - t))
    return best, ids


def bench_faiss(args) -> dict:
    import faiss
    from mmkg.retrieval.index import build_index, gpu_count, recall_at_k
    if not hasattr(faiss, "StandardGpuResources") or gpu_count() == 0:
        return {"skipped": "faiss has no GPU support here (faiss-cpu); pip uninstall faiss-cpu && "
                           "pip install -e '.[gpu]'"}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n + args.gpu_queries, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x, queries = x[:args.n], x[args.n:]
    gpu = build_index(x, kind="flat", use_gpu=True, check_queries=0)
    gpu_qps, gpu_ids = _best_qps(gpu, queries, 10, args.repeats)
    cpu = build_index(x, kind="flat", use_gpu=False, threads=args.cpu_threads, check_queries=0)
    cpu_qps, cpu_ids = _best_qps(cpu, queries[:args.cpu_queries], 10, 1)
    ratio = gpu_qps / cpu_qps
    return {"n": args.n, "dim": args.dim, "k": 10, "gpus": gpu_count(), "gpu_built_on_gpu": gpu.meta["gpu"],
            "gpu_queries": args.gpu_queries, "gpu_qps": round(gpu_qps, 1),
            "cpu_threads": args.cpu_threads, "cpu_queries": args.cpu_queries, "cpu_qps": round(cpu_qps, 2),
            "ratio": round(ratio, 1), "goal": GOALS["faiss_flat_gpu_over_cpu"],
            "meets_goal": ratio >= GOALS["faiss_flat_gpu_over_cpu"],
            "gpu_vs_cpu_recall@10": round(recall_at_k(gpu_ids[:args.cpu_queries], cpu_ids), 4)}


def bench_embed(args) -> dict:
    from mmkg.pipeline.encoders import resolve_encoder
    eb = _embed_bench()
    enc = resolve_encoder("open_clip:ViT-B-32", device="cuda")
    _, triples = eb.markg_texts(args.clip_texts, args.clip_texts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmkg-bench-gpu-") as tmp:
        rows.append(eb.compare(enc, "triple texts", "text", triples[:args.clip_texts], args.batch_size, args.repeats,
                               Path(tmp)))
        images = eb.image_files(args.images)
        if images:
            rows.append(eb.compare(enc, "entity images (JPEG/PNG files)", "image", images, args.batch_size,
                                   args.repeats, Path(tmp)))
    ratio = min(r["ratio"] for r in rows)
    return {"encoder": enc.name, "device": str(enc.device), "precision": enc.precision, "batch_size": args.batch_size,
            "results": rows, "min_ratio": ratio, "goal": GOALS["clip_embed_stage_over_raw"],
            "meets_goal": ratio >= GOALS["clip_embed_stage_over_raw"]}


def bench_train(args) -> dict:
    from mmkg.model.training import train
    from tests.retrieval.shards_fixture import build_test_shards
    work = Path(args.work)
    shards = build_test_shards(DATA, work / "kg")
    model_kwargs = {"backbone": args.backbone, "backbone_kwargs": {"dtype": "bfloat16"}, "vision": None,
                    "gnn_layer": "gat", "kg_hidden": 256, "max_text_length": 96}
    summary = train(kg=str(shards["kg"]), output_dir=str(work / f"train-{time.monotonic_ns()}"), model="mrmkg",
                    model_kwargs=model_kwargs, device="cuda", amp="bf16", num_workers=args.workers, resume=False,
                    checkpoint_every=10 ** 9, log_every=10 ** 9,
                    stages=[{"name": "pretrain", "task": ["kg-triple"], "shards": str(shards["mars/dev"]),
                             "batch_size": 8, "epochs": args.epochs, "lr": 1e-4},
                            {"name": "finetune", "task": "mars", "shards": str(shards["mars/dev"]),
                             "batch_size": 2, "epochs": args.epochs, "lr": 1e-4}])
    share = summary["loader_share"]
    return {"backbone": args.backbone, "workers": args.workers, "pin_memory": True, "amp": summary["amp"],
            "device": summary["device"], "steps": summary["global_step"], "loader_seconds": summary["loader_seconds"],
            "step_seconds": summary["step_seconds"], "loader_share": share, "goal": GOALS["loader_share"],
            "meets_goal": share is not None and share < GOALS["loader_share"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--gpu-queries", type=int, default=10_000)
    ap.add_argument("--cpu-queries", type=int, default=1000)
    ap.add_argument("--cpu-threads", type=int, default=2)
    ap.add_argument("--clip-texts", type=int, default=1024)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--work", default=str(REPO / "build" / "bench" / "gpu"))
    ap.add_argument("--only", default="faiss,embed,train", help="comma-separated parts to run")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    from mmkg.pipeline.device import cuda_unavailable_reason, describe_device
    reason = cuda_unavailable_reason()
    if reason:
        print(json.dumps({"benchmark": "gpu", "status": "skipped", "reason": f"no CUDA device: {reason}"}))
        return 0
    import torch
    result: dict = {"benchmark": "gpu", "status": "ok", "device": describe_device("cuda"),
                    "gpus": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "cpu_count": os.cpu_count(), "goals": GOALS}
    try:
        import faiss
        result["faiss"] = faiss.__version__
    except ImportError:
        result["faiss"] = None
    parts = {"faiss": bench_faiss, "embed": bench_embed, "train": bench_train}
    for name in [p for p in args.only.split(",") if p]:
        t = time.perf_counter()
        result[name] = parts[name](args)
        result[name]["seconds"] = round(time.perf_counter() - t, 1)
        print(f"[gpu bench] {name}: {json.dumps(result[name])}", file=sys.stderr)
    text = json.dumps(result, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
