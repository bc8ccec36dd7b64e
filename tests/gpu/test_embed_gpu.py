"""The embed stage with a CLIP tower on CUDA (fp16 autocast), over the CPU tier's image store
(`tests/pipeline/test_embed_images.py`: MarKG + 150 real entity images, tiny-clip vectors and
indexes built on the CPU in fp32), then the index stage on the GPU over the new vectors.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from mmkg.kg_store import KGStore
from mmkg.kg_store.vectors import load_vectors
from mmkg.pipeline.embed import embed_store, open_images
from mmkg.pipeline.encoders import resolve_encoder
from mmkg.retrieval.index import build_store_indexes, load_index
from tests.gpu.helpers import requires_cuda, requires_faiss_gpu
from tests.pipeline.test_embed_images import store  # noqa: F401 (the CPU tier's fixture)

pytestmark = [pytest.mark.gpu, requires_cuda]


@pytest.fixture(scope="module")
def gpu_store(store, tmp_path_factory):  # noqa: F811
    """A copy of the CPU store re-embedded with tiny-clip on cuda (fp16: its own vector cache)."""
    cpu, files = store
    root = tmp_path_factory.mktemp("gpu-embed") / "markg"
    shutil.copytree(cpu.root, root)
    res = embed_store(root, "tiny-clip", device="cuda", limit={"triple": 512}, batch_size=32, progress=False)
    return cpu, KGStore(root), files, res


def test_encoder_on_cuda_is_fp16_and_matches_the_cpu_vectors(store):  # noqa: F811
    _, files = store
    gpu, cpu = resolve_encoder("tiny-clip", device="cuda"), resolve_encoder("tiny-clip", device="cpu")
    assert gpu.device.type == "cuda" and gpu.precision == "float16" and cpu.precision in ("float32", "onnx-float32")
    assert resolve_encoder("tiny-clip", device="auto") is gpu  # auto picks the GPU
    images = open_images([str(f) for f, _ in files[:16]])
    texts = ["zebra", "swimming pool: an artificially enclosed body of water", "Paris, capital of, France"]
    pairs = ((gpu.encode_images(images), cpu.encode_images(images)), (gpu.encode_text(texts), cpu.encode_text(texts)))
    for a, b in pairs:
        assert a.dtype == np.float32 and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-3)
        assert np.min(np.sum(a * b, axis=1)) > 0.99  # fp16 autocast ≈ fp32: cosine per row


def test_embed_stage_on_cuda_commits_the_same_vectors(gpu_store):
    cpu, gpu, files, res = gpu_store
    meta = res.meta
    assert meta["device"].startswith("cuda") and meta["encoder_info"]["precision"] == "float16"
    assert res.forwarded > 0  # the fp16 cache is separate from the CPU's fp32 one: everything was encoded
    for kind in ("entity", "triple", "image"):
        a, ids_a = load_vectors(gpu, "tiny-clip", kind)
        b, ids_b = load_vectors(cpu, "tiny-clip", kind)
        assert np.array_equal(ids_a, ids_b) and a.shape == b.shape
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.all(np.isfinite(a)) and np.min(np.sum(a * b, axis=1)) > 0.99, kind


@requires_faiss_gpu
def test_index_stage_on_the_gpu_then_search_from_disk(gpu_store):
    _, gpu, files, _ = gpu_store
    res = build_store_indexes(gpu.root, "tiny-clip", use_gpu="cuda")
    assert all(m["gpu"] for m in res.meta["kinds"].values()), res.meta
    enc = resolve_encoder("tiny-clip", device="cuda")
    q = enc.encode_images(open_images([str(f) for f, _ in files]))
    scores, ids = load_index(KGStore(gpu.root), "tiny-clip", "image").search(q, 3)  # a CPU index read from disk
    assert ids[:, 0].tolist() == list(range(150))
    assert np.allclose(scores[:, 0], 1, atol=1e-3)

