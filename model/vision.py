"""The frozen CLIP image encoder: patch tokens for the visual adapter, pooled vector too.

The tower comes from `mmkg.pipeline.encoders.resolve_encoder(name)` (the same open_clip model the
embed stage uses: "tiny-clip" in tests, "open_clip:ViT-L-14:openai" in the paper presets). The
model needs *tokens*, not only the pooled vector the pipeline returns, so it works on a private
copy of `encoder.model.visual` with `output_tokens=True` (the pipeline's shared instance keeps
returning pooled vectors).
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import Tensor, nn


class FrozenVisionTower(nn.Module):
    """A frozen open_clip vision transformer returning patch tokens.

    Args:
        encoder (str): `encoder` registry name with a vision tower. (default: "tiny-clip")

    Shapes:
        - images (B, 3, H, W) -> tokens (B, P, width)
    """

    def __init__(self, *, encoder: str = "tiny-clip"):
        super().__init__()
        from mmkg.pipeline.encoders import resolve_encoder
        enc = resolve_encoder(encoder)
        if not enc.has_vision:
            raise ValueError(f"encoder {encoder!r} has no vision tower")
        self.encoder_name = encoder
        self._encoder = enc  # for its CPU-side image preprocessing only
        self.visual = copy.deepcopy(enc.model.visual).float()
        self.visual.output_tokens = True
        self.visual.requires_grad_(False)
        self.visual.eval()
        transformer = getattr(self.visual, "transformer", None)
        self.width = int(transformer.width) if transformer is not None else self._probe_width()

    @classmethod
    def from_module(cls, visual: nn.Module, *, width: int, encoder_name: str) -> "FrozenVisionTower":
        """Wrap an already built open_clip visual module (e.g. on the meta device, for counting)."""
        tower = cls.__new__(cls)
        nn.Module.__init__(tower)
        tower.encoder_name, tower._encoder, tower.width = encoder_name, None, width
        tower.visual = visual
        tower.visual.requires_grad_(False)
        return tower

    def _probe_width(self) -> int:
        size = self.visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        with torch.no_grad():
            return int(self.visual(torch.zeros(1, 3, *size))[1].shape[-1])

    def train(self, mode: bool = True) -> "FrozenVisionTower":
        super().train(False)
        return self

    def preprocess(self, images: Sequence[Any]) -> Tensor:
        """PIL images -> normalised (B, 3, H, W) float tensor (CPU, runs in the data loader)."""
        return self._encoder.prepare_images(list(images))

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        _, tokens = self.visual(images.to(next(self.visual.parameters()).dtype))
        return tokens
