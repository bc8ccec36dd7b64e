"""Evaluation metrics: ScienceQA accuracy by category and MARS entity ranking.

ScienceQA categories (data/scienceqa/README.md, upstream tools/evaluate_acc.py): NAT/SOC/LAN by
`subject`; TXT = non-empty `hint`; IMG = `image` not null; NO = neither (TXT and IMG overlap);
G1-6 / G7-12 by `grade`. Accuracies are percentages, as in the papers' tables.

MARS: the gold entity is ranked among all 2,063 candidates, unfiltered (other candidates that
would also be correct are not removed). rank = 1 + #candidates scoring strictly higher than the
gold — ties count in the gold's favour ("optimistic", the rule the MARS/MR-MKG evaluation
states). `ties="pessimistic"` (1 + #higher + #tied others) and `"realistic"` (the mean of the
two) are available for checking how much a run gains from ties; they should agree unless a
model emits exactly equal scores.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

SQA_CATEGORIES = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
_SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
TIE_RULES = ("optimistic", "pessimistic", "realistic")


def grade_number(grade: Any) -> int | None:
    """'grade7' -> 7 (None when absent or malformed)."""
    if grade is None:
        return None
    digits = "".join(ch for ch in str(grade) if ch.isdigit())
    return int(digits) if digits else None


def scienceqa_categories(*, subject: Any, hint: Any, image: Any, grade: Any) -> list[str]:
    """The table columns a problem counts in."""
    cats = []
    if subject in _SUBJECTS:
        cats.append(_SUBJECTS[subject])
    has_text, has_image = bool(hint and str(hint).strip()), image not in (None, "")
    if has_text:
        cats.append("TXT")
    if has_image:
        cats.append("IMG")
    if not has_text and not has_image:
        cats.append("NO")
    g = grade_number(grade)
    if g is not None:
        cats.append("G1-6" if g <= 6 else "G7-12")
    return cats


def scienceqa_accuracy(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy (%) overall and per category from records with `correct` + the problem fields.

    A category without problems reports None (not 0), so a subset run does not look broken.
    """
    totals = {c: [0, 0] for c in ("overall", *SQA_CATEGORIES)}
    for r in records:
        ok = int(bool(r["correct"]))
        cats = scienceqa_categories(subject=r.get("subject"), hint=r.get("hint"), image=r.get("image"),
                                    grade=r.get("grade"))
        for c in ("overall", *cats):
            totals[c][0] += ok
            totals[c][1] += 1
    out: dict[str, Any] = {c: (100.0 * k / n if n else None) for c, (k, n) in totals.items()}
    out["counts"] = {c: n for c, (_, n) in totals.items()}
    return out


def rank_of_gold(scores: Sequence[float] | np.ndarray, gold_score: float, *, gold_in_candidates: bool = True,
                 ties: str = "optimistic") -> float:
    """Rank of the gold among `scores` (which include the gold's own score when `gold_in_candidates`).

    NaN scores count as -inf: a NaN gold ranks last, NaN candidates never beat the gold.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, not {ties!r}")
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    g = -np.inf if math.isnan(gold_score) else float(gold_score)
    higher = int((s > g).sum())
    tied_others = int((s == g).sum()) - (1 if gold_in_candidates else 0)
    tied_others = max(tied_others, 0)
    if ties == "optimistic":
        return float(1 + higher)
    if ties == "pessimistic":
        return float(1 + higher + tied_others)
    return 1 + higher + tied_others / 2


def ranking_metrics(ranks: Iterable[float], ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """Hits@k, MRR and mean rank of a list of ranks."""
    r = np.asarray(list(ranks), dtype=np.float64)
    if r.size == 0:
        return {**{f"hits@{k}": float("nan") for k in ks}, "mrr": float("nan"), "mean_rank": float("nan"), "count": 0}
    out = {f"hits@{k}": float((r <= k).mean()) for k in ks}
    out.update(mrr=float((1.0 / r).mean()), mean_rank=float(r.mean()), count=int(r.size))
    return out
