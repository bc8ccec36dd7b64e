"""The MR-MKG adapters: project foreign tokens into the LLM space and attend to the text.

Both the visual adapter (image patch tokens) and the knowledge adapter (RGAT node states) have
the same form (MR-MKG §3.3): a linear projection into the LLM embedding space followed by one
single-head attention layer whose queries are the projected tokens and whose keys/values are
the (frozen) text embeddings of the prompt, added residually.

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


class CrossModalAdapter(nn.Module):
    """Linear projection + single-head cross-attention over the text embeddings.

    Args:
        in_dim (int): size of the incoming tokens (vision width, KG encoder hidden size).
        hidden_size (int): LLM embedding size.

    Shapes:
        - tokens (B, n, in_dim), token_mask (B, n) bool,
          text (B, T, hidden_size), text_mask (B, T) bool
        - output (B, n, hidden_size); rows where token_mask is False are zero
    """

    def __init__(self, *, in_dim: int, hidden_size: int):
        super().__init__()
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

    def forward(self, tokens: Tensor, token_mask: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        h = self.proj(tokens)
        scores = self.query(h) @ self.key(text).transpose(1, 2) / math.sqrt(h.shape[-1])
        scores = scores.masked_fill(~text_mask.bool().unsqueeze(1), torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1)
        h = h + self.out(attn @ self.value(text))
        valid = text_mask.unsqueeze(-1).to(text.dtype)
        text_rms = ((text.pow(2) * valid).sum((1, 2)) / (valid.sum((1, 2)) * text.shape[-1]).clamp(min=1)).sqrt()
        h_rms = h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        h = self.gain * h / h_rms * text_rms.detach().view(-1, 1, 1)
        return h * token_mask.unsqueeze(-1).to(h.dtype)


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
