"""KAMT: a knowledge-aware multimodal transformer baseline (no LLM prompting).

Text tokens, image patch tokens and one token per retrieved triple — built from *learned*
entity and relation embeddings plus the stored vectors — are fused by a small TransformerEncoder
behind a [CLS] token. The pooled query is matched against each answer's encoding by a dot
product: over the example's choices this is a classification head (ScienceQA), over the 2,063
MARS entities a candidate-scoring head. It is the classic pre-LLM recipe (MKGformer-like), the
baseline the LLM-based options are measured against on the same shards.

Text encoder: the frozen LLM's *input embeddings* (token lookup only, no LLM layers), which the
fusion transformer contextualises. Chosen over MiniLM so that every option shares the backbone's
tokenizer and vocabulary — the comparison then differs in architecture only — and because a
lookup costs nothing next to a second 6-layer encoder per step, so KAMT's step time is its own.
The price: no pretrained contextual text encoder (MiniLM would likely score better with little
training data).

Scores are log σ(s(q, c)): the log-likelihood that c is *the* answer under a per-candidate
Bernoulli. The training loss is the gold's NLL ("generation_loss", kept under that name so the
trainer logs it like the other options) plus the NLL of "not the answer" for negatives taken
from the batch: the other choices (ScienceQA), the labels of the subgraph's entities (hard MARS
negatives) and the other examples' answers.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkg.model.backbones import FrozenLLM
from mmkg.model.base import MultimodalKGModel, model_registry
from mmkg.model.batching import ModelBatch
from mmkg.model.prompt import pad_ids
from mmkg.model.vision import FrozenVisionTower

#: token types of the fused sequence
CLS, TEXT, IMAGE, TRIPLE = range(4)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Shapes: x (B, T, d), mask (B, T) -> (B, d) (zero for an all-masked row)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class TripleEmbedding(nn.Module):
    """One token per retrieved triple from learned entity/relation embeddings and the stored vectors.

    Entities get a learned row (store id modulo `num_entities`: the trainer passes no entity
    count, and MarKG's 11k entities fit the default table without collisions) plus a projection
    of their stored vector, which carries meaning for entities seen rarely in training. Relations
    get a learned row per relation id plus a projection of the relation vector.

    Shapes:
        - x (N, node_dim), node_ids (N,), edge_index (2, E), edge_type (E,), edge_attr (E, node_dim)
          -> (E, hidden_size)
    """

    def __init__(self, *, node_dim: int, num_entities: int, num_relations: int, hidden_size: int):
        super().__init__()
        self.num_entities = num_entities
        self.entity = nn.Embedding(num_entities, hidden_size)
        self.relation = nn.Embedding(num_relations, hidden_size)
        self.node_proj = nn.Linear(node_dim, hidden_size)
        self.edge_proj = nn.Linear(node_dim, hidden_size)
        # (head, relation, tail) concatenated: order matters ((Paris, capital of, France) ≠ reverse)
        self.combine = nn.Linear(3 * hidden_size, hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.node_proj, self.edge_proj, self.combine):
            m.reset_parameters()
        nn.init.normal_(self.entity.weight, std=0.02)
        nn.init.normal_(self.relation.weight, std=0.02)

    def forward(self, x: Tensor, node_ids: Tensor, edge_index: Tensor, edge_type: Tensor, edge_attr: Tensor) -> Tensor:
        nodes = self.entity(node_ids.remainder(self.num_entities)) + self.node_proj(x)
        rel = self.relation(edge_type) + self.edge_proj(edge_attr)
        return self.combine(torch.cat([nodes[edge_index[0]], rel, nodes[edge_index[1]]], dim=-1))


@model_registry.register("kamt")
class KAMT(MultimodalKGModel):
    """Knowledge-aware multimodal transformer: text ⊕ image ⊕ triple tokens → transformer → answer scores.

    Trainable: the projections, the entity/relation embeddings, the fusion transformer and the
    answer head. Frozen: the LLM (only its input embeddings are used) and the vision tower.

    Args:
        backbone (str | FrozenLLM): supplies the tokenizer and frozen token embeddings. (default: "tiny-t5")
        node_dim (int): dimension of the stored entity/relation vectors in the shards.
        num_relations (int): relation ids in the store.
        num_entities (int): rows of the learned entity table (ids hashed modulo). (default: 16384)
        vision (str | FrozenVisionTower | None): image encoder with a vision tower. (default: "tiny-clip")
        hidden_size (int): fusion width. (default: 256)
        num_layers / num_heads (int): fusion transformer depth and heads. (default: 2 / 4)
        dropout (float): fusion dropout. (default: 0.1)
        max_candidate_length (int): tokens of an answer text kept. (default: 32)
        negative_weight (float): weight of the negatives' loss. (default: 1.0)
        use_kg / use_image (bool): ablation switches. (default: True)

    Shapes:
        - encode_query(batch) -> (B, hidden_size)
        - encode_answers(texts: C) -> (C, hidden_size)
        - forward(batch) -> {"loss", "generation_loss" (gold NLL), "negative_loss"} scalars
        - score_candidates(batch of 1, C candidate texts) -> (C,) log σ(score)
    """

    def __init__(self, *, backbone: str | FrozenLLM = "tiny-t5", backbone_kwargs: Mapping[str, Any] | None = None,
                 node_dim: int, num_relations: int, num_entities: int = 16384,
                 vision: str | FrozenVisionTower | None = "tiny-clip", hidden_size: int = 256, num_layers: int = 2,
                 num_heads: int = 4, dropout: float = 0.1, max_candidate_length: int = 32,
                 negative_weight: float = 1.0, use_kg: bool = True, use_image: bool = True,
                 max_text_length: int = 512):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs, max_text_length=max_text_length)
        self.config = dict(backbone=self.llm.name, backbone_kwargs=dict(backbone_kwargs or {}), node_dim=node_dim,
                           num_relations=num_relations, num_entities=num_entities,
                           vision=vision.encoder_name if isinstance(vision, FrozenVisionTower) else vision,
                           hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, dropout=dropout,
                           max_candidate_length=max_candidate_length, negative_weight=negative_weight,
                           use_kg=use_kg, use_image=use_image, max_text_length=max_text_length)
        llm_hidden = self.llm.hidden_size
        self.use_kg, self.use_image = use_kg, use_image and vision is not None
        self.max_candidate_length, self.negative_weight = max_candidate_length, negative_weight
        self.text_proj = nn.Linear(llm_hidden, hidden_size)
        self.position = nn.Embedding(max_text_length, hidden_size)
        self.token_type = nn.Embedding(4, hidden_size)
        if self.use_kg:
            self.triples = TripleEmbedding(node_dim=node_dim, num_entities=num_entities, num_relations=num_relations,
                                           hidden_size=hidden_size)
        if self.use_image:
            self.vision = vision if isinstance(vision, FrozenVisionTower) else FrozenVisionTower(encoder=vision)
            self.image_proj = nn.Linear(self.vision.width, hidden_size)
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, dim_feedforward=4 * hidden_size, dropout=dropout,
                                           batch_first=True, norm_first=True)
        # nested tensors are a CPU inference fast path that changes results with padding; off
        self.fusion = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.query_norm = nn.LayerNorm(hidden_size)
        self.answer_head = nn.Sequential(nn.Linear(llm_hidden, hidden_size), nn.GELU(),
                                         nn.Linear(hidden_size, hidden_size))
        self.score_bias = nn.Parameter(torch.zeros(()))
        self._answer_cache: tuple[tuple[str, ...], Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, child in self.named_children():
            if name in ("llm", "vision"):
                continue
            for m in child.modules():
                if isinstance(m, (nn.Linear, nn.LayerNorm)):
                    m.reset_parameters()
                elif isinstance(m, nn.MultiheadAttention):
                    m._reset_parameters()
        # (TransformerEncoder deep-copies one layer, so this also makes its layers differ)
        nn.init.normal_(self.position.weight, std=0.02)
        nn.init.normal_(self.token_type.weight, std=0.02)
        if self.use_kg:
            self.triples.reset_parameters()
        with torch.no_grad():
            self.score_bias.zero_()
        self._answer_cache = None

    @property
    def image_transform(self):
        """CPU-side preprocessing for the collator (None when the model uses no images)."""
        return self.vision.preprocess if self.use_image else None

    def train(self, mode: bool = True) -> "KAMT":
        self._answer_cache = None  # weights are about to change
        return super().train(mode)

    def build_prefix(self, batch, text, text_mask):
        raise TypeError("KAMT does not prompt an LLM: it scores answers with its own head (see score_candidates)")

    # ---- encoders -----------------------------------------------------------------------------
    def encode_query(self, batch: ModelBatch) -> Tensor:
        text, text_mask = self.encode_text(batch)
        b, t = text_mask.shape
        pos = torch.arange(t, device=text.device)
        parts = [(self.text_proj(text.float()) + self.position(pos) + self.token_type.weight[TEXT], text_mask)]
        if self.use_image and batch.images is not None:
            patches = self.image_proj(self.vision(batch.images).float()) + self.token_type.weight[IMAGE]
            parts.append((patches, batch.has_image.unsqueeze(1).expand(-1, patches.shape[1])))
        if self.use_kg:
            parts.append(self._triple_tokens(batch, b))
        cls = self.token_type.weight[CLS].expand(b, 1, -1)
        tokens = torch.cat([cls] + [p for p, _ in parts], dim=1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=text.device)] + [m.bool() for _, m in parts], 1)
        fused = self.fusion(tokens, src_key_padding_mask=~mask)
        return self.query_norm(fused[:, 0])

    def _triple_tokens(self, batch: ModelBatch, b: int) -> tuple[Tensor, Tensor]:
        from torch_geometric.utils import to_dense_batch
        g = batch.graph
        device = g.x.device
        edges = self.triples(g.x, g.node_ids.to(device), g.edge_index, g.edge_type, g.edge_attr)
        if edges.shape[0] == 0:
            return edges.new_zeros(b, 1, edges.shape[-1]), torch.zeros(b, 1, dtype=torch.bool, device=device)
        # a PyG batch concatenates the graphs' edges in order, so the edge batch vector is sorted
        dense, mask = to_dense_batch(edges, g.batch[g.edge_index[0]], batch_size=b)
        return dense + self.token_type.weight[TRIPLE], mask

    def encode_answers(self, texts: list[str]) -> Tensor:
        """Mean of the frozen token embeddings of each answer, through the answer head."""
        ids = self.llm.encode(texts, max_length=self.max_candidate_length)
        ids, mask = pad_ids(ids, self.llm.tokenizer.pad_token_id, self.device)
        return self.answer_head(masked_mean(self.llm.embed(ids).float(), mask))

    def _answers(self, texts: list[str]) -> Tensor:
        # evaluation scores the same 2,063 MARS candidates for every query: encode them once
        if self.training or torch.is_grad_enabled():
            return self.encode_answers(texts)
        key = tuple(texts)
        if self._answer_cache is None or self._answer_cache[0] != key:
            self._answer_cache = (key, self.encode_answers(texts))
        return self._answer_cache[1]

    def scores(self, query: Tensor, answers: Tensor) -> Tensor:
        """Shapes: query (B, d), answers (C, d) -> (B, C) logits."""
        return query @ answers.t() / math.sqrt(query.shape[-1]) + self.score_bias

    # ---- the MultimodalKGModel interface ------------------------------------------------------
    def encode_targets(self, texts: list[str]) -> list[list[int]]:
        """One unit per answer: KAMT judges an answer as a whole (one decision, not a token sequence),
        so a log-likelihood per token equals the one per answer."""
        return [[i] for i in range(len(texts))]

    def forward(self, batch: ModelBatch) -> dict[str, Tensor]:
        query = self.encode_query(batch)
        targets = [ex.target for ex in batch.examples]
        pool = list(dict.fromkeys(targets + [t for i in range(len(batch)) for t in self._negatives(batch, i)]))
        logits = self.scores(query, self.encode_answers(pool))
        index = {t: j for j, t in enumerate(pool)}
        gold = torch.tensor([index[t] for t in targets], device=logits.device)
        positive = F.logsigmoid(logits.gather(1, gold.unsqueeze(1))).squeeze(1)
        neg_mask = torch.zeros_like(logits, dtype=torch.bool)
        for i in range(len(batch)):
            cols = [index[t] for t in self._negatives(batch, i) if t != targets[i]]
            cols += [index[t] for k, t in enumerate(targets) if k != i and t != targets[i]]
            neg_mask[i, cols] = True
        gen = -positive.mean()
        neg = -(F.logsigmoid(-logits) * neg_mask).sum() / neg_mask.sum().clamp(min=1)
        loss = gen + self.negative_weight * neg
        return {"loss": loss, "generation_loss": gen.detach(), "negative_loss": neg.detach()}

    @staticmethod
    def _negatives(batch: ModelBatch, i: int) -> list[str]:
        ex = batch.examples[i]
        out = list(ex.choices or [])
        if batch.triples:
            out += [name for h, _, t in batch.triples[i] for name in (h, t)]
        return out

    @torch.no_grad()
    def score_candidates(self, batch: ModelBatch, candidates: list[str], *, chunk_size: int = 256) -> Tensor:
        """log σ(score) of each candidate answer for one example (chunk_size: unused, one matmul)."""
        if len(batch) != 1:
            raise ValueError("score_candidates scores one example at a time")
        logits = self.scores(self.encode_query(batch), self._answers(list(candidates)))
        return F.logsigmoid(logits[0]).float()

