"""MARS (MarKG's analogical reasoning benchmark): queries, answer space, reports and leakage.

A query is an analogy (e_h, e_t) : (e_q, ?) phrased "<e_h> is to <e_t> as <e_q> is to ?"; every
answer is one of the candidate entities of `analogy_entities.txt` beside the split files.

Quality: share of queries whose answer entity is in the retrieved subgraph at N = 10, 20 against
N triples drawn at random from the same pool (`random_pool_baseline`: the triples within
`pool_hops` of the seeds) and from the neighbourhood of the question entity alone
(`random_question_entity`), and the pool itself (`answer_in_candidate_pool`, the ceiling of any
ranking); every figure also by stratum: whether the (question, answer) pair occurs in train as a
question–answer or example pair whatever the relation (`pair_in_train`), and whether the answer is
linked to the question only through triples of MARS's own analogy relations A0–A18
(`linked_only_by_analogy_relations`).
Leakage: answer entity / whole fact already in the KG or in train, the pair strata above,
subgraphs holding a direct question–answer triple (reported, not a leak: with the question
entity as anchor only a link can be found).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.hashing import mix, string_keys
from mmkg.retrieval.datasets.base import (Dataset, EntityLabels, Query, QuerySet, datasets, entity_image, store_images,
                                     tree_files)
from mmkg.retrieval.paths import mars_row_digest, mars_train_sets
from mmkg.retrieval.query_rejects import BadRecord, numbered_lines, reject
from mmkg.retrieval.ranking import pool_chunks, rank_in_segment
from mmkg.retrieval.summaries import (BASELINE_SEED, REPORT_N, Pairs, first_end_position, flag_summary, pairs_link,
                                     report_ns, share)

#: MarT's modality pattern per MARS mode: roles (example head, example tail, question)
MARS_MODES: dict[int, tuple[str, str, str]] = {
    0: ("text", "text", "image"),   # (T1,T2) -> (I1,?)
    1: ("image", "image", "text"),  # (I1,I2) -> (T1,?)
    2: ("image", "text", "image"),  # (I1,T1) -> (I2,?)
}
MARS_SLOTS = ("example head", "example tail", "question")
#: the MARS candidate entities (every answer is one of them), beside the split files
MARS_CANDIDATES = "analogy_entities.txt"
#: the split the path prior learns from and the leakage checks compare with, beside the others
TRAIN_FILE = "train.json"


def mars_image_slots(mode: int) -> tuple[int, ...]:
    """Positions (0 example head, 1 example tail, 2 question) that MARS `mode` shows as images."""
    return tuple(i for i, role in enumerate(MARS_MODES.get(int(mode), ("text",) * 3)) if role == "image")


def mars_model_image_slot(mode: int) -> int | None:
    """The one image a single-image model (MR-MKG's visual adapter) is given for `mode`: the
    question's when the question is shown as an image, else the first image of the example pair."""
    slots = mars_image_slots(mode)
    return 2 if 2 in slots else (slots[0] if slots else None)


_strs, _ints = pa.list_(pa.string()), pa.list_(pa.int64())
MARS_FIELD_TYPES = {"example": _strs, "question": pa.string(), "answer": pa.string(), "relation": pa.string(),
                    "mode": pa.int64(), "example_entities": _ints, "question_entity": pa.int64(),
                    "answer_entity": pa.int64(), "image_paths": _strs, "image_entities": _ints,
                    "example_labels": _strs, "question_label": pa.string(), "answer_label": pa.string()}


def _split_file(path: Path, split: str | None, pattern: str) -> tuple[Path, str]:
    if path.is_dir():
        if split is None:
            raise KGStoreError(f"{path} is a directory: pass --split")
        f = path / pattern.format(split=split)
        if not f.exists():
            raise KGStoreError(f"no {f.name} in {path}")
        return f, split
    return path, split or path.stem


@datasets.register("mars", "markg")
class MarsDataset(Dataset):
    """MARS split files (`<split>.json`, one analogy a line) with `analogy_entities.txt`,
    `train.json` and `images/<entity key>/` beside them."""

    name = "mars"
    train_split, fit_split, eval_split = "train", "dev", "test"
    field_types = MARS_FIELD_TYPES
    answer_summaries = True
    has_leakage = True

    def split_file(self, split: str | None) -> tuple[Path, str]:
        return _split_file(self.path, split, "{split}.json")

    def defining_files(self, split: str | None) -> list[Path]:
        # the split file, the answer space, the prior's train file and the images folder (an
        # entity in an image role is shown by the first file of its folder)
        file, _ = self.split_file(split)
        side = [file.parent / n for n in (MARS_CANDIDATES, TRAIN_FILE)]
        return sorted({file, *(f for f in side if f.is_file()), *tree_files(file.parent / "images")})

    def leakage_splits(self) -> list[str]:
        return [self.path.stem] if self.path.is_file() else super().leakage_splits()

    def queries(self, *, store: KGStore | None = None, split: str | None = None,
                with_images: bool = False) -> QuerySet:
        """An entity in an image role (MarT's mode pattern) is given by its image when the encoder
        has a vision tower and an image exists; otherwise by its label, since most MarKG entities
        have no image here and an empty slot would lose the analogy."""
        if store is None:
            raise KGStoreError("MARS queries need the KG store (entity labels)")
        file, split = self.split_file(split)
        rejects: list[dict[str, Any]] = []
        rows = []  # (index among non-blank lines, row)
        for n, i, line in numbered_lines(file, rejects):
            try:
                rows.append((i, _mars_row(line)))
            except BadRecord as e:
                rejects.append(reject(file, n, line, str(e)))
        labels = EntityLabels(store)
        keys = sorted({k for _, r in rows for k in (*r["example"], r["question"], r["answer"])})
        label_of = dict(zip(keys, labels(keys)))
        id_of = dict(zip(keys, store.entity_ids(keys).tolist()))
        image_dirs = [file.parent / "images"]
        blobs = store_images(store) if with_images else {}
        queries = []
        for i, r in rows:
            (eh, et), eq = r["example"], r["question"]
            shown = mars_image_slots(r["mode"])
            parts, images, image_entities = [], [], []
            for slot, key in enumerate((eh, et, eq)):
                img = entity_image(key, id_of[key], blobs, image_dirs) if with_images and slot in shown else None
                if img is not None:
                    images.append(img)
                    image_entities.append(id_of[key])
                    parts.append("this image")
                else:
                    parts.append(label_of[key])
            text = f"{parts[0]} is to {parts[1]} as {parts[2]} is to ?"
            queries.append(Query(
                query_id=f"{split}-{i:06d}", text=text, image_paths=images, entity_keys=[eq], example_keys=[eh, et],
                row_digest=mars_row_digest(r),
                fields={"example": [eh, et], "question": eq, "answer": r["answer"], "relation": r["relation"],
                        "mode": int(r["mode"]), "example_entities": [id_of[eh], id_of[et]],
                        "question_entity": id_of[eq], "answer_entity": id_of[r["answer"]],
                        "image_paths": images, "image_entities": image_entities,
                        "example_labels": [label_of[eh], label_of[et]], "question_label": label_of[eq],
                        "answer_label": label_of[r["answer"]]}))
        space_file = file.parent / MARS_CANDIDATES
        answer_space = None
        if space_file.exists():
            ids = store.entity_ids([k for k in space_file.read_text().split() if k])
            answer_space = np.unique(ids[ids >= 0])
        train_file = file.parent / TRAIN_FILE
        return QuerySet(self.name, split, queries, [file] + ([space_file] if space_file.exists() else []),
                        MARS_FIELD_TYPES, rejects, answer_space=answer_space,
                        train_file=train_file if train_file.exists() else None)

    # ---- reports ------------------------------------------------------------------------------
    @classmethod
    def ranked_N(cls, top_N: int) -> int:
        # one ranking of max(REPORT_N) gives the hit rates at N = 10 and 20 (top-10 is its prefix)
        return max(top_N, *REPORT_N)

    @classmethod
    def summarize(cls, s: Any, graph: Any, triples: np.ndarray, queries: Sequence[Query], outputs: Sequence[Any],
                  *, top_N: int, hops: int, ranked_N: int | None) -> None:
        answers = np.array([q.fields["answer_entity"] for q in queries], dtype=np.int64)
        question = np.array([q.fields["question_entity"] for q in queries], dtype=np.int64)
        ns = report_ns(top_N, ranked_N)
        # the pool ceiling and the random-pool baseline from one listing of the pools; a query's draw is
        # keyed by its id (`pool_hits`), so it does not depend on the other queries of the run or batch
        s.pool_hit, s.pool_drawn = pool_hits(graph, triples, [o.seed_entities for o in outputs], answers, hops, ns,
                                             string_keys([q.query_id for q in queries], BASELINE_SEED))
        first = first_end_position([(o.heads, o.tails) for o in outputs], answers)
        s.hits = {n: first < n for n in ns}
        s.links = pairs_link([(o.heads[:top_N], o.tails[:top_N]) for o in outputs], question, answers)

    @classmethod
    def quality(cls, store: KGStore, qs: QuerySet, s: Any, report: dict[str, Any], *, top_N: int, hops: int,
                strata: dict[str, np.ndarray] | None, ranked_N: int | None) -> None:
        answers = np.array([q.fields["answer_entity"] for q in qs.queries], dtype=np.int64)
        question = np.array([q.fields["question_entity"] for q in qs.queries], dtype=np.int64)
        graph, triples = store.graph, store.triples_array()
        report["answer_in_candidate_pool"] = share(s.pool_hit)
        report["pool_hops"] = hops
        report["hits"] = {}
        ns = report_ns(top_N, ranked_N)
        # Two baselines per N: N random triples of the retrieval's own pool (`summarize` drew them), and
        # N random triples around the question entity alone (no retrieval at all), keyed the same way
        rand_hit = s.pool_drawn
        rand_q_hit = pool_hits(graph, triples, [question[i:i + 1][question[i:i + 1] >= 0] for i in range(len(question))],
                               answers, hops, ns, string_keys([q.query_id for q in qs.queries], BASELINE_SEED + 1))[1]
        for n in ns:
            hit = s.hits[n]
            entry: dict[str, Any] = {"answer_in_subgraph": share(hit), "random_pool_baseline": share(rand_hit[n]),
                                     "random_question_entity": share(rand_q_hit[n])}
            for name, mask in (strata or {}).items():
                entry[name] = {str(v).lower(): {"queries": int((mask == v).sum()),
                                                "answer_in_subgraph": share(hit[mask == v]),
                                                "random_pool_baseline": share(rand_hit[n][mask == v])}
                               for v in (True, False)}
            report["hits"][str(n)] = entry

    @classmethod
    def run_leakage(cls, store: KGStore, qs: QuerySet,
                    s: Any) -> tuple[dict[str, Any] | None, dict[str, np.ndarray] | None]:
        flags = _mars_flags(store, qs, links=s.links)  # once: leakage and strata
        return _mars_leakage_report(qs, flags), mars_strata(store, qs, flags)

    def leakage(self, store: KGStore, qs: QuerySet) -> dict[str, Any]:
        """The split's leakage and that of every finished shard set of it."""
        from mmkg.kg_store.shards import is_complete, read_shards
        report, _ = mars_leakage(store, qs)
        report["shards"] = {}
        base = store.path(f"subgraphs/{self.name}/{qs.split}")
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            if not is_complete(d):
                continue
            t = read_shards(d, ["query_id", "head_ids", "tail_ids"])
            pairs = {q: (np.asarray(h, np.int64), np.asarray(tl, np.int64)) for q, h, tl in
                     zip(t["query_id"].to_pylist(), t["head_ids"].to_pylist(), t["tail_ids"].to_pylist())}
            sub = QuerySet(qs.dataset, qs.split, [q for q in qs.queries if q.query_id in pairs], qs.source_files)
            r, _ = mars_leakage(store, sub, [pairs[q.query_id] for q in sub.queries])
            report["shards"][d.name] = {"queries": r["queries"],
                                        "subgraph_links_question_to_answer":
                                            r["counts"]["subgraph_links_question_to_answer"],
                                        "any_fact_leak": r["counts"]["any_fact_leak"]}
        return report


def pool_hits(graph: Any, triples: np.ndarray, seeds: Sequence[np.ndarray], answers: np.ndarray, hops: int,
              ns: Sequence[int] = (), keys: np.ndarray | None = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Per query: its answer is an end of a triple of its pool (`expand_hops` of its seeds); and, for
    each n of `ns`, an end of one of n triples drawn from that pool without replacement (all of it
    when it holds ≤ n): the n of smallest `mix(key + mix(triple id))`, `keys` one uint64 per query.
    Never true for an unknown answer (< 0)."""
    nq = len(seeds)
    pool_hit = np.zeros(nq, bool)
    drawn = {n: np.zeros(nq, bool) for n in ns}
    for lo, owner, tid in pool_chunks(graph, seeds, hops):
        ans = answers[lo + owner]
        ends = (triples[tid, 0] == ans) | (triples[tid, 2] == ans)
        pool_hit[lo + owner[ends]] = True
        if ns:
            draw = mix(keys[lo + owner] + mix(tid.astype(np.uint64))) >> np.uint64(8)
            order = _smallest_draws(owner, draw, max(ns))
            rank = rank_in_segment(owner[order])
            for n in ns:
                chosen = order[(rank < n) & ends[order]]
                drawn[n][lo + owner[chosen]] = True
    known = np.asarray(answers) >= 0
    return pool_hit & known, {n: d & known for n, d in drawn.items()}


def _smallest_draws(owner: np.ndarray, draw: np.ndarray, n: int) -> np.ndarray:
    """Positions of each owner's (sorted owners) `n` smallest draw keys (56-bit, uniform), ordered by
    (owner, key); equal keys keep the smaller position first. Only keys under a per-owner bound that
    leaves about 4n of them are sorted; an owner left with fewer than n (rare) keeps every key, so
    the result is exactly that of one sort of the whole pool."""
    starts = np.searchsorted(owner, np.arange(int(owner[-1]) + 2)) if len(owner) else np.zeros(1, np.int64)
    size = np.diff(starts)
    bound = np.minimum(4.0 * n / np.maximum(size, 1), 1.0) * float(1 << 56)
    bound = np.where(size <= 4 * n, np.uint64(1 << 56), bound.astype(np.uint64))
    keep = draw < bound[owner]
    short = np.bincount(owner[keep], minlength=len(size)) < np.minimum(size, n)
    keep |= short[owner]
    cand = np.flatnonzero(keep)
    # one sort of (owner, draw key) packed into a uint64 (owner < POOL_QUERIES fits 8 bits); the
    # pairs come sorted by (owner, id), so equal keys keep the smaller id first
    return cand[np.argsort((owner[cand].astype(np.uint64) << np.uint64(56)) | draw[cand], kind="stable")]


def mars_queries(path: Path, *, store: KGStore | None = None, split: str | None = None,
                 with_images: bool = False) -> QuerySet:
    """`MarsDataset(path).queries(...)` (a split file or the folder of split files)."""
    return MarsDataset(path).queries(store=store, split=split, with_images=with_images)


def _mars_row(line: str) -> dict[str, Any]:
    """One MARS line, checked: {"example": [h, t], "question", "answer", "relation", "mode"}."""
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRecord(f"not a JSON object ({e})") from None
    if not isinstance(r, dict):
        raise BadRecord(f"not a JSON object (a {type(r).__name__})")
    missing = [k for k in ("example", "question", "answer", "relation", "mode") if k not in r]
    if missing:
        raise BadRecord(f"missing field(s) {', '.join(missing)}")
    ex = r["example"]
    if not (isinstance(ex, list) and len(ex) == 2 and all(isinstance(k, str) and k for k in ex)):
        raise BadRecord(f"'example' must be [head key, tail key], got {ex!r}"[:300])
    if not all(isinstance(r[k], str) and r[k] for k in ("question", "answer")):
        raise BadRecord("'question' and 'answer' must be entity keys")
    try:
        r["mode"] = int(r["mode"])
    except (TypeError, ValueError):
        raise BadRecord(f"'mode' must be an integer (0, 1, 2), got {r['mode']!r}"[:300]) from None
    return r


# ---- leakage ---------------------------------------------------------------------------------------

def mars_leakage(store: KGStore, qs: QuerySet,
                 subgraph_pairs: Pairs | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Leakage flags of MARS queries against the KG and `train.json` beside the split file.

    Returns the report and the per-query "fact leaked" mask (whole fact in the KG or in train).
    """
    flags = _mars_flags(store, qs, subgraph_pairs)
    return _mars_leakage_report(qs, flags), flags["any_fact_leak"]


def _mars_leakage_report(qs: QuerySet, flags: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"dataset": qs.dataset, "split": qs.split, **flag_summary([q.query_id for q in qs.queries], flags)}


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
    train_file = qs.source_files[0].parent / TRAIN_FILE
    if qs.split != MarsDataset.train_split and train_file.exists():
        train = mars_train_sets(train_file)
        flags["answer_entity_is_train_answer"] = np.array([a in train.answers for a in a_keys], bool)
        flags["answer_entity_in_train"] = np.array([a in train.entities for a in a_keys], bool)
        flags["fact_in_train"] = np.array([(q, r, a) in train.facts for q, r, a in zip(q_keys, rel_keys, a_keys)],
                                          bool)
        flags["pair_in_train"] = np.array([(q, a) in train.pairs for q, a in zip(q_keys, a_keys)], bool)
    flags["linked_only_by_analogy_relations"] = _linked_only_by_analogy(store, triples, q_ids, a_ids)
    if subgraph_pairs is not None:
        links = pairs_link(subgraph_pairs, q_ids, a_ids)
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
