"""Simignore: the generic variant template, the token selection rule, and fewer tokens in the prompt."""
from __future__ import annotations

import pytest
import torch

from mmkg.model import resolve_model
from mmkg.model.batching import Collator
from mmkg.model.evaluation import evaluate
from mmkg.model.simignore import keep_mask, text_similarity
from mmkg.model.training import train
from tests.model import cases

SMALL = {"kg_hidden": 32, "gnn_layer": "gat"}


class TestSimignore(cases.ModelTestCase):
    name = "simignore"
    kwargs = {**SMALL, "keep_ratio": 0.5}


def test_keep_mask_rules():
    sim = torch.tensor([[0.1, 0.9, 0.5, 0.7, -0.2], [0.3, 0.2, 0.1, 0.0, 0.4]])
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    # ceil(0.5 · 5) = 3 and ceil(0.5 · 3) = 2 most similar valid tokens, in their original order
    assert keep_mask(sim, mask, keep_ratio=0.5).tolist() == [[False, True, True, True, False],
                                                            [True, True, False, False, False]]
    assert keep_mask(sim, mask, top_k=1).tolist() == [[False, True, False, False, False],
                                                      [True, False, False, False, False]]
    assert keep_mask(sim, mask, threshold=0.25).tolist() == [[False, True, True, True, False],
                                                             [True, False, False, False, False]]
    assert not keep_mask(sim, mask, keep_ratio=0.0).any()
    assert torch.equal(keep_mask(sim, mask, keep_ratio=1.0), mask)
    assert keep_mask(sim, mask, top_k=10).sum() == mask.sum()


def test_similarity_is_cosine_to_the_mean_text_embedding():
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    tokens = torch.tensor([[[1.0, 1.0], [1.0, -1.0]]])
    sim = text_similarity(tokens, text, torch.tensor([[True, True, False]]))  # padding row ignored
    assert sim[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_bad_options_are_refused(graph_info):
    for bad in ({"keep_ratio": 1.5}, {"top_k": -1}, {"top_k": 2, "threshold": 0.1}):
        with pytest.raises(ValueError):
            resolve_model("simignore", backbone="tiny-llama", node_dim=graph_info["dim"],
                          num_relations=graph_info["num_relations"], **SMALL, **bad)


def _build(name, graph_info, **kw):
    torch.manual_seed(0)
    return resolve_model(name, backbone="tiny-llama", node_dim=graph_info["dim"],
                         num_relations=graph_info["num_relations"], **SMALL, **kw).eval()


def test_the_llm_reads_only_the_kept_image_tokens(graph_info, mars_items, kg_text, data_dir):
    mrmkg = _build("mrmkg", graph_info)
    graph, ex = mars_items[0]
    ex = type(ex)(**{**ex.__dict__, "image": data_dir / "scienceqa/images/test/23/image.png"})
    batch = Collator(kg_text=kg_text, image_transform=mrmkg.image_transform)([(graph, ex), mars_items[1]])
    with torch.no_grad():
        full, full_mask, _ = mrmkg.prompt(batch)
        n_patches = mrmkg.vision(batch.images).shape[1]
        # keep_ratio = 1 is MR-MKG itself (same seed, same weights)
        same, same_mask, _ = _build("simignore", graph_info, keep_ratio=1.0).prompt(batch)
        assert torch.equal(same_mask, full_mask) and torch.allclose(same, full)
        net = _build("simignore", graph_info, top_k=3)
        _, mask, _ = net.prompt(batch)
        assert mask.sum(1).tolist() == [int(full_mask[0].sum()) - n_patches + 3, int(full_mask[1].sum())]
        out = net(batch)
    assert out["image_tokens_kept"] == 3 and out["image_tokens_total"] == n_patches
    assert net.token_stats["images"] == 2 and net.token_stats["image_tokens_kept"] == 6  # prompt() + forward
    net.reset_token_stats()
    assert net.token_stats["image_tokens"] == 0


def test_trains_and_evaluates_through_the_jobs(tmp_path, real_shards):
    kg = str(real_shards["kg"])
    kwargs = {"backbone": "tiny-llama", **SMALL, "max_text_length": 96}
    train(kg=kg, output_dir=str(tmp_path / "run"), model="simignore", model_kwargs={**kwargs, "keep_ratio": 0.25},
          stages=[{"name": "finetune", "task": "scienceqa", "shards": str(real_shards["scienceqa/test"]), "lr": 1e-3,
                   "batch_size": 2, "epochs": 1, "max_steps": 2}], device="cpu", amp="off", resume=False)
    metrics = evaluate(kg=kg, task="scienceqa", shards=str(real_shards["scienceqa/test"]),
                       checkpoint=str(tmp_path / "run/final"), limit=3, device="cpu", amp="off")
    assert metrics["queries"] == 3 and metrics["counts"]["overall"] == 3
    assert metrics["overall"] in [100.0 * k / 3 for k in range(4)]  # an accuracy over exactly 3 problems
