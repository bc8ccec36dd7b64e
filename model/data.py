"""Shard directories → task datasets (the only data source of training and evaluation).

A stage names its shards either as directories or as `{dataset, split, key}` under
`<kg>/subgraphs/`; `key` may be left out when exactly one finished shard set exists there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow.parquet as pq
from torch.utils.data import ConcatDataset, Dataset

from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.shards import is_complete, part_files, subgraph_rel
from mmkg.model.batching import TaskDataset
from mmkg.model.kg_text import KGText
from mmkg.model.tasks import resolve_task

ShardSpec = str | Path | Mapping[str, Any]


def resolve_shard_dirs(kg: str | Path, shards: ShardSpec | Sequence[ShardSpec]) -> list[Path]:
    specs = [shards] if isinstance(shards, (str, Path, Mapping)) else list(shards)
    out = []
    for spec in specs:
        if isinstance(spec, Mapping):
            base = Path(kg) / subgraph_rel(spec["dataset"], spec["split"], spec.get("key") or "_")
            if spec.get("key") is None:
                found = sorted(p for p in base.parent.glob("*") if is_complete(p)) if base.parent.exists() else []
                if len(found) != 1:
                    raise KGStoreError(f"{len(found)} finished shard sets under {base.parent}; name one with `key:` "
                                       f"({', '.join(p.name for p in found) or 'run `mmkg retrieve` first'})")
                base = found[0]
            spec = base
        d = Path(spec)
        if not is_complete(d):
            raise KGStoreError(f"{d} is not a finished shard directory (no _SUCCESS)")
        out.append(d)
    return out


def shard_columns(shard_dir: Path) -> set[str]:
    parts = part_files(shard_dir)
    return set(pq.read_schema(parts[0]).names) if parts else set()


def open_graphs(kg: str | Path, shard_dirs: Sequence[Path], fields: Sequence[str]):
    """`mmkg.retrieval.dataset.SubgraphDataset` with the task fields the shards actually have."""
    from mmkg.retrieval.dataset import SubgraphDataset
    available = set.intersection(*(shard_columns(d) for d in shard_dirs))
    return SubgraphDataset(list(shard_dirs), kg, fields=[f for f in fields if f in available])


def build_task_dataset(*, kg: str | Path, kg_text: KGText, shards: ShardSpec | Sequence[ShardSpec],
                       task: str | Sequence[str], task_kwargs: Mapping[str, Any] | None = None,
                       max_triples: int | None = None, limit: int | None = None,
                       query_ids: Sequence[str] | None = None) -> tuple[Dataset, Any]:
    """(dataset of (graph, example), the underlying SubgraphDataset) for one or several tasks;
    `query_ids` keeps only those shard rows (a sample of the split)."""
    dirs = resolve_shard_dirs(kg, shards)
    tasks = [resolve_task(t, **dict((task_kwargs or {}).get(t, {}))) for t in ([task] if isinstance(task, str) else task)]
    graphs = open_graphs(kg, dirs, sorted({f for t in tasks for f in t.fields}))
    parts = [TaskDataset(graphs, task=t, kg_text=kg_text, max_triples=max_triples, limit=limit, select=query_ids)
             for t in tasks]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise KGStoreError(f"no usable examples for task(s) {task} in {', '.join(map(str, dirs))}")
    return (parts[0] if len(parts) == 1 else ConcatDataset(parts)), graphs
