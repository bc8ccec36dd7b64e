"""Synthetic shard graphs of the retrieval `Data` shape (fallback while real shards are absent)."""
from __future__ import annotations

import torch
from torch_geometric.data import Data

from model.kg_text import KGText

DIM = 384
NUM_RELATIONS = 8
KEYS = [f"Q{i}" for i in range(20)]


def synthetic_kg(image_entity: int | None = None, image_path=None) -> KGText:
    return KGText(entity_labels={i: f"thing {i}" for i in range(20)}, entity_keys={k: i for i, k in enumerate(KEYS)},
                  relation_labels={r: f"rel {r}" for r in range(NUM_RELATIONS)},
                  entity_images={image_entity: image_path} if image_entity is not None else {})


def synthetic_graph(i: int, *, n_nodes: int = 5, n_edges: int = 6, dataset: str = "mars") -> Data:
    g = torch.Generator().manual_seed(i)
    nodes = torch.randperm(20, generator=g)[:n_nodes]
    if n_nodes == 0:
        n_edges = 0
    edge_index = torch.randint(0, max(n_nodes, 1), (2, n_edges), generator=g)
    data = Data(x=torch.randn(n_nodes, DIM, generator=g), node_ids=nodes, edge_index=edge_index,
                edge_type=torch.randint(0, NUM_RELATIONS, (n_edges,), generator=g),
                edge_attr=torch.randn(n_edges, DIM, generator=g), edge_score=torch.rand(n_edges, generator=g),
                query_id=f"{dataset}-{i}", num_nodes=n_nodes)
    if dataset == "mars":
        q = KEYS[int(nodes[0])] if n_nodes else "Q1"
        data.example, data.question, data.answer, data.mode, data.relation = ["Q3", "Q4"], q, "Q5", 0, "P31"
    else:
        data.question, data.choices, data.answer = "Which is a mammal?", ["cat", "trout", "frog"], 0
        data.hint, data.subject, data.grade, data.image, data.image_path = "", "natural science", "grade3", None, None
    return data
