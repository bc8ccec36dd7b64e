"""MKS2 (Li et al., 2023): visual knowledge stored in the LLM's blocks and shared by soft multimodal experts.

MKS2 gives a frozen decoder-only LLM a *modular visual memory* inside its blocks — written with
visual knowledge in a pretraining step, then read by every token that passes the block — and a
*soft mixture of multimodal experts* that processes image and text tokens. Here both are small
trainable modules attached to the last `num_blocks` decoder blocks through forward hooks: the
block's output h becomes h + memory(h), then + experts(·). The LLM's own weights stay frozen and
untouched; hooks keep the backbone code (and its KV-cache path used by candidate scoring) as is,
which works because both modules act on each token independently.

Prompt side, MKS2 is MR-MKG's visual path (visual adapter → image tokens ⊕ text); the knowledge
prefix is off by default (`use_kg=False`), because MKS2 keeps its knowledge in the memory rather
than reading a retrieved subgraph — pass `use_kg=True` to give it the subgraph as well. Writing
the memory is the `pretrain` stage (`kg-image`: name the entity an image shows; `kg-triple`), as
MKS2's visual-knowledge storage stage; the trainer has no per-stage freezing, so the memory keeps
learning in finetuning too (MKS2 freezes it there).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkg.model.backbones import CAUSAL
from mmkg.model.base import model_registry
from mmkg.model.mrmkg import MRMKG


class _ZeroStart(nn.Module):
    """A module on the LLM's residual stream: LayerNorm'd input, one linear `_read` layer, and a
    (read, write) weight pair `_weights` started N(0, 1/fan_in) and zero, so that the untrained
    module adds nothing and the frozen LLM's behaviour is where training starts."""

    _read: str
    _weights: tuple[str, str]

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        getattr(self, self._read).reset_parameters()
        first, last = (getattr(self, name) for name in self._weights)
        nn.init.normal_(first, std=1.0 / math.sqrt(first.shape[-2 if first.dim() > 2 else 1]))
        nn.init.zeros_(last)


class VisualMemory(_ZeroStart):
    """A key-value memory read by attention from each token's hidden state.

    The values start at zero: an empty memory reads as nothing, so before anything is written
    the LLM behaves exactly as the frozen backbone (as LoRA's zero-initialised B matrix).

    Args:
        hidden_size (int): LLM hidden size.
        num_slots (int): memory slots. (default: 256)
        key_dim (int): size of the keys and queries. (default: 64)

    Shapes:
        - hidden (B, L, hidden_size) -> read (B, L, hidden_size)
    """

    _read, _weights = "query", ("keys", "values")

    def __init__(self, *, hidden_size: int, num_slots: int = 256, key_dim: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.query = nn.Linear(hidden_size, key_dim, bias=False)
        # slot keys (read by the query) and slot values (written into the hidden state)
        self.keys, self.values = _empty_parameters((num_slots, key_dim), (num_slots, hidden_size))
        self.reset_parameters()


    def forward(self, hidden: Tensor) -> Tensor:
        q = self.query(self.norm(hidden))
        attn = torch.softmax(q @ self.keys.t() / math.sqrt(q.shape[-1]), dim=-1)
        return attn @ self.values


def _empty_parameters(*shapes: tuple[int, ...]) -> tuple[nn.Parameter, ...]:
    return tuple(nn.Parameter(torch.empty(*shape)) for shape in shapes)


class SoftMixtureOfExperts(_ZeroStart):
    """Small feed-forward experts mixed per token by softmax router weights (every expert, no top-k).

    Each token is routed on its own hidden state, which already tells image tokens from text
    tokens, so the experts specialise by modality without a modality flag (a flag would have to
    be threaded through the LLM's KV-cache calls). Token-wise mixing (not Puigcerver et al.'s
    Soft MoE, whose slots mix tokens across positions) keeps the decoder causal. The experts'
    output layer starts at zero, so the untrained mixture adds nothing.

    Args:
        hidden_size (int): LLM hidden size.
        num_experts (int): experts. (default: 4)
        expert_dim (int): inner size of each expert. (default: 64)

    Shapes:
        - hidden (B, L, hidden_size) -> (B, L, hidden_size); `router_weights(hidden)` -> (B, L, num_experts)
    """

    _read, _weights = "router", ("up", "down")

    def __init__(self, *, hidden_size: int, num_experts: int = 4, expert_dim: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.router = nn.Linear(hidden_size, num_experts)
        # per-expert up and down projections
        self.up, self.down = _empty_parameters((num_experts, hidden_size, expert_dim),
                                               (num_experts, expert_dim, hidden_size))
        self.reset_parameters()


    def router_weights(self, hidden: Tensor) -> Tensor:
        return torch.softmax(self.router(self.norm(hidden)), dim=-1)

    def forward(self, hidden: Tensor) -> Tensor:
        x = self.norm(hidden)
        gates = torch.softmax(self.router(x), dim=-1)
        inner = F.gelu(torch.einsum("blh,ehd->bled", x, self.up))
        # weighting the inner activations first avoids a (B, L, E, hidden) tensor
        return torch.einsum("bled,edh->blh", inner * gates.unsqueeze(-1), self.down)


class MKS2Block(nn.Module):
    """What one hooked decoder block gains: memory read, then the expert mixture, both residual.

    Shapes:
        - hidden (B, L, hidden_size) -> (B, L, hidden_size)
    """

    def __init__(self, *, hidden_size: int, memory_slots: int, memory_key_dim: int, num_experts: int,
                 expert_dim: int):
        super().__init__()
        self.memory = VisualMemory(hidden_size=hidden_size, num_slots=memory_slots, key_dim=memory_key_dim)
        self.experts = SoftMixtureOfExperts(hidden_size=hidden_size, num_experts=num_experts, expert_dim=expert_dim)

    def reset_parameters(self) -> None:
        self.memory.reset_parameters()
        self.experts.reset_parameters()

    def forward(self, hidden: Tensor) -> Tensor:
        # the modules run in float32 whatever the LLM's dtype (bf16 backbones): their outputs
        # start tiny and would be rounded away
        h = hidden.float()
        h = h + self.memory(h)
        h = h + self.experts(h)
        return h.to(hidden.dtype)


#: where decoder-only transformers keep their blocks (LLaMA/Mistral/Qwen, GPT-2, GPT-NeoX)
_BLOCK_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers")


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a Hugging Face causal LM."""
    for path in _BLOCK_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__} (looked at {', '.join(_BLOCK_PATHS)})")


@model_registry.register("mks2")
class MKS2(MRMKG):
    """MR-MKG's visual path + a visual memory and soft multimodal experts in the last LLM blocks (MKS2).

    Decoder-only backbones only: the memory is read by the blocks of the causal LM that also
    generates (an encoder-decoder has two stacks, and MKS2 is defined on a decoder-only LLM).
    The hooks are registered on the backbone's blocks, so a `FrozenLLM` instance passed in must
    not be shared with another model (building a second MKS2 on it raises); `remove_hooks()`
    detaches them.

    Args:
        num_blocks (int): last decoder blocks that get a memory + experts. (default: 2)
        memory_slots (int): slots of each block's memory. (default: 256)
        memory_key_dim (int): key size of the memory. (default: 64)
        num_experts (int): experts of each block's mixture. (default: 4)
        expert_dim (int): inner size of each expert. (default: 64)
        use_kg (bool): also put MR-MKG's knowledge tokens in the prompt. (default: False)
        **kwargs: other `MRMKG` arguments (backbone, node_dim, num_relations, vision, …).

    Shapes:
        - forward(batch) -> {"loss", "generation_loss", ...MR-MKG auxiliary losses}
        - the hooked blocks: hidden (B, L, hidden_size) -> (B, L, hidden_size)
    """

    def __init__(self, *, num_blocks: int = 2, memory_slots: int = 256, memory_key_dim: int = 64,
                 num_experts: int = 4, expert_dim: int = 64, use_kg: bool = False, **kwargs: Any):
        super().__init__(use_kg=use_kg, **kwargs)
        if self.llm.kind != CAUSAL:
            raise ValueError(f"MKS2 inserts its memory into the blocks of a decoder-only LLM; backbone "
                             f"{self.llm.name!r} is {self.llm.kind} (encoder-decoder). Use a causal backbone "
                             f"such as tiny-llama, smollm2-135m or llama-2-7b.")
        blocks = decoder_blocks(self.llm.model)
        if not 1 <= num_blocks <= len(blocks):
            raise ValueError(f"num_blocks must lie in [1, {len(blocks)}] for {self.llm.name!r}, got {num_blocks}")
        self.config.update(num_blocks=num_blocks, memory_slots=memory_slots, memory_key_dim=memory_key_dim,
                           num_experts=num_experts, expert_dim=expert_dim)
        hidden = self.llm.hidden_size
        self.block_modules = nn.ModuleList(
            MKS2Block(hidden_size=hidden, memory_slots=memory_slots, memory_key_dim=memory_key_dim,
                      num_experts=num_experts, expert_dim=expert_dim) for _ in range(num_blocks))
        self._hooks = []
        for block, extra in zip(list(blocks)[-num_blocks:], self.block_modules):
            if getattr(block, "_mks2_hooked", False):
                raise ValueError("this backbone's blocks already carry MKS2 hooks; load a fresh backbone per model")
            block._mks2_hooked = True
            self._hooks.append(block.register_forward_hook(_make_hook(extra)))

    def remove_hooks(self) -> None:
        """Detach the modules from the LLM blocks (the backbone is then the plain frozen LLM again)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        for block in decoder_blocks(self.llm.model):
            block.__dict__.pop("_mks2_hooked", None)


def _make_hook(extra: MKS2Block):
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        # transformers ≥ 4.5x returns the hidden states; older versions a tuple starting with them
        if isinstance(output, tuple):
            return (extra(output[0]), *output[1:])
        return extra(output)
    return hook
