"""Does the KG help? MR-MKG variants on stratified MARS samples, per-query ranks, paired tests (issue 16).

    python benchmarks/mars_kg.py --work build/bench/mars_kg                      # everything, resumable
    python benchmarks/mars_kg.py --work build/bench/mars_kg --variants kg,control \\
        --train-budget-minutes 60 --eval-budget-minutes 120                       # a piece of it

Plan (all choices seeded by --seed and recorded in <work>/sample.json, which later runs reuse):
* train: a stratified random sample of MARS train over all (mode, relation) strata
  (--train-queries); a disjoint stratified sample of train (--fit-queries) fits the late-fusion β;
* dev: a stratified random sample (--dev-queries, ≥ 300) for the main comparison, and a
  stratified subsample of it (--ablation-queries, ≥ 100) for the ablations.
The samples are written as MARS files under <work>/mars/{train,fit,dev}/ and retrieved with the
default retriever; a query's id in the output is its 0-based line number in the original dev.json.

Variants (MR-MKG, frozen --backbone, --vision none by default):
* kg — knowledge text + graph (`knowledge: both`), knowledge pretraining (kg-triple) then MARS
  finetuning — main set;
* control — no knowledge, `--soft-prompt-tokens` learned prompt tokens, same stages and budget
  (the equal-budget no-KG control) — main set; its candidate scores are kept for late fusion;
* kg_only — the KG-only ranker (`mmkg.model.fusion.kg_prior`: retrieved-subgraph score + 1/hops from the
  question entity), no LLM — main set;
* late_fusion — --fusion-base scores + β · KG prior, β fit on the fit sample by grid search on MRR;
  ranked on the main queries its base has scores for (all of them with the default base, control);
* zero_shot (frozen LLM, question only), text (facts text + soft prompt), graph (graph prefix only)
  — ablation set; zero_shot_text (frozen LLM + facts, untrained) on request.
Every trained variant trains with `mmkg.model.training.train` (checkpoints, resume) and ranks the gold
among all 2,063 candidates with `mmkg.model.evaluation.evaluate`, whose predictions JSONL is appended
per query, so a killed or budget-stopped run continues where it stopped (run the same command again;
only --variants, the budgets, --threads and --out may differ between pieces: <work>/settings.json).
A main-set variant ranks the ablation queries first, the fusion base its fit queries before dev. A
lost work dir loses predictions, not results: --carry <earlier output> takes the ranks of variants
not re-run from it (same samples and settings checked) and counts how many ranks a re-run repeats.

Output (--out, default benchmarks/out/mars_kg.json): {"ranks": {variant: {query_id: rank}} with
realistic ties (mean of optimistic and pessimistic rank), "ranks_optimistic" likewise, "main":
{"kg", "control", "kg_only"}, "queries": [query ids], "ablation_queries", metrics per variant
(Hits@1/3/10, MRR, median rank; realistic and optimistic; by whether the (question, answer) pair
occurs in train as a question–answer or example pair, any relation), every variant's metrics on the
ablation queries, paired comparisons (sign test on ranks; bootstrap 95 % interval and sign-flip
permutation p of the MRR difference) and the late-fusion β; a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.mars_smollm2 import ENCODER, prepare_store  # noqa: E402
from mmkg.retrieval.paths import read_mars_rows as read_mars  # noqa: E402  (one MARS row reader)
from mmkg.model.metrics import add_holm, bootstrap_mrr_diff, comparison_cells, permutation_mrr_p, sign_test, summarize  # noqa: E402,F401

#: variant → how it is built; `queries`: which dev sample it is ranked on
VARIANTS: dict[str, dict[str, Any]] = {
    "kg": {"knowledge": "both", "train": True, "queries": "main"},
    "control": {"knowledge": "none", "soft_prompt": True, "train": True, "queries": "main"},
    "kg_only": {"derived": True, "queries": "main"},
    "zero_shot": {"knowledge": "none", "train": False, "queries": "ablation"},
    "text": {"knowledge": "text", "soft_prompt": True, "train": True, "queries": "ablation"},
    "graph": {"knowledge": "gnn", "train": True, "queries": "ablation"},
    # ranked on every main query its base has scores for (the control keeps them for all 300)
    "late_fusion": {"derived": True, "queries": "main"},
    "zero_shot_text": {"knowledge": "text", "train": False, "queries": "ablation"},
}
DEFAULT_VARIANTS = ("kg", "control", "kg_only", "zero_shot", "text", "graph")
MAIN = {"kg": "kg", "control": "control", "kg_only": "kg_only"}


# ---- sampling ---------------------------------------------------------------------------------

def stratified_sample(strata: Sequence[Any], n: int, rng: np.random.Generator,
                      among: Sequence[int] | None = None) -> list[int]:
    """`n` indices (of `among`, default all) drawn without replacement, allocated to strata in
    proportion to their size (largest remainders, at least one per stratum while n allows);
    returned sorted."""
    pool = list(range(len(strata))) if among is None else list(among)
    n = min(n, len(pool))
    groups: dict[Any, list[int]] = defaultdict(list)
    for i in pool:
        groups[strata[i]].append(i)
    keys = sorted(groups, key=str)
    sizes = np.array([len(groups[k]) for k in keys], dtype=np.float64)
    quota = sizes * n / sizes.sum()
    take = np.floor(quota).astype(int)
    if n >= len(keys):  # every stratum at least once
        take = np.maximum(take, 1)
    while take.sum() > n:  # trim the largest allocations
        take[int(np.argmax(take - quota))] -= 1
    order = np.argsort(-(quota - take), kind="stable")
    for j in order:
        if take.sum() >= n:
            break
        if take[j] < sizes[j]:
            take[j] += 1
    out: list[int] = []
    for k, t in zip(keys, take):
        members = groups[k]
        out.extend(rng.choice(members, size=int(t), replace=False).tolist() if t else [])
    return sorted(int(i) for i in out)


def make_plan(data: Path, args) -> dict[str, Any]:
    mars = data / "markg" / "MARS"
    train, dev = read_mars(mars / "train.json"), read_mars(mars / "dev.json")
    rng = np.random.default_rng(args.seed)
    t_strata = [(r["mode"], r["relation"]) for r in train]
    d_strata = [(r["mode"], r["relation"]) for r in dev]
    train_lines = stratified_sample(t_strata, args.train_queries, rng)
    rest = sorted(set(range(len(train))) - set(train_lines))
    fit_lines = stratified_sample(t_strata, args.fit_queries, rng, among=rest)
    main = stratified_sample(d_strata, args.dev_queries, rng)
    ablation = stratified_sample(d_strata, args.ablation_queries, rng, among=main)
    return {"seed": args.seed, "train": train_lines, "fit": fit_lines, "main": main, "ablation": ablation}


def load_plan(work: Path, data: Path, args) -> dict[str, Any]:
    path = work / "sample.json"
    plan = make_plan(data, args)
    if path.exists():
        old = json.loads(path.read_text())
        if old != plan:
            raise SystemExit(f"{path} holds another sample (other --seed or sizes): use another --work, or the "
                             "sizes it was made with")
    else:
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plan))
    return plan


#: flags a run may change between pieces (everything else must stay as the first piece had it)
PIECE_FLAGS = {"variants", "report_only", "train_budget_minutes", "eval_budget_minutes", "threads", "verbose", "out",
               "carry"}


def experiment_settings(config: dict[str, Any], *, ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The flags that fix the experiment: all but the piece flags (and `ignore`)."""
    return {k: v for k, v in sorted(config.items()) if k not in PIECE_FLAGS and k not in ignore}


def settings_diff(old: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))


def check_settings(work: Path, args) -> None:
    """The experiment's settings are fixed by its first run (<work>/settings.json): a piece run with
    other model/training flags would mix two experiments in one result."""
    path = work / "settings.json"
    now = experiment_settings(vars(args))
    if path.exists():
        diff = settings_diff(json.loads(path.read_text()), now)
        if diff:
            raise SystemExit(f"{work} was started with other settings ({', '.join(diff)}); use the same flags "
                             "(only --variants, budgets, --threads, --out may change) or another --work")
    else:
        path.write_text(json.dumps(now, indent=1))


#: sample name → (split file name in its folder, source split). A sample's split file never shadows
#: `train.json`: every folder links the full train split (the prior's and the memory's source), the
#: candidate file and the images, so a sample's queries are built and retrieved exactly as in the full
#: split (a train row is ranked out of fold either way: mmkg.retrieval.paths.assign_prior_folds)
#: A sample's split name differs from every full split's: shard sets live at subgraphs/<dataset>/<split>/
#: <config hash>, so a sample named `dev` and the full dev split would replace each other's shards.
SAMPLES = {"train": ("train_sample", "train"), "fit": ("fit", "train"), "dev": ("dev_sample", "dev")}
LINKED = ("train.json", "analogy_entities.txt", "images")


def write_subsets(work: Path, data: Path, plan: dict[str, Any]) -> dict[str, Path]:
    """MARS folders of the samples (<work>/mars/<name>/<split>.json, original lines in plan order)
    with the full split's other files linked beside them."""
    mars = data / "markg" / "MARS"
    lines = {"train": (mars / "train.json").read_text().splitlines(),
             "dev": (mars / "dev.json").read_text().splitlines()}
    dirs = {}
    for name, (split, source) in SAMPLES.items():
        d = work / "mars" / name
        d.mkdir(parents=True, exist_ok=True)
        sel = plan["main"] if name == "dev" else plan[name]
        text = "".join(lines[source][i] + "\n" for i in sel)
        f = d / f"{split}.json"
        if not f.exists() or f.read_text() != text:
            f.write_text(text)
        for link in LINKED:  # replaces a stale link or an old sample file named like the full split
            p, target = d / link, mars / link
            if p.is_symlink() or p.is_file():
                if p.resolve() == target.resolve():
                    continue
                p.unlink()
            p.symlink_to(target)
        dirs[name] = d
    return dirs


def retrieve(kg: Path, subset: Path, split: str, top_n: int) -> Path:
    from mmkg.retrieval.batch import retrieve_dataset
    from mmkg.retrieval.retriever import RetrievalConfig
    return Path(retrieve_dataset(kg, f"mars:{subset}", RetrievalConfig(encoder=ENCODER, top_N=top_n),
                                 split=split).shard_dir)


def seen_in_train(data: Path, dev_lines: Sequence[int]) -> dict[int, bool]:
    """Whether each dev query's (question, answer) pair occurs in train as a question–answer pair or
    an example pair, any relation (ordered pairs)."""
    from benchmarks.mars_eval import seen_pairs
    mars = data / "markg" / "MARS"
    pairs = seen_pairs(read_mars(mars / "train.json"))
    dev = read_mars(mars / "dev.json")
    return {i: (dev[i]["question"], dev[i]["answer"]) in pairs for i in dev_lines}


# ---- statistics -------------------------------------------------------------------------------

def compare(ranks: dict[str, dict[str, float]], a: str, b: str, queries: Sequence[int],
            strata: dict[str, dict[int, bool]], seed: int) -> dict[str, Any]:
    """Paired comparison of variant a vs b on the queries both have: overall and per stratum (seen
    pair, answer in the retrieved facts) and its complement."""
    from mmkg.model.metrics import compare_ranks
    parts: dict[str, Any] = {"all": lambda q: True}
    for name, flags in strata.items():
        parts[name] = lambda q, f=flags: f.get(q) is True
        parts[f"not_{name}"] = lambda q, f=flags: f.get(q) is False
    out: dict[str, Any] = {}
    for part, keep in parts.items():
        qs = [q for q in queries if keep(q) and str(q) in ranks.get(a, {}) and str(q) in ranks.get(b, {})]
        out[part] = compare_ranks([ranks[a][str(q)] for q in qs], [ranks[b][str(q)] for q in qs], seed=seed)
    return out


def experiment_provenance(args, kg: Path, shards: dict[str, Path], preds: Path) -> dict[str, Any]:
    """Code, packages, data, KG, shard sets and the evaluation fingerprints of this experiment."""
    from benchmarks.mars_eval import provenance
    from mmkg.kg_store.hashing import sha256_file
    mars = Path(args.data) / "markg" / "MARS"
    files = {s: mars / f"{s}.json" for s in ("train", "dev")}
    files["candidates"] = mars / "analogy_entities.txt"
    files["mars_eval"] = REPO / "benchmarks" / "out" / "mars_eval.json"  # the no-LLM bar's ranks
    fingerprints = {p.name[:-len(".meta.json")]: json.loads(p.read_text()).get("fingerprint")
                    for p in sorted(preds.glob("*.meta.json"))}
    return provenance(files, kg, {"shard_sets": {k: sha256_file(d / "meta.json") for k, d in shards.items()},
                                  "evaluations": fingerprints})


# ---- running the variants ---------------------------------------------------------------------

def model_kwargs(name: str, args) -> dict[str, Any]:
    spec = VARIANTS[name]
    kw = {"backbone": args.backbone, "vision": args.vision, "gnn_layer": args.gnn_layer, "kg_hidden": args.kg_hidden,
          "max_text_length": args.max_text_length, "knowledge": spec["knowledge"],
          "adapter_direction": args.adapter_direction}
    if spec.get("soft_prompt"):
        kw["soft_prompt_tokens"] = args.soft_prompt_tokens
    return kw


def task_kwargs(args) -> dict[str, Any]:
    return {"mars": {"image_entities": args.image_entities}}


def train_variant(name: str, args, kg: Path, train_dir: Path, work: Path) -> dict[str, Any]:
    """Train (or continue training) one variant; {"done": bool, ...summary}."""
    from mmkg.model.training import train
    run = work / "runs" / name
    marker = run / "trained.json"
    if marker.exists():
        return {"done": True, **json.loads(marker.read_text())}
    stages = []
    if args.pretrain_examples:
        stages.append({"name": "pretrain", "task": "kg-triple", "shards": str(train_dir), "lr": args.lr,
                       "batch_size": args.batch_size, "epochs": 1, "limit": args.pretrain_examples,
                       **({"max_steps": args.max_steps} if args.max_steps else {})})
    stages.append({"name": "finetune", "task": "mars", "shards": str(train_dir), "lr": args.lr,
                   "batch_size": args.batch_size, "epochs": args.epochs, "task_kwargs": task_kwargs(args),
                   **({"max_steps": args.max_steps} if args.max_steps else {})})
    t0 = time.monotonic()
    summary = train(kg=str(kg), output_dir=str(run), seed=args.seed, device="cpu", amp=args.amp, resume=True,
                    model="mrmkg", model_kwargs=model_kwargs(name, args), stages=stages, weight_decay=0.01,
                    max_triples=args.top_n, budget_minutes=args.train_budget_minutes,
                    checkpoint_every=args.checkpoint_every, log_every=10)
    info = {"steps": summary["global_step"], "trainable_parameters": summary["parameters"]["trainable"],
            "seconds_this_run": round(time.monotonic() - t0, 1)}
    if summary["stopped_by_budget"]:
        return {"done": False, **info}
    marker.write_text(json.dumps(info))
    return {"done": True, **info}


def evaluate_variant(name: str, args, kg: Path, shards: Path, query_ids: Sequence[str], predictions: Path,
                     candidates: Path, budget: float | None, *, scores: bool = False) -> dict[str, Any]:
    from mmkg.model.evaluation import evaluate
    spec = VARIANTS[name]
    run = Path(args.work) / "runs" / name
    job = dict(kg=str(kg), task="mars", shards=str(shards), candidates=str(candidates), predictions=str(predictions),
               device="cpu", amp=args.amp, max_triples=args.top_n, query_ids=list(query_ids), ties="realistic",
               task_kwargs=task_kwargs(args), budget_minutes=budget, candidate_scores=scores, seed=args.seed)
    if args.shortlist_k:
        job["shortlist"] = {"ranker": args.shortlist_ranker, "k": args.shortlist_k, "folds": args.prior_folds,
                            "train": str(Path(args.data) / "markg" / "MARS" / "train.json")}
    if spec["train"]:
        job["checkpoint"] = str(run / "final")
    else:
        job.update(model="mrmkg", model_kwargs=model_kwargs(name, args))
    return evaluate(**job)


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line; the next evaluate run removes it
        out[rec["query_id"]] = rec
    return out


def carry_ranks(path: Path, plan: dict[str, Any], args, ranks: dict[str, dict[str, float]],
                ranks_opt: dict[str, dict[str, float]], prov: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fill `ranks` of non-derived variants with no predictions here from an earlier output of the same
    samples and settings; where a variant was run again, how many of its ranks the earlier output repeats."""
    prev = json.loads(path.read_text())
    if prev.get("queries") != plan["main"] or prev.get("ablation_queries") != plan["ablation"]:
        raise SystemExit(f"--carry {path}: its query samples differ from <work>/sample.json")
    paths = ("work", "kg", "data")  # the same experiment may have been run in another place
    diff = settings_diff(experiment_settings(prev.get("config", {}), ignore=paths),
                         experiment_settings(vars(args), ignore=paths))
    if diff:
        raise SystemExit(f"--carry {path}: made with other settings ({', '.join(diff)})")
    # code, packages, data, KG, shard sets, checkpoints (through the evaluation fingerprints)
    old_prov = prev.get("provenance")
    if prov is not None:
        differs = sorted(k for k in set(old_prov or {}) | set(prov) if (old_prov or {}).get(k) != prov.get(k))
        if differs:
            raise SystemExit(f"--carry {path}: its provenance differs ({', '.join(differs)}); re-run instead")
    out: dict[str, Any] = {"from": str(path), "variants": [], "agreement": {}}
    for name, r in prev.get("ranks", {}).items():
        if VARIANTS.get(name, {}).get("derived"):
            continue
        if name not in ranks:
            ranks[name], ranks_opt[name] = r, prev["ranks_optimistic"][name]
            out["variants"].append(name)
        else:
            common = [q for q in ranks[name] if q in r]
            out["agreement"][name] = {"queries": len(common),
                                      "same_rank": sum(ranks[name][q] == r[q] for q in common)}
    return out


def kg_only_ranks(kg: Path, dev_shards: Path, candidates: Path, sub_ids: dict[str, int], max_hops: int
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """Realistic and optimistic ranks of the gold under the KG prior alone, per original dev line."""
    from mmkg.kg_store import open_store
    from mmkg.model.data import open_graphs
    from mmkg.model.scoring import read_candidates
    from mmkg.model.fusion import kg_prior
    from mmkg.model.metrics import rank_of_gold
    store = open_store(kg)
    keys = read_candidates(candidates)
    cand_ids = store.entity_ids(keys)
    index = {k: i for i, k in enumerate(keys)}
    graphs = open_graphs(kg, [dev_shards], ["question_entity", "answer"])
    real, opt = {}, {}
    for i, qid in enumerate(graphs.query_ids):
        if qid not in sub_ids:
            continue
        row = graphs.row(i)
        if row.get("answer") not in index:
            continue
        prior = kg_prior(row, cand_ids, store.graph, max_hops=max_hops)
        gold = float(prior[index[row["answer"]]])
        line = str(sub_ids[qid])
        real[line] = rank_of_gold(prior, gold, ties="realistic")
        opt[line] = rank_of_gold(prior, gold, ties="optimistic")
    return real, opt


def priors_for(kg: Path, shards: Path, candidates: Path, query_ids: Sequence[str], max_hops: int
               ) -> dict[str, np.ndarray]:
    from mmkg.kg_store import open_store
    from mmkg.model.data import open_graphs
    from mmkg.model.scoring import read_candidates
    from mmkg.model.fusion import kg_prior
    store = open_store(kg)
    cand_ids = store.entity_ids(read_candidates(candidates))
    graphs = open_graphs(kg, [shards], ["question_entity"])
    wanted = set(query_ids)
    return {qid: kg_prior(graphs.row(i), cand_ids, store.graph, max_hops=max_hops)
            for i, qid in enumerate(graphs.query_ids) if qid in wanted}


def late_fusion(base_fit: dict[str, dict], base_dev: dict[str, dict], fit_priors: dict[str, np.ndarray],
                dev_priors: dict[str, np.ndarray], candidates: Path, sub_ids: dict[str, int]
                ) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """β fit on the fit sample, then realistic/optimistic ranks of the fused score on the dev records."""
    from mmkg.model.scoring import read_candidates
    from mmkg.model.fusion import fit_beta, fused_rank
    index = {k: i for i, k in enumerate(read_candidates(candidates))}

    def arrays(records: dict[str, dict], priors: dict[str, np.ndarray]):
        for qid, rec in records.items():
            if qid in priors and rec.get("gold") in index and "scores" in rec:
                yield qid, np.asarray(rec["scores"], dtype=np.float64), priors[qid], index[rec["gold"]]

    fit = list(arrays(base_fit, fit_priors))
    beta, table = fit_beta([s for _, s, _, _ in fit], [p for _, _, p, _ in fit], [g for _, _, _, g in fit])
    real, opt = {}, {}
    for qid, s, p, g in arrays(base_dev, dev_priors):
        real[str(sub_ids[qid])] = fused_rank(s, p, g, beta, ties="realistic")
        opt[str(sub_ids[qid])] = fused_rank(s, p, g, beta, ties="optimistic")
    return {"beta": beta, "mrr_by_beta": table, "fit_queries": len(fit)}, real, opt


# ---- report -----------------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    def mrr(m: dict[str, Any], part: str) -> str:
        v = m.get("by_stratum", {}).get(part, {})
        return f"{v['mrr']:.3f} ({v['count']})" if v.get("count") else "–"
    rows = ["| variant | queries | Hits@1 | Hits@3 | Hits@10 | MRR | MRR seen | MRR unseen | MRR answer in facts "
            "| MRR not in facts | median rank |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in result["metrics"].items():
        r = m["realistic"]
        if not r.get("count"):
            continue
        rows.append(f"| {name} | {r['count']} | {r['hits@1']:.3f} | {r['hits@3']:.3f} | {r['hits@10']:.3f} | "
                    f"{r['mrr']:.3f} | {mrr(m, 'seen')} | {mrr(m, 'not_seen')} | {mrr(m, 'in_facts')} | "
                    f"{mrr(m, 'not_in_facts')} | {r['median_rank']:.1f} |")
    rows += ["", f"On the {len(result['ablation_queries'])} ablation queries (realistic ties):", "",
             "| variant | queries | Hits@1 | Hits@3 | Hits@10 | MRR | median rank |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in result["metrics_on_ablation_queries"].items():
        if r.get("count"):
            rows.append(f"| {name} | {r['count']} | {r['hits@1']:.3f} | {r['hits@3']:.3f} | {r['hits@10']:.3f} | "
                        f"{r['mrr']:.3f} | {r['median_rank']:.1f} |")
    rows += ["", "| comparison | part | queries | MRR diff | 95 % CI | permutation p | Holm p | better / worse / ties "
             "| sign test p |", "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: |"]
    for name, parts in result["comparisons"].items():
        for part, c in parts.items():
            if not c["queries"]:
                continue
            rows.append(f"| {name} | {part} | {comparison_cells(c)} | {c['sign_test_p']:.2g} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="MR-MKG on MARS: does the KG help? (stratified samples, resumable)")
    ap.add_argument("--work", default=str(REPO / "build" / "bench" / "mars_kg"))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--kg", default=None, help="store with minilm vectors + indexes (default <work>/kg, built "
                                               "from MarKG on first use)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "mars_kg.json"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-queries", type=int, default=2000)
    ap.add_argument("--fit-queries", type=int, default=60, help="held-out train queries that fit the fusion β")
    ap.add_argument("--dev-queries", type=int, default=300)
    ap.add_argument("--ablation-queries", type=int, default=100)
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--report-only", action="store_true", help="aggregate what is there; train/evaluate nothing")
    ap.add_argument("--train-budget-minutes", type=float, default=None,
                    help="training wall time per variant in this run (the next run resumes)")
    ap.add_argument("--eval-budget-minutes", type=float, default=None,
                    help="evaluation wall time over all variants in this run (the next run resumes)")
    ap.add_argument("--carry", default=None,
                    help="an earlier output JSON of this experiment: a trained variant with no predictions under "
                         "--work takes its ranks from it (for a work dir that was lost; recorded under `carried`)")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--vision", default=None, help="vision tower (default none: no image path)")
    ap.add_argument("--gnn-layer", default="gat")
    ap.add_argument("--kg-hidden", type=int, default=256)
    ap.add_argument("--adapter-direction", default="text_to_kg", choices=["text_to_kg", "kg_to_text"])
    ap.add_argument("--max-text-length", type=int, default=256, help="facts + question tokens")
    ap.add_argument("--soft-prompt-tokens", type=int, default=16, help="learned tokens of control and text")
    ap.add_argument("--top-n", type=int, default=10, help="triples per subgraph (N)")
    ap.add_argument("--image-entities", default="label", choices=["label", "image"])
    ap.add_argument("--pretrain-examples", type=int, default=1000, help="kg-triple examples (0: no pretraining)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=None, help="cap on steps per stage (smoke runs)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--fusion-base", default="control", choices=["control", "kg", "zero_shot"])
    ap.add_argument("--shortlist-k", type=int, default=50,
                    help="the LLM ranks the top K of --shortlist-ranker, the rest keep its order (0: all 2,063)")
    ap.add_argument("--shortlist-ranker", default="memory>kg_prior", help="a mmkg.model.rankers name")
    ap.add_argument("--prior-folds", type=int, default=5, help="folds of the train counts (out of fold)")
    ap.add_argument("--max-hops", type=int, default=2, help="hops of the KG prior's distance term")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.shortlist_k and "late_fusion" in variants:
        raise SystemExit("late_fusion needs every candidate's LLM score: run it with --shortlist-k 0")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    work, data = Path(args.work), Path(args.data)
    kg = Path(args.kg or work / "kg")
    candidates = data / "markg" / "MARS" / "analogy_entities.txt"
    plan = load_plan(work, data, args)
    check_settings(work, args)
    prepare_store(kg, data)
    subsets = write_subsets(work, data, plan)
    shards = {name: retrieve(kg, subsets[name], SAMPLES[name][0], args.top_n) for name in SAMPLES}
    # subset query id ("dev_sample-000007": 8th line of the dev sample file) → original dev.json line
    dev_line = {f"{SAMPLES['dev'][0]}-{k:06d}": line for k, line in enumerate(plan["main"])}
    by_line = {line: qid for qid, line in dev_line.items()}
    # ablation queries first: a main-set variant stopped by its budget already pairs with the ablations
    abl_set = set(plan["ablation"])
    sample_ids = {"main": [by_line[i] for i in sorted(plan["main"], key=lambda line: line not in abl_set)],
                  "ablation": [by_line[i] for i in plan["ablation"]]}
    fit_ids = [f"{SAMPLES['fit'][0]}-{k:06d}" for k in range(len(plan["fit"]))]
    preds = work / "predictions"
    deadline = time.monotonic() + 60 * args.eval_budget_minutes if args.eval_budget_minutes else None
    training: dict[str, Any] = {}
    evaluation: dict[str, Any] = {}
    needs = set(variants) | ({args.fusion_base} if "late_fusion" in variants else set())
    for name in [v for v in VARIANTS if v in needs and not VARIANTS[v].get("derived")]:
        if args.report_only:
            break
        spec = VARIANTS[name]
        if spec["train"]:
            training[name] = train_variant(name, args, kg, shards["train"], work)
            if not training[name]["done"]:
                print(f"{name}: training stopped by its budget after {training[name]['steps']} steps; "
                      "run again to continue", file=sys.stderr)
                continue
        # the fusion base always keeps its candidate scores (the flag is part of the resume fingerprint)
        keep_scores = name == args.fusion_base
        jobs = [("dev", shards["dev"], sample_ids[spec["queries"]])]
        if keep_scores and "late_fusion" in variants:  # fit first: no fusion on any query without its β
            jobs.insert(0, ("fit", shards["fit"], fit_ids))
        for split, shard_dir, q in jobs:
            budget = None if deadline is None else max((deadline - time.monotonic()) / 60, 0.0)
            if budget == 0.0:
                break
            m = evaluate_variant(name, args, kg, shard_dir, q, preds / f"{name}.{split}.jsonl", candidates,
                                 budget, scores=keep_scores)
            evaluation[f"{name}.{split}"] = {k: m[k] for k in ("queries", "remaining", "complete", "seconds", "mrr")}
    # ---- aggregate everything on disk (also what earlier runs left) ----
    ranks: dict[str, dict[str, float]] = {}
    ranks_opt: dict[str, dict[str, float]] = {}
    for name in VARIANTS:
        if VARIANTS[name].get("derived"):
            continue
        recs = read_predictions(preds / f"{name}.dev.jsonl")
        allowed = set(sample_ids[VARIANTS[name]["queries"]])
        got = {q: r for q, r in recs.items() if q in allowed}
        if got:
            ranks[name] = {str(dev_line[q]): r["rank_realistic"] for q, r in got.items()}
            ranks_opt[name] = {str(dev_line[q]): r["rank_optimistic"] for q, r in got.items()}
    prov = experiment_provenance(args, kg, shards, preds)
    carried = carry_ranks(Path(args.carry), plan, args, ranks, ranks_opt, prov) if args.carry else None
    # the derived variants are cheap: computed from what is on disk on every run
    ranks["kg_only"], ranks_opt["kg_only"] = kg_only_ranks(kg, shards["dev"], candidates,
                                                           {q: dev_line[q] for q in sample_ids["main"]},
                                                           args.max_hops)
    # the no-LLM bar on the same queries (benchmarks/mars_eval.py ranks every dev line)
    bar = REPO / "benchmarks" / "out" / "mars_eval.json"
    if bar.exists():
        dev_bar = json.loads(bar.read_text())["ranks"].get("memory>kg_prior", {}).get("dev", {})
        if dev_bar:
            ranks["memory>kg_prior"] = {str(q): dev_bar[str(q)] for q in plan["main"]}
            ranks_opt["memory>kg_prior"] = ranks["memory>kg_prior"]  # realistic only
    fusion_info = None
    base_dev = read_predictions(preds / f"{args.fusion_base}.dev.jsonl")
    base_fit = read_predictions(preds / f"{args.fusion_base}.fit.jsonl")
    if base_fit and base_dev:
        wanted = set(sample_ids["main"])
        dev_recs = {q: r for q, r in base_dev.items() if q in wanted}
        fusion_info, ranks["late_fusion"], ranks_opt["late_fusion"] = late_fusion(
            base_fit, dev_recs, priors_for(kg, shards["fit"], candidates, list(base_fit), args.max_hops),
            priors_for(kg, shards["dev"], candidates, list(dev_recs), args.max_hops), candidates, dev_line)
        fusion_info.update(base=args.fusion_base, fit_complete=len(base_fit) >= len(fit_ids))
    seen = seen_in_train(data, plan["main"])
    from benchmarks.mars_eval import answer_in_facts
    facts = {dev_line[q]: v for q, v in answer_in_facts(shards["dev"]).items() if q in dev_line}
    strata = {"seen": seen, "in_facts": facts}
    metrics = {}
    for name in ranks:
        by = {}
        for s_name, flags in strata.items():
            for value, part in ((True, s_name), (False, f"not_{s_name}")):
                by[part] = summarize([r for q, r in ranks[name].items() if flags.get(int(q)) is value])
        metrics[name] = {"realistic": summarize(ranks[name].values()), "optimistic": summarize(ranks_opt[name].values()),
                         "by_stratum": by}
    main_q, abl_q = plan["main"], plan["ablation"]
    on = {"main": main_q, "ablation": abl_q}
    comparisons = {"kg vs control": compare(ranks, "kg", "control", main_q, strata, args.seed),
                   "kg vs kg_only": compare(ranks, "kg", "kg_only", main_q, strata, args.seed)}
    for name in ("zero_shot", "text", "graph", "late_fusion", "zero_shot_text"):
        if name in ranks:
            comparisons[f"{name} vs control"] = compare(ranks, name, "control", on[VARIANTS[name]["queries"]],
                                                        strata, args.seed)
    for name in ("kg", "control"):
        if "memory>kg_prior" in ranks:
            comparisons[f"{name} vs memory>kg_prior"] = compare(ranks, name, "memory>kg_prior", main_q, strata, args.seed)
    if "late_fusion" in ranks:  # complementary only if the fusion also beats the prior alone
        comparisons["late_fusion vs kg_only"] = compare(ranks, "late_fusion", "kg_only", main_q, strata, args.seed)
    add_holm([c for parts in comparisons.values() for c in parts.values()])
    # every variant on the ablation queries, so the ablation rows compare like with like
    on_ablation = {name: summarize([r[str(q)] for q in abl_q if str(q) in r]) for name, r in ranks.items()}
    result = {
        "benchmark": "mars_kg", "backbone": args.backbone, "encoder": ENCODER, "candidates": 2063,
        "query_id": "0-based line number in MARS dev.json",
        "ties": "ranks = realistic (mean of optimistic and pessimistic); ranks_optimistic beside them",
        "queries": main_q, "ablation_queries": abl_q, "main": MAIN,
        "ranks": ranks, "ranks_optimistic": ranks_opt, "metrics": metrics,
        "metrics_on_ablation_queries": on_ablation, "comparisons": comparisons,
        "late_fusion": fusion_info, "carried": carried, "pair_seen_in_train": {str(q): seen[q] for q in main_q},
        "answer_in_facts": {str(q): facts.get(q) for q in main_q},
        "shortlist": {"k": args.shortlist_k, "ranker": args.shortlist_ranker} if args.shortlist_k else None,
        "provenance": prov,
        "complete": {name: len(ranks.get(name, {})) == len(on[VARIANTS[name]["queries"]])
                     for name in VARIANTS if name in variants or name in ranks},
        "config": {k: v for k, v in vars(args).items() if k not in ("verbose",)},
        "samples": {"train": len(plan["train"]), "fit": len(plan["fit"]), "dev": len(main_q),
                    "ablation": len(abl_q)},
        "training_this_run": training, "evaluation_this_run": evaluation,
        "seconds_this_run": round(time.monotonic() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
