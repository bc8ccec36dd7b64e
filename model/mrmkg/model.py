"""The MR-MKG model: knowledge ⊕ image ⊕ text prompt for a frozen LLM."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from model.adapters import CrossModalAdapter, SoftPrompt
from model.backbones import FrozenLLM
from model.base import MultimodalKGModel, model_registry
from model.batching import ModelBatch
from model.gnn import KnowledgeGraphEncoder
from model.mrmkg.alignment import triplet_alignment_loss
from model.vision import FrozenVisionTower


@model_registry.register("mrmkg")
class MRMKG(MultimodalKGModel):
    """MR-MKG: RGAT knowledge encoder + knowledge adapter, CLIP vision + visual adapter, frozen LLM.

    Trainable: the KG encoder and both adapters (~2 % of the paper presets). The knowledge tokens
    are the subgraph's node states after the GNN; the image tokens are CLIP patch tokens.

    Args:
        node_dim (int): dimension of the stored entity/relation vectors in the shards.
        num_relations (int): relation ids in the store (RGAT relation types).
        vision (str | FrozenVisionTower | None): image encoder with a vision tower. (default: "tiny-clip")
        kg_hidden (int): GNN width. (default: 256)
        gnn_layer (str): `gnn_layer` registry name ("rgat" or "gat"). (default: "rgat")
        use_kg / use_image / use_alignment (bool): ablation switches. (default: True)
        alignment_weight (float): λ in loss = generation + λ·alignment. (default: 0.1)
        soft_prompt_tokens (int): learned prompt tokens before the prefix — the equal-budget "no KG"
            control when there is no image path (see `SoftPrompt`). (default: 0, none)

    Shapes:
        - forward(batch) -> {"loss", "generation_loss", "alignment_loss"} scalars
    """

    def __init__(self, *, backbone: str | FrozenLLM = "tiny-t5", backbone_kwargs: Mapping[str, Any] | None = None,
                 node_dim: int, num_relations: int, vision: str | FrozenVisionTower | None = "tiny-clip",
                 kg_hidden: int = 256, kg_layers: int = 2, gnn_layer: str = "rgat",
                 gnn_layer_kwargs: Mapping[str, Any] | None = None, kg_dropout: float = 0.1,
                 use_kg: bool = True, use_image: bool = True, use_alignment: bool = True,
                 alignment_weight: float = 0.1, alignment_margin: float = 0.5, max_text_length: int = 512,
                 soft_prompt_tokens: int = 0):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs, max_text_length=max_text_length)
        self.config = dict(backbone=self.llm.name, backbone_kwargs=dict(backbone_kwargs or {}), node_dim=node_dim,
                           num_relations=num_relations,
                           vision=vision.encoder_name if isinstance(vision, FrozenVisionTower) else vision,
                           kg_hidden=kg_hidden, kg_layers=kg_layers, gnn_layer=gnn_layer,
                           gnn_layer_kwargs=dict(gnn_layer_kwargs or {}), kg_dropout=kg_dropout, use_kg=use_kg,
                           use_image=use_image, use_alignment=use_alignment, alignment_weight=alignment_weight,
                           alignment_margin=alignment_margin, max_text_length=max_text_length,
                           soft_prompt_tokens=soft_prompt_tokens)
        hidden = self.llm.hidden_size
        self.use_kg, self.use_image = use_kg, use_image and vision is not None
        # alignment needs both an image and an entity token
        self.use_alignment = use_alignment and self.use_kg and self.use_image
        self.alignment_weight, self.alignment_margin = alignment_weight, alignment_margin
        self.soft_prompt = None
        if soft_prompt_tokens:
            vocab = self.llm.model.get_input_embeddings().num_embeddings
            ids = torch.randint(0, vocab, (soft_prompt_tokens,), generator=torch.Generator().manual_seed(0))
            self.soft_prompt = SoftPrompt(init=self.llm.embed(ids))
        if self.use_kg:
            self.kg_encoder = KnowledgeGraphEncoder(in_dim=node_dim, hidden_dim=kg_hidden, num_relations=num_relations,
                                                    num_layers=kg_layers, gnn_layer=gnn_layer,
                                                    gnn_layer_kwargs=gnn_layer_kwargs, dropout=kg_dropout)
            self.knowledge_adapter = CrossModalAdapter(in_dim=kg_hidden, hidden_size=hidden)
        if self.use_image:
            self.vision = vision if isinstance(vision, FrozenVisionTower) else FrozenVisionTower(encoder=vision)
            self.visual_adapter = CrossModalAdapter(in_dim=self.vision.width, hidden_size=hidden)

    @property
    def image_transform(self):
        """CPU-side preprocessing for the collator (None when the model uses no images)."""
        return self.vision.preprocess if self.use_image else None

    def aux_weight(self, name: str) -> float:
        return self.alignment_weight if name == "alignment_loss" else 1.0

    def build_prefix(self, batch: ModelBatch, text: Tensor, text_mask: Tensor
                     ) -> tuple[list[tuple[Tensor, Tensor]], dict[str, Tensor]]:
        from torch_geometric.utils import to_dense_batch
        blocks: list[tuple[Tensor, Tensor]] = []
        text_f = text.float()
        knowledge = image_tokens = None
        if self.soft_prompt is not None:
            soft = self.soft_prompt(len(batch))
            blocks.append((soft, torch.ones(soft.shape[:2], dtype=torch.bool, device=soft.device)))
        if self.use_kg:
            g = batch.graph
            nodes = self.kg_encoder(g.x, g.edge_index, g.edge_type, g.edge_attr)
            dense, node_mask = to_dense_batch(nodes, g.batch, batch_size=len(batch))
            knowledge = self.knowledge_adapter(dense, node_mask, text_f, text_mask)
            blocks.append((knowledge, node_mask))
        if self.use_image and batch.images is not None:
            patches = self.vision(batch.images).float()
            patch_mask = batch.has_image.unsqueeze(1).expand(-1, patches.shape[1])
            image_tokens = self.visual_adapter(patches, patch_mask, text_f, text_mask)
            blocks.append((image_tokens, patch_mask))
        aux: dict[str, Tensor] = {}
        if self.use_alignment:
            aux["alignment_loss"] = self._alignment(batch, knowledge, image_tokens, blocks)
        return blocks, aux

    def _alignment(self, batch: ModelBatch, knowledge: Tensor | None, image_tokens: Tensor | None,
                   blocks: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Triplet loss between each image (mean image token) and its entity's knowledge token,
        against another node of the batch as the negative."""
        ref = blocks[0][0] if blocks else batch.graph.x
        rows = (batch.align_node >= 0) & batch.has_image
        if knowledge is None or image_tokens is None or not bool(rows.any()):
            return ref.new_zeros(()).float()
        g = batch.graph
        n_nodes = int(g.num_nodes)
        if n_nodes < 2:
            return ref.new_zeros(()).float()
        b = rows.nonzero().flatten()
        pos_global = batch.align_node[b]
        local = pos_global - g.ptr[b]
        image = image_tokens[b].mean(dim=1)
        positive = knowledge[b, local]
        # a random other node of the batch; shifting by 1..n-1 (mod n) never hits the positive
        shift = torch.randint(1, n_nodes, (len(b),), device=pos_global.device)
        neg_global = (pos_global + shift) % n_nodes
        neg_graph = g.batch[neg_global]
        negative = knowledge[neg_graph, neg_global - g.ptr[neg_graph]]
        return triplet_alignment_loss(image, positive, negative, margin=self.alignment_margin)
