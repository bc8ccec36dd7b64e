"""Fixtures of the model tests: real shards (MarKG sub-store, minilm vectors, a few MARS dev and
ScienceQA test queries, built by retrieval's `tests/retrieval/shards_fixture.py` once per
session), the KG text of that store, and MARS examples over those shards.

Building the shards embeds the sub-store with minilm (minutes on a busy 2-core box); set
`MMKG_TEST_SHARDS_ROOT=<dir>` to build them once there and reuse them across sessions
(the fixture is idempotent).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmkg.kg_store import open_store
from mmkg.model.batching import TaskDataset
from mmkg.model.data import open_graphs
from mmkg.model.kg_text import KGText
from mmkg.model.tasks import resolve_task


@pytest.fixture(scope="session")
def real_shards(data_dir, tmp_path_factory) -> dict:
    from tests.retrieval import shards_fixture as sf
    root = os.environ.get("MMKG_TEST_SHARDS_ROOT")
    return sf.build_test_shards(data_dir, Path(root) if root else sf.shared_root(tmp_path_factory))


@pytest.fixture(scope="session")
def store(real_shards):
    return open_store(real_shards["kg"])


@pytest.fixture(scope="session")
def kg_text(store) -> KGText:
    return KGText.from_store(store)


@pytest.fixture(scope="session")
def mars_graphs(real_shards):
    return open_graphs(real_shards["kg"], [real_shards["mars/dev"]], resolve_task("mars").fields)


@pytest.fixture(scope="session")
def graph_info(mars_graphs, store) -> dict:
    return {"dim": int(mars_graphs.dim), "num_relations": int(store.num_relations)}


@pytest.fixture(scope="session")
def mars_items(mars_graphs, kg_text) -> list:
    ds = TaskDataset(mars_graphs, task=resolve_task("mars"), kg_text=kg_text)
    items = [ds[i] for i in range(len(ds))]
    assert any(g.edge_index.shape[1] > 0 for g, _ in items), "the real shards should hold some triples"
    return items
