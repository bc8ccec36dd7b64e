"""The knowledge-graph encoder (RGAT over a retrieved subgraph) and the `gnn_layer` registry.

Every layer takes the same call `(x, edge_index, edge_type, edge_attr)` so the encoder does not
care which one it runs. Two are registered:

* `rgat` — PyG `RGATConv` (relation-specific attention, basis-decomposed weights): the paper's
  layer, the default of the GPU presets (FLAN-T5 / LLaMA-2).
* `gat` — PyG `GATConv` with the relation vectors as edge features: relations still shape the
  attention, at a fraction of the cost. Measured on the shared 2-core CPU box, fwd+bwd on a
  20-node/20-edge graph: one layer 384→576, 16 relations, 4 bases: RGATConv ~190 ms vs GATConv
  ~4 ms; this encoder (2 layers, 256 wide, MarKG's 192 relations, 4 bases): ~3.8 s vs ~0.17 s
  (RGATConv materialises a (in × out) weight per edge from the bases). Hence the CPU presets
  (SmolLM2, tiny) default to `gat` and the GPU paper presets to `rgat`.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from mmkg.kg_store.registry import family

gnn_layer_registry = family("gnn_layer")


@gnn_layer_registry.register("rgat")
class RGATLayer(nn.Module):
    """Relational graph attention (Busbridge et al. 2019) with relation vectors as edge features.

    Shapes:
        - x (N, channels), edge_index (2, E), edge_type (E,), edge_attr (E, channels) -> (N, channels)
    """

    def __init__(self, *, channels: int, num_relations: int, num_bases: int | None = 4, heads: int = 1):
        super().__init__()
        from torch_geometric.nn import RGATConv
        self.conv = RGATConv(channels, channels // heads, num_relations=num_relations, num_bases=num_bases,
                             heads=heads, edge_dim=channels, concat=True)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor, edge_attr: Tensor) -> Tensor:
        return self.conv(x, edge_index, edge_type, edge_attr)


@gnn_layer_registry.register("gat")
class GATLayer(nn.Module):
    """GAT (Veličković et al. 2018) whose attention also sees the relation vector of each edge.

    Shapes:
        - x (N, channels), edge_index (2, E), edge_type (E,) unused, edge_attr (E, channels) -> (N, channels)
    """

    def __init__(self, *, channels: int, num_relations: int = 0, heads: int = 1):
        super().__init__()
        from torch_geometric.nn import GATConv
        self.conv = GATConv(channels, channels // heads, heads=heads, edge_dim=channels, add_self_loops=True)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor, edge_attr: Tensor) -> Tensor:
        return self.conv(x, edge_index, edge_attr=edge_attr)


class KnowledgeGraphEncoder(nn.Module):
    """Stacked relation-aware GNN layers over subgraphs whose nodes/edges carry CLIP vectors.

    Node states start from the stored entity vectors and edge features from the stored relation
    vectors (both projected to `hidden_dim`), as MR-MKG initialises its RGAT from CLIP.

    Args:
        in_dim (int): dimension of the stored entity/relation vectors.
        hidden_dim (int): GNN width.
        num_relations (int): number of relation ids in the store (edge_type < num_relations).
        num_layers (int): GNN depth. (default: 2)
        gnn_layer (str): `gnn_layer` registry name. (default: "rgat")
        inverse_edges (bool): the graphs also carry inverse edges typed r + num_relations
            (`mmkg.model.batching.add_inverse_edges`): the layers get 2·num_relations relation types and
            an inverse edge's features get a learned "inverse" vector added (GAT sees no type).
            (default: False)
        anchor_marker (bool): a learned vector added to the input state of each graph's anchor
            (question) entity, so the encoder knows which node the question is about. (default: False)

    Shapes:
        - x (N, in_dim), edge_index (2, E), edge_type (E,), edge_attr (E, in_dim),
          anchor (B,) global node indices or -1 (optional) -> (N, hidden_dim)
    """

    def __init__(self, *, in_dim: int, hidden_dim: int, num_relations: int, num_layers: int = 2,
                 gnn_layer: str = "rgat", gnn_layer_kwargs: Mapping[str, Any] | None = None, dropout: float = 0.1,
                 inverse_edges: bool = False, anchor_marker: bool = False):
        super().__init__()
        self.node_in = nn.Linear(in_dim, hidden_dim)
        self.edge_in = nn.Linear(in_dim, hidden_dim)
        types = 2 * num_relations if inverse_edges else num_relations
        layer_cls = gnn_layer_registry.get(gnn_layer)
        self.layers = nn.ModuleList(layer_cls(channels=hidden_dim, num_relations=types,
                                              **dict(gnn_layer_kwargs or {})) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)
        self.num_relations = num_relations
        self.num_edge_types = types
        self.inverse_edges, self.anchor_marker = inverse_edges, anchor_marker
        self.inverse_edge = nn.Parameter(torch.zeros(hidden_dim)) if inverse_edges else None
        self.anchor = nn.Parameter(torch.zeros(hidden_dim)) if anchor_marker else None
        self._reset_markers()

    def _reset_markers(self) -> None:
        # small and seeded, not zero: the anchor (and an inverse edge) differ from the first step on
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in (self.inverse_edge, self.anchor):
                if p is not None:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)

    def reset_parameters(self) -> None:
        self.node_in.reset_parameters()
        self.edge_in.reset_parameters()
        for layer, norm in zip(self.layers, self.norms):
            layer.reset_parameters()
            norm.reset_parameters()
        self._reset_markers()

    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor, edge_attr: Tensor,
                anchor: Tensor | None = None) -> Tensor:
        if edge_type.numel() and int(edge_type.max()) >= self.num_edge_types:
            raise ValueError(f"edge_type {int(edge_type.max())} >= {self.num_edge_types} relation types"
                             + ("" if self.inverse_edges else " (inverse edges need inverse_edges=True)"))
        h = self.node_in(x)
        e = self.edge_in(edge_attr)
        if self.inverse_edge is not None and edge_type.numel():
            e = e + (edge_type >= self.num_relations).unsqueeze(-1).to(e.dtype) * self.inverse_edge
        if self.anchor is not None and anchor is not None:
            rows = anchor[anchor >= 0]
            if rows.numel():
                marker = torch.zeros_like(h)
                marker[rows] = self.anchor.to(h.dtype)
                h = h + marker
        for layer, norm in zip(self.layers, self.norms):
            # residual + pre-norm: a node with no edges keeps its CLIP-initialised state
            h = h + self.dropout(torch.relu(layer(norm(h), edge_index, edge_type, e)))
        return h
