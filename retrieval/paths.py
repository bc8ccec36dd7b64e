"""Paths of ≤ 2 hops from an anchor entity on the CSR, and a path-type prior learned from a train split.

A path type is the sequence of (relation, direction) steps, e.g. `(P31, →)` or `(P279, ←)(P31, →)`;
the Path Ranking Algorithm (Lao & Cohen 2010) scores a candidate entity by how often the types
of the paths reaching it from the query entity led to the answer on training queries. Here the
prior of a type is its smoothed precision on the train split (answers reached by the type ÷
candidates reached by it), optionally conditioned on a type that links the query's example pair
(the analogy's own relation, read from the query's own fields), with back-off to the
unconditioned precision. A candidate's score is the noisy-or of its paths' priors.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from mmkg.kg_store.graph import CSRGraph, segment_positions
from mmkg.kg_store.hashing import file_identity

#: at most this many 2-hop paths per anchor (hub anchors are cut, deterministically by CSR order)
MAX_PATHS = 200_000
#: additive smoothing of the precision estimates (pseudo-counts towards the base rate)
SMOOTHING = 2.0


@dataclass
class Paths:
    """Walks of 1 or 2 edges (from one anchor or several). Shapes: all (P,); `t2` is -1 for 1-hop paths."""

    endpoint: np.ndarray
    ptype: np.ndarray   # int64 path-type code (`path_type`)
    t1: np.ndarray      # triple id of step 1
    t2: np.ndarray      # triple id of step 2, -1 for 1-hop paths

    def __len__(self) -> int:
        return len(self.endpoint)

    def select(self, keep: np.ndarray) -> "Paths":
        return Paths(self.endpoint[keep], self.ptype[keep], self.t1[keep], self.t2[keep])


def step_code(relation: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(relation, direction) → one int: 2·r + 1 for head→tail, 2·r for tail→head."""
    return 2 * np.asarray(relation, np.int64) + (np.asarray(direction) > 0)


def path_type(c1: np.ndarray, c2: np.ndarray | None, num_relations: int) -> np.ndarray:
    """Step codes → path-type code; a 1-hop path has c2 = -1."""
    base = 2 * num_relations + 1
    c2 = np.full_like(c1, -1) if c2 is None else c2
    return np.asarray(c1, np.int64) * base + (np.asarray(c2, np.int64) + 1)


def paths_from(graph: CSRGraph, anchor: int, num_relations: int, *, max_hops: int = 2) -> Paths:
    """Every walk of 1..`max_hops` (≤ 2) edges from `anchor`; a walk never uses a triple twice
    and never ends where it started."""
    s, e = graph.indptr[anchor], graph.indptr[anchor + 1]
    n1, c1, tid1 = graph.neighbor[s:e], step_code(graph.relation[s:e], graph.direction[s:e]), graph.triple_id[s:e]
    ends, types, t1s, t2s = [n1], [path_type(c1, None, num_relations)], [tid1], [np.full(len(n1), -1, np.int64)]
    if max_hops >= 2 and len(n1):
        pos, owner = graph.edge_positions(n1)
        if len(pos) > MAX_PATHS:
            pos, owner = pos[:MAX_PATHS], owner[:MAX_PATHS]
        n2, tid2 = graph.neighbor[pos], graph.triple_id[pos]
        ok = (n2 != anchor) & (tid2 != tid1[owner])
        c2 = step_code(graph.relation[pos], graph.direction[pos])
        ends.append(n2[ok])
        types.append(path_type(c1[owner][ok], c2[ok], num_relations))
        t1s.append(tid1[owner][ok])
        t2s.append(tid2[ok])
    return Paths(*(np.concatenate(a).astype(np.int64) for a in (ends, types, t1s, t2s)))


def linking_types(graph: CSRGraph, head: int, tail: int, num_relations: int) -> np.ndarray:
    """The distinct path types (≤ 2 hops) that lead from `head` to `tail`."""
    if head < 0 or tail < 0:
        return np.empty(0, np.int64)
    p = paths_from(graph, head, num_relations)
    return np.unique(p.ptype[p.endpoint == tail])


def pack_base(num_relations: int) -> int:
    """A conditioned entry's code is example type × this + type (> every path-type code)."""
    return (2 * num_relations + 1) ** 2 + 1


class PathPrior:
    """Smoothed precision of each path type (optionally given an example-pair type) on train queries."""

    def __init__(self, num_relations: int, *, smoothing: float = SMOOTHING):
        self.num_relations, self.smoothing = num_relations, smoothing
        self.hits: dict[Any, float] = defaultdict(float)
        self.seen: dict[Any, float] = defaultdict(float)
        self.base_hits = self.base_seen = 0.0
        self.queries = 0
        self._compiled: tuple | None = None

    @property
    def base_rate(self) -> float:
        """The share of answers among the candidates the train walks reach, to 2 significant digits:
        the smoothing's prior guess needs no more, and a small KG change then leaves it, and with it
        the precision of every type the change does not touch, as it was (incremental retrieval
        reranks only the queries that read a changed entry)."""
        return float(f"{self.base_hits / self.base_seen:.2g}") if self.base_seen else 0.0

    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sorted codes with hits/seen: unconditioned types, and (example type, type) pairs packed."""
        if getattr(self, "_compiled", None) is None:
            plain = sorted((k, self.hits[k], v) for k, v in self.seen.items() if not isinstance(k, tuple))
            cond = sorted((self._pack(*k), self.hits[k], v) for k, v in self.seen.items() if isinstance(k, tuple))

            def arrays(rows):
                return tuple(np.array([r[i] for r in rows], dt) for i, dt in ((0, np.int64), (1, float), (2, float)))
            self._compiled = (*arrays(plain), *arrays(cond))
        return self._compiled

    def _pack(self, example_type: int, ptype: int) -> int:
        return int(example_type) * pack_base(self.num_relations) + int(ptype)

    def precisions(self, ptypes: np.ndarray, example_types: Iterable[int] = ()) -> np.ndarray:
        """P(endpoint is the answer | path type [, a type linking the example pair]) of each of
        `ptypes`, smoothed and backed off: conditioned → unconditioned → base rate (vectorised
        lookups in the sorted tables)."""
        k, p0 = self.smoothing, self.base_rate
        codes, hits, seen, ccodes, chits, cseen = self._tables()

        def look(table: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pos = np.clip(np.searchsorted(table, keys), 0, max(len(table) - 1, 0))
            found = table[pos] == keys if len(table) else np.zeros(len(keys), bool)
            return pos, found

        pos, found = look(codes, ptypes)
        h = np.where(found, hits[pos] if len(hits) else 0.0, 0.0)
        n = np.where(found, seen[pos] if len(seen) else 0.0, 0.0)
        uncond = (h + k * p0) / (n + k)
        best = np.full(len(ptypes), -1.0)
        for e in example_types:
            cpos, cfound = look(ccodes, np.array([self._pack(e, t) for t in ptypes.tolist()], np.int64))
            if cfound.any():
                cond = (chits[cpos] + k * uncond) / (cseen[cpos] + k)
                best = np.where(cfound, np.maximum(best, cond), best)
        return np.where(best >= 0, best, uncond)

    # ---- scoring ---------------------------------------------------------------------------------
    def score_endpoints(self, paths: Paths, example_types: Iterable[int] = (),
                        path_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distinct endpoints, noisy-or score of each) over `paths` (given their `path_scores`, or computed)."""
        if not len(paths):
            return np.empty(0, np.int64), np.empty(0, np.float64)
        p = self.path_scores(paths, example_types) if path_scores is None else path_scores
        # one vote per (type, endpoint): several parallel paths of one type are one piece of evidence
        span = int(paths.endpoint.max()) + 1
        _, first = np.unique(paths.ptype * span + paths.endpoint, return_index=True)
        ends, inv = np.unique(paths.endpoint[first], return_inverse=True)
        log_miss = np.zeros(len(ends))
        np.add.at(log_miss, inv, np.log1p(-np.clip(p[first], 0, 1 - 1e-9)))
        return ends, 1.0 - np.exp(log_miss)

    def path_scores(self, paths: Paths, example_types: Iterable[int] = ()) -> np.ndarray:
        """Each path's own type precision (which path explains an endpoint best)."""
        if not len(paths):
            return np.empty(0)
        types, inv = np.unique(paths.ptype, return_inverse=True)
        return self.precisions(types, list(example_types))[inv]

    @classmethod
    def from_tables(cls, num_relations: int, smoothing: float, tables: tuple, *, queries: int,
                    base_hits: float, base_seen: float) -> "PathPrior":
        """A prior from its compiled count tables (sorted codes, hits, seen; plain then conditioned)."""
        prior = cls(num_relations, smoothing=smoothing)
        prior.queries, prior.base_hits, prior.base_seen = queries, base_hits, base_seen
        prior._compiled = tuple(tables)
        return prior


# ---- the learned artifact in the store ----------------------------------------------------------
PRIOR_FORMAT = 2
PRIOR_DIR = "retrievers/path-prior"
#: folds of the out-of-fold priors: a query row of the prior's own train file is ranked with the
#: prior fitted on the other folds, so its own (question, answer) paths never count in it
DEFAULT_FOLDS = 5


def mars_row_digest(row: dict[str, Any]) -> str:
    """The identity of a MARS row (example pair, question, answer, relation, mode): identical rows
    share it, and so share a fold."""
    import json
    from mmkg.kg_store.hashing import sha256_bytes
    canon = [list(row["example"]), row["question"], row["answer"], row["relation"], int(row["mode"])]
    return sha256_bytes(json.dumps(canon, separators=(",", ":")).encode())


def row_fold(digest: str, folds: int) -> int:
    """The fold of a row (by its digest: a random-looking, reproducible assignment)."""
    return int(digest[:12], 16) % folds


#: how train rows are grouped into folds: `row` (each row; what retrieval uses) or `pair` (every row
#: of one (question, answer) pair in one fold: out of fold, a row's pair looks as unseen as a test pair's)
FOLD_GROUPS = ("row", "pair")


def fold_of(row: dict[str, Any], folds: int, group: str = "row") -> int:
    if group == "pair":
        from mmkg.kg_store.hashing import sha256_bytes
        return row_fold(sha256_bytes(f"{row['question']}\t{row['answer']}".encode()), folds)
    return row_fold(mars_row_digest(row), folds)


class FoldedPrior:
    """A path prior fitted in `folds` parts of its train file (one `PathPrior` of counts per fold).

    `for_fold(-1)` is the prior of the whole train file (for queries of other splits);
    `for_fold(k)` sums every fold but k (for a train row of fold k: out of fold)."""

    def __init__(self, parts: list[PathPrior]):
        self.parts = parts
        self.folds = len(parts)
        self._merged: dict[int, PathPrior] = {}

    @property
    def full(self) -> PathPrior:
        return self.for_fold(-1)

    def for_fold(self, fold: int) -> PathPrior:
        fold = int(fold) if self.folds > 1 else -1
        if fold not in self._merged:
            self._merged[fold] = merge_priors([p for k, p in enumerate(self.parts) if k != fold])
        return self._merged[fold]

    # ---- storage: one typed table (fold, conditioned, code, hits, seen), no JSON of dicts -----------
    def to_table(self) -> Any:
        import json
        import pyarrow as pa
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("fold", "conditioned", "code", "hits", "seen")}
        for k, part in enumerate(self.parts):
            codes, hits, seen, ccodes, chits, cseen = part._tables()
            for cond, (c, h, n) in ((False, (codes, hits, seen)), (True, (ccodes, chits, cseen))):
                cols["fold"].append(np.full(len(c), k, np.int16))
                cols["conditioned"].append(np.full(len(c), cond))
                cols["code"].append(c.astype(np.int64))
                cols["hits"].append(h.astype(np.int32))
                cols["seen"].append(n.astype(np.int32))
        table = pa.table({k: np.concatenate(v) for k, v in cols.items()})
        meta = {"format": PRIOR_FORMAT, "num_relations": self.parts[0].num_relations,
                "smoothing": self.parts[0].smoothing,
                "folds": [{"queries": p.queries, "base_hits": p.base_hits, "base_seen": p.base_seen}
                          for p in self.parts]}
        return table.replace_schema_metadata({"mmkg.path_prior": json.dumps(meta)})

    @classmethod
    def from_table(cls, table: Any) -> "FoldedPrior":
        import json
        meta = json.loads(table.schema.metadata[b"mmkg.path_prior"])
        if meta.get("format") != PRIOR_FORMAT:
            raise ValueError(f"path prior format {meta.get('format')!r}, expected {PRIOR_FORMAT}")
        fold = table["fold"].to_numpy()
        cond = table["conditioned"].to_numpy(zero_copy_only=False)
        code, hits, seen = (table[c].to_numpy() for c in ("code", "hits", "seen"))
        parts = []
        for k, f in enumerate(meta["folds"]):
            plain, conditioned = (fold == k) & ~cond, (fold == k) & cond
            parts.append(PathPrior.from_tables(
                int(meta["num_relations"]), float(meta["smoothing"]),
                (code[plain], hits[plain].astype(float), seen[plain].astype(float),
                 code[conditioned], hits[conditioned].astype(float), seen[conditioned].astype(float)),
                queries=int(f["queries"]), base_hits=float(f["base_hits"]), base_seen=float(f["base_seen"])))
        return cls(parts)


def merge_priors(priors: list[PathPrior]) -> PathPrior:
    """The prior of the union of the priors' train queries (counts add)."""
    def add(tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = np.concatenate([t[0] for t in tables]) if tables else np.empty(0, np.int64)
        keys, inv = np.unique(codes, return_inverse=True)
        hits = np.bincount(inv, np.concatenate([t[1] for t in tables]), len(keys)) if len(keys) else np.empty(0)
        seen = np.bincount(inv, np.concatenate([t[2] for t in tables]), len(keys)) if len(keys) else np.empty(0)
        return keys.astype(np.int64), hits, seen
    tabs = [p._tables() for p in priors]
    first = priors[0]
    return PathPrior.from_tables(
        first.num_relations, first.smoothing, (*add([t[:3] for t in tabs]), *add([t[3:] for t in tabs])),
        queries=sum(p.queries for p in priors), base_hits=sum(p.base_hits for p in priors),
        base_seen=sum(p.base_seen for p in priors))


def prior_key(store: Any, train_file: Any, answer_space: np.ndarray | None, max_hops: int = 2,
              folds: int = DEFAULT_FOLDS, group: str = "row") -> str:
    """What the prior depends on: the graph, the train file's bytes, the answer space, the walk, the folds."""
    from mmkg.kg_store.hashing import cache_key, sha256_bytes, sha256_file
    space = sha256_bytes(np.asarray(answer_space, np.int64).tobytes()) if answer_space is not None else None
    return cache_key({"format": PRIOR_FORMAT, "graph": store.graph_rel, "train": sha256_file(train_file),
                        "answer_space": space, "max_hops": max_hops, "smoothing": SMOOTHING, "folds": folds,
                        **({"group": group} if group != "row" else {})})


#: the last MARS-format file parsed in this process, by (path, content sha256): one retrieve reads
#: its train file for the prior fit, the folds and the leakage report (and `mmkg run` per dataset)
_ROWS: dict[tuple[str, str], tuple[list[dict[str, Any]], list[str]]] = {}


def _parsed_rows(path: Any) -> tuple[list[dict[str, Any]], list[str]]:
    import json
    from mmkg.kg_store.hashing import sha256_bytes
    data = open(path, "rb").read()
    key = (str(path), sha256_bytes(data))
    if key not in _ROWS:
        import io
        lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")   # as open(path) splits lines
        rows = [json.loads(line) for line in lines if line.strip()]
        _ROWS.clear()
        _ROWS[key] = (rows, [mars_row_digest(r) for r in rows])
    return _ROWS[key]


def read_mars_rows(path: Any) -> list[dict[str, Any]]:
    """The rows of a MARS-format file (fresh dicts: callers may change them)."""
    return [dict(r) for r in _parsed_rows(path)[0]]


@dataclass(frozen=True)
class TrainSets:
    """What the leakage flags ask of a MARS train file."""
    answers: frozenset[str]
    entities: frozenset[str]             # every key of a row: example pair, question, answer
    facts: frozenset[tuple[str, str, str]]   # (question, relation, answer) and (example head, relation, tail)
    pairs: frozenset[tuple[str, str]]    # (question, answer) and the example pair


_SETS: dict[tuple[str, int, int, int], TrainSets] = {}


def mars_train_sets(path: Any) -> TrainSets:
    """The `TrainSets` of a MARS train file, built once per process and file content."""
    key = file_identity(path)
    if key not in _SETS:
        rows = _parsed_rows(path)[0]
        _SETS.clear()
        _SETS[key] = TrainSets(
            answers=frozenset(r["answer"] for r in rows),
            entities=frozenset(k for r in rows for k in (*r["example"], r["question"], r["answer"])),
            facts=frozenset(f for r in rows for f in ((r["example"][0], r["relation"], r["example"][1]),
                                                      (r["question"], r["relation"], r["answer"]))),
            pairs=frozenset({(r["question"], r["answer"]) for r in rows}
                            | {(r["example"][0], r["example"][1]) for r in rows}))
    return _SETS[key]


def mars_row_digests(path: Any) -> list[str]:
    """`mars_row_digest` of every row of a MARS-format file, in order."""
    return list(_parsed_rows(path)[1])


def fit_mars_prior(store: Any, train_file: Any, answer_space: np.ndarray | None, max_hops: int = 2,
                   folds: int = DEFAULT_FOLDS, group: str = "row", chunk_walks: int = 1 << 22) -> FoldedPrior:
    """Count every train query of a MARS-format file (question, answer, example pair), each into
    the fold of its row: exactly the counts of the row-by-row fit (`tests/retrieval/reference_ranking.
    prior_reference`), vectorised. Rows
    that share a question share its walk: a type's `seen` is the number of distinct endpoints it
    reaches from the question times the rows (of a fold, with an example type) that ask it, and
    only the types reaching a row's own answer count a hit. Questions are walked in chunks of about
    `chunk_walks` 2-hop walks (memory)."""
    from mmkg.retrieval.ranking import batch_linking_types, batch_paths
    rows, digests = _parsed_rows(train_file)   # read only
    keys = sorted({k for r in rows for k in (r["question"], r["answer"], *r["example"])})
    id_of = dict(zip(keys, store.entity_ids(keys).tolist()))
    graph = CSRGraph(*(np.asarray(getattr(store.graph, f)).view(np.ndarray)
                       for f in ("indptr", "neighbor", "relation", "direction", "triple_id")))
    R, n = store.num_relations, max(graph.num_nodes, 1)
    ids = np.array([[id_of[r["question"]], id_of[r["answer"]], id_of[r["example"][0]], id_of[r["example"][1]]]
                    for r in rows], np.int64).reshape(-1, 4)
    fold = np.array([row_fold(d, folds) for d in digests] if group == "row" else
                    [fold_of(r, folds, group) for r in rows], np.int64)
    ok = (ids[:, 0] >= 0) & (ids[:, 1] >= 0)
    ids, fold = ids[ok], fold[ok]
    q, a = ids[:, 0], ids[:, 1]
    ex_row, ex_type = batch_linking_types(graph, ids[:, 2], ids[:, 3], R)   # sorted by row
    span = pack_base(R)                   # a conditioned code: example type × span + type
    inside = None
    if answer_space is not None:
        inside = np.zeros(n, bool)
        inside[np.asarray(answer_space, np.int64)[(answer_space >= 0) & (answer_space < n)]] = True
    plain: list[tuple[np.ndarray, ...]] = []   # (fold, code, seen, hits) pieces
    cond: list[tuple[np.ndarray, ...]] = []
    base_seen, base_hits = np.zeros(folds), np.zeros(folds)
    uq, q_of = np.unique(q, return_inverse=True)
    pos, own = graph.edge_positions(uq)
    walks = np.minimum(np.bincount(own, np.diff(graph.indptr)[graph.neighbor[pos]], len(uq)), MAX_PATHS) + 1
    cuts = np.searchsorted(np.cumsum(walks), np.arange(1, int(walks.sum() // chunk_walks) + 1) * chunk_walks)
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(uq)]):
        if hi <= lo:
            continue
        paths, owner, _ = batch_paths(graph, uq[lo:hi], R, max_hops=max_hops)
        end, ptype = paths.endpoint, paths.ptype
        if inside is not None:
            keep = inside[end]
            end, ptype, owner = end[keep], ptype[keep], owner[keep]
        # distinct (question, type, endpoint), sorted
        order = np.lexsort((end, ptype, owner))
        end, ptype, owner = end[order], ptype[order], owner[order]
        first = np.ones(len(end), bool)
        first[1:] = (owner[1:] != owner[:-1]) | (ptype[1:] != ptype[:-1]) | (end[1:] != end[:-1])
        end, ptype, owner = end[first], ptype[first], owner[first]
        # per question: (type, distinct endpoints of that type) and the number of distinct endpoints
        qt = np.flatnonzero(np.r_[len(owner) > 0, (owner[1:] != owner[:-1]) | (ptype[1:] != ptype[:-1])])
        qt_owner, qt_type = owner[qt], ptype[qt]
        qt_count = np.diff(np.r_[qt, len(owner)]).astype(float)
        qt_start = np.searchsorted(qt_owner, np.arange(hi - lo))
        qt_len = np.bincount(qt_owner, minlength=hi - lo)
        ends_per_q = np.bincount(owner[np.unique(owner * n + end, return_index=True)[1]], minlength=hi - lo) \
            if len(owner) else np.zeros(hi - lo, np.int64)
        sel = np.flatnonzero((q_of >= lo) & (q_of < hi))
        local = q_of[sel] - lo
        # rows asking the same question in the same fold (with the same example type) count alike
        for groups, out in ((np.stack([fold[sel], local, np.zeros(len(sel), np.int64)], 1), plain),
                            (_cond_groups(sel, fold, local, ex_row, ex_type), cond)):
            if not len(groups):
                continue
            g, weight = np.unique(groups, axis=0, return_counts=True)
            at = segment_positions(qt_start[g[:, 1]], qt_len[g[:, 1]])
            gi = np.repeat(np.arange(len(g)), qt_len[g[:, 1]])
            code = qt_type[at] if out is plain else g[gi, 2] * span + qt_type[at]
            out.append((g[gi, 0], code, qt_count[at] * weight[gi], np.zeros(len(at))))
        # hits: the types of each row's question that reach its answer
        key = owner * n + end
        by_end = np.argsort(key, kind="stable")
        key = key[by_end]
        rk = local * n + a[sel]
        s0, s1 = np.searchsorted(key, rk), np.searchsorted(key, rk, side="right")
        hrow = np.repeat(np.arange(len(sel)), s1 - s0)
        htype = ptype[by_end[segment_positions(s0, s1 - s0)]]
        plain.append((fold[sel][hrow], htype, np.zeros(len(hrow)), np.ones(len(hrow))))
        ex_lo, ex_hi = np.searchsorted(ex_row, sel[hrow]), np.searchsorted(ex_row, sel[hrow], side="right")
        hx = np.repeat(np.arange(len(hrow)), ex_hi - ex_lo)
        ex_at = segment_positions(ex_lo, ex_hi - ex_lo)
        cond.append((fold[sel][hrow][hx], ex_type[ex_at] * span + htype[hx], np.zeros(len(hx)), np.ones(len(hx))))
        np.add.at(base_seen, fold[sel], ends_per_q[local].astype(float))
        np.add.at(base_hits, fold[sel], (s1 > s0).astype(float))
    queries = np.bincount(fold, minlength=folds)
    plain_k, cond_k = (_sum_by_fold_and_code([p for p in pieces if len(p[0])], folds) for pieces in (plain, cond))
    return FoldedPrior([PathPrior.from_tables(R, SMOOTHING, (*plain_k[k], *cond_k[k]), queries=int(queries[k]),
                                              base_hits=float(base_hits[k]), base_seen=float(base_seen[k]))
                        for k in range(folds)])


def _cond_groups(sel: np.ndarray, fold: np.ndarray, local: np.ndarray, ex_row: np.ndarray,
                 ex_type: np.ndarray) -> np.ndarray:
    """(fold, question, example type) of every example type of the rows `sel` (ex_row sorted)."""
    lo, hi = np.searchsorted(ex_row, sel), np.searchsorted(ex_row, sel, side="right")
    r = np.repeat(np.arange(len(sel)), hi - lo)
    return np.stack([fold[sel][r], local[r], ex_type[segment_positions(lo, hi - lo)]], 1)


def _sum_by_fold_and_code(pieces: list[tuple[np.ndarray, ...]], folds: int
                          ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per fold: (sorted codes, hits, seen) over the (fold, code, seen, hits) pieces (one sort of all)."""
    if not pieces:
        return [(np.empty(0, np.int64), np.empty(0), np.empty(0)) for _ in range(folds)]
    f, code, seen, hits = (np.concatenate(c) for c in zip(*pieces))
    order = np.lexsort((code, f))
    f, code = f[order], code[order]
    new = np.r_[True, (f[1:] != f[:-1]) | (code[1:] != code[:-1])] if len(f) else np.zeros(0, bool)
    group = np.cumsum(new) - 1
    n = int(new.sum())
    hsum, ssum = np.bincount(group, hits[order], n), np.bincount(group, seen[order], n)
    gf, gc = f[new], code[new].astype(np.int64)
    bounds = np.searchsorted(gf, np.arange(folds + 1))
    return [(gc[a:b], hsum[a:b], ssum[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def assign_prior_folds(queries: Any, train_file: Any, folds: int) -> int:
    """When the queries are the prior's own split (every row is a row of `train_file`: the train
    split or a sample of it), give each its row's fold so it is ranked out of fold; a query set of
    another split keeps the whole file's prior (-1) for every query. Decided for the whole set,
    so no query's treatment depends on its own answer. Returns how many queries got a fold."""
    if folds <= 1 or not queries:
        return 0
    train = set(mars_row_digests(train_file))
    if not all(q.row_digest and q.row_digest in train for q in queries):
        return 0
    for q in queries:
        q.prior_fold = row_fold(q.row_digest, folds)
    return len(queries)


def prior_file(store: Any, key: str) -> str:
    """The file of the prior committed under `key`: named by its content's hash (several keys, e.g.
    graph versions that leave the counts unchanged, share one file), or by the key (older stores)."""
    art = store.artifact(f"{PRIOR_DIR}/{key}") or {}
    return art.get("file", f"{PRIOR_DIR}/{key}.parquet")


#: the priors this process read or fitted last, by (file path, its stat): one `mmkg run` reads its
#: prior once (not once per dataset and stage), with the folds it merged (`FoldedPrior.for_fold`)
_READ: dict[tuple, FoldedPrior] = {}


def _remember_prior(path: Any, prior: FoldedPrior) -> None:
    if len(_READ) >= 4:
        _READ.pop(next(iter(_READ)))
    _READ[file_identity(path)] = prior


def read_prior(store: Any, key: str) -> FoldedPrior:
    """The prior committed under `key` (`load_or_fit_prior` commits it)."""
    import pyarrow.parquet as pq
    path = store.checked_path(prior_file(store, key))
    hit = _READ.get(file_identity(path))
    if hit is None:
        hit = FoldedPrior.from_table(pq.read_table(path))
        _remember_prior(path, hit)
    return hit


def load_or_fit_prior(kg: Any, train_file: Any, answer_space: np.ndarray | None, max_hops: int = 2,
                      folds: int = DEFAULT_FOLDS, group: str = "row") -> tuple[FoldedPrior, str]:
    """The committed prior for this (graph, train split, answer space, folds), fitted and committed once."""
    import time
    from mmkg.kg_store import KGStore, atomic, open_store
    store = open_store(kg)
    key = prior_key(store, train_file, answer_space, max_hops, folds, group)
    rel = f"{PRIOR_DIR}/{key}"
    if store.artifact(rel) is not None:
        return read_prior(store, key), key
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mmkg.kg_store.hashing import sha256_bytes
    t0 = time.perf_counter()
    prior = fit_mars_prior(store, train_file, answer_space, max_hops, folds, group)
    sink = pa.BufferOutputStream()
    pq.write_table(prior.to_table(), sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    # content-addressed: a refit that counts the same (a KG change away from every train query)
    # writes no new bytes, and readers of the prior's bytes (incremental retrieval) see it unchanged
    file = f"{PRIOR_DIR}/{sha256_bytes(data)[:16]}.parquet"
    with KGStore.writer(kg) as w:
        if not w.store.has_file(file):
            atomic.write_bytes(w.root / file, data)
        w.set_artifact(rel, {"key": key, "file": file, "queries": prior.full.queries, "folds": folds, "group": group,
                             "path_types": int(len(prior.full._tables()[0])), "train_file": str(train_file),
                             "bytes": len(data), "seconds": round(time.perf_counter() - t0, 3)},
                       files=[file], graph_bound=True)
        w.commit()
    _remember_prior(store.path(file), prior)
    return prior, key
