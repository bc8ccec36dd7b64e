"""Assemble the LLM input: prefix token blocks (knowledge, image) ⊕ text, as inputs_embeds."""
from __future__ import annotations

import torch
from torch import Tensor


def pad_ids(seqs: list[list[int]], pad: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Right-padded (B, T) ids and their bool mask (T ≥ 1 so an empty batch row still has a slot)."""
    width = max([len(s) for s in seqs] + [1])
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = True
    return ids.to(device), mask.to(device)


def pack_blocks(blocks: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate the valid rows of each (B, n_i, h) block per example, then right-pad.

    Packing (instead of concatenating padded blocks) keeps each example's tokens contiguous:
    no padding holes between knowledge, image and text tokens, so positions stay consecutive.

    Shapes: blocks [(B, n_i, h), (B, n_i) bool] -> (B, L, h), (B, L) long mask
    """
    batch = blocks[0][0].shape[0]
    rows = [torch.cat([emb[b][mask[b].bool()] for emb, mask in blocks]) for b in range(batch)]
    width = max([len(r) for r in rows] + [1])
    ref = blocks[0][0]
    out = ref.new_zeros(batch, width, ref.shape[-1])
    out_mask = torch.zeros(batch, width, dtype=torch.long, device=ref.device)
    for b, r in enumerate(rows):
        out[b, :len(r)] = r
        out_mask[b, :len(r)] = 1
    return out, out_mask
