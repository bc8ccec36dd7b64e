"""MARS evaluation you can trust: every dev and test query, realistic ties, the no-LLM bars.

    python benchmarks/mars_eval.py                                  # rankers on all dev + test lines
    python benchmarks/mars_eval.py --reproduce 0,5,17 --variant memory>kg_prior   # {line: rank} again

Ranks every line of MARS dev.json and test.json (1,020 + 1,362) among all 2,063 candidates with
each registered no-LLM ranker (`mmkg.model.rankers`: memory, kg_prior, memory>kg_prior; `--reranker`: the
learned reranker, its model `mars_reranker.lgb.txt` and TransE weights `mars_kge.safetensors` written
beside the JSON), each query scored
on its own from its row (question, example pair) and the train split only. Writes
`benchmarks/out/mars_eval.json`:

    {"ranks": {NAME: {"dev": {line: rank}, "test": {line: rank}}},
     "seen": {"dev": {line: bool}, "test": {line: bool}},       # (question, answer) a train pair
     "in_facts": {"dev": {line: bool}, ...},                    # answer in the retrieved triples (from shards)
     "metrics": {NAME: {split: {"all"|"seen"|"unseen"|...: {...}}}},
     "comparisons": [...], "provenance": {...}, "main": {...}}

`line` is the 0-based line of the split file; ranks are realistic (1 + #higher + #tied others / 2).
Variants ranked elsewhere (the model experiments) are kept from the existing file with their
own provenance; this script recomputes only the rankers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

# the per-query products are small: BLAS threads only contend for the cores (3x slower on 2 busy cores)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmkg.retrieval.paths import read_mars_rows  # noqa: E402

RANKERS = ("memory", "kg_prior", "memory>kg_prior")
SPLITS = ("dev", "test")
N_PERM = 10000


def prepare_kg(kg: Path, data: Path) -> None:
    """The MarKG store with minilm vectors (the reranker's embedding features) and indexes (the
    retriever's), built once, each step skipped when already committed."""
    from benchmarks.mars_smollm2 import prepare_store
    prepare_store(kg, data)


def seen_pairs(train: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """(question, answer) and example pairs of train, any relation (ordered)."""
    return {(r["question"], r["answer"]) for r in train} | {tuple(r["example"]) for r in train}


def answer_in_facts(shard_dir: Path) -> dict[str, bool]:
    """query id → whether its answer is an endpoint of one of its retrieved triples (real shard rows)."""
    from mmkg.kg_store.shards import read_shards
    t = read_shards(shard_dir, ["query_id", "answer_entity", "head_ids", "tail_ids"]).to_pylist()
    return {r["query_id"]: r["answer_entity"] in set(r["head_ids"]) | set(r["tail_ids"]) for r in t}


def strata_metrics(ranks: dict[str, float], strata: dict[str, dict[str, bool]]) -> dict[str, Any]:
    from mmkg.model.metrics import summarize
    out = {"all": summarize(list(ranks.values()))}
    for name, flags in strata.items():
        for value, label in ((True, name), (False, f"not_{name}")):
            out[label] = summarize([r for q, r in ranks.items() if flags.get(q) is value])
    return out


def compare_all(ranks: dict[str, dict[str, dict[str, float]]], pairs: Sequence[tuple[str, str]],
                split: str, strata: dict[str, dict[str, bool]], seed: int = 0) -> list[dict[str, Any]]:
    """Paired comparisons of the pairs on the lines both ranked, overall and per stratum; Holm-corrected
    over every comparison reported together."""
    from mmkg.model.metrics import add_holm, compare_ranks
    rows = []
    for a, b in pairs:
        if a not in ranks or b not in ranks:
            continue
        ra, rb = ranks[a].get(split, {}), ranks[b].get(split, {})
        parts = {"all": lambda q: True}
        for name, flags in strata.items():
            parts[name] = lambda q, f=flags: f.get(q) is True
            parts[f"not_{name}"] = lambda q, f=flags: f.get(q) is False
        for part, keep in parts.items():
            qs = [q for q in ra if q in rb and keep(q)]
            if qs:
                rows.append({"a": a, "b": b, "split": split, "part": part,
                             **compare_ranks([ra[q] for q in qs], [rb[q] for q in qs], n_perm=N_PERM, seed=seed)})
    add_holm(rows, N_PERM)
    return rows


def provenance(paths: dict[str, Path], kg: Path | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a result depends on: the code commit, package versions, input file hashes, the KG."""
    import importlib.metadata as md
    from mmkg.kg_store.hashing import sha256_file

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    packages = {}
    for name in ("numpy", "pyarrow", "torch", "transformers", "lightgbm", "scipy"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    out: dict[str, Any] = {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain",
                                                                                   "--untracked-files=no")),
                           "python": platform.python_version(), "packages": packages,
                           "files": {k: sha256_file(p) for k, p in sorted(paths.items()) if p.exists()}}
    if kg is not None:
        from mmkg.kg_store import open_store
        store = open_store(kg)
        out["kg"] = {"kg_version": store.kg_version, "graph": store.graph_rel}
    out.update(extra or {})
    return out


def rank_split(ctx: Any, name: str, rows: Sequence[dict[str, Any]], lines: Sequence[int] | None = None
               ) -> dict[str, float]:
    from mmkg.model.rankers import rank_rows
    lines = list(range(len(rows))) if lines is None else list(lines)
    ranks = rank_rows(ctx, name, [rows[i] for i in lines], progress=True)
    return {str(i): r for i, r in zip(lines, ranks)}


def train_reranker_variant(ctx: Any, kg: Path, mars: Path, rows: dict[str, list[dict[str, Any]]], out: Path,
                           seed: int = 0, cache: Path | None = None) -> dict[str, Any]:
    """Train the reranker on train rows featurised out of fold (`mmkg.model.reranker.training_set`: its seen
    share is dev's), stop early on dev, rank dev and test; then the ablation: the same training with
    each feature group left out, ranked on test. `cache`: a folder of featurised shortlists
    (`mmkg.model.reranker.featurize_cached`), so a rerun skips the walk."""
    from mmkg.model.kge import load_or_train_kge, save_kge
    from mmkg.model.metrics import bootstrap_mrr_diff, permutation_mrr_p
    from mmkg.model.reranker import FEATURES, EntityVectors, available_groups, feature_names, featurize_cached, \
        fit_reranker, rank_featurized, training_set
    t0 = time.perf_counter()
    vectors = EntityVectors(ctx.store)
    # the TransE embedding of the KG (trained once, cached under the KG) and its committed copy
    ctx.kge, kge_key = load_or_train_kge(kg)
    save_kge(out.with_name("mars_kge.safetensors"), ctx.kge)
    t_kge = time.perf_counter() - t0
    train_rows = read_mars_rows(mars / "train.json")
    feats = {s: featurize_cached(ctx, rows[s], train_rows=False, vectors=vectors, cache=cache, progress=True)
             for s in SPLITS}
    train, mixture = training_set(ctx, kg, mars, train_rows, target_seen_share=float(np.mean(feats["dev"].seen)),
                                  vectors=vectors, seed=seed, cache=cache, progress=True)
    t_feat = time.perf_counter() - t0
    groups = available_groups(vectors, ctx.kge)
    booster = fit_reranker(train, feature_names(groups), valid=feats["dev"], seed=seed)
    model_path = out.with_name("mars_reranker.lgb.txt")
    booster.save_model(str(model_path))
    ranks = {s: {str(i): r for i, r in enumerate(rank_featurized(feats[s], booster))} for s in SPLITS}
    ablation = {}
    full_test = [ranks["test"][str(i)] for i in range(len(rows["test"]))]
    for g in groups:
        names = [n for n in feature_names(groups) if n not in FEATURES[g]]
        b = fit_reranker(train, names, valid=feats["dev"], seed=seed)
        r = rank_featurized(feats["test"], b)
        diff, lo, hi = bootstrap_mrr_diff(r, full_test, seed=seed)
        ablation[f"without {g}"] = {"features": names, "rounds": b.best_iteration or b.current_iteration(),
                                    "test_mrr": float(np.mean(1 / np.array(r))), "mrr_change": diff,
                                    "ci95": [lo, hi], "permutation_p": permutation_mrr_p(r, full_test, n_perm=N_PERM,
                                                                                         seed=seed)}
    ablation["without llm"] = {"not_run": "no LLM score feature: scoring every train shortlist with SmolLM2 on "
                                          "2 cores was out of this session's budget"}
    recall = {s: float(np.mean([g in set(t.tolist()) for g, t in zip(feats[s].gold, feats[s].top)]))
              for s in SPLITS}
    return {"ranks": ranks, "model": model_path.name, "features": feature_names(groups), "training_mixture": mixture,
            "rounds": booster.best_iteration or booster.current_iteration(), "k": feats["test"].sizes[0],
            "recall_at_k": recall, "ablation": ablation, "feature_seconds": round(t_feat, 1),
            "kge": {"file": "mars_kge.safetensors", "key": kge_key, "params": json.loads(ctx.kge.meta["params"]),
                    "final_loss": float(ctx.kge.meta["final_loss"]), "seconds_to_load_or_train": round(t_kge, 1)},
            "seconds": round(time.perf_counter() - t0, 1),
            "importance_gain": dict(zip(booster.feature_name(),
                                        [round(float(v), 1) for v in booster.feature_importance("gain")]))}


def markdown(result: dict[str, Any]) -> str:
    out = []
    for split in SPLITS:
        out += [f"**MARS {split}** (all {result['counts'][split]} queries, realistic ties; seen = the (question, "
                "answer) pair occurs in train)", "",
                "| variant | MRR | Hits@1 | Hits@3 | Hits@10 | MRR seen | MRR unseen | MRR answer in facts | "
                "MRR not in facts |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, by in result["metrics"].items():
            m = by.get(split)
            if not m or not m["all"].get("count"):
                continue

            def mrr(part: str, m=m) -> str:
                v = m.get(part, {})
                return f"{v['mrr']:.3f} ({v['count']})" if v.get("count") else "–"
            a = m["all"]
            out.append(f"| {name} | {a['mrr']:.3f} | {a['hits@1']:.3f} | {a['hits@3']:.3f} | {a['hits@10']:.3f} | "
                       f"{mrr('seen')} | {mrr('not_seen')} | {mrr('in_facts')} | {mrr('not_in_facts')} |")
        out.append("")
    rows = [c for c in result.get("comparisons", []) if c["part"] == "all"]
    if rows:
        from mmkg.model.metrics import comparison_cells
        out += ["| comparison | split | queries | MRR diff | 95 % CI | permutation p | Holm p | better / worse / ties |",
                "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
        out += [f"| {c['a']} vs {c['b']} | {c['split']} | {comparison_cells(c)} |" for c in rows]
    ablation = (result.get("reranker") or {}).get("ablation") or {}
    if ablation:
        out += ["", "**Reranker ablation** (retrained without the group, early stopping on dev; test MRR change "
                "against the full reranker, 95 % bootstrap interval, paired permutation p)", "",
                "| left out | rounds | test MRR | change | 95 % CI | permutation p |",
                "| --- | ---: | ---: | ---: | --- | ---: |"]
        for name, a in ablation.items():
            if "not_run" in a:
                out.append(f"| {name.removeprefix('without ')} | – | – | – | – | not run: {a['not_run']} |")
            else:
                out.append(f"| {name.removeprefix('without ')} | {a['rounds']} | {a['test_mrr']:.3f} | "
                           f"{a['mrr_change']:+.3f} | [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}] | "
                           f"{a['permutation_p']:.2g} |")
    return "\n".join(out) + "\n"


LLM_OUT = REPO / "benchmarks" / "out" / "mars_llm.json"


def llm_variants(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Test ranks of `benchmarks/mars_llm.py`'s variants (llm_kg, llm_control) in this file's layout."""
    if not path.exists():
        return {}
    return {name: {"test": by} for name, by in json.loads(path.read_text())["ranks"]["test"].items()}


STACK_OUT = REPO / "benchmarks" / "out" / "mars_reranker_llm.json"


def llm_stack(path: Path) -> dict[str, Any]:
    """`benchmarks/mars_reranker_llm.py`'s result with the ablation row it gives: the reranker without its
    LLM group (the frozen LLM fused over its top k) against the reranker with it, on test."""
    if not path.exists():
        return {}
    r = json.loads(path.read_text())
    c = r["comparisons"][0]  # a = reranker (without llm), b = reranker+llm
    r["ablation_row"] = {"rounds": "–", "test_mrr": c["mrr_a"], "mrr_change": c["mrr_diff"], "ci95": c["ci95"],
                         "permutation_p": c["mrr_permutation_p"],
                         "how": f"second stage: z(reranker) + {r['config']['w']} z(LLM {r['config']['scoring']}) "
                                f"over the top {r['config']['shortlist']['k']}, fitted on dev "
                                "(benchmarks/out/mars_reranker_llm.json)"}
    return r


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="MARS rankers on every dev and test query (realistic ties)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--kg", type=Path, default=REPO / "build" / "bench" / "markg-minilm",
                    help="MarKG store with minilm vectors (built on first use: a few minutes)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "mars_eval.json")
    ap.add_argument("--folds", type=int, default=5, help="folds of the train counts (out-of-fold features)")
    ap.add_argument("--shards", action="append", default=[], metavar="SPLIT=DIR",
                    help="shard set of a split (full split, default retriever) for the answer-in-facts stratum")
    ap.add_argument("--reproduce", default=None, help="comma-separated test lines: print {line: rank} and exit")
    ap.add_argument("--variant", default="memory>kg_prior")
    ap.add_argument("--split", default="test", choices=SPLITS)
    ap.add_argument("--reranker", action="store_true",
                    help="also train the LightGBM reranker (needs a --kg with minilm entity vectors for its "
                         "embedding features) and its ablations")
    ap.add_argument("--feature-cache", default=str(REPO / "build" / "reranker-features"),
                    help="folder of the reranker's featurised shortlists, keyed by what they depend on "
                         "(an empty string: no cache)")
    args = ap.parse_args(argv)
    from mmkg.model.rankers import MarsContext

    mars = args.data / "markg" / "MARS"
    prepare_kg(args.kg, args.data)
    ctx = MarsContext.from_files(args.kg, mars, folds=args.folds)
    rows = {s: read_mars_rows(mars / f"{s}.json") for s in SPLITS}
    if args.reproduce is not None:
        from mmkg.model.reranker_run import VARIANTS as TRAINED
        if args.variant in TRAINED:
            from mmkg.model.reranker import reproduce  # trained variants: their committed artifacts
            print(json.dumps(reproduce(args, ctx, rows[args.split])))
            return {}
        lines = [int(x) for x in args.reproduce.split(",") if x.strip()]
        print(json.dumps(rank_split(ctx, args.variant, rows[args.split], lines)))
        return {}
    t0 = time.perf_counter()
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    ranks: dict[str, dict[str, dict[str, float]]] = {k: v for k, v in old.get("ranks", {}).items()
                                                    if k not in RANKERS}
    seconds = {}
    for name in RANKERS:
        t = time.perf_counter()
        ranks[name] = {s: rank_split(ctx, name, rows[s]) for s in SPLITS}
        seconds[name] = round(time.perf_counter() - t, 1)
    in_facts = {} if args.shards else old.get("in_facts", {})  # no --shards: the strata of the last run
    for spec in args.shards:
        split, _, d = spec.partition("=")
        prefix = f"{split}-"  # a full split's query id is "<split>-<line>"
        in_facts[split] = {str(int(q[len(prefix):])): v for q, v in answer_in_facts(Path(d)).items()
                           if q.startswith(prefix)}
    reranker = None
    if args.reranker:
        reranker = train_reranker_variant(ctx, args.kg, mars, rows, args.out,
                                          cache=Path(args.feature_cache) if args.feature_cache else None)
        ranks["reranker"] = reranker.pop("ranks")
    elif "reranker" in old.get("ranks", {}):
        reranker = old.get("reranker")
    llm = llm_variants(LLM_OUT)  # the frozen-LLM pair of benchmarks/mars_llm.py (its own, long run)
    ranks.update(llm)
    stack = llm_stack(STACK_OUT)  # the reranker's LLM group (benchmarks/mars_reranker_llm.py)
    if stack and reranker is not None:
        ranks["reranker+llm"] = {"test": stack["ranks"]["test"]["reranker+llm"]}
        reranker["ablation"]["without llm"] = stack["ablation_row"]
    pairs = seen_pairs(read_mars_rows(mars / "train.json"))
    seen = {s: {str(i): (r["question"], r["answer"]) in pairs for i, r in enumerate(rows[s])} for s in SPLITS}
    metrics: dict[str, Any] = {}
    for name, by in ranks.items():
        metrics[name] = {}
        for s in SPLITS:
            if by.get(s):
                strata = {"seen": seen[s], **({"in_facts": in_facts[s]} if s in in_facts else {})}
                metrics[name][s] = strata_metrics(by[s], strata)
    main_ = old.get("main", {})
    if llm:
        main_.update(llm_kg="llm_kg", llm_control="llm_control")
    pairs_ = [("memory>kg_prior", "memory"), ("memory>kg_prior", "kg_prior"), ("memory", "kg_prior")]
    if "reranker" in ranks:
        main_["best"] = "reranker"
        pairs_.append(("reranker", "memory>kg_prior"))
    if main_.get("llm_kg") and main_.get("llm_control"):
        pairs_.append((main_["llm_kg"], main_["llm_control"]))
    if "reranker+llm" in ranks:
        pairs_.append(("reranker+llm", "reranker"))
    comparisons = compare_all(ranks, pairs_, "test", {"seen": seen["test"],
                                                      **({"in_facts": in_facts["test"]} if "test" in in_facts else {})})
    files = {"train": mars / "train.json", "dev": mars / "dev.json", "test": mars / "test.json",
             "candidates": mars / "analogy_entities.txt",
             "markg_triples": args.data / "markg" / "MarKG" / "wiki_tuple_ids.txt"}
    prov = old.get("provenance", {})
    prov["rankers"] = provenance(files, args.kg, {"folds": args.folds, "seconds": seconds,
                                                  "shards": {s: str(d) for s, d in (x.partition("=")[::2]
                                                                                    for x in args.shards)}})
    result = {
        "benchmark": "mars_eval", "candidates": len(ctx.candidates),
        "counts": {s: len(rows[s]) for s in SPLITS},
        "line": "0-based line number in the split file", "ties": "realistic: 1 + #higher + #tied others / 2",
        "split_note": "our MARS split (10,641 / 1,020 / 1,362) is not the paper's (10,685 / 1,228 / 1,415); "
                      "published figures (MKGformer 0.341, MR-MKG 0.449 MRR) are on theirs",
        "ranks": ranks, "seen": seen, "in_facts": in_facts, "metrics": metrics, "comparisons": comparisons,
        "main": main_, "reranker": reranker, "provenance": prov, "seconds": round(time.perf_counter() - t0, 1),
    }
    from mmkg.kg_store import atomic
    atomic.write_json(args.out, result)
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
