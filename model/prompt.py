"""Assemble the LLM input: prefix token blocks (knowledge, image) ⊕ text, as inputs_embeds.

Knowledge as text (G-Retriever style): the retrieved triples become short facts ahead of the
question, `Facts: <h> <r> <t>. <h> <r> <t>.` then a newline and the task's prompt. `fit_facts`
keeps as many facts as the token budget allows, best-scored first (so trimming drops the
lowest scores); the question and options are never cut to make room for facts.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

#: text pieces of the facts block (each piece is tokenised on its own and the ids concatenated,
#: so the budget is exact; for the byte tokenizer that equals tokenising the joined text)
FACTS_HEADER = "Facts:"
FACTS_SEPARATOR = "\n"


def format_fact(head: str, relation: str, tail: str) -> str:
    """One fact as it appears in the prompt (a leading space separates it from the previous piece)."""
    return f" {head} {relation} {tail}."


def fit_facts(question: Sequence[int], facts: Sequence[Sequence[int]], *, header: Sequence[int],
              separator: Sequence[int], budget: int) -> tuple[list[int], int]:
    """Token ids of `header ⊕ facts[:k] ⊕ separator ⊕ question` with the largest k that fits `budget`.

    `facts` come best first, so the kept ones are a prefix and trimming removes the lowest scores.
    The question is always kept whole (when no fact fits, the ids are just the question).
    Returns (ids, k).
    """
    room = budget - len(question) - len(header) - len(separator)
    k, used = 0, 0
    for f in facts:
        if used + len(f) > room:
            break
        used += len(f)
        k += 1
    if k == 0:
        return list(question), 0
    ids = list(header)
    for f in facts[:k]:
        ids.extend(f)
    return ids + list(separator) + list(question), k


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
