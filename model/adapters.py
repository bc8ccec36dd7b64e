"""The MR-MKG adapters: project foreign tokens into the LLM space and attend across modalities.

Both the visual adapter (image patch tokens) and the knowledge adapter (RGAT node states) are a
linear projection into the LLM embedding space followed by one single-head attention layer, in
one of two directions:

* `kg_to_text` — the projected tokens are the queries and the (frozen) text embeddings of the
  prompt the keys/values, added residually: n tokens in, n tokens out (the visual adapter, and
  the knowledge adapter of the first version here).
* `text_to_kg` — MR-MKG's Eq. 5 for the knowledge adapter: the text embeddings are the queries
  and the projected knowledge H_K = W X_K + b the keys and values, H'_K = softmax(Q H_Kᵀ/√d) H_K
  (plus a learned value branch that starts at zero): the text selects knowledge, and one token
  comes out per text token (T out; rows of a graph without nodes are masked).

One addition to the paper's form: the output tokens are rescaled to the RMS norm of the
prompt's own text embeddings (times a learnable gain, initially 1). Frozen LLMs differ in
embedding scale by orders of magnitude (T5 vs LLaMA); without this an untrained adapter feeds
tokens far off the scale the LLM was trained on, which on a short budget costs more than the
knowledge brings.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


DIRECTIONS = ("kg_to_text", "text_to_kg")


class CrossModalAdapter(nn.Module):
    """Linear projection + single-head cross-attention between foreign tokens and the text.

    Args:
        in_dim (int): size of the incoming tokens (vision width, KG encoder hidden size).
        hidden_size (int): LLM embedding size.
        direction (str): "kg_to_text" (the tokens attend to the text) or "text_to_kg" (the text
            attends to the tokens, MR-MKG Eq. 5). (default: "kg_to_text")

    Shapes:
        - tokens (B, n, in_dim), token_mask (B, n) bool,
          text (B, T, hidden_size), text_mask (B, T) bool
        - output (B, n, hidden_size) for kg_to_text, (B, T, hidden_size) for text_to_kg; rows
          outside `output_mask(token_mask, text_mask)` are zero
        - last_attention (detached): (B, n, T) for kg_to_text, (B, T, n) for text_to_kg
    """

    def __init__(self, *, in_dim: int, hidden_size: int, direction: str = "kg_to_text"):
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"adapter direction must be one of {DIRECTIONS}, not {direction!r}")
        self.direction = direction
        self.last_attention: Tensor | None = None
        self.proj = nn.Linear(in_dim, hidden_size)
        self.query = nn.Linear(hidden_size, hidden_size, bias=False)
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)
        self.value = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.gain = nn.Parameter(torch.ones(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.proj, self.query, self.key, self.value, self.out):
            lin.reset_parameters()
        # start as a pure projection: the attention branch grows from zero, so an untrained
        # adapter does not inject noise of the wrong scale into the frozen LLM
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        with torch.no_grad():
            self.gain.fill_(1.0)

    def output_mask(self, token_mask: Tensor, text_mask: Tensor) -> Tensor:
        """Which output rows are real tokens: (B, n) for kg_to_text, (B, T) for text_to_kg."""
        if self.direction == "kg_to_text":
            return token_mask.bool()
        return text_mask.bool() & token_mask.bool().any(dim=1, keepdim=True)

    def forward(self, tokens: Tensor, token_mask: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        h = self.proj(tokens)
        if self.direction == "kg_to_text":
            scores = self.query(h) @ self.key(text).transpose(1, 2) / math.sqrt(h.shape[-1])
            scores = scores.masked_fill(~text_mask.bool().unsqueeze(1), torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1)
            h = h + self.out(attn @ self.value(text))
        else:  # Eq. 5: text queries over knowledge keys/values
            scores = self.query(text.to(h.dtype)) @ self.key(h).transpose(1, 2) / math.sqrt(h.shape[-1])
            scores = scores.masked_fill(~token_mask.bool().unsqueeze(1), torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1)
            h = attn @ h + self.out(attn @ self.value(h))
        self.last_attention = attn.detach()
        return self._rescale(h, text, text_mask) * self.output_mask(token_mask, text_mask).unsqueeze(-1).to(h.dtype)

    def node_tokens(self, tokens: Tensor, token_mask: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        """The projected tokens on the text scale, one per input token (B, n, hidden), whatever the
        direction: the per-entity vectors the alignment loss compares with images."""
        return self._rescale(self.proj(tokens), text, text_mask) * token_mask.unsqueeze(-1).to(text.dtype)

    def _rescale(self, h: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        valid = text_mask.unsqueeze(-1).to(text.dtype)
        text_rms = ((text.pow(2) * valid).sum((1, 2)) / (valid.sum((1, 2)) * text.shape[-1]).clamp(min=1)).sqrt()
        h_rms = h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        return self.gain * h / h_rms * text_rms.detach().view(-1, 1, 1)


class SoftPrompt(nn.Module):
    """Learned prompt tokens (prompt tuning, Lester et al. 2021) placed before the other prefix blocks.

    MR-MKG's "no KG" ablation without images has nothing left to train; these tokens give that
    control the same training budget, so a KG-vs-no-KG comparison measures the knowledge, not
    merely the presence of a trained prefix. Initialised from vocabulary embeddings (`init`,
    (n, hidden)) so they start on the frozen LLM's embedding scale.

    Shapes:
        - forward(batch_size) -> (batch_size, n, hidden)
    """

    def __init__(self, *, init: Tensor):
        super().__init__()
        self.register_buffer("initial", init.detach().clone().float(), persistent=False)
        self.tokens = nn.Parameter(self.initial.clone())

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.tokens.copy_(self.initial)

    def forward(self, batch_size: int) -> Tensor:
        return self.tokens.unsqueeze(0).expand(batch_size, -1, -1)
