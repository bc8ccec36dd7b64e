"""Simignore (arXiv 2024): drop the image tokens least similar to the text before the LLM reads them.

Simignore observes that an MLLM's answer depends on few image tokens — those whose embedding is
close to the text's — and that ignoring the rest keeps (or improves) accuracy while the LLM reads
a shorter prompt. Here it sits on top of MR-MKG's visual path: the visual adapter's image tokens
(already in the LLM embedding space) are compared with the mean text embedding of the prompt by
cosine, and only the top-k (or those above a threshold) enter the prompt. Dropped tokens are
masked out *before* `pack_blocks`, so the LLM really reads fewer tokens (compute falls with them).
Selection is a hard top-k: it passes no gradient, so training sees the kept tokens only.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmkg.model.base import model_registry
from mmkg.model.batching import ModelBatch
from mmkg.model.mrmkg import MRMKG


def text_similarity(tokens: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
    """Cosine of each token with the masked mean of the text embeddings.

    Shapes: tokens (B, P, h), text (B, T, h), text_mask (B, T) -> (B, P)
    """
    valid = text_mask.unsqueeze(-1).to(text.dtype)
    mean_text = (text * valid).sum(1) / valid.sum(1).clamp(min=1)
    return F.cosine_similarity(tokens.float(), mean_text.float().unsqueeze(1), dim=-1)


def keep_mask(similarity: Tensor, mask: Tensor, *, keep_ratio: float | None = None, top_k: int | None = None,
              threshold: float | None = None) -> Tensor:
    """Which tokens to keep: those above `threshold`, else the `top_k` (or ceil(keep_ratio · n) of the
    n valid tokens of each row) most similar ones. Kept tokens keep their original order.

    Shapes: similarity (B, P), mask (B, P) bool -> (B, P) bool
    """
    mask = mask.bool()
    if threshold is not None:
        return mask & (similarity >= threshold)
    n_valid = mask.sum(1)
    if top_k is not None:
        k = n_valid.clamp(max=int(top_k))
    else:
        k = torch.ceil(n_valid.float() * float(keep_ratio) - 1e-6).long().clamp(min=0)
    ranked = similarity.masked_fill(~mask, -math.inf)
    order = torch.argsort(ranked, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return mask & (rank < k.unsqueeze(1))


@model_registry.register("simignore")
class Simignore(MRMKG):
    """MR-MKG whose image tokens are filtered by image–text similarity before the LLM (Simignore).

    Exactly one selection rule applies: `threshold` if given, else `top_k` if given, else
    `keep_ratio`. `keep_ratio=1` is MR-MKG itself; `keep_ratio=0` drops the image entirely. The
    rule is a pure inference-time choice (no weights depend on it), so one checkpoint can be
    evaluated at several ratios: `checkpoint.load_model(dir, keep_ratio=0.25)`.

    Args:
        keep_ratio (float): share of each image's tokens kept, rounded up. (default: 0.5)
        top_k (int, optional): keep this many tokens per image instead. (default: None)
        threshold (float, optional): keep tokens whose cosine to the text is ≥ this instead. (default: None)
        **kwargs: `MRMKG` arguments (backbone, node_dim, num_relations, vision, …).

    Shapes:
        - forward(batch) -> MR-MKG's losses + "image_tokens_kept", "image_tokens_total"
          (mean per example with an image, detached; 0 when the batch has no image)
        - token_stats: running totals {"images", "image_tokens", "image_tokens_kept", "prompt_tokens"}
          over every prompt built since `reset_token_stats()` (evaluation reads them)
    """

    def __init__(self, *, keep_ratio: float = 0.5, top_k: int | None = None, threshold: float | None = None,
                 **kwargs: Any):
        if not 0.0 <= keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must lie in [0, 1], got {keep_ratio}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be ≥ 0, got {top_k}")
        if top_k is not None and threshold is not None:
            raise ValueError("give at most one of top_k and threshold (keep_ratio is the default rule)")
        super().__init__(**kwargs)
        self.keep_ratio, self.top_k, self.threshold = keep_ratio, top_k, threshold
        self.config.update(keep_ratio=keep_ratio, top_k=top_k, threshold=threshold)
        self._last: dict[str, Tensor] = {}
        self.reset_token_stats()

    def reset_token_stats(self) -> None:
        self.token_stats = {"images": 0, "image_tokens": 0, "image_tokens_kept": 0, "prompt_tokens": 0}

    def build_prefix(self, batch: ModelBatch, text: Tensor, text_mask: Tensor
                     ) -> tuple[list[tuple[Tensor, Tensor]], dict[str, Tensor]]:
        blocks, aux = super().build_prefix(batch, text, text_mask)
        kept = total = text.new_zeros((), dtype=torch.float32)
        if self.use_image and batch.images is not None:
            # MR-MKG appends the image block last (after the knowledge block)
            tokens, mask = blocks[-1]
            keep = keep_mask(text_similarity(tokens, text, text_mask), mask, keep_ratio=self.keep_ratio,
                             top_k=self.top_k, threshold=self.threshold)
            blocks[-1] = (tokens, keep)
            rows = mask.any(1)
            n_images = int(rows.sum())
            self.token_stats["images"] += n_images
            self.token_stats["image_tokens"] += int(mask.sum())
            self.token_stats["image_tokens_kept"] += int(keep.sum())
            kept = keep.sum().float() / max(n_images, 1)
            total = mask.sum().float() / max(n_images, 1)
        self.token_stats["prompt_tokens"] += int(sum(m.bool().sum() for _, m in blocks) + text_mask.sum())
        self._last = {"image_tokens_kept": kept.detach(), "image_tokens_total": total.detach()}
        return blocks, aux

    def forward(self, batch: ModelBatch) -> dict[str, Tensor]:
        out = super().forward(batch)
        # not auxiliary losses: reported next to them, never added to the loss
        out.update(self._last)
        return out
