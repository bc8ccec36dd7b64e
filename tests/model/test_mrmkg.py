"""MR-MKG: the generic variant template plus its own switches (ablations, alignment, images)."""
from __future__ import annotations

import torch

from mmkg.model import resolve_model
from mmkg.model.batching import Collator
from tests.model import cases


class TestMRMKG(cases.ModelTestCase):
    name = "mrmkg"
    kwargs = {"kg_hidden": 32, "gnn_layer": "gat"}


def test_rgat_knowledge_encoder_trains(graph_info, mars_items, kg_text):
    net = TestMRMKG().build("tiny-t5", graph_info, gnn_layer="rgat", gnn_layer_kwargs={"num_bases": 2})
    net(Collator(kg_text=kg_text)(mars_items[:2]))["loss"].backward()
    conv = net.kg_encoder.layers[0].conv
    assert type(conv).__name__ == "RGATConv"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())


def _build(graph_info, **kw):
    torch.manual_seed(0)
    return resolve_model("mrmkg", backbone="tiny-llama", node_dim=graph_info["dim"],
                         num_relations=graph_info["num_relations"], kg_hidden=32, gnn_layer="gat", **kw)


def test_no_kg_ablation_has_no_kg_parameters_and_ignores_the_graph(graph_info, mars_items, kg_text):
    full, no_kg = _build(graph_info, adapter_direction="kg_to_text"), _build(graph_info, use_kg=False)
    assert "kg_encoder" in full.parameter_counts()["trainable_by_part"]
    parts = no_kg.parameter_counts()["trainable_by_part"]
    assert "kg_encoder" not in parts and "knowledge_adapter" not in parts
    batch = Collator(kg_text=kg_text)(mars_items[:2])
    assert batch.graph.num_nodes > 0
    embeds_full, mask_full, _ = full.prompt(batch)
    embeds_text, mask_text, _ = no_kg.prompt(batch)
    # kg_to_text: knowledge tokens (one per subgraph node) come before the text
    n_nodes = torch.bincount(batch.graph.batch, minlength=2)
    assert torch.equal(mask_full.sum(1), mask_text.sum(1) + n_nodes)
    # text_to_kg (the paper's Eq. 5, the default): one knowledge token per question token
    paper = _build(graph_info)
    _, mask_paper, _ = paper.prompt(batch)
    assert torch.equal(mask_paper.sum(1), 2 * mask_text.sum(1))


def test_alignment_loss_is_active_with_an_image_of_a_subgraph_entity(graph_info, mars_items, kg_text, data_dir):
    from mmkg.model.kg_text import KGText
    graph, ex = next((g, e) for g, e in mars_items if g.num_nodes > 1)
    entity = int(graph.node_ids[0])
    kg = KGText(entity_labels=kg_text.entity_labels, entity_keys=kg_text.entity_keys,
                relation_labels=kg_text.relation_labels,
                entity_images={entity: data_dir / "scienceqa/images/test/23/image.png"})
    net = _build(graph_info, alignment_weight=0.5)
    ex = type(ex)(**{**ex.__dict__, "image": kg.image_of(entity), "align_entity": entity})
    other = next(item for item in mars_items if item[1].query_id != ex.query_id)
    batch = Collator(kg_text=kg, image_transform=net.image_transform)([(graph, ex), other])
    assert batch.has_image.tolist() == [True, False]
    assert int(batch.align_node[0]) == 0 and int(batch.align_node[1]) == -1
    out = net(batch)
    assert out["alignment_loss"] > 0
    out["loss"].backward()
    assert net.visual_adapter.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.vision.parameters())


def test_no_image_and_no_alignment_switches(graph_info):
    net = _build(graph_info, use_image=False)
    assert "visual_adapter" not in net.parameter_counts()["trainable_by_part"]
    assert not net.use_alignment and net.image_transform is None


def test_soft_prompt_control_trains_only_its_tokens_and_round_trips(graph_info, mars_items, kg_text, tmp_path):
    from mmkg.model import checkpoint as ckpt
    net = _build(graph_info, use_kg=False, vision=None, soft_prompt_tokens=5)
    assert net.parameter_counts()["trainable_by_part"] == {"soft_prompt": 5 * net.llm.hidden_size}
    batch = Collator(kg_text=kg_text)(mars_items[:2])
    embeds, mask, _ = net.prompt(batch)
    text_only = _build(graph_info, use_kg=False, vision=None)
    assert torch.equal(mask.sum(1), text_only.prompt(batch)[1].sum(1) + 5)
    net(batch)["loss"].backward()
    assert net.soft_prompt.tokens.grad.abs().sum() > 0
    with torch.no_grad():
        net.soft_prompt.tokens.add_(1.0)
    ckpt.save_checkpoint(tmp_path / "ck", model=net, model_name="mrmkg")
    again = ckpt.load_model(tmp_path / "ck")
    assert torch.equal(again.soft_prompt.tokens, net.soft_prompt.tokens)
