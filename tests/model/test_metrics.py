"""Metrics on hand-made predictions: MARS ranks (ties, unfiltered), ScienceQA categories."""
from __future__ import annotations

import math

import pytest

from mmkg.model.metrics import rank_of_gold, ranking_metrics, scienceqa_accuracy, scienceqa_categories


def test_rank_counts_strictly_higher_candidates_and_ties_favour_gold():
    scores = [0.9, 0.5, 0.7, 0.5, 0.1]  # gold is index 1 (0.5), tied with index 3
    assert rank_of_gold(scores, 0.5) == 3  # 1 + two strictly higher (0.9, 0.7)
    assert rank_of_gold(scores, 0.5, ties="pessimistic") == 4
    assert rank_of_gold(scores, 0.5, ties="realistic") == 3.5
    # all equal: optimistic rank 1, pessimistic last
    assert rank_of_gold([1.0] * 5, 1.0) == 1
    assert rank_of_gold([1.0] * 5, 1.0, ties="pessimistic") == 5


def test_unfiltered_ranking_counts_other_correct_answers_against_gold():
    # candidate 0 is another valid answer scoring higher: unfiltered ranking does not remove it
    assert rank_of_gold([2.0, 1.0, 0.0], 1.0) == 2


def test_gold_outside_the_candidate_list_and_nan_scores():
    assert rank_of_gold([3.0, 1.0], 2.0, gold_in_candidates=False) == 2
    assert rank_of_gold([2.0, 2.0], 2.0, gold_in_candidates=False, ties="pessimistic") == 3
    assert rank_of_gold([float("nan"), 0.0], 1.0) == 1
    assert rank_of_gold([0.0, 1.0], float("nan")) == 3
    with pytest.raises(ValueError):
        rank_of_gold([1.0], 1.0, ties="random")


def test_ranking_metrics_from_hand_made_ranks():
    m = ranking_metrics([1, 2, 4, 11])
    assert m["hits@1"] == 0.25 and m["hits@3"] == 0.5 and m["hits@5"] == 0.75 and m["hits@10"] == 0.75
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 11) / 4)
    assert m["count"] == 4
    assert math.isnan(ranking_metrics([])["mrr"])


def test_scienceqa_category_membership():
    assert scienceqa_categories(subject="natural science", hint="", image=None, grade="grade3") == ["NAT", "NO", "G1-6"]
    assert scienceqa_categories(subject="social science", hint="A map", image="image.png", grade="grade7") == \
        ["SOC", "TXT", "IMG", "G7-12"]
    assert scienceqa_categories(subject="language science", hint="  ", image=None, grade="grade12") == \
        ["LAN", "NO", "G7-12"]
    assert scienceqa_categories(subject="natural science", hint="", image="image.png", grade="grade6") == \
        ["NAT", "IMG", "G1-6"]


def test_scienceqa_accuracy_by_category():
    records = [
        {"correct": True, "subject": "natural science", "hint": "", "image": "image.png", "grade": "grade2"},
        {"correct": False, "subject": "natural science", "hint": "ctx", "image": None, "grade": "grade8"},
        {"correct": True, "subject": "language science", "hint": "", "image": None, "grade": "grade5"},
        {"correct": True, "subject": "social science", "hint": "ctx", "image": "image.png", "grade": "grade10"},
    ]
    acc = scienceqa_accuracy(records)
    assert acc["overall"] == 75.0
    assert acc["NAT"] == 50.0 and acc["SOC"] == 100.0 and acc["LAN"] == 100.0
    assert acc["TXT"] == 50.0 and acc["IMG"] == 100.0 and acc["NO"] == 100.0
    assert acc["G1-6"] == 100.0 and acc["G7-12"] == 50.0
    assert acc["counts"]["TXT"] == 2 and acc["counts"]["IMG"] == 2 and acc["counts"]["NO"] == 1
    assert scienceqa_accuracy(records[:1])["SOC"] is None
