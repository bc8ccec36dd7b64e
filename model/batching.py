"""Shard graphs + task examples → `ModelBatch` (what every model variant's forward takes)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmkg.model.kg_text import KGText
from mmkg.model.tasks import Example, Task
from mmkg.retrieval.datasets.base import limit_order

logger = logging.getLogger(__name__)

def top_triples(data: Any, n: int | None) -> Any:
    """The subgraph restricted to its `n` best-scored edges, nodes re-indexed (N = 10/20 ablation).

    Nodes no kept edge touches are dropped; a graph with ≤ n edges comes back unchanged.
    """
    from torch_geometric.data import Data
    n_edges = int(data.edge_index.shape[1])
    if n is None or n_edges <= n:
        return data
    score = getattr(data, "edge_score", None)
    order = torch.argsort(score, descending=True, stable=True)[:n] if score is not None else torch.arange(n)
    order = order.sort().values  # keep the shard's edge order among the kept edges
    edge_index = data.edge_index[:, order]
    keep = torch.unique(edge_index)
    remap = torch.full((data.x.shape[0],), -1, dtype=torch.long)
    remap[keep] = torch.arange(len(keep))
    out = Data(x=data.x[keep], edge_index=remap[edge_index], edge_type=data.edge_type[order],
               edge_attr=data.edge_attr[order], node_ids=torch.as_tensor(data.node_ids)[keep])
    if score is not None:
        out.edge_score = score[order]
    return out


class TaskDataset(Dataset):
    """(graph, example) pairs of one task over a shard dataset; rows a task cannot use are skipped.

    `select` keeps only the shard rows with these query ids (a sample of a split; shard order is
    kept); `max_triples` keeps the N best-scored triples, in the graph and in `Example.facts`.
    """

    def __init__(self, graphs: Sequence[Any], *, task: Task, kg_text: KGText, max_triples: int | None = None,
                 limit: int | None = None, select: Collection[str] | None = None):
        self.graphs = graphs
        self.items: list[tuple[int, Example]] = []
        skipped = 0
        wanted = None if select is None else {str(q) for q in select}
        # `limit` takes a seeded random sample, kept in shard order: a prefix of a MARS split would be
        # a few relations only (its files are sorted by mode and relation)
        for i in (int(k) for k in limit_order(len(graphs), limit)):
            if limit is not None and len(self.items) >= limit:
                break
            if wanted is not None and str(graphs.query_ids[i]) not in wanted:
                continue
            # the shard row alone decides (no `Data`, no vectors): each graph is built once, in __getitem__
            ex = task.make_example(graphs.row(i), kg_text, i)
            if ex is None:
                skipped += 1
            else:
                if max_triples is not None:
                    ex.facts = ex.facts[:max_triples]  # best first, as `top_triples` cuts the graph
                self.items.append((i, ex))
        self.items.sort(key=lambda item: item[0])
        self.max_triples = max_triples
        self.skipped = skipped
        if skipped:
            logger.info("task %s: %d of %d shard rows give no example", task.name, skipped, skipped + len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> tuple[Any, Example]:
        i, ex = self.items[idx]
        return top_triples(self.graphs[i], self.max_triples), ex


def add_inverse_edges(graph: Any, num_relations: int) -> Any:
    """Every edge h → t also as t → h with its own relation type r + `num_relations` (same relation
    vector as edge feature), so a node hears from its tails too. In place on a `Data`/`Batch`.

    Shapes: edge_index (2, E) -> (2, 2E); edge_type (E,) -> (2E,); edge_attr (E, d) -> (2E, d)
    """
    ei = graph.edge_index
    graph.edge_index = torch.cat([ei, ei.flip(0)], dim=1)
    graph.edge_type = torch.cat([graph.edge_type, graph.edge_type + num_relations])
    graph.edge_attr = torch.cat([graph.edge_attr, graph.edge_attr])
    return graph


@dataclass
class ModelBatch:
    """A collated batch.

    Shapes: graph.x (N, d), graph.edge_index (2, E), graph.edge_attr (E, d), graph.batch (N,);
    images (B, 3, H, W) or None; has_image (B,); align_node (B,) global node index or -1;
    anchor_node (B,) global node index of the anchor (question) entity or -1.
    `inverse_relations`: None, or R when the collator added inverse edges (types R..2R-1).
    """

    examples: list[Example]
    graph: Any
    images: Tensor | None
    has_image: Tensor
    align_node: Tensor
    triples: list[list[tuple[str, str, str]]] = field(default_factory=list)
    anchor_node: Tensor | None = None
    inverse_relations: int | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ModelBatch":
        self.graph = self.graph.to(device, non_blocking=non_blocking)
        self.images = self.images.to(device, non_blocking=non_blocking) if self.images is not None else None
        self.has_image = self.has_image.to(device, non_blocking=non_blocking)
        self.align_node = self.align_node.to(device, non_blocking=non_blocking)
        if self.anchor_node is not None:
            self.anchor_node = self.anchor_node.to(device, non_blocking=non_blocking)
        return self

    def pin_memory(self) -> "ModelBatch":
        """Page-locked host tensors (what `DataLoader(pin_memory=True)` calls in its pinning thread),
        so `.to(cuda, non_blocking=True)` copies asynchronously."""
        self.graph = self.graph.pin_memory()
        self.images = self.images.pin_memory() if self.images is not None else None
        self.has_image = self.has_image.pin_memory()
        self.align_node = self.align_node.pin_memory()
        if self.anchor_node is not None:
            self.anchor_node = self.anchor_node.pin_memory()
        return self


class Collator:
    """Collate (graph, example) pairs; loads and preprocesses images on the loader side.

    `inverse_relations=R` adds the inverse of every edge with relation type r + R
    (`add_inverse_edges`); `Collator.for_model(net, kg_text)` takes it (and the image transform)
    from the model, so the loader does the work.
    """

    def __init__(self, *, kg_text: KGText, image_transform: Callable[[list], Tensor] | None = None,
                 inverse_relations: int | None = None):
        self.kg_text = kg_text
        self.image_transform = image_transform
        self.inverse_relations = inverse_relations

    @classmethod
    def for_model(cls, net: Any, *, kg_text: KGText) -> "Collator":
        return cls(kg_text=kg_text, image_transform=getattr(net, "image_transform", None),
                   inverse_relations=getattr(net, "inverse_relations", None))

    @staticmethod
    def _node_of(graph: Any, plain: Sequence[Any], entities: Sequence[int]) -> Tensor:
        """Global node index of each example's entity in the batch graph, or -1."""
        out = []
        for k, (g, entity) in enumerate(zip(plain, entities)):
            hit = (g.node_ids == entity).nonzero().flatten() if entity >= 0 else []
            out.append(int(graph.ptr[k]) + int(hit[0]) if len(hit) else -1)
        return torch.tensor(out, dtype=torch.long)

    def __call__(self, items: list[tuple[Any, Example]]) -> ModelBatch:
        from torch_geometric.data import Batch, Data
        graphs, examples = zip(*items)
        plain = [Data(x=g.x.float(), edge_index=g.edge_index.long(), edge_type=g.edge_type.long(),
                      edge_attr=g.edge_attr.float(), node_ids=torch.as_tensor(g.node_ids).long(),
                      num_nodes=int(g.x.shape[0])) for g in graphs]
        graph = Batch.from_data_list(plain)
        if self.inverse_relations is not None:
            add_inverse_edges(graph, self.inverse_relations)
        images, has_image = self._images(examples)
        return ModelBatch(examples=list(examples), graph=graph, images=images, has_image=has_image,
                          align_node=self._node_of(graph, plain, [ex.align_entity for ex in examples]),
                          anchor_node=self._node_of(graph, plain, [ex.anchor_entity for ex in examples]),
                          inverse_relations=self.inverse_relations,
                          triples=[self.kg_text.triples_of(g) for g in graphs])

    def _images(self, examples: Sequence[Example]) -> tuple[Tensor | None, Tensor]:
        has = torch.zeros(len(examples), dtype=torch.bool)
        if self.image_transform is None:
            return None, has
        from PIL import Image
        loaded: dict[int, Any] = {}
        for k, ex in enumerate(examples):
            if ex.image is None:
                continue
            try:
                with Image.open(ex.image) as im:
                    loaded[k] = im.convert("RGB")
            except (OSError, ValueError) as e:  # a missing/corrupt image degrades to "no image"
                logger.warning("cannot read image %s for %s: %s", ex.image, ex.query_id, e)
        if not loaded:
            return None, has
        pixels = self.image_transform(list(loaded.values()))
        images = pixels.new_zeros(len(examples), *pixels.shape[1:])
        for row, k in enumerate(loaded):
            images[k] = pixels[row]
            has[k] = True
        return images, has
