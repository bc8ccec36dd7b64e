"""Shards → PyG Data / Batch with real entity and relation vectors; multi-worker loading."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from mmkg.kg_store.shards import read_shards
from mmkg.kg_store.vectors import load_vectors
from mmkg.retrieval.batch import retrieve_dataset
from mmkg.retrieval.dataset import SubgraphDataset, subgraph_loader
from mmkg.retrieval.retriever import RetrievalConfig
from tests.retrieval.shards_fixture import ENCODER, build_test_shards, shared_root


@pytest.fixture(scope="module")
def shards(data_dir, tmp_path_factory):
    return build_test_shards(data_dir, shared_root(tmp_path_factory))


@pytest.fixture(scope="module")
def dataset(shards):
    return SubgraphDataset(shards["mars/dev"], fields=["answer_entity", "example"])


def test_data_holds_the_rows_triples_and_store_vectors(dataset, shards):
    from mmkg.kg_store import open_store
    store = open_store(shards["kg"])
    ent, ent_ids = load_vectors(store, ENCODER, "entity")
    rel, rel_ids = load_vectors(store, ENCODER, "relation")
    rows = read_shards(shards["mars/dev"]).to_pylist()
    assert len(dataset) == len(rows) == 8 and dataset.dim == ent.shape[1]
    for i, row in enumerate(rows):
        d = dataset[i]
        assert d.query_id == row["query_id"] and d.answer_entity == row["answer_entity"]
        heads = d.node_ids[d.edge_index[0]].tolist()
        tails = d.node_ids[d.edge_index[1]].tolist()
        assert heads == row["head_ids"] and tails == row["tail_ids"]
        assert d.edge_type.tolist() == row["relation_ids"] and d.triple_ids.tolist() == row["triple_ids"]
        assert d.num_nodes == len(set(heads) | set(tails)) == d.x.shape[0]
        row_of = {int(e): k for k, e in enumerate(ent_ids)}
        np.testing.assert_allclose(d.x.numpy(), np.asarray(ent, np.float32)[[row_of[n] for n in d.node_ids.tolist()]])
        rrow = {int(r): k for k, r in enumerate(rel_ids)}
        rel_rows = [rrow[r] for r in row["relation_ids"]]
        np.testing.assert_allclose(d.edge_attr.numpy(), np.asarray(rel, np.float32)[rel_rows])
        np.testing.assert_allclose(d.edge_score.numpy(), np.asarray(row["scores"], np.float32))
        assert d.x.dtype == torch.float32 and d.edge_index.dtype == torch.long


def test_vectorised_batches_equal_pyg_batches_of_per_row_data(dataset):
    from mmkg.retrieval.dataset import collate_rows
    for rows in ([0, 1, 2], [7, 3], [5]):
        ours = collate_rows(dataset, rows)
        pyg = Batch.from_data_list([dataset[i] for i in rows])
        assert ours.num_graphs == pyg.num_graphs == len(rows) and ours.query_id == pyg.query_id
        for key in ("x", "node_ids", "edge_index", "edge_type", "edge_attr", "edge_score", "triple_ids", "batch", "ptr"):
            assert torch.equal(ours[key], pyg[key]), key


def test_loader_batches_deterministically_with_workers(dataset):
    serial = list(subgraph_loader(dataset, batch_size=3))
    parallel = list(subgraph_loader(dataset, batch_size=3, num_workers=2))
    assert [b.num_graphs for b in serial] == [3, 3, 2]
    for a, b in zip(serial, parallel):
        assert isinstance(b, Batch) and a.query_id == b.query_id
        for key in ("x", "edge_index", "edge_type", "edge_attr", "batch", "node_ids"):
            assert torch.equal(a[key], b[key]), key
    assert [q for b in serial for q in b.query_id] == dataset.query_ids
    shuffled = [q for b in subgraph_loader(dataset, batch_size=3, shuffle=True, seed=1) for q in b.query_id]
    again = [q for b in subgraph_loader(dataset, batch_size=3, shuffle=True, seed=1) for q in b.query_id]
    assert shuffled == again and sorted(shuffled) == sorted(dataset.query_ids)


def test_empty_subgraph_becomes_an_empty_graph(shards, tmp_path):
    from mmkg.kg_store import open_store
    store = open_store(shards["kg"])
    isolated = int(np.flatnonzero(store.graph.degree() == 0)[0])
    linked = int(np.flatnonzero(store.graph.degree() > 0)[0])
    key, linked_key = (store.table("entities", ["key"])["key"][i].as_py() for i in (isolated, linked))
    f = tmp_path / "isolated.jsonl"
    f.write_text(json.dumps({"id": "lonely", "text": "x", "entities": [key]}) + "\n"
                 + json.dumps({"id": "linked", "text": "x", "entities": [linked_key]}) + "\n")
    res = retrieve_dataset(shards["kg"], f"jsonl:{f}", RetrievalConfig(encoder=ENCODER, top_n=0))
    rows = read_shards(res.shard_dir, ["query_id", "empty"]).to_pylist()
    assert rows[0] == {"query_id": "lonely", "empty": True}
    ds = SubgraphDataset(res.shard_dir)
    d = ds[0]
    assert d.num_nodes == 0 and d.x.shape == (0, ds.dim) and d.edge_index.shape == (2, 0)
    batch = Batch.from_data_list([d, ds[1]])
    assert ds[1].num_nodes > 0 and batch.num_graphs == 2 and batch.x.shape[0] == ds[1].num_nodes
