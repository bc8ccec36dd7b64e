"""Issue 28: the facts gate (a closed gate is exactly the no-facts prompt) and PMI scoring."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmkg.kg_store.errors import ConfigError
from mmkg.model.base import resolve_model
from mmkg.model.evaluation import evaluate
from mmkg.model.facts_gate import gate_signals
from mmkg.model.scoring import MarsScorer

TINY = {"backbone": "tiny-llama", "vision": None, "max_text_length": 256}
K = 5


@pytest.fixture(scope="module")
def small_train(data_dir, tmp_path_factory):
    """Every 16th train row: a quick prior and memory for the shortlist."""
    path = tmp_path_factory.mktemp("gate") / "train.json"
    lines = (data_dir / "markg" / "MARS" / "train.json").read_text().splitlines()[::16]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _run(real_shards, data_dir, small_train, path, knowledge, **extra) -> list[dict]:
    job = dict(kg=str(real_shards["kg"]), task="mars", shards=str(real_shards["mars/dev"]), model="mrmkg",
               model_kwargs={**TINY, "knowledge": knowledge},
               candidates=str(data_dir / "markg" / "MARS" / "analogy_entities.txt"), predictions=str(path),
               device="cpu", amp="off", max_triples=5, limit=4, ties="realistic", seed=3,
               shortlist={"ranker": "memory>kg_prior", "k": K, "train": str(small_train), "folds": 5})
    evaluate(**{**job, **extra})
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_closed_gate_gives_exactly_the_control_prompt_and_scores(real_shards, data_dir, small_train, tmp_path):
    control = _run(real_shards, data_dir, small_train, tmp_path / "control.jsonl", "none")
    closed = _run(real_shards, data_dir, small_train, tmp_path / "closed.jsonl", "text",
                  facts_gate={"signal": "prior_top", "threshold": 1e9})
    opened = _run(real_shards, data_dir, small_train, tmp_path / "open.jsonl", "text",
                  facts_gate={"signal": "endpoints_in_shortlist", "threshold": 0})
    assert len(control) == len(closed) == len(opened) == 4
    for c, g, o in zip(control, closed, opened):
        assert not g["gate"]["open"] and o["gate"]["open"]
        assert g["prompt"] == c["prompt"] and not c["prompt"].startswith("Facts:")
        assert g["shortlist_scores"] == c["shortlist_scores"] and g["rank"] == c["rank"]
        assert set(g["gate"]["signals"]) == set(gate_signals.names())  # every registered signal is recorded
        if o["triples"]:  # an open gate puts the query's own facts ahead of the same question
            assert o["prompt"].startswith("Facts:") and o["prompt"].endswith(c["prompt"])
    assert any(o["triples"] for o in opened)
    assert any(o["shortlist_scores"] != c["shortlist_scores"] for o, c in zip(opened, control))


@pytest.mark.slow
def test_pmi_is_the_log_likelihood_minus_the_null_prompts(real_shards, data_dir, small_train, tmp_path, kg_text):
    import torch
    torch.manual_seed(0)
    net = resolve_model("mrmkg", node_dim=384, num_relations=1, **TINY, knowledge="none").eval()
    ll = _run(real_shards, data_dir, small_train, tmp_path / "ll.jsonl", "none", net=net)
    pmi = _run(real_shards, data_dir, small_train, tmp_path / "pmi.jsonl", "none", net=net, scoring="pmi")
    for a, b in zip(ll, pmi):
        keys = [k for k, _ in a["shortlist_scores"]]
        assert keys == [k for k, _ in b["shortlist_scores"]]  # the same shortlist
        null = net.score_after_text(MarsScorer.NULL_PROMPT, [kg_text.entity_by_key(k) for k in keys]).numpy()
        got = np.array([v for _, v in b["shortlist_scores"]])
        want = np.array([v for _, v in a["shortlist_scores"]]) - null
        np.testing.assert_allclose(got, want, atol=2e-4)
        assert not np.allclose(null, 0)


def test_a_gate_needs_a_shortlist_and_a_known_scoring(data_dir):
    from mmkg.model.kg_text import KGText
    args = dict(task="mars", kg="unused", kg_text=KGText(entity_labels={}, entity_keys={}, relation_labels={}),
                candidates=str(data_dir / "markg" / "MARS" / "analogy_entities.txt"), shortlist=None,
                ties="realistic", candidate_scores=False)
    with pytest.raises(ConfigError, match="shortlist"):
        MarsScorer(**args, facts_gate={"signal": "prior_top", "threshold": 0.5})
    with pytest.raises(ConfigError, match="scoring"):
        MarsScorer(**args, scoring="bayes")


#: each registered signal and the range its values must lie in (the template below runs every one)
SIGNAL_CASES = {"prior_top": (0.0, 1.0), "endpoint_top": (0.0, 1.0), "endpoints_in_shortlist": (0.0, float(K)),
                "prior_top_endpoint": (0.0, 1.0)}


@pytest.mark.parametrize("name", sorted(SIGNAL_CASES))
def test_signal_template(name, real_shards, data_dir, small_train, mars_items):
    """Every signal gives a value in its range from the query's row and shortlist only: the same
    value when the gold is swapped for another entity; the gate opens exactly at the threshold."""
    import dataclasses
    from mmkg.model.facts_gate import FactsGate, gate_signals
    from mmkg.model.rankers import top_positions
    from mmkg.model.scoring import Shortlist, read_candidates
    cands = read_candidates(data_dir / "markg" / "MARS" / "analogy_entities.txt")
    short = Shortlist(str(real_shards["kg"]), cands, {"ranker": "memory>kg_prior", "k": K,
                                                      "train": str(small_train), "folds": 5})
    lo, hi = SIGNAL_CASES[name]
    values = []
    for graph, ex in mars_items[:4]:
        top = top_positions(short.scores(ex), short.k)
        gate = FactsGate({"signal": name, "threshold": 0.5})
        v = gate.values(short, ex, top, graph)[name]
        other = dataclasses.replace(ex, gold_key=cands[0], target="something else")
        assert gate.values(short, other, top, graph)[name] == v
        assert lo <= v <= hi and gate.opens(v) == (v >= 0.5)
        values.append(v)
    assert name in gate_signals.names() and set(gate_signals.names()) == set(SIGNAL_CASES)
