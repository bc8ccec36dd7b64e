"""Skip conditions of the GPU tier (`pytest -m gpu`, `make gpu-check`).

Every module under tests/gpu/ carries `pytestmark = [pytest.mark.gpu, requires_cuda]` (plus
`requires_faiss_gpu` where FAISS runs on the GPU), so on a machine without CUDA the tier still
imports and collects, and every test skips with the reason below instead of failing.
"""
from __future__ import annotations

import pytest


def cuda_skip_reason() -> str | None:
    from mmkg.pipeline.device import cuda_unavailable_reason
    reason = cuda_unavailable_reason()
    return f"needs a CUDA GPU: {reason}" if reason else None


def faiss_gpu_skip_reason() -> str | None:
    import faiss
    if not hasattr(faiss, "StandardGpuResources"):
        return ("needs faiss with GPU support: faiss-cpu is installed "
                "(pip uninstall faiss-cpu && pip install -e '.[gpu]')")
    if faiss.get_num_gpus() == 0:
        return "needs a GPU FAISS can see (faiss.get_num_gpus() == 0)"
    return None


_CUDA = cuda_skip_reason()
_FAISS = _CUDA or faiss_gpu_skip_reason()
requires_cuda = pytest.mark.skipif(_CUDA is not None, reason=_CUDA or "")
requires_faiss_gpu = pytest.mark.skipif(_FAISS is not None, reason=_FAISS or "")
