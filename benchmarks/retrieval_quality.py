"""Does the subgraph hold the answer? Every retriever side by side on the whole MARS dev and test
splits over the whole MarKG (real MiniLM vectors), at N = 10 and 20, with the strata and the bars.

Per split, retriever and N: answer coverage (the answer entity is an end of a kept triple) overall
and by stratum (`pair_in_train`: the (question, answer) pair occurs in train as a question–answer or
example pair, any relation; `linked_only_by_analogy_relations`: the question–answer link in the KG
is only through A0–A18 triples); the random baselines (N random triples of the 1-hop and of the
2-hop neighbourhood of the question entity); and the KG-only ranker (all 2,063 candidates ranked
by the learned path prior from the question entity, no LLM; unreached candidates tie last, ranks
are the mean of the optimistic and pessimistic rank): Hits@1/10 and MRR — the bar a model must
clear. The prior is fitted on the whole train split, never on dev/test. Prints and writes JSON.

    python benchmarks/retrieval_quality.py [--kg build/bench/markg-minilm] [--retrievers anchored,mrmkg,pcst]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
ENCODER = "minilm"


def markg_store(kg: Path):
    """The whole MarKG with MiniLM vectors and indexes (built once, reused)."""
    from mmkg.kg_store import open_store
    if not (kg / "manifest.json").exists():
        from mmkg.pipeline.ingest import ingest
        ingest(kg, [f"markg:{DATA / 'markg/MarKG'}"], engine="local")
    if open_store(kg).artifact(f"vectors/{ENCODER}") is None:
        from mmkg.pipeline.embed import embed_store
        embed_store(kg, ENCODER, progress=False)
    if open_store(kg).artifact(f"indexes/{ENCODER}") is None:
        from mmkg.retrieval.index import build_store_indexes
        build_store_indexes(kg, ENCODER)
    return open_store(kg)


def write_report(result: dict, out: Path) -> None:
    """Write the benchmark's JSON and print it (every retrieval benchmark ends so)."""
    text = json.dumps(result, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)


def share(mask: np.ndarray) -> float:
    return round(float(np.mean(mask)), 4) if len(mask) else float("nan")


def coverage(outputs, answers: np.ndarray) -> np.ndarray:
    return np.array([a in set(o.heads.tolist()) | set(o.tails.tolist()) for o, a in zip(outputs, answers)], bool)


def random_baseline(store, questions: np.ndarray, answers: np.ndarray, n: int, hops: int, seed: int = 0) -> np.ndarray:
    from mmkg.retrieval.subgraph import random_one_hop
    rng, triples, hit = np.random.default_rng(seed), store.triples_array(), []
    for q, a in zip(questions, answers):
        pick = random_one_hop(store.graph, triples, np.array([q]), n, hops=hops, rng=rng) if q >= 0 else []
        hit.append(a in set(triples[pick][:, [0, 2]].ravel().tolist()) if len(pick) else False)
    return np.array(hit, bool)


def kg_only_ranks(store, qs, prior) -> tuple[np.ndarray, np.ndarray]:
    """(realistic, optimistic) rank of each gold among all candidates by the prior alone."""
    from mmkg.retrieval.paths import linking_types, paths_from
    R, space = store.num_relations, qs.answer_space
    real, opt = [], []
    for q in qs.queries:
        qid, gold = q.fields["question_entity"], q.fields["answer_entity"]
        scores = np.zeros(len(space))
        if qid >= 0:
            p = paths_from(store.graph, qid, R)
            p = p.select(np.isin(p.endpoint, space))
            eh, et = store.entity_ids(q.example_keys).tolist()
            ends, sc = prior.full.score_endpoints(p, linking_types(store.graph, eh, et, R))
            scores[np.searchsorted(space, ends)] = sc
        g = scores[np.searchsorted(space, gold)] if gold in set(space.tolist()) else -1.0
        better, ties = int((scores > g).sum()), int((scores == g).sum())  # ties include the gold itself
        opt.append(better + 1)
        real.append(better + (ties + 1) / 2)
    return np.array(real), np.array(opt)


def rank_metrics(ranks: np.ndarray) -> dict:
    return {"hits@1": share(ranks <= 1), "hits@10": share(ranks <= 10), "mrr": round(float(np.mean(1 / ranks)), 4),
            "median_rank": float(np.median(ranks))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kg", type=Path, default=ROOT / "build/bench/markg-minilm")
    ap.add_argument("--retrievers", default="anchored,mrmkg,pcst")
    ap.add_argument("--splits", default="dev,test")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/retrieval_quality.json")
    args = ap.parse_args()

    from mmkg.retrieval.paths import load_or_fit_prior
    from mmkg.retrieval.datasets import build_queries
    from mmkg.retrieval.datasets.mars import mars_strata
    from mmkg.retrieval.retriever import RetrievalConfig, SubgraphRetriever, retriever_class

    t0 = time.perf_counter()
    store = markg_store(args.kg)
    result: dict = {"kg": str(args.kg), "encoder": ENCODER, "triples": store.count("triples"), "splits": {}}
    for split in args.splits.split(","):
        qs = build_queries(f"mars:{DATA / 'markg/MARS'}", store=store, split=split)
        prior, key = load_or_fit_prior(args.kg, qs.train_file, qs.answer_space)
        store = markg_store(args.kg)
        answers = np.array([q.fields["answer_entity"] for q in qs.queries])
        questions = np.array([q.fields["question_entity"] for q in qs.queries])
        strata = mars_strata(store, qs)
        entry: dict = {"queries": len(qs.queries), "prior": key,
                       "strata_sizes": {k: int(v.sum()) for k, v in strata.items()}, "retrievers": {}}
        for name in args.retrievers.split(","):
            entry["retrievers"][name] = {}
            for n in (10, 20):
                t = time.perf_counter()
                config = RetrievalConfig(encoder=ENCODER, retriever=name, top_N=n)
                r = SubgraphRetriever(store, config, answer_space=qs.answer_space,
                                      prior=prior if retriever_class(config).uses_prior else None)
                hit = coverage(r.retrieve(qs.queries), answers)
                entry["retrievers"][name][str(n)] = {
                    "answer_in_subgraph": share(hit), "seconds": round(time.perf_counter() - t, 2),
                    **{k: {"true": share(hit[v]), "false": share(hit[~v])} for k, v in strata.items()}}
                print(f"{split} {name} N={n}: {share(hit)}", file=sys.stderr)
        entry["random_question_entity"] = {str(n): {f"{h}hop": share(random_baseline(store, questions, answers, n, h))
                                                    for h in (1, 2)} for n in (10, 20)}
        real, opt = kg_only_ranks(store, qs, prior)
        entry["kg_only_ranker"] = {"realistic": rank_metrics(real), "optimistic": rank_metrics(opt),
                                   "by_pair_in_train": {str(v).lower(): rank_metrics(real[strata["pair_in_train"] == v])
                                                        for v in (True, False)}}
        result["splits"][split] = entry
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_report(result, args.out)


if __name__ == "__main__":
    main()
