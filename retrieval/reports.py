"""Quality and leakage reports of a retrieval run, written as JSON beside the shards.

Quality — MARS: share of queries whose answer entity is in the retrieved subgraph at N = 10, 20
against N triples drawn at random from the same pool (`random_pool_baseline`: the triples within
`pool_hops` of the seeds) and from the neighbourhood of the question entity alone
(`random_question_entity`), and the pool itself (`answer_in_candidate_pool`, the ceiling of any
ranking); every figure also by stratum: whether the (question, answer) pair occurs in train as a
question–answer or example pair whatever the relation (`pair_in_train`), and whether the answer is
linked to the question only through triples of MARS's own analogy relations A0–A18
(`linked_only_by_analogy_relations`). ScienceQA / JSONL: mean query–triple cosine.
Leakage — MARS: answer entity / whole fact already in the KG or in train, the pair strata above,
subgraphs holding a direct question–answer triple (reported, not a leak: with the question
entity as anchor only a link can be found); ScienceQA: problems whose image (sha256) or question
text also occurs in train.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kg_store import KGStore
from kg_store.errors import KGStoreError
from kg_store.hashing import sha256_file
from retrieval.queries import QuerySet
from retrieval.subgraph import SubgraphOutput, expand_hops, random_one_hop

#: the N values MR-MKG reports (10 and 20 triples)
REPORT_N = (10, 20)
BASELINE_SEED = 0

Pairs = Sequence[tuple[np.ndarray, np.ndarray]]


def _share(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if mask.size else 0.0


@dataclass
class QuerySummaries:
    """Per query, the few figures the reports need, in query order: computed next to the
    subgraphs (in the executors under Spark), so the reports never hold queries × N triples."""

    kept: np.ndarray                     # triples kept in the shards (top_N prefix)
    score_sum: np.ndarray                # float64 sum of those triples' scores
    top1: np.ndarray                     # float64 best score, NaN for an empty subgraph
    num_candidates: np.ndarray
    seeds: list[np.ndarray]              # seed entities (the random baselines expand them)
    #: MARS only: answer in the candidate pool / in the top-n (every n of `report_ns`) /
    #: a kept triple links question and answer directly
    pool_hit: np.ndarray | None = None
    hits: dict[int, np.ndarray] = field(default_factory=dict)
    links: np.ndarray | None = None


def report_ns(top_N: int, ranked_N: int | None = None) -> list[int]:
    """The N of the MARS hit rates: every `REPORT_N` the ranked lists reach, and the shards' top_N."""
    ranked_N = max(ranked_N or top_N, top_N)
    return sorted({*[n for n in REPORT_N if n <= ranked_N], top_N})


def _pairs_link(pairs: Pairs, q_ids: np.ndarray, a_ids: np.ndarray) -> np.ndarray:
    """Per query: one of its (head, tail) pairs is question→answer or answer→question."""
    return np.array([bool(np.any(((h == q) & (t == a)) | ((h == a) & (t == q))))
                     for (h, t), q, a in zip(pairs, q_ids, a_ids)], bool)


def summarize(graph: Any, triples: np.ndarray, dataset: str, queries: Sequence[Any],
              outputs: Sequence[SubgraphOutput], *, top_N: int, hops: int = 1,
              ranked_N: int | None = None) -> QuerySummaries:
    """The `QuerySummaries` of `outputs` (ranked to `ranked_N`, the shards keep `top_N`)."""
    kept = [o.head(top_N) for o in outputs]
    s = QuerySummaries(
        kept=np.array([len(o) for o in kept], np.int64),
        score_sum=np.array([np.sum(o.scores, dtype=np.float64) for o in kept], np.float64),
        top1=np.array([o.scores[0] if len(o) else np.nan for o in kept], np.float64),
        num_candidates=np.array([o.num_candidates for o in outputs], np.int64),
        seeds=[np.asarray(o.seed_entities, np.int64) for o in outputs])
    if dataset == "mars":
        answers = np.array([q.fields["answer_entity"] for q in queries], dtype=np.int64)
        question = np.array([q.fields["question_entity"] for q in queries], dtype=np.int64)
        pool = [np.unique(triples[expand_hops(graph, triples, o.seed_entities, hops)][:, [0, 2]]) for o in outputs]
        s.pool_hit = _contains(pool, answers)
        s.hits = {n: _contains([o.head(n).entities for o in outputs], answers) for n in report_ns(top_N, ranked_N)}
        s.links = _pairs_link([(o.heads, o.tails) for o in kept], question, answers)
    return s


def _score_stats(s: QuerySummaries) -> dict[str, Any]:
    n, total = len(s.kept), int(s.kept.sum())
    full = s.kept > 0
    return {"queries": n, "empty": int((~full).sum()),
            "mean_triples": round(float(s.kept.mean()), 3) if n else 0.0,
            "mean_candidates": round(float(s.num_candidates.mean()), 1) if n else 0.0,
            "mean_query_triple_score": round(float(s.score_sum.sum() / total), 4) if total else None,
            "mean_top1_score": round(float(s.top1[full].mean()), 4) if full.any() else None}


def _contains(outputs_entities: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    return np.array([t >= 0 and bool(np.isin(t, e)) for e, t in zip(outputs_entities, targets)], dtype=bool)


def quality_report(store: KGStore, qs: QuerySet, outputs: Sequence[SubgraphOutput], *, top_N: int,
                   hops: int = 1, strata: dict[str, np.ndarray] | None = None,
                   ranked_N: int | None = None) -> dict[str, Any]:
    """Retrieval quality of one run (the shards' `top_N` triples per query).

    For MARS also at every N of `REPORT_N` that the ranked lists reach (`ranked_N`, default
    `top_N`): the top-N is the prefix of a longer ranking, so one ranking of 20 gives N = 10 and 20.
    """
    s = summarize(store.graph, store.triples_array(), qs.dataset, qs.queries, outputs, top_N=top_N, hops=hops,
                  ranked_N=ranked_N)
    return quality_from_summaries(store, qs, s, top_N=top_N, hops=hops, strata=strata, ranked_N=ranked_N)


def quality_from_summaries(store: KGStore, qs: QuerySet, s: QuerySummaries, *, top_N: int, hops: int = 1,
                           strata: dict[str, np.ndarray] | None = None,
                           ranked_N: int | None = None) -> dict[str, Any]:
    """`quality_report` from the per-query summaries (what the Spark engine sends the driver)."""
    report: dict[str, Any] = {"dataset": qs.dataset, "split": qs.split, "top_N": top_N, **_score_stats(s)}
    if qs.dataset != "mars":
        return report
    answers = np.array([q.fields["answer_entity"] for q in qs.queries], dtype=np.int64)
    question = np.array([q.fields["question_entity"] for q in qs.queries], dtype=np.int64)
    graph, triples = store.graph, store.triples_array()
    report["answer_in_candidate_pool"] = _share(s.pool_hit)
    report["pool_hops"] = hops
    report["hits"] = {}
    for n in report_ns(top_N, ranked_N):
        hit = s.hits[n]
        # the baselines draw from one generator in query order, so they are computed here, once
        rng = np.random.default_rng(BASELINE_SEED)
        rand = [random_one_hop(graph, triples, seeds, n, hops=hops, rng=rng) for seeds in s.seeds]
        rand_hit = _contains([np.unique(triples[r][:, [0, 2]]) for r in rand], answers)
        # a second baseline: N random triples around the question entity alone (no retrieval at all)
        rand_q = [random_one_hop(graph, triples, np.array([e]), n, hops=hops, rng=rng) if e >= 0
                  else np.empty(0, np.int64) for e in question]
        rand_q_hit = _contains([np.unique(triples[r][:, [0, 2]]) for r in rand_q], answers)
        entry: dict[str, Any] = {"answer_in_subgraph": _share(hit), "random_pool_baseline": _share(rand_hit),
                                 "random_question_entity": _share(rand_q_hit)}
        for name, mask in (strata or {}).items():
            entry[name] = {str(v).lower(): {"queries": int((mask == v).sum()), "answer_in_subgraph": _share(hit[mask == v]),
                                            "random_pool_baseline": _share(rand_hit[mask == v])}
                           for v in (True, False)}
        report["hits"][str(n)] = entry
    return report


# ---- leakage -----------------------------------------------------------------------------

def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _flag_summary(qids: list[str], flags: dict[str, np.ndarray], list_up_to: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"queries": len(qids), "counts": {k: int(v.sum()) for k, v in flags.items()}}
    # ids of the rarer leaks, so results can be recomputed without them
    out["query_ids"] = {k: [q for q, f in zip(qids, v) if f] for k, v in flags.items()
                        if 0 < int(v.sum()) <= list_up_to}
    return out


def mars_leakage(store: KGStore, qs: QuerySet,
                 subgraph_pairs: Pairs | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Leakage flags of MARS queries against the KG and `train.json` beside the split file.

    Returns the report and the per-query "fact leaked" mask (whole fact in the KG or in train).
    """
    flags = _mars_flags(store, qs, subgraph_pairs)
    return _mars_leakage_report(qs, flags), flags["any_fact_leak"]


def _mars_leakage_report(qs: QuerySet, flags: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"dataset": "mars", "split": qs.split, **_flag_summary([q.query_id for q in qs.queries], flags)}


def _mars_flags(store: KGStore, qs: QuerySet, subgraph_pairs: Pairs | None = None,
                links: np.ndarray | None = None) -> dict[str, np.ndarray]:
    q_keys = [q.fields["question"] for q in qs.queries]
    a_keys = [q.fields["answer"] for q in qs.queries]
    rel_keys = [q.fields["relation"] for q in qs.queries]
    q_ids, a_ids = store.entity_ids(q_keys), store.entity_ids(a_keys)
    r_ids = store.relation_ids(rel_keys)
    triples = store.triples_array()
    n_ent = max(store.num_entities, 1)
    # (h, r, t) → one int64 code, so membership is a vectorised np.isin
    code = lambda h, r, t: (np.asarray(r) * n_ent + np.asarray(h)) * n_ent + np.asarray(t)  # noqa: E731
    kg_codes = code(triples[:, 0], triples[:, 1], triples[:, 2])
    degree = store.graph.degree()
    flags: dict[str, np.ndarray] = {
        "answer_entity_in_kg_triples": (a_ids >= 0) & (degree[np.maximum(a_ids, 0)] > 0),
        "fact_in_kg": (a_ids >= 0) & (q_ids >= 0) & (r_ids >= 0) & np.isin(code(q_ids, r_ids, a_ids), kg_codes),
        "fact_in_kg_reversed": (a_ids >= 0) & (q_ids >= 0) & (r_ids >= 0)
        & np.isin(code(a_ids, r_ids, q_ids), kg_codes),
    }
    train_file = qs.source_files[0].parent / "train.json"
    if qs.split != "train" and train_file.exists():
        train = _read_jsonl(train_file)
        train_answers = {r["answer"] for r in train}
        train_entities = {k for r in train for k in (*r["example"], r["question"], r["answer"])}
        train_facts = {f for r in train for f in ((r["example"][0], r["relation"], r["example"][1]),
                                                 (r["question"], r["relation"], r["answer"]))}
        flags["answer_entity_is_train_answer"] = np.array([a in train_answers for a in a_keys], bool)
        flags["answer_entity_in_train"] = np.array([a in train_entities for a in a_keys], bool)
        flags["fact_in_train"] = np.array([(q, r, a) in train_facts for q, r, a in zip(q_keys, rel_keys, a_keys)],
                                          bool)
        pairs = {(r["question"], r["answer"]) for r in train} | {(r["example"][0], r["example"][1]) for r in train}
        flags["pair_in_train"] = np.array([(q, a) in pairs for q, a in zip(q_keys, a_keys)], bool)
    flags["linked_only_by_analogy_relations"] = _linked_only_by_analogy(store, triples, q_ids, a_ids)
    if subgraph_pairs is not None:
        links = _pairs_link(subgraph_pairs, q_ids, a_ids)
    if links is not None:  # computed per batch by `summarize`, or from the pairs just above
        flags["subgraph_links_question_to_answer"] = np.asarray(links, bool)
    leaked = flags["fact_in_kg"] | flags["fact_in_kg_reversed"] | flags.get("fact_in_train", False)
    flags["any_fact_leak"] = np.asarray(leaked, bool)
    return flags


#: the per-query flags every MARS figure is also reported by (see the module docstring)
STRATA = ("pair_in_train", "linked_only_by_analogy_relations")


def mars_strata(store: KGStore, qs: QuerySet, flags: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The `STRATA` flags of every query (from `flags` when they are already computed)."""
    flags = _mars_flags(store, qs) if flags is None else flags
    return {k: flags[k] for k in STRATA if k in flags}


#: MARS's own analogy relations in MarKG (A0 synonym, A1 antonym, …, A18)
ANALOGY_RELATION = re.compile(r"A\d+")


def _linked_only_by_analogy(store: KGStore, triples: np.ndarray, q_ids: np.ndarray, a_ids: np.ndarray) -> np.ndarray:
    """Per query: question and answer are linked by KG triples, all of them of an analogy relation."""
    rel_keys = store.table("relations", ["key"])["key"].to_pylist()
    analogy = np.array([bool(ANALOGY_RELATION.fullmatch(k or "")) for k in rel_keys], bool)
    out = np.zeros(len(q_ids), bool)
    for i, (q, a) in enumerate(zip(q_ids.tolist(), a_ids.tolist())):
        if q < 0 or a < 0:
            continue
        nb, rel, _, _ = store.graph.neighbors(q)
        links = rel[nb == a]
        out[i] = links.size > 0 and bool(analogy[links].all())
    return out


_WS = re.compile(r"\s+")


def _norm_text(s: str) -> str:
    return _WS.sub(" ", s.strip().lower())


def scienceqa_leakage(qs: QuerySet) -> dict[str, Any]:
    """Problems of this split whose image bytes (sha256) or question text also occur in train."""
    problems = json.loads(qs.source_files[0].read_text())
    root = qs.source_files[0].parent
    train = {pid: p for pid, p in problems.items() if p.get("split") == "train"}

    def image_sha(pid: str, p: dict[str, Any]) -> str | None:
        if not p.get("image"):
            return None
        f = root / "images" / str(p.get("split")) / pid / p["image"]
        return sha256_file(f) if f.exists() else None

    train_texts = {_norm_text(p["question"]) for p in train.values()}
    train_full = {(_norm_text(p["question"]), tuple(p["choices"])) for p in train.values()}
    train_images = {s for pid, p in train.items() if (s := image_sha(pid, p))}
    pids = [q.query_id for q in qs.queries]
    rows = [problems[pid] for pid in pids]
    flags = {
        "question_text_in_train": np.array([_norm_text(p["question"]) in train_texts for p in rows], bool),
        "question_and_choices_in_train": np.array(
            [(_norm_text(p["question"]), tuple(p["choices"])) in train_full for p in rows], bool),
        "image_sha256_in_train": np.array([(s := image_sha(pid, p)) is not None and s in train_images
                                           for pid, p in zip(pids, rows)], bool),
    }
    report = {"dataset": "scienceqa", "split": qs.split,
              "images_on_disk": {"train": len(train_images),
                                 "this_split": sum(image_sha(pid, p) is not None for pid, p in zip(pids, rows))},
              **_flag_summary(pids, flags)}
    if qs.split == "train":
        report["note"] = "split is train itself: every flag is trivially true"
    return report


def run_reports(store: KGStore, qs: QuerySet, outputs: Sequence[SubgraphOutput], *, top_N: int,
                hops: int = 1, ranked_N: int | None = None) -> dict[str, dict[str, Any]]:
    """The JSON side files of a shard set: {"quality": ..., "leakage": ...} (leakage where defined).

    `outputs` may be ranked deeper than the shards keep (`ranked_N` > `top_N`): leakage and score
    statistics use the first `top_N` triples, the MARS hit rates every N up to `ranked_N`.
    """
    s = summarize(store.graph, store.triples_array(), qs.dataset, qs.queries, outputs, top_N=top_N, hops=hops,
                  ranked_N=ranked_N)
    return reports_from_summaries(store, qs, s, top_N=top_N, hops=hops, ranked_N=ranked_N)


def reports_from_summaries(store: KGStore, qs: QuerySet, s: QuerySummaries, *, top_N: int, hops: int = 1,
                           ranked_N: int | None = None) -> dict[str, dict[str, Any]]:
    """`run_reports` from the per-query summaries (the Spark engine's executors compute them)."""
    reports: dict[str, dict[str, Any]] = {}
    strata = None
    if qs.dataset == "mars":
        flags = _mars_flags(store, qs, links=s.links)  # once: leakage and strata
        reports["leakage"] = _mars_leakage_report(qs, flags)
        strata = mars_strata(store, qs, flags)
    elif qs.dataset == "scienceqa":
        reports["leakage"] = scienceqa_leakage(qs)
    reports["quality"] = quality_from_summaries(store, qs, s, top_N=top_N, hops=hops, strata=strata,
                                                ranked_N=ranked_N)
    return reports


def _shard_pairs(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from kg_store.shards import read_shards
    t = read_shards(directory, ["query_id", "head_ids", "tail_ids"])
    return {q: (np.asarray(h, np.int64), np.asarray(tl, np.int64))
            for q, h, tl in zip(t["query_id"].to_pylist(), t["head_ids"].to_pylist(), t["tail_ids"].to_pylist())}


def leakage_for_dataset(store: KGStore, spec: str, splits: list[str] | None = None) -> dict[str, Any]:
    """`mmkg leakage`: per split, dataset-level leakage and, for MARS, that of every finished shard set."""
    from kg_store.shards import is_complete
    from retrieval.queries import build_queries, parse_dataset_spec

    name, path = parse_dataset_spec(spec)
    if splits is None:
        splits = [path.stem] if path.is_file() and name == "mars" else \
            (["dev", "test"] if name == "mars" else ["val", "test"])
    out: dict[str, Any] = {"dataset": name, "kg_version": store.kg_version, "splits": {}}
    for split in splits:
        qs = build_queries(spec, store=store, split=split)
        if name == "scienceqa":
            out["splits"][split] = scienceqa_leakage(qs)
            continue
        if name != "mars":
            raise KGStoreError(f"leakage is defined for mars and scienceqa, not {name}")
        report, _ = mars_leakage(store, qs)
        report["shards"] = {}
        base = store.path(f"subgraphs/mars/{qs.split}")
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            if not is_complete(d):
                continue
            pairs = _shard_pairs(d)
            sub = QuerySet(qs.dataset, qs.split, [q for q in qs.queries if q.query_id in pairs], qs.source_files)
            r, _ = mars_leakage(store, sub, [pairs[q.query_id] for q in sub.queries])
            report["shards"][d.name] = {"queries": r["queries"],
                                        "subgraph_links_question_to_answer":
                                            r["counts"]["subgraph_links_question_to_answer"],
                                        "any_fact_leak": r["counts"]["any_fact_leak"]}
        out["splits"][split] = report
    return out
