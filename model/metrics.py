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


# ---- paired comparisons of two rankers on the same queries ----------------------------------------
def sign_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided exact sign test on paired ranks (lower is better); ties dropped."""
    wins = sum(x < y for x, y in zip(a, b))
    losses = sum(x > y for x, y in zip(a, b))
    n = wins + losses
    tail = sum(math.comb(n, k) for k in range(0, min(wins, losses) + 1)) / 2 ** n if n else 1.0
    return {"better": wins, "worse": losses, "ties": len(a) - n, "sign_test_p": min(1.0, 2 * tail)}


def bootstrap_mrr_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10000, seed: int = 0
                       ) -> tuple[float, float, float]:
    """MRR(a) − MRR(b) on paired queries and its percentile bootstrap 95 % interval."""
    d = 1.0 / np.asarray(a, dtype=np.float64) - 1.0 / np.asarray(b, dtype=np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def permutation_mrr_p(a: Sequence[float], b: Sequence[float], *, n_perm: int = 10000, seed: int = 0
                      ) -> float:
    """Two-sided paired sign-flip permutation test of MRR(a) = MRR(b) on the reciprocal-rank
    differences (the sign test above ignores how much a rank moved; this one tests the MRR)."""
    d = 1.0 / np.asarray(a, dtype=np.float64) - 1.0 / np.asarray(b, dtype=np.float64)
    if d.size == 0 or not d.any():
        return 1.0
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, d.size))
    extreme = np.count_nonzero(np.abs((signs * d).mean(axis=1)) >= abs(d.mean()) - 1e-15)
    return float((1 + extreme) / (n_perm + 1))


def summarize(ranks: Iterable[float]) -> dict[str, Any]:
    """`ranking_metrics` at Hits@1/3/10 with the median rank instead of the mean ({"count": 0} when empty)."""
    r = np.asarray(list(ranks), dtype=np.float64)
    if r.size == 0:
        return {"count": 0}
    m = ranking_metrics(r, ks=(1, 3, 10))
    del m["mean_rank"]
    return {**m, "median_rank": float(np.median(r))}


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values of comparisons reported together (step-down, monotone)."""
    names = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, out = len(names), 0.0, {}
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * pvalues[name]))
        out[name] = running
    return out


def format_p(p: float, n_perm: int | None = None) -> str:
    """A p-value as text; a permutation p at its floor 1/(B+1) is "< 1/(B+1)", not a made-up value."""
    if n_perm is not None and p <= 1.0 / (n_perm + 1) + 1e-15:
        return f"< 1/{n_perm + 1}"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def compare_ranks(a: Sequence[float], b: Sequence[float], *, n_perm: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two rankers' ranks on the same queries: MRR difference, bootstrap 95 %
    interval, sign-flip permutation p of the MRR difference, and the sign test on the ranks."""
    diff, lo, hi = bootstrap_mrr_diff(a, b, seed=seed)
    return {"queries": len(a), "mrr_a": summarize(a).get("mrr"), "mrr_b": summarize(b).get("mrr"), "mrr_diff": diff,
            "ci95": [lo, hi], "mrr_permutation_p": permutation_mrr_p(a, b, n_perm=n_perm, seed=seed),
            **sign_test(a, b)}


def add_holm(rows: Sequence[dict[str, Any]], n_perm: int = 10000) -> None:
    """Holm-adjust the permutation p of comparisons reported together, in place, with their text
    (a raw p at the permutation floor prints as "< 1/(B+1)"; its adjusted p as an upper bound)."""
    live = [r for r in rows if r.get("queries")]
    adjusted = holm({str(i): r["mrr_permutation_p"] for i, r in enumerate(live)})
    for i, r in enumerate(live):
        r["holm_p"] = adjusted[str(i)]
        r["p_text"] = format_p(r["mrr_permutation_p"], n_perm)
        r["holm_p_text"] = f"≤ {r['holm_p']:.2g}" if r["p_text"].startswith("<") else format_p(r["holm_p"])


def comparison_cells(c: dict[str, Any]) -> str:
    """The Markdown cells of one comparison: queries, MRR diff, interval, p, Holm p, better/worse/ties."""
    return (f"{c['queries']} | {c['mrr_diff']:+.4f} | [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | {c['p_text']} | "
            f"{c['holm_p_text']} | {c['better']} / {c['worse']} / {c['ties']}")
