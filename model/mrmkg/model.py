"""The MR-MKG model: knowledge ⊕ image ⊕ text prompt for a frozen LLM."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from mmkg.model.adapters import CrossModalAdapter, SoftPrompt
from mmkg.model.backbones import FrozenLLM
from mmkg.model.base import MultimodalKGModel, model_registry
from mmkg.model.batching import ModelBatch, add_inverse_edges
from mmkg.model.gnn import KnowledgeGraphEncoder
from mmkg.model.mrmkg.alignment import triplet_alignment_loss
from mmkg.model.vision import FrozenVisionTower


#: values of MRMKG's `knowledge` switch
KNOWLEDGE_MODES = ("gnn", "text", "both", "none")


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
        knowledge (str, optional): how the retrieved knowledge reaches the LLM — "gnn" (graph
            encoder + knowledge adapter → prefix tokens), "text" (the triples as short facts ahead of
            the question, `MultimodalKGModel.text_ids`), "both", or "none" (no knowledge: with
            `soft_prompt_tokens` the equal-budget no-KG control). None (default) follows `use_kg`
            ("gnn" or "none"); given, it decides the graph path itself (`use_kg` is then ignored).
        adapter_direction (str): knowledge adapter attention — "text_to_kg" (the paper's Eq. 5: text
            queries over knowledge keys/values, one token per question token) or "kg_to_text" (each
            node attends to the text, one token per node; the first version here). (default: "text_to_kg")
        inverse_edges (bool): the encoder also passes messages tail → head, typed r + num_relations
            (the collator adds them, `mmkg.model.batching.add_inverse_edges`). (default: True)
        anchor_marker (bool): a learned vector marks the anchor (question) entity's node. (default: True)
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
                 soft_prompt_tokens: int = 0, knowledge: str | None = None, adapter_direction: str = "text_to_kg",
                 inverse_edges: bool = True, anchor_marker: bool = True):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs, max_text_length=max_text_length)
        if knowledge is None:
            knowledge = "gnn" if use_kg else "none"
        if knowledge not in KNOWLEDGE_MODES:
            raise ValueError(f"knowledge must be one of {KNOWLEDGE_MODES}, not {knowledge!r}")
        use_kg = knowledge in ("gnn", "both")
        self.knowledge = knowledge
        self.knowledge_text = knowledge in ("text", "both")
        self.config = dict(backbone=self.llm.name, backbone_kwargs=dict(backbone_kwargs or {}), node_dim=node_dim,
                           num_relations=num_relations,
                           vision=vision.encoder_name if isinstance(vision, FrozenVisionTower) else vision,
                           kg_hidden=kg_hidden, kg_layers=kg_layers, gnn_layer=gnn_layer,
                           gnn_layer_kwargs=dict(gnn_layer_kwargs or {}), kg_dropout=kg_dropout, use_kg=use_kg,
                           use_image=use_image, use_alignment=use_alignment, alignment_weight=alignment_weight,
                           alignment_margin=alignment_margin, max_text_length=max_text_length,
                           soft_prompt_tokens=soft_prompt_tokens, knowledge=knowledge,
                           adapter_direction=adapter_direction, inverse_edges=inverse_edges,
                           anchor_marker=anchor_marker)
        hidden = self.llm.hidden_size
        self.use_kg, self.use_image = use_kg, use_image and vision is not None
        self.num_relations = num_relations
        self.inverse_edges = inverse_edges and use_kg
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
                                                    gnn_layer_kwargs=gnn_layer_kwargs, dropout=kg_dropout,
                                                    inverse_edges=inverse_edges, anchor_marker=anchor_marker)
            self.knowledge_adapter = CrossModalAdapter(in_dim=kg_hidden, hidden_size=hidden,
                                                       direction=adapter_direction)
        if self.use_image:
            self.vision = vision if isinstance(vision, FrozenVisionTower) else FrozenVisionTower(encoder=vision)
            self.visual_adapter = CrossModalAdapter(in_dim=self.vision.width, hidden_size=hidden)

    #: what checkpoints written before these options existed were built with (`checkpoint.load_model`)
    LEGACY_KWARGS = {"adapter_direction": "kg_to_text", "inverse_edges": False, "anchor_marker": False}

    @property
    def image_transform(self):
        """CPU-side preprocessing for the collator (None when the model uses no images)."""
        return self.vision.preprocess if self.use_image else None

    @property
    def inverse_relations(self) -> int | None:
        """R when the collator should add inverse edges typed r + R (`Collator.for_model`), else None."""
        return self.num_relations if self.inverse_edges else None

    def aux_weight(self, name: str) -> float:
        return self.alignment_weight if name == "alignment_loss" else 1.0

    def build_prefix(self, batch: ModelBatch, text: Tensor, text_mask: Tensor
                     ) -> tuple[list[tuple[Tensor, Tensor]], dict[str, Tensor]]:
        from torch_geometric.utils import to_dense_batch
        blocks: list[tuple[Tensor, Tensor]] = []
        text_f = text.float()
        image_tokens = None
        if self.soft_prompt is not None:
            soft = self.soft_prompt(len(batch))
            blocks.append((soft, torch.ones(soft.shape[:2], dtype=torch.bool, device=soft.device)))
        entity_tokens = None
        if self.use_kg:
            g = batch.graph
            if self.inverse_edges and batch.inverse_relations is None:
                # a batch from a plain Collator: add the inverse edges here (on a copy)
                g = add_inverse_edges(g.clone(), self.num_relations)
            elif batch.inverse_relations is not None and not self.inverse_edges:
                raise ValueError("the batch carries inverse edges but the model was built with inverse_edges=False")
            nodes = self.kg_encoder(g.x, g.edge_index, g.edge_type, g.edge_attr, anchor=batch.anchor_node)
            dense, node_mask = to_dense_batch(nodes, g.batch, batch_size=len(batch))
            knowledge = self.knowledge_adapter(dense, node_mask, text_f, text_mask)
            blocks.append((knowledge, self.knowledge_adapter.output_mask(node_mask, text_mask)))
            # per-node tokens for the alignment loss (text_to_kg emits one token per text token)
            entity_tokens = (knowledge if self.knowledge_adapter.direction == "kg_to_text"
                             else self.knowledge_adapter.node_tokens(dense, node_mask, text_f, text_mask))
        if self.use_image and batch.images is not None:
            patches = self.vision(batch.images).float()
            patch_mask = batch.has_image.unsqueeze(1).expand(-1, patches.shape[1])
            image_tokens = self.visual_adapter(patches, patch_mask, text_f, text_mask)
            blocks.append((image_tokens, patch_mask))
        aux: dict[str, Tensor] = {}
        if self.use_alignment:
            aux["alignment_loss"] = self._alignment(batch, entity_tokens, image_tokens, blocks)
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
