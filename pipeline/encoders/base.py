"""The `Encoder` interface shared by the embed stage, retrieval (queries) and the model.

An encoder is split into a CPU-side `prepare_*` step (tokenise / decode + resize) and a
`forward_*` step (the network), so the embed stage can prepare batch i+1 in a loader thread
while batch i runs through the model; `encode_*` is the two in a row for callers that do not care.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Iterator, Sequence

import numpy as np

from kg_store.errors import KGStoreError
from kg_store.vectors import encoder_slug as slugify


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (a zero row stays zero instead of NaN)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


class Encoder(ABC):
    """A text (and optionally image) encoder producing L2-normalised float32 vectors.

    Shapes: `encode_text(list[str]) -> (n, dim)`, `encode_images(list[PIL.Image]) -> (n, dim)`.
    """

    #: registry name as resolved, e.g. "open_clip:ViT-B-32:openai", "minilm", "tiny-clip"
    name: str
    dim: int
    has_vision: bool = False
    #: the longest text in tokens the model sees; longer texts are truncated
    context_length: int = 77

    def __init__(self, *, name: str, device: str = "cpu", precision: str = "auto"):
        import torch
        self.name = name
        self.device = torch.device(device)
        # "auto": float16 autocast on CUDA (the usual CLIP inference setting), exact float32 on CPU.
        if precision == "auto":
            precision = "float16" if self.device.type == "cuda" else "float32"
        if precision not in ("float32", "float16", "bfloat16"):
            raise KGStoreError(f"unsupported encoder precision {precision!r}; use float32, float16 or bfloat16")
        self.precision = precision

    @property
    def slug(self) -> str:
        return slugify(self.name)

    def describe(self) -> dict[str, Any]:
        """What the vector meta records about the encoder."""
        return {"name": self.name, "slug": self.slug, "dim": self.dim, "has_vision": self.has_vision,
                "context_length": self.context_length, "precision": self.precision}

    # ---- text -------------------------------------------------------------------------------
    @abstractmethod
    def prepare_text(self, texts: Sequence[str]) -> Any:
        """Tokenise on the CPU (runs in the loader thread)."""

    @abstractmethod
    def forward_text(self, batch: Any) -> np.ndarray:
        """Run the text tower on a prepared batch; float32 (n, dim), L2-normalised."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.forward_text(self.prepare_text(list(texts)))

    # ---- images -----------------------------------------------------------------------------
    def prepare_images(self, images: Sequence[Any]) -> Any:
        raise KGStoreError(f"encoder {self.name!r} has no vision tower; use an open_clip encoder for images")

    def forward_images(self, batch: Any) -> np.ndarray:
        raise KGStoreError(f"encoder {self.name!r} has no vision tower; use an open_clip encoder for images")

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.forward_images(self.prepare_images(list(images)))

    # ---- helpers for subclasses -------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        """Reduced precision through autocast (CUDA or CPU bfloat16); float32 runs as is."""
        import torch
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.precision))

    @staticmethod
    def _to_numpy(x: Any) -> np.ndarray:
        import torch
        x = torch.nn.functional.normalize(x.float(), dim=-1)
        return x.cpu().numpy().astype(np.float32, copy=False)


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
