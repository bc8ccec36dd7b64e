"""Shards → PyG `Data` per query, batched to `Batch` by the PyG `DataLoader`.

Node features are the store's entity vectors and edge features its relation vectors, both
memory-mapped and opened lazily in each worker process (an mmap must not be pickled into
DataLoader workers: it would be copied whole). Rows come in shard order, so iteration is
deterministic unless the loader shuffles.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch_geometric.data import Data

from mmkg.kg_store import open_store
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.graph import segment_positions
from mmkg.kg_store.shards import BASE_SCHEMA, TRIPLE_LIST_COLUMNS, read_meta, read_shards

#: list columns kept as flat numpy arrays (a row is a slice); the key/label lists are read on demand
_LISTS = ("head_ids", "relation_ids", "tail_ids", "triple_ids", "scores")
_LABELS = ("head_labels", "relation_labels", "tail_labels")


def _flat(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Values and offsets of a list column (so a row is a slice, no Python lists)."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if arr.offset:  # a sliced array: rebase its offsets
        arr = pa.concat_arrays([arr])
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return arr.values.to_numpy(zero_copy_only=False), offsets


def kg_root_of(shard_dir: Path) -> Path:
    """`<kg>/subgraphs/<dataset>/<split>/<key>` → `<kg>`."""
    return shard_dir.resolve().parents[3]


class SubgraphDataset(torch.utils.data.Dataset):
    """PyG `Data` of the retrieved subgraph of each shard row.

    Args:
        shard_dirs (path or list of paths): finished shard directories (read in the given order).
        kg (path, optional): the KG root; by default the directory the shards live in.
        fields (list of str, optional): shard columns copied onto each `Data` as attributes
            (e.g. `answer_entity`, `choices`); strings and lists are batched as Python lists.
        encoder (str, optional): whose vectors give the features; by default the shards' encoder.

    Shapes per item: `x` (n_nodes, d) float32, `node_ids` (n_nodes,), `edge_index` (2, E) local
    head→tail, `edge_type` (E,) relation ids, `edge_attr` (E, d), `edge_score` (E,),
    `triple_ids` (E,); an empty subgraph has n_nodes = E = 0.
    """

    def __init__(self, shard_dirs: str | Path | Sequence[str | Path], kg: str | Path | None = None, *,
                 fields: Sequence[str] = (), encoder: str | None = None):
        dirs = [Path(shard_dirs)] if isinstance(shard_dirs, (str, Path)) else [Path(d) for d in shard_dirs]
        if not dirs:
            raise KGStoreError("SubgraphDataset needs at least one shard directory")
        metas = [read_meta(d) for d in dirs]
        encoders = {m["encoder"] for m in metas}
        if encoder is None and len(encoders) > 1:
            raise KGStoreError(f"shards of several encoders {sorted(encoders)}: pass encoder=")
        self.encoder = encoder or encoders.pop()
        self.kg_root = Path(kg) if kg is not None else kg_root_of(dirs[0])
        self.fields = tuple(fields)
        unknown = [f for f in self.fields if f in BASE_SCHEMA.names and f not in ("query_text", "seed_entity_ids")]
        if unknown:
            raise KGStoreError(f"fields {unknown} are subgraph columns, not query fields")
        table = pa.concat_tables([read_shards(d, ["query_id", *_LISTS, *_LABELS, *self.fields]) for d in dirs],
                                 promote_options="default")
        self.query_ids = table["query_id"].to_pylist()
        self._lists = {name: _flat(table[name]) for name in (*_LISTS, *_LABELS)}
        self._fields = {name: table[name].to_pylist() for name in self.fields}
        self._vectors: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    # ---- vectors, opened once per process -----------------------------------------------------
    def _open_vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self._vectors is None:
            from mmkg.kg_store.vectors import load_vectors
            store = open_store(self.kg_root)
            ent, ent_ids = load_vectors(store, self.encoder, "entity")
            rel, rel_ids = load_vectors(store, self.encoder, "relation")
            ent_row = np.full(store.num_entities, -1, np.int64)
            ent_row[ent_ids] = np.arange(len(ent_ids))
            rel_row = np.full(store.num_relations, -1, np.int64)
            rel_row[rel_ids] = np.arange(len(rel_ids))
            self._vectors = (ent, ent_row, rel, rel_row)
        return self._vectors

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_vectors"] = None  # reopened (mmap) in the worker
        return state

    @property
    def dim(self) -> int:
        return int(self._open_vectors()[0].shape[1])

    def __len__(self) -> int:
        return len(self.query_ids)

    def _row(self, name: str, i: int) -> np.ndarray:
        values, offsets = self._lists[name]
        return values[offsets[i]:offsets[i + 1]]

    def row(self, i: int) -> dict[str, Any]:
        """Shard row `i` as a record, without touching the vectors: `query_id`, the requested
        `fields`, and the subgraph's parallel triple lists (ids, labels, scores) — what tasks read
        to make their examples, so no `Data` is built just to decide whether a row is usable."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        rec: dict[str, Any] = {"query_id": self.query_ids[i]}
        rec.update({name: self._fields[name][i] for name in self.fields})
        rec.update({name: self._row(name, i) for name in self._lists if name in TRIPLE_LIST_COLUMNS})
        return rec

    @staticmethod
    def _gather(matrix: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """Rows of an mmap-ed matrix as float32; ids without a vector get zeros."""
        out = np.zeros((len(rows), matrix.shape[1]), np.float32)
        ok = rows >= 0
        out[ok] = matrix[rows[ok]]
        return torch.from_numpy(out)

    def __getitem__(self, i: int) -> Data:
        if not 0 <= i < len(self):
            raise IndexError(i)
        ent, ent_row, rel, rel_row = self._open_vectors()
        h, r, t = (self._row(n, i).astype(np.int64) for n in ("head_ids", "relation_ids", "tail_ids"))
        nodes, local = np.unique(np.concatenate([h, t]), return_inverse=True)
        data = Data(
            x=self._gather(ent, ent_row[nodes]),
            node_ids=torch.from_numpy(nodes.astype(np.int64)),
            edge_index=torch.from_numpy(local.reshape(2, -1).astype(np.int64)),
            edge_type=torch.from_numpy(r),
            edge_attr=self._gather(rel, rel_row[r]),
            edge_score=torch.from_numpy(self._row("scores", i).astype(np.float32)),
            triple_ids=torch.from_numpy(self._row("triple_ids", i).astype(np.int64)),
            query_id=self.query_ids[i],
            num_nodes=len(nodes),
        )
        for name in self.fields:
            data[name] = self._fields[name][i]
        return data


def collate_rows(dataset: SubgraphDataset, indices: Sequence[int]) -> Any:
    """Shard rows → one PyG `Batch` in a few vectorised steps, without a `Data` per row.

    Equal to `Batch.from_data_list([dataset[i] for i in indices])` on every tensor (nodes of each
    graph sorted by store id, edges in shard order, node indices offset per graph, `batch`, `ptr`);
    `query_id` and the requested fields are lists, one entry per graph."""
    from torch_geometric.data import Batch
    ent, ent_row, rel, rel_row = dataset._open_vectors()
    idx = np.asarray(indices, np.int64)
    offsets = dataset._lists["head_ids"][1]
    starts, lengths = offsets[idx], offsets[idx + 1] - offsets[idx]
    pos = segment_positions(starts, lengths)
    graph_of_edge = np.repeat(np.arange(len(idx), dtype=np.int64), lengths)
    h, r, t = (dataset._lists[n][0][pos].astype(np.int64) for n in ("head_ids", "relation_ids", "tail_ids"))
    span = len(ent_row)  # > every entity id: (graph, entity) packs into one sortable key
    keys, local = np.unique(np.concatenate([graph_of_edge * span, graph_of_edge * span]) + np.concatenate([h, t]),
                            return_inverse=True)
    node_graph, node_ids = keys // span, keys % span
    batch = Batch(
        x=SubgraphDataset._gather(ent, ent_row[node_ids]),
        node_ids=torch.from_numpy(node_ids),
        edge_index=torch.from_numpy(local.reshape(2, -1).astype(np.int64)),
        edge_type=torch.from_numpy(r),
        edge_attr=SubgraphDataset._gather(rel, rel_row[r]),
        edge_score=torch.from_numpy(dataset._lists["scores"][0][pos].astype(np.float32)),
        triple_ids=torch.from_numpy(dataset._lists["triple_ids"][0][pos].astype(np.int64)),
        batch=torch.from_numpy(node_graph),
        ptr=torch.from_numpy(np.searchsorted(node_graph, np.arange(len(idx) + 1)).astype(np.int64)),
    )
    batch.query_id = [dataset.query_ids[i] for i in idx.tolist()]
    for name in dataset.fields:
        batch[name] = [dataset._fields[name][i] for i in idx.tolist()]
    batch._num_graphs = len(idx)
    return batch


class _RowCollator:
    """Picklable collate_fn for DataLoader workers (the dataset reopens its mmaps in each)."""

    def __init__(self, dataset: SubgraphDataset):
        self.dataset = dataset

    def __call__(self, indices: list[int]) -> Any:
        return collate_rows(self.dataset, indices)


def subgraph_loader(dataset: SubgraphDataset, *, batch_size: int = 8, shuffle: bool = False,
                    num_workers: int = 0, seed: int = 0, **kwargs: Any):
    """A loader yielding PyG `Batch`es of shard rows (`collate_rows`: one vectorised step per batch
    instead of a `Data` per row); shuffling is seeded so runs repeat."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return torch.utils.data.DataLoader(range(len(dataset)), batch_size=batch_size, shuffle=shuffle,
                                       num_workers=num_workers, generator=generator,
                                       collate_fn=_RowCollator(dataset), **kwargs)
