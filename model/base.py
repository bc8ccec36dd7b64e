"""Base class and registry of the model variants (`model` family: "mrmkg", later KAMT, …).

A variant is a frozen LLM plus trainable parts that turn a `ModelBatch` into prefix tokens.
The base class owns everything variants share — text encoding, target encoding, the generation
loss, candidate scoring, the trainable state dict used by checkpoints, parameter counting — so
a new variant is a small subclass that implements `build_prefix` (and, if it adds auxiliary
losses, returns them from there).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from mmkg.kg_store.registry import family
from mmkg.model.backbones import CAUSAL, FrozenLLM, load_backbone
from mmkg.model.batching import ModelBatch
from mmkg.model.prompt import FACTS_HEADER, FACTS_SEPARATOR, fit_facts, format_fact, pack_blocks, pad_ids
from mmkg.model.tasks import Example

model_registry = family("model")


class MultimodalKGModel(nn.Module):
    """A frozen LLM prompted with trainable prefix tokens computed from a `ModelBatch`.

    Args:
        backbone (str | FrozenLLM): `backbone` preset name or a ready backbone.
        backbone_kwargs (dict, optional): passed to `load_backbone` (weights, dtype, cache_dir).
        max_text_length (int): prompt tokens kept (the paper's max length): with knowledge as text
            (`knowledge_text`), facts + question; facts are trimmed (lowest score first) to fit,
            the question never is. (default: 512)

    Shapes:
        - forward(batch) -> {"loss": (), "generation_loss": (), ...auxiliary losses}
        - score_candidates(batch of 1, C candidate texts) -> (C,) log-likelihoods
    """

    #: constructor kwargs recorded in checkpoints (set by `__init__` of the concrete class)
    config: dict[str, Any]

    def __init__(self, *, backbone: str | FrozenLLM = "tiny-t5", backbone_kwargs: Mapping[str, Any] | None = None,
                 max_text_length: int = 512):
        super().__init__()
        self.llm = backbone if isinstance(backbone, FrozenLLM) else load_backbone(backbone, **dict(backbone_kwargs or {}))
        self.max_text_length = max_text_length
        #: put the retrieved triples as text (`Example.facts`) ahead of the question; a variant sets it
        self.knowledge_text = False

    # ---- to implement -------------------------------------------------------------------------
    def build_prefix(self, batch: ModelBatch, text: Tensor, text_mask: Tensor
                     ) -> tuple[list[tuple[Tensor, Tensor]], dict[str, Tensor]]:
        """Prefix blocks [(B, n_i, h), (B, n_i) mask] placed before the text, and auxiliary losses."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        for module in self.children():
            if module is not self.llm and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    # ---- shared machinery ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.llm.model.get_input_embeddings().weight.device

    def encode_text(self, batch: ModelBatch) -> tuple[Tensor, Tensor]:
        """Embeddings of the task's prompts (the question, without facts): what adapters attend to."""
        ids = self.llm.encode([ex.prompt for ex in batch.examples], max_length=self.max_text_length)
        ids, mask = pad_ids(ids, self.llm.tokenizer.pad_token_id, self.device)
        return self.llm.embed(ids), mask

    def text_ids(self, examples: Sequence[Example]) -> list[tuple[list[int], int]]:
        """Token ids of the text part of each prompt and how many facts it holds: the question
        alone, or (with `knowledge_text`) the best-scored facts that fit `max_text_length` ahead of it."""
        questions = self.llm.encode([ex.prompt for ex in examples], max_length=self.max_text_length)
        if not self.knowledge_text:
            return [(q, 0) for q in questions]
        header, sep = self.llm.encode([FACTS_HEADER, FACTS_SEPARATOR])
        out = []
        for ex, q in zip(examples, questions):
            facts = self.llm.encode([format_fact(h, r, t) for h, r, t, _ in ex.facts]) if ex.facts else []
            out.append(fit_facts(q, facts, header=header, separator=sep, budget=self.max_text_length))
        return out

    def prompt_text(self, example: Example) -> str:
        """The text part of the prompt as the LLM reads it (facts kept by the budget ⊕ question)."""
        _, k = self.text_ids([example])[0]
        if not k:
            return example.prompt
        facts = "".join(format_fact(h, r, t) for h, r, t, _ in example.facts[:k])
        return f"{FACTS_HEADER}{facts}{FACTS_SEPARATOR}{example.prompt}"

    def encode_prompt_text(self, batch: ModelBatch) -> tuple[Tensor, Tensor]:
        """Embeddings of the text the LLM reads after the prefix (facts ⊕ question, or the question)."""
        ids, mask = pad_ids([ids for ids, _ in self.text_ids(batch.examples)], self.llm.tokenizer.pad_token_id,
                            self.device)
        return self.llm.embed(ids), mask

    def encode_targets(self, texts: list[str]) -> list[list[int]]:
        # BPE tokenizers of decoder-only models merge the leading space into the first token
        texts = [" " + t for t in texts] if self.llm.kind == CAUSAL else list(texts)
        return self.llm.encode(texts, max_length=self.max_text_length, add_eos=True)

    def prompt(self, batch: ModelBatch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """inputs_embeds (B, L, h), attention mask (B, L) and the auxiliary losses."""
        text, text_mask = self.encode_text(batch)
        blocks, aux = self.build_prefix(batch, text, text_mask)
        if self.knowledge_text:  # the prefix saw the question; the LLM reads facts ⊕ question
            text, text_mask = self.encode_prompt_text(batch)
        embeds, mask = pack_blocks([(b.to(text.dtype), m) for b, m in blocks] + [(text, text_mask)])
        return embeds, mask, aux

    def forward(self, batch: ModelBatch) -> dict[str, Tensor]:
        embeds, mask, aux = self.prompt(batch)
        gen = self.llm.loss(embeds, mask, self.encode_targets([ex.target for ex in batch.examples]))
        loss = gen + sum(self.aux_weight(name) * value for name, value in aux.items())
        return {"loss": loss, "generation_loss": gen.detach(), **{k: v.detach() for k, v in aux.items()}}

    def aux_weight(self, name: str) -> float:
        return 1.0

    @torch.no_grad()
    def score_candidates(self, batch: ModelBatch, candidates: list[str], *, chunk_size: int = 256) -> Tensor:
        """Log-likelihood (sum over tokens, eos included) of each candidate answer for one example."""
        embeds, mask, _ = self.prompt(batch)
        prompt = embeds[:, :int(mask.sum())]
        return self.llm.candidate_logprobs(prompt, self.encode_targets(candidates), chunk_size=chunk_size)

    @torch.no_grad()
    def score_after_text(self, text: str, candidates: list[str], *, chunk_size: int = 256) -> Tensor:
        """Log-likelihood of each candidate after a plain text prompt (no prefix, no facts): the null
        prompt of PMI scoring."""
        ids = self.llm.encode([text], max_length=self.max_text_length)[0]
        prompt = self.llm.embed(torch.tensor([ids], dtype=torch.long, device=self.device))
        return self.llm.candidate_logprobs(prompt, self.encode_targets(candidates), chunk_size=chunk_size)

    # ---- trainable state ----------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        expected = {n for n, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(f"checkpoint does not fit this model: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)

    def parameter_counts(self) -> dict[str, Any]:
        """Total / trainable parameter counts and the trainable share in percent."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        parts = {name: sum(p.numel() for p in m.parameters() if p.requires_grad)
                 for name, m in self.named_children() if name != "llm"}
        return {"total": total, "trainable": trainable, "trainable_percent": 100.0 * trainable / max(total, 1),
                "trainable_by_part": {k: v for k, v in parts.items() if v}}


def resolve_model(name: str, **kwargs: Any) -> MultimodalKGModel:
    return model_registry.get(name)(**kwargs)
