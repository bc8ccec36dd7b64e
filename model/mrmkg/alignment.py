"""Cross-modal alignment (MR-MKG §3.4): an image should sit closer to its entity than to another."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def triplet_alignment_loss(image: Tensor, positive: Tensor, negative: Tensor, *, margin: float = 0.5) -> Tensor:
    """Mean Euclidean triplet loss max(0, ‖i − p‖ − ‖i − n‖ + margin).

    Vectors are L2-normalised first: the image and entity tokens live in the LLM embedding
    space, whose scale differs by backbone, and a fixed margin only means something on a
    fixed scale.

    Shapes: image, positive, negative (K, h) -> scalar (0 when K = 0)
    """
    if image.shape[0] == 0:
        return image.new_zeros(())
    image, positive, negative = (F.normalize(v.float(), dim=-1) for v in (image, positive, negative))
    d_pos = (image - positive).norm(dim=-1)
    d_neg = (image - negative).norm(dim=-1)
    return torch.relu(d_pos - d_neg + margin).mean()
