"""KAMT: the generic variant template, its answer head on ScienceQA choices, and a train → evaluate run."""
from __future__ import annotations

import pytest
import torch

from mmkg.model import resolve_model
from mmkg.model.batching import Collator, TaskDataset
from mmkg.model.data import open_graphs
from mmkg.model.evaluation import evaluate
from mmkg.model.tasks import resolve_task
from mmkg.model.training import train
from tests.model import cases

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_text_length": 96}


class TestKAMT(cases.ModelTestCase):
    name = "kamt"
    kwargs = SMALL


@pytest.fixture(scope="module")
def sqa_items(real_shards, kg_text):
    task = resolve_task("scienceqa")
    graphs = open_graphs(real_shards["kg"], [real_shards["scienceqa/test"]], task.fields)
    ds = TaskDataset(graphs, task=task, kg_text=kg_text)
    return [ds[i] for i in range(len(ds))]


def _build(graph_info, **kw):
    torch.manual_seed(0)
    return resolve_model("kamt", backbone="tiny-llama", node_dim=graph_info["dim"],
                         num_relations=graph_info["num_relations"], **{**SMALL, **kw})


def test_scienceqa_choices_are_classes_and_the_other_choices_are_negatives(graph_info, sqa_items, kg_text):
    net = _build(graph_info, vision=None)
    batch = Collator(kg_text=kg_text)(sqa_items[:2])
    out = net(batch)
    assert out["negative_loss"] > 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert net.answer_head[0].weight.grad.abs().sum() > 0
    assert net.triples.entity.weight.grad.abs().sum() > 0  # the learned entity rows of the triples train
    net.eval()
    one = Collator(kg_text=kg_text)(sqa_items[:1])
    scores = net.score_candidates(one, one.examples[0].choices)
    assert scores.shape == (len(one.examples[0].choices),) and bool((scores < 0).all())


def test_graph_ablation_and_images(graph_info, mars_items, kg_text, data_dir):
    no_kg = _build(graph_info, use_kg=False)
    assert "triples" not in no_kg.parameter_counts()["trainable_by_part"]
    net = _build(graph_info)
    graph, ex = mars_items[0]
    ex = type(ex)(**{**ex.__dict__, "image": data_dir / "scienceqa/images/test/23/image.png"})
    batch = Collator(kg_text=kg_text, image_transform=net.image_transform)([(graph, ex), mars_items[1]])
    assert batch.has_image.tolist() == [True, False]
    net(batch)["loss"].backward()
    assert net.image_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.vision.parameters())


def _candidates(tmp_path, data_dir, n: int = 64):
    """The first `n` MARS candidates (evaluation appends the gold when it is not among them)."""
    path = tmp_path / "candidates.txt"
    path.write_text("\n".join((data_dir / "markg/MARS/analogy_entities.txt").read_text().splitlines()[:n]) + "\n")
    return path


def test_trains_and_evaluates_through_the_jobs(tmp_path, real_shards, data_dir):
    kg = str(real_shards["kg"])
    summary = train(kg=kg, output_dir=str(tmp_path / "run"), model="kamt",
                    model_kwargs={"backbone": "tiny-llama", **SMALL},
                    stages=[{"name": "finetune", "task": "mars", "shards": str(real_shards["mars/dev"]), "lr": 1e-3,
                             "batch_size": 2, "epochs": 1, "max_steps": 2}],
                    device="cpu", amp="off", resume=False)
    assert summary["global_step"] == 2
    metrics = evaluate(kg=kg, task="mars", shards=str(real_shards["mars/dev"]), checkpoint=str(tmp_path / "run/final"),
                       candidates=str(_candidates(tmp_path, data_dir)), limit=2, device="cpu", amp="off")
    assert metrics["count"] == 2 and 0 < metrics["mrr"] <= 1
    sqa = evaluate(kg=kg, task="scienceqa", shards=str(real_shards["scienceqa/test"]), model="kamt",
                   model_kwargs={"backbone": "tiny-llama", **SMALL}, limit=3, device="cpu", amp="off")
    assert sqa["queries"] == 3 and sqa["overall"] is not None
