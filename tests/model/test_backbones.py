"""Backbone presets: tiny random models of both kinds, prompt packing, the GGUF cache path."""
from __future__ import annotations

import torch

from mmkg.model.backbones import CAUSAL, SEQ2SEQ, backbone_registry, load_backbone
from mmkg.model.prompt import pack_blocks
from mmkg.model.text import ByteTokenizer


def test_presets_cover_both_families():
    kinds = {name: spec.kind for name, spec in backbone_registry.items()}
    assert kinds["flan-t5-3b"] == kinds["flan-t5-11b"] == kinds["tiny-t5"] == SEQ2SEQ
    assert kinds["llama-2-7b"] == kinds["tiny-llama"] == kinds["smollm2-135m"] == CAUSAL


def test_tiny_backbones_are_frozen_and_deterministic():
    a, b = load_backbone("tiny-llama", seed=1), load_backbone("tiny-llama", seed=1)
    assert all(not p.requires_grad for p in a.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    a.train()
    assert not a.model.training  # dropout stays off while adapters train


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode_batch(["héllo", "x"], max_length=3)
    assert ids[1] == [ord("x") + 3] and len(ids[0]) == 3
    assert tok.decode(tok.encode_batch(["héllo"])[0]) == "héllo"


def test_pack_blocks_keeps_each_example_contiguous():
    k = torch.arange(2 * 3 * 1, dtype=torch.float).view(2, 3, 1)
    km = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    t = torch.full((2, 2, 1), 9.0)
    tm = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    out, mask = pack_blocks([(k, km), (t, tm)])
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out[0, :, 0].tolist() == [0.0, 1.0, 9.0] and out[1, :2, 0].tolist() == [9.0, 9.0]


def test_smollm2_gguf_is_found_in_the_package():
    from mmkg.model.weights_cache import find_smollm2_gguf
    assert find_smollm2_gguf().suffix == ".gguf"
