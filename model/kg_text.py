"""Text of the KG: entity/relation labels and entity images, looked up by store id or key.

Built once per run from the store's `entities`, `relations` and `images` tables (11k MarKG
labels fit in a dict); tasks use it to turn shard rows (ids and keys) into prompts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class KGText:
    """Labels and images of a KG store (or of plain dicts, for synthetic tests)."""

    def __init__(self, *, entity_labels: dict[int, str], entity_keys: dict[str, int],
                 relation_labels: dict[int, str], entity_images: dict[int, Path] | None = None):
        self.entity_labels = entity_labels
        self.entity_keys = entity_keys
        self.relation_labels = relation_labels
        self.entity_images = entity_images or {}

    @classmethod
    def from_store(cls, store) -> "KGText":
        ents = store.table("entities", ["id", "key", "label"]).to_pydict()
        rels = store.table("relations", ["id", "label"]).to_pydict()
        labels = {int(i): (lb or k) for i, k, lb in zip(ents["id"], ents["key"], ents["label"])}
        keys = {k: int(i) for i, k in zip(ents["id"], ents["key"])}
        alias = store.table("same_as", ["key", "entity_id"]).to_pydict()
        for k, i in zip(alias["key"], alias["entity_id"]):
            keys.setdefault(k, int(i))
        images: dict[int, Path] = {}
        if store.has_table("images"):
            im = store.table("images", ["entity_id", "blob"]).to_pydict()
            for eid, blob in zip(im["entity_id"], im["blob"]):
                images.setdefault(int(eid), store.path(blob))  # first image of each entity, deterministic
        return cls(entity_labels=labels, entity_keys=keys,
                   relation_labels={int(i): lb for i, lb in zip(rels["id"], rels["label"])}, entity_images=images)

    def entity(self, entity_id: int) -> str:
        return self.entity_labels.get(int(entity_id), f"entity {int(entity_id)}")

    def entity_by_key(self, key: str) -> str:
        i = self.entity_keys.get(key)
        return self.entity(i) if i is not None else key

    def id_of(self, key: str) -> int:
        return self.entity_keys.get(key, -1)

    def relation(self, relation_id: int) -> str:
        return self.relation_labels.get(int(relation_id), f"relation {int(relation_id)}")

    def image_of(self, entity_id: int) -> Path | None:
        return self.entity_images.get(int(entity_id))

    def triples_of(self, data) -> list[tuple[str, str, str]]:
        """(head, relation, tail) labels of every edge of a PyG `Data`, in edge order."""
        if data.edge_index.numel() == 0:
            return []
        nodes = np.asarray(data.node_ids)
        h, t = data.edge_index.tolist()
        return [(self.entity(nodes[a]), self.relation(r), self.entity(nodes[b]))
                for a, b, r in zip(h, t, data.edge_type.tolist())]
