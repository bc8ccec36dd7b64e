"""MKS2: the generic variant template (decoder-only), the hooks on the LLM blocks, a train → evaluate run."""
from __future__ import annotations

import pytest
import torch

from mmkg.model import load_backbone, resolve_model
from mmkg.model.batching import Collator
from mmkg.model.evaluation import evaluate
from mmkg.model.mks2 import SoftMixtureOfExperts, decoder_blocks
from mmkg.model.training import train
from tests.model import cases

SMALL = {"kg_hidden": 32, "gnn_layer": "gat", "memory_slots": 16, "memory_key_dim": 8, "num_experts": 2,
         "expert_dim": 8}


class TestMKS2(cases.ModelTestCase):
    name = "mks2"
    kwargs = SMALL

    def build(self, backbone, graph_info, **extra):
        if backbone == "tiny-t5":
            pytest.skip("MKS2 is decoder-only (test_encoder_decoder_backbones_are_refused checks the error)")
        return super().build(backbone, graph_info, **extra)


class TestMKS2WithKnowledgePrefix(TestMKS2):
    kwargs = {**SMALL, "use_kg": True, "num_blocks": 1}


def _build(name, graph_info, **kw):
    torch.manual_seed(0)
    return resolve_model(name, backbone="tiny-llama", node_dim=graph_info["dim"],
                         num_relations=graph_info["num_relations"], **kw)


def test_encoder_decoder_backbones_are_refused(graph_info):
    with pytest.raises(ValueError, match="decoder-only"):
        resolve_model("mks2", backbone="tiny-t5", node_dim=graph_info["dim"],
                      num_relations=graph_info["num_relations"], **SMALL)


def test_untrained_modules_leave_the_llm_unchanged_and_hooks_act_once_written(graph_info, mars_items, kg_text):
    mrmkg = _build("mrmkg", graph_info, kg_hidden=32, gnn_layer="gat", use_kg=False).eval()
    net = _build("mks2", graph_info, **SMALL).eval()
    batch = Collator(kg_text=kg_text, image_transform=net.image_transform)(mars_items[:2])
    with torch.no_grad():
        # empty memory + zero expert outputs: exactly the frozen backbone with MR-MKG's prompt
        assert torch.allclose(net(batch)["loss"], mrmkg(batch)["loss"], atol=1e-6)
        torch.nn.init.normal_(net.block_modules[-1].memory.values, std=0.5)  # "write" the memory
        written = net(batch)["loss"]
        assert not torch.allclose(written, mrmkg(batch)["loss"], atol=1e-4)
    hooked = [b for b in decoder_blocks(net.llm.model) if b._forward_hooks]
    assert len(hooked) == 2 and hooked == list(decoder_blocks(net.llm.model))[-2:]
    with pytest.raises(ValueError, match="already carry MKS2 hooks"):
        resolve_model("mks2", backbone=net.llm, node_dim=graph_info["dim"],
                      num_relations=graph_info["num_relations"], **SMALL)
    net.remove_hooks()
    with torch.no_grad():
        assert torch.allclose(net(batch)["loss"], mrmkg(batch)["loss"], atol=1e-6)


def test_memory_and_experts_get_gradients_llm_stays_frozen(graph_info, mars_items, kg_text):
    net = _build("mks2", graph_info, **SMALL)
    net(Collator(kg_text=kg_text, image_transform=net.image_transform)(mars_items[:2]))["loss"].backward()
    block = net.block_modules[0]
    assert block.memory.values.grad.abs().sum() > 0 and block.experts.down.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.llm.parameters())


def test_soft_router_mixes_every_expert():
    moe = SoftMixtureOfExperts(hidden_size=8, num_experts=3, expert_dim=4)
    weights = moe.router_weights(torch.randn(2, 5, 8))
    assert weights.shape == (2, 5, 3) and bool((weights > 0).all())
    assert torch.allclose(weights.sum(-1), torch.ones(2, 5))


def test_bf16_backbone_keeps_the_block_dtype(graph_info, mars_items, kg_text):
    llm = load_backbone("tiny-llama", dtype="bfloat16")
    net = resolve_model("mks2", backbone=llm, node_dim=graph_info["dim"], num_relations=graph_info["num_relations"],
                        **SMALL)
    seen = []
    block = decoder_blocks(llm.model)[0]
    hook = block.register_forward_hook(lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o).dtype))
    out = net(Collator(kg_text=kg_text, image_transform=net.image_transform)(mars_items[:1]))
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # the hooked block hands bf16 on, as the LLM expects
    assert all(p.dtype == torch.float32 for p in net.parameters() if p.requires_grad)  # trainable parts fp32
    assert torch.isfinite(out["loss"])


def _candidates(tmp_path, data_dir, n: int = 64):
    """The first `n` MARS candidates (evaluation appends the gold when it is not among them)."""
    path = tmp_path / "candidates.txt"
    path.write_text("\n".join((data_dir / "markg/MARS/analogy_entities.txt").read_text().splitlines()[:n]) + "\n")
    return path


def test_trains_and_evaluates_through_the_jobs(tmp_path, real_shards, data_dir):
    kg = str(real_shards["kg"])
    train(kg=kg, output_dir=str(tmp_path / "run"), model="mks2",
          model_kwargs={"backbone": "tiny-llama", **SMALL, "max_text_length": 96},
          stages=[{"name": "pretrain", "task": ["kg-triple", "kg-image"], "shards": str(real_shards["mars/dev"]),
                   "lr": 1e-3, "batch_size": 2, "epochs": 1, "max_steps": 1},
                  {"name": "finetune", "task": "mars", "shards": str(real_shards["mars/dev"]), "lr": 1e-3,
                   "batch_size": 2, "epochs": 1, "max_steps": 1}], device="cpu", amp="off", resume=False)
    metrics = evaluate(kg=kg, task="mars", shards=str(real_shards["mars/dev"]), checkpoint=str(tmp_path / "run/final"),
                       candidates=str(_candidates(tmp_path, data_dir)), limit=1, device="cpu", amp="off")
    assert metrics["count"] == 1 and 0 < metrics["mrr"] <= 1
