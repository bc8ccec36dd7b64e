"""Issue 16: knowledge as text (facts ahead of the question, trimmed lowest score first), the graph
path as the paper means it (inverse edges, anchor marker, Eq. 5 adapter direction), legacy
checkpoints, and the late-fusion prior. Real shards, tiny backbones."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmkg.kg_store.graph import build_csr
from mmkg.model import checkpoint as ckpt
from mmkg.model import resolve_model
from mmkg.model.adapters import CrossModalAdapter
from mmkg.model.batching import Collator
from mmkg.model.fusion import distance_prior, fit_beta, hop_distances, kg_prior, subgraph_prior
from mmkg.model.prompt import FACTS_HEADER, FACTS_SEPARATOR, format_fact
from mmkg.model.tasks import Example, facts_of


def _build(graph_info, **kw):
    torch.manual_seed(0)
    kw = {"kg_hidden": 16, "gnn_layer": "gat", "vision": None, **kw}
    return resolve_model("mrmkg", backbone="tiny-llama", node_dim=graph_info["dim"],
                         num_relations=graph_info["num_relations"], **kw)


def _with_facts(mars_items, n=3):
    items = [it for it in mars_items if len(it[1].facts) >= n]
    assert items, "the real shards should give examples with several facts"
    return items


# ---- knowledge as text ------------------------------------------------------------------------

def test_facts_come_from_the_shard_labels_best_score_first():
    row = {"head_labels": ["a", "b", "c"], "relation_labels": ["r1", "r2", "r3"], "tail_labels": ["x", "y", "z"],
           "scores": np.array([0.2, 0.9, 0.5], np.float32)}
    assert [f[:3] for f in facts_of(row)] == [("b", "r2", "y"), ("c", "r3", "z"), ("a", "r1", "x")]
    assert [f[0] for f in facts_of(row, skip=1)] == ["c", "a"]  # kg-triple leaves its asked triple out


def test_facts_text_appears_in_the_prompt_before_the_question(graph_info, mars_items, kg_text):
    graph, ex = _with_facts(mars_items)[0]
    net = _build(graph_info, knowledge="text", soft_prompt_tokens=2, max_text_length=4096)
    text = net.prompt_text(ex)
    facts = "".join(format_fact(h, r, t) for h, r, t, _ in ex.facts)
    assert text == f"{FACTS_HEADER}{facts}{FACTS_SEPARATOR}{ex.prompt}"  # all fit: every fact, in score order
    assert [s for *_, s in ex.facts] == sorted((s for *_, s in ex.facts), reverse=True)
    # the LLM reads exactly that text after the prefix (byte tokenizer: ids = bytes of the text)
    batch = Collator.for_model(net, kg_text=kg_text)([(graph, ex)])
    embeds, mask, _ = net.prompt(batch)
    ids = net.llm.encode([text])[0]
    assert int(mask.sum()) == 2 + len(ids)
    assert torch.allclose(embeds[0, 2:2 + len(ids)], net.llm.embed(torch.tensor(ids)))
    # without knowledge text the same model family reads the question alone
    plain = _build(graph_info, knowledge="none", soft_prompt_tokens=2, max_text_length=4096)
    assert plain.prompt_text(ex) == ex.prompt and not plain.knowledge_text


def test_facts_are_trimmed_lowest_score_first_and_the_question_is_never_cut(graph_info, mars_items):
    _, ex = _with_facts(mars_items)[0]
    net = _build(graph_info, knowledge="both")
    q = len(ex.prompt.encode())
    fixed = q + len(FACTS_HEADER) + len(FACTS_SEPARATOR)
    sizes = [len(format_fact(h, r, t).encode()) for h, r, t, _ in ex.facts]
    for k in range(len(ex.facts) + 1):
        net.max_text_length = fixed + sum(sizes[:k]) + (sizes[k] - 1 if k < len(sizes) else 0)
        ids, kept = net.text_ids([ex])[0]
        assert kept == k and len(ids) <= net.max_text_length
        # the k best-scored facts stay (what went is the lowest-scored tail), the question is whole
        best = "".join(format_fact(h, r, t) for h, r, t, _ in ex.facts[:k])
        expected = f"{FACTS_HEADER}{best}{FACTS_SEPARATOR}{ex.prompt}" if k else ex.prompt
        assert net.prompt_text(ex) == expected
        assert ids == net.llm.encode([expected])[0]
    net.max_text_length = q  # no room at all: the question alone, uncut
    assert net.prompt_text(ex) == ex.prompt


def test_max_triples_cuts_the_facts_like_the_graph(mars_graphs, kg_text):
    from mmkg.model.batching import TaskDataset
    from mmkg.model.tasks import resolve_task
    ds = TaskDataset(mars_graphs, task=resolve_task("mars"), kg_text=kg_text, max_triples=3)
    assert all(len(ex.facts) <= 3 for _, ex in ds.items)
    full = TaskDataset(mars_graphs, task=resolve_task("mars"), kg_text=kg_text)
    for (_, cut), (_, ex) in zip(ds.items, full.items):
        assert cut.facts == ex.facts[:3]
    some = [ex.query_id for _, ex in full.items[:2]]
    picked = TaskDataset(mars_graphs, task=resolve_task("mars"), kg_text=kg_text, select=some)
    assert [ex.query_id for _, ex in picked.items] == some


def test_knowledge_switch_sets_the_paths(graph_info):
    assert {k: (_build(graph_info, knowledge=k, soft_prompt_tokens=1).use_kg,
                _build(graph_info, knowledge=k, soft_prompt_tokens=1).knowledge_text)
            for k in ("gnn", "text", "both", "none")} == {
        "gnn": (True, False), "text": (False, True), "both": (True, True), "none": (False, False)}
    assert _build(graph_info, use_kg=False).knowledge == "none"  # the old switch still works
    with pytest.raises(ValueError, match="knowledge must be one of"):
        _build(graph_info, knowledge="graph")


# ---- graph path ------------------------------------------------------------------------------

def test_inverse_edges_and_the_anchor_marker_are_in_the_batch(graph_info, mars_items, kg_text):
    net = _build(graph_info)
    R = graph_info["num_relations"]
    items = mars_items[:3]
    batch = Collator.for_model(net, kg_text=kg_text)(items)
    plain = Collator(kg_text=kg_text)(items)
    E = plain.graph.edge_index.shape[1]
    assert E > 0 and batch.inverse_relations == R
    g = batch.graph
    assert g.edge_index.shape[1] == 2 * E
    assert torch.equal(g.edge_index[:, E:], plain.graph.edge_index.flip(0))
    assert torch.equal(g.edge_type[E:], plain.graph.edge_type + R) and int(g.edge_type.max()) < 2 * R
    assert torch.equal(g.edge_attr[E:], plain.graph.edge_attr)
    # the anchor is the question entity's node (the shard's question_entity), -1 when not in the subgraph
    for k, (_, ex) in enumerate(items):
        a = int(batch.anchor_node[k])
        if a >= 0:
            assert int(g.node_ids[a]) == ex.anchor_entity and int(g.batch[a]) == k
        else:
            assert ex.anchor_entity not in plain.graph.node_ids[plain.graph.batch == k].tolist()
    assert (batch.anchor_node >= 0).any(), "some question entity should be in its subgraph"
    # the model gives the same prompt whether the loader or the model added the inverse edges
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net.prompt(batch)[0], net.prompt(plain)[0], atol=1e-5)
    # and the marker changes the anchor's state: it is used
    enc = net.kg_encoder.eval()
    with torch.no_grad():
        marked = enc(g.x, g.edge_index, g.edge_type, g.edge_attr, anchor=batch.anchor_node)
        unmarked = enc(g.x, g.edge_index, g.edge_type, g.edge_attr)
    a = int(batch.anchor_node[batch.anchor_node >= 0][0])
    assert not torch.allclose(marked[a], unmarked[a])
    # without inverse edges the encoder refuses a batch that carries them
    legacy = _build(graph_info, inverse_edges=False)
    assert Collator.for_model(legacy, kg_text=kg_text).inverse_relations is None
    with pytest.raises(ValueError, match="inverse"):
        legacy.prompt(batch)


def test_adapter_direction_switch_changes_which_side_attends():
    torch.manual_seed(0)
    B, n, T, d, h = 2, 5, 7, 6, 8
    tokens, text = torch.randn(B, n, d), torch.randn(B, T, h)
    token_mask = torch.ones(B, n, dtype=torch.bool)
    token_mask[1, 3:] = False
    text_mask = torch.ones(B, T, dtype=torch.bool)
    text_mask[0, 5:] = False
    kg_side = CrossModalAdapter(in_dim=d, hidden_size=h, direction="kg_to_text")
    text_side = CrossModalAdapter(in_dim=d, hidden_size=h, direction="text_to_kg")
    out_kg = kg_side(tokens, token_mask, text, text_mask)
    out_text = text_side(tokens, token_mask, text, text_mask)
    # kg_to_text: each knowledge token attends over the text; one output per knowledge token
    assert out_kg.shape == (B, n, h) and kg_side.last_attention.shape == (B, n, T)
    assert torch.allclose(kg_side.last_attention.sum(-1), torch.ones(B, n))
    assert float(kg_side.last_attention[0, :, 5:].abs().max()) == 0.0  # padded text gets no attention
    # text_to_kg (Eq. 5): each text token attends over the knowledge; one output per text token
    assert out_text.shape == (B, T, h) and text_side.last_attention.shape == (B, T, n)
    assert torch.allclose(text_side.last_attention.sum(-1), torch.ones(B, T))
    assert float(text_side.last_attention[1, :, 3:].abs().max()) == 0.0  # padded nodes get no attention
    assert torch.equal(text_side.output_mask(token_mask, text_mask), text_mask)
    # the selection is driven by the text: the text-side query weights get a gradient
    out_text.sum().backward()
    assert text_side.query.weight.grad.abs().sum() > 0
    # a graph without nodes gives no knowledge tokens in text_to_kg
    empty = torch.zeros(B, n, dtype=torch.bool)
    assert not text_side.output_mask(empty, text_mask).any()
    with pytest.raises(ValueError, match="direction"):
        CrossModalAdapter(in_dim=d, hidden_size=h, direction="both")


def test_checkpoints_from_before_the_new_options_load_as_they_were_built(graph_info, mars_items, kg_text, tmp_path):
    net = _build(graph_info, adapter_direction="kg_to_text", inverse_edges=False, anchor_marker=False).eval()
    ckpt.save_checkpoint(tmp_path / "old", model=net, model_name="mrmkg")
    cfg_path = tmp_path / "old" / ckpt.CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    for key in ("adapter_direction", "inverse_edges", "anchor_marker", "knowledge"):
        cfg["model_kwargs"].pop(key)
    cfg_path.write_text(json.dumps(cfg))
    again = ckpt.load_model(tmp_path / "old").eval()
    assert again.knowledge_adapter.direction == "kg_to_text" and again.kg_encoder.anchor is None
    batch = Collator.for_model(again, kg_text=kg_text)(mars_items[:2])
    with torch.no_grad():
        assert torch.allclose(again(batch)["loss"], net(batch)["loss"], atol=1e-5)


# ---- late fusion prior -----------------------------------------------------------------------

def test_kg_prior_subgraph_and_distance_terms():
    # 0 - 1 - 2 - 3, and 4 isolated
    graph = build_csr(np.array([0, 1, 2]), np.array([0, 0, 1]), np.array([1, 2, 3]), num_nodes=5)
    assert hop_distances(graph, 0, 2).tolist() == [0, 1, 2, -1, -1]
    cands = np.array([0, 1, 2, 3, 4, -1])
    assert distance_prior(graph, 0, cands, max_hops=2).tolist() == [0.0, 1.0, 0.5, 0.0, 0.0, 0.0]
    sub = subgraph_prior([0, 1], [1, 2], [0.3, 0.8], cands)
    assert sub.tolist() == pytest.approx([0.3, 0.8, 0.8, 0.0, 0.0, 0.0])
    row = {"question_entity": 0, "head_ids": [0, 1], "tail_ids": [1, 2], "scores": [0.3, 0.8]}
    prior = kg_prior(row, cands, graph, max_hops=2)
    assert prior.tolist() == pytest.approx([0.0, 1.8, 1.3, 0.0, 0.0, 0.0])  # the question itself gets none


def test_fit_beta_uses_the_prior_only_when_it_helps():
    llm = [np.array([0.0, -1.0, -2.0]), np.array([0.0, -1.0, -2.0])]
    helpful = [np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])]
    beta, table = fit_beta(llm, helpful, [2, 1])
    assert beta > 0 and table[beta] == 1.0 and table[0.0] < 1.0
    beta, table = fit_beta(llm, helpful, [0, 0])  # the LLM is right already: the prior can only hurt
    assert beta == 0.0


def test_example_defaults_keep_older_callers_working():
    ex = Example(query_id="q", prompt="p", target="t")
    assert ex.facts == [] and ex.anchor_entity == -1
