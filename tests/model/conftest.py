"""Fixtures of the model tests: shard graphs, KG text and task examples.

Real shards (retrieval's `tests/retrieval/shards_fixture.py`: MarKG store, minilm vectors, a
handful of MARS and ScienceQA queries) are built once per session.
"""
from __future__ import annotations

import pytest

from model.batching import TaskDataset
from model.tasks import resolve_task
from tests.model import synthetic


@pytest.fixture(scope="session")
def kg_text():
    return synthetic.synthetic_kg()


@pytest.fixture(scope="session")
def graph_info():
    return {"dim": synthetic.DIM, "num_relations": synthetic.NUM_RELATIONS}


@pytest.fixture(scope="session")
def mars_items(kg_text):
    graphs = [synthetic.synthetic_graph(i) for i in range(6)] + [synthetic.synthetic_graph(99, n_nodes=0)]
    ds = TaskDataset(graphs, task=resolve_task("mars"), kg=kg_text)
    return [ds[i] for i in range(len(ds))]
