"""Generic test template for `model` registry variants (PyKEEN K4).

A variant's test is a small subclass:

    class TestMyVariant(cases.ModelTestCase):
        name = "my-variant"
        kwargs = {"some_option": 3}

It then runs forward/backward on both tiny backbones (encoder-decoder and decoder-only) with the
shared shard batch, checks that only trainable parts get gradients, that candidate scoring
matches teacher forcing, and that a checkpoint round-trips. `test_meta.py` fails when a
registered variant has no such subclass.
"""
from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from mmkg.model import checkpoint as ckpt
from mmkg.model import resolve_model
from mmkg.model.batching import Collator

BACKBONES = ("tiny-t5", "tiny-llama")


class ModelTestCase:
    """Base of every model-variant test (not collected itself: its name has no Test prefix)."""

    #: `model` registry name
    name: ClassVar[str]
    #: extra constructor kwargs (node_dim/num_relations come from the shard fixture)
    kwargs: ClassVar[dict[str, Any]] = {}

    def build(self, backbone: str, graph_info: dict[str, Any], **extra: Any):
        torch.manual_seed(0)
        return resolve_model(self.name, backbone=backbone, node_dim=graph_info["dim"],
                             num_relations=graph_info["num_relations"], **{**self.kwargs, **extra})

    def batch(self, net, mars_items, kg_text, n: int = 3):
        return Collator(kg_text=kg_text, image_transform=getattr(net, "image_transform", None))(mars_items[:n])

    @pytest.mark.parametrize("backbone", BACKBONES)
    def test_forward_backward_only_trainable_parts_get_gradients(self, backbone, graph_info, mars_items, kg_text):
        net = self.build(backbone, graph_info)
        out = net(self.batch(net, mars_items, kg_text))
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        for n, p in net.named_parameters():
            if not p.requires_grad:
                assert p.grad is None, f"frozen parameter {n} got a gradient"
        assert all(not p.requires_grad for p in net.llm.parameters())
        got = {n.split(".")[0] for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert got, "no trainable parameter received a gradient"
        assert "llm" not in got
        counts = net.parameter_counts()
        assert 0 < counts["trainable"] < counts["total"]

    @pytest.mark.parametrize("backbone", BACKBONES)
    def test_candidate_scores_equal_teacher_forcing(self, backbone, graph_info, mars_items, kg_text):
        net = self.build(backbone, graph_info).eval()
        batch = self.batch(net, mars_items, kg_text, n=1)
        # shared prefixes ("long…") exercise the packed prefix trie of causal backbones
        candidates = ["a", "long", "longer candidate text", "longer cand", batch.examples[0].target]
        fast = net.score_candidates(batch, candidates, chunk_size=2)
        for c, score in zip(candidates, fast.tolist()):
            batch.examples[0].target = c
            with torch.no_grad():
                nll = net(batch)["generation_loss"].item() * len(net.encode_targets([c])[0])
            assert score == pytest.approx(-nll, rel=1e-4, abs=1e-3)

    def test_checkpoint_round_trip(self, tmp_path, graph_info, mars_items, kg_text):
        net = self.build("tiny-llama", graph_info).eval()
        for p in net.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02)  # move away from the init a rebuild would give
        batch = self.batch(net, mars_items, kg_text, n=2)
        with torch.no_grad():
            before = net(batch)["loss"]
        ckpt.save_checkpoint(tmp_path / "ck", model=net, model_name=self.name)
        again = ckpt.load_model(tmp_path / "ck").eval()
        with torch.no_grad():
            after = again(batch)["loss"]
        assert torch.allclose(before, after, atol=1e-5)
        saved = ckpt.read_config(tmp_path / "ck")
        assert saved["model"] == self.name
        assert set(again.trainable_state_dict()) == set(net.trainable_state_dict())
