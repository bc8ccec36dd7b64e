"""The frozen LLM with knowledge vs the same LLM without it, on every MARS test query (issue 28).

    python benchmarks/mars_llm.py                          # dev → fit → test → report, resumable
    python benchmarks/mars_llm.py --stage dev --variant kg # one piece (two processes can share the work)

Both variants are the real SmolLM2-135M, frozen, fp32 on CPU, zero training steps (equal budget:
none), and re-rank the same shortlist: the top `--k` candidates of the no-LLM ranker
`memory>kg_prior` (`evaluate(shortlist=...)`); the rest keep the ranker's order.
* `llm_control` — the question prompt, no facts (`mrmkg`, knowledge "none");
* `llm_kg` — the same prompt with the query's retrieved facts ahead of it when the facts gate opens
  (`mrmkg`, knowledge "text", `evaluate(facts_gate=...)`), else exactly the control prompt.
Stages: `dev` scores a stratified random sample of dev queries with the control and with the facts
always shown, recording each shortlist candidate's log-likelihood and every gate signal; `fit` picks
the scoring (log-likelihood or PMI) and the gate (signal, threshold) on those dev records only;
`test` scores every test query with the control (recording the gate signals), then with `llm_kg`
the queries whose fitted gate opens (a closed gate is exactly the control prompt, so a closed
query's kg rank is the control's; a seeded sample of closed ones is scored as well, as a check);
predictions JSONL are appended per query, so a killed run resumes (`--part i/n`: slices for
parallel processes); `report` writes `benchmarks/out/mars_llm.json`
(config, the realistic-tie test rank of every test line per variant, MRR overall / in_facts /
not_in_facts, paired comparisons with Holm correction).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {"llm_control": {"knowledge": "none"}, "llm_kg": {"knowledge": "text"}}
MODEL = {"backbone": "smollm2-135m", "vision": None, "max_text_length": 256}
RANKER = "memory>kg_prior"
#: the gate that always opens (a count is ≥ 0): the dev run of `llm_kg` that shows every query its facts
ALWAYS_OPEN = {"signal": "endpoints_in_shortlist", "threshold": 0.0}
#: a gate that never opens: on the control (no facts in any case) it only records the query's signals
RECORD_ONLY = {"signal": "prior_top", "threshold": 1e30}
#: closed-gate test queries the kg variant also scores, to check they rank exactly as the control
CLOSED_CHECK = 20
SCORINGS = ("loglik", "pmi")
N_PERM = 10000


#: the full-split shard set whose facts the committed answer-in-facts strata of mars_eval.json were
#: computed from (the default retriever's config when they were made; today's default keys its sets
#: differently): pinned, so the LLM's facts and the strata are the same triples
SHARD_SET = "4c2f3bdeb9a3bc8c"


def shard_dir(kg: Path, split: str) -> Path:
    """The split's pinned shard set (`SHARD_SET`) under `kg`."""
    dirs = sorted((kg / "subgraphs" / "mars" / split).glob(SHARD_SET))
    if not dirs:
        raise SystemExit(f"no {split} shards under {kg}: run `mmkg retrieve` for MARS {split} first")
    return dirs[0]


def line_of(query_id: str) -> str:
    return str(int(query_id.rsplit("-", 1)[1]))


def dev_sample(kg: Path, n: int, seed: int) -> list[str]:
    """A random sample of dev query ids, stratified by (mode, answer in facts), proportional; in a
    random order (MARS files are sorted by mode and relation: a prefix would be a few relations)."""
    from benchmarks.mars_eval import answer_in_facts
    from mmkg.kg_store.shards import read_shards
    d = shard_dir(kg, "dev")
    in_facts = answer_in_facts(d)
    rows = read_shards(d, ["query_id", "mode"]).to_pylist()
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[str]] = {}
    for r in rows:
        strata.setdefault((r["mode"], in_facts[r["query_id"]]), []).append(r["query_id"])
    picked: list[str] = []
    for key in sorted(strata):
        ids = strata[key]
        take = int(round(n * len(ids) / len(rows)))
        picked += [ids[i] for i in rng.permutation(len(ids))[:take]]
    return [picked[i] for i in rng.permutation(len(picked))]


def run_eval(args, split: str, variant: str, query_ids: list[str], *, scoring: str,
             gate: dict[str, Any] | None, part: str = "") -> dict[str, Any]:
    from mmkg.model.evaluation import evaluate
    if not query_ids:
        return {"split": split, "variant": variant, "queries": 0}
    mars = args.data / "markg" / "MARS"
    out = args.work / f"{split}.{variant}{part}.jsonl"
    t0 = time.monotonic()
    m = evaluate(kg=str(args.kg), task="mars", shards=str(shard_dir(args.kg, split)), model="mrmkg",
                 model_kwargs={**MODEL, **VARIANTS[variant]}, candidates=str(mars / "analogy_entities.txt"),
                 predictions=str(out), query_ids=query_ids, max_triples=10, device="cpu", amp="off",
                 ties="realistic", shortlist={"ranker": RANKER, "k": args.k, "train": str(mars / "train.json"),
                                              "folds": 5},
                 scoring=scoring, facts_gate=gate,
                 progress=lambda d, n, s: d % 25 == 0 and print(f"{split} {variant} {d}/{n} {s:.2f} s/query",
                                                               flush=True))
    m["wall_seconds"] = round(time.monotonic() - t0, 1)
    return m


def test_records(args, variant: str, closed: bool = False) -> dict[str, dict[str, Any]]:
    """query id → record, over every part file of a test variant (`closed`: the closed-gate check)."""
    from benchmarks.mars_kg import read_predictions  # torn lines left out
    files = [p for p in sorted(args.work.glob(f"test.{variant}.*jsonl")) if (".closed" in p.name) == closed]
    return {q: r for p in files for q, r in read_predictions(p).items()}


def test_ids(args) -> list[str]:
    """Every test query id, in a seeded random order (a stopped run leaves a random part)."""
    from mmkg.kg_store.shards import read_shards
    ids = read_shards(shard_dir(args.kg, "test"), ["query_id"]).column("query_id").to_pylist()
    return [ids[i] for i in np.random.default_rng(args.seed).permutation(len(ids))]


def kg_test_ids(args, choice: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The test queries whose gate opens (signals recorded by the control run so far) and a seeded
    sample of closed ones (the check that a closed gate ranks exactly as the control), less those
    some kg file holds already (a later `--batch` scores what the control has added since)."""
    ctl = test_records(args, "llm_control")
    ids = [q for q in test_ids(args) if q in ctl]
    is_open = {q: ctl[q]["gate"]["signals"][choice["signal"]] >= choice["threshold"] for q in ids}
    done, checked = test_records(args, "llm_kg"), test_records(args, "llm_kg", closed=True)
    closed = [q for q in ids if not is_open[q]][:CLOSED_CHECK]
    return [q for q in ids if is_open[q] and q not in done], [q for q in closed if q not in checked]


def rerank(rec: dict[str, Any], null: dict[str, float] | None) -> float:
    """The record's realistic rank under log-likelihood (null None) or PMI scores of its shortlist;
    a gold outside the shortlist keeps the ranker's rank (the model's scores do not move it)."""
    from mmkg.model.metrics import rank_of_gold
    if not rec["in_shortlist"]:
        return float(rec["rank_realistic"])
    keys = [k for k, _ in rec["shortlist_scores"]]
    s = np.array([v for _, v in rec["shortlist_scores"]], dtype=np.float64)
    if null is not None:
        s = s - np.array([null[k] for k in keys])
    return float(rank_of_gold(s, float(s[keys.index(rec["gold"])]), ties="realistic"))


def null_scores(kg: Path, keys: list[str]) -> dict[str, float]:
    """Each candidate key's log-likelihood after the PMI null prompt (the scorer's own function)."""
    import torch
    from mmkg.kg_store import open_store
    from mmkg.model.base import resolve_model
    from mmkg.model.kg_text import KGText
    from mmkg.model.scoring import MarsScorer
    kg_text = KGText.from_store(open_store(kg))
    net = resolve_model("mrmkg", node_dim=384, num_relations=1, **MODEL, knowledge="none").eval()
    with torch.no_grad():
        got = net.score_after_text(MarsScorer.NULL_PROMPT, [kg_text.entity_by_key(k) for k in keys])
    return dict(zip(keys, got.float().tolist()))


def mrr(ranks) -> float:
    r = np.asarray(list(ranks), dtype=np.float64)
    return float((1.0 / r).mean()) if r.size else float("nan")


def fit(args) -> dict[str, Any]:
    """Scoring and gate from the dev records only: for each scoring, each signal and each threshold
    (its observed values), the gated kg rank is the kg rank where the gate opens, else the control
    rank; pick the one with the largest dev MRR gain whose not-in-facts change is ≥ -0.005."""
    from benchmarks.mars_eval import answer_in_facts
    from benchmarks.mars_kg import read_predictions
    ctl = read_predictions(args.work / "dev.llm_control.jsonl")
    kg = read_predictions(args.work / "dev.llm_kg.jsonl")
    qs = sorted(set(ctl) & set(kg))
    in_facts = answer_in_facts(shard_dir(args.kg, "dev"))
    keys = sorted({k for q in qs for rec in (ctl[q], kg[q]) for k, _ in rec["shortlist_scores"]})
    null = null_scores(args.kg, keys)
    signals = sorted(kg[qs[0]]["gate"]["signals"])
    table, best = [], None
    for scoring in SCORINGS:
        nl = null if scoring == "pmi" else None
        rc = np.array([rerank(ctl[q], nl) for q in qs])
        rk = np.array([rerank(kg[q], nl) for q in qs])
        inf = np.array([in_facts[q] for q in qs])
        row = {"scoring": scoring, "control_mrr": mrr(rc), "ungated_kg_mrr": mrr(rk),
               "ungated_in_facts_gain": mrr(rk[inf]) - mrr(rc[inf]),
               "ungated_not_in_facts_gain": mrr(rk[~inf]) - mrr(rc[~inf]), "gates": []}
        for sig in signals:
            v = np.array([kg[q]["gate"]["signals"][sig] for q in qs])
            for t in np.unique(v):
                gated = np.where(v >= t, rk, rc)
                g = {"signal": sig, "threshold": float(t), "open_share": float((v >= t).mean()),
                     "gain": mrr(gated) - mrr(rc), "not_in_facts_gain": mrr(gated[~inf]) - mrr(rc[~inf]),
                     "in_facts_gain": mrr(gated[inf]) - mrr(rc[inf]), "kg_mrr": mrr(gated)}
                row["gates"].append(g)
                ok = g["not_in_facts_gain"] >= -0.005
                if ok and (best is None or (g["gain"], g["kg_mrr"]) > (best["gain"], best["kg_mrr"])):
                    best = {"scoring": scoring, **g}
        row["gates"].sort(key=lambda g: -g["gain"])
        row["gates"] = row["gates"][:8]  # the best few per scoring, for the record
        table.append(row)
    result = {"dev_queries": len(qs), "in_facts": int(sum(in_facts[q] for q in qs)), "choice": best,
              "by_scoring": table, "rule": "max dev MRR gain of gated kg over control with not_in_facts gain ≥ -0.005"}
    from mmkg.kg_store import atomic
    atomic.write_json(args.work / "fit.json", result)
    return result


def report(args) -> dict[str, Any]:
    from benchmarks.mars_eval import answer_in_facts, provenance
    from mmkg.model.metrics import add_holm, compare_ranks, summarize
    from mmkg.model.scoring import MarsScorer
    fitted = json.loads((args.work / "fit.json").read_text())
    choice = fitted["choice"]
    in_facts = {line_of(q): v for q, v in answer_in_facts(shard_dir(args.kg, "test")).items()}
    ctl, kgo = test_records(args, "llm_control"), test_records(args, "llm_kg")
    check = test_records(args, "llm_kg", closed=True)
    keys = sorted({k for recs in (ctl, kgo, check) for r in recs.values() for k, _ in r["shortlist_scores"]})
    null = null_scores(args.kg, keys) if choice["scoring"] == "pmi" else None
    is_open = {q: r["gate"]["signals"][choice["signal"]] >= choice["threshold"] for q, r in ctl.items()}
    missing = [q for q in ctl if is_open[q] and q not in kgo]
    ranks: dict[str, dict[str, float]] = {"llm_control": {}, "llm_kg": {}}
    for q, r in ctl.items():
        if q in missing:
            continue  # the kg run has not reached it yet: both variants leave it out
        ranks["llm_control"][line_of(q)] = rerank(r, null)
        # a closed gate is exactly the control prompt (tests/model/test_facts_gate.py): the control's rank
        ranks["llm_kg"][line_of(q)] = rerank(kgo[q], null) if is_open[q] else rerank(r, null)
    identical = sum(r["shortlist_scores"] == ctl[q]["shortlist_scores"] for q, r in check.items() if q in ctl)
    agree = sum(r["gate"]["open"] == is_open[q] for q, r in kgo.items() if q in is_open)
    opened = {line_of(q): v for q, v in is_open.items() if line_of(q) in ranks["llm_kg"]}
    eval_json = json.loads((REPO / "benchmarks" / "out" / "mars_eval.json").read_text())
    base = {k: float(x) for k, x in eval_json["ranks"][RANKER]["test"].items()}
    strata = {"all": lambda q: True, "in_facts": lambda q: in_facts.get(q) is True,
              "not_in_facts": lambda q: in_facts.get(q) is False, "gate_open": lambda q: opened.get(q) is True,
              "gate_closed": lambda q: opened.get(q) is False}
    every = {**ranks, RANKER: {q: base[q] for q in ranks["llm_kg"]}}
    metrics = {name: {part: summarize([r for q, r in by.items() if keep(q)]) for part, keep in strata.items()}
               for name, by in every.items()}
    comparisons = []
    for a, b in (("llm_kg", "llm_control"), ("llm_kg", RANKER), ("llm_control", RANKER)):
        for part in ("all", "in_facts", "not_in_facts", "gate_open"):
            qs = sorted((q for q in every[a] if q in every[b] and strata[part](q)), key=int)
            comparisons.append({"a": a, "b": b, "split": "test", "part": part,
                                **compare_ranks([every[a][q] for q in qs], [every[b][q] for q in qs],
                                                n_perm=N_PERM)})
    add_holm(comparisons, N_PERM)
    mars = args.data / "markg" / "MARS"
    result = {
        "benchmark": "mars_llm", "split": "test", "queries": {v: len(r) for v, r in ranks.items()},
        "line": "0-based line number in test.json", "ties": "realistic: 1 + #higher + #tied others / 2",
        "config": {"model": "smollm2-135m (frozen, fp32, CPU)", "training_steps": 0, "variants": VARIANTS,
                   "model_kwargs": MODEL, "shortlist": {"ranker": RANKER, "k": args.k, "folds": 5},
                   "max_triples": 10, "scoring": choice["scoring"],
                   "null_prompt": MarsScorer.NULL_PROMPT,
                   "gate": {"signal": choice["signal"], "threshold": choice["threshold"]},
                   "fitted_on": f"{fitted['dev_queries']} dev queries (stratified random sample, seed {args.seed})"},
        "closed_gate_check": {"queries": len(check), "identical_shortlist_scores": identical,
                              "kg_run_gate_agrees_with_control_signals": f"{agree}/{len(kgo)}"},
        "ranks": {"test": ranks}, "in_facts": {"test": {q: in_facts[q] for q in ranks["llm_kg"] if q in in_facts}},
        "gate_open": {"test": opened}, "metrics": metrics, "comparisons": comparisons, "dev_fit": fitted,
        "provenance": provenance({"train": mars / "train.json", "dev": mars / "dev.json", "test": mars / "test.json",
                                  "candidates": mars / "analogy_entities.txt"}, args.kg),
    }
    from mmkg.kg_store import atomic
    atomic.write_json(args.out, result)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="frozen SmolLM2 on MARS test: with facts (gated) vs without")
    ap.add_argument("--stage", default="all", choices=["all", "dev", "fit", "test", "report"])
    ap.add_argument("--variant", default=None, choices=list(VARIANTS), help="dev/test: only this variant")
    ap.add_argument("--k", type=int, default=10, help="shortlist size")
    ap.add_argument("--dev-queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", default="0/1", help="test: score the i-th of n interleaved slices of the queries (i/n)")
    ap.add_argument("--batch", default="", help="test, llm_kg: a new tag for each launch that adds the queries "
                                                "the control has scored since the last (its files are kept)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--kg", type=Path, default=REPO / "build" / "markg-minilm",
                    help="MarKG store with the default retriever's MARS dev and test shards")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "mars_llm")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "mars_llm.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    variants = [args.variant] if args.variant else list(VARIANTS)
    if args.stage in ("all", "dev"):
        ids = dev_sample(args.kg, args.dev_queries, args.seed)
        for v in variants:
            print(json.dumps(run_eval(args, "dev", v, ids, scoring="loglik", gate=ALWAYS_OPEN)), flush=True)
    if args.stage in ("all", "fit"):
        print(json.dumps(fit(args)["choice"]), flush=True)
    if args.stage in ("all", "test"):
        # the control first, recording every gate signal; the kg variant then scores the queries whose
        # fitted gate opens (a closed gate is exactly the control prompt, so those ranks are the
        # control's; a sample of closed ones is scored too, as a check). Both record log-likelihoods;
        # PMI, if chosen on dev, is applied in `report` with the scorer's null (the same ll − null).
        i, n = (int(x) for x in args.part.split("/"))
        tag = (f".{args.batch}" if args.batch else "") + (f".part{i}of{n}" if n > 1 else "")
        if "llm_control" in variants:
            print(json.dumps(run_eval(args, "test", "llm_control", test_ids(args)[i::n], scoring="loglik",
                                      gate=RECORD_ONLY, part=tag)), flush=True)
        if "llm_kg" in variants:
            choice = json.loads((args.work / "fit.json").read_text())["choice"]
            opened, closed = kg_test_ids(args, choice)
            gate = {"signal": choice["signal"], "threshold": choice["threshold"]}
            print(json.dumps(run_eval(args, "test", "llm_kg", opened[i::n], scoring="loglik", gate=gate,
                                      part=tag)), flush=True)
            print(json.dumps(run_eval(args, "test", "llm_kg", closed[i::n], scoring="loglik", gate=gate,
                                      part=f".closed{tag}")), flush=True)
    if args.stage in ("all", "report"):
        r = report(args)
        print(json.dumps({"metrics": {v: {p: m.get("mrr") for p, m in by.items()} for v, by in r["metrics"].items()},
                          "comparisons": [{k: c[k] for k in ("a", "b", "part", "mrr_diff", "ci95", "p_text")}
                                          for c in r["comparisons"]]}, indent=1))


if __name__ == "__main__":
    main()
