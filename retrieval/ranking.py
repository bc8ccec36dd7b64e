"""Ranking in bulk: the anchored retriever's paths and the paper scheme's pools for a whole batch of
queries at once (CSR gathers, sorted segment reductions), never a Python loop per query.

Every array here is flat over the batch with an owner column (`q`: the query's position in the
batch); (query, id) pairs are packed into one int64 key `q * span + id` so that one stable sort
(`sorted_unique`, `ordered`: keys packed per query come grouped by query, runs a stable sort merges
cheaply) or a lookup table does per-query set work for every query together, and per-query top-k cuts
bin their scores (`top_candidates`) instead of sorting every candidate. The results equal
the per-query ranking they replace (`tests/retrieval/reference_ranking.py`): same triples, same
order, same scores (the one float difference: a dot product's summation order).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmkg.kg_store.graph import CSRGraph, segment_positions
from mmkg.retrieval.paths import MAX_PATHS, Paths, pack_base, path_type, step_code
from mmkg.retrieval.subgraph import SubgraphOutput, empty_output

#: (query, id) pairs whose vectors are gathered at once: the gathered rows stay in cache for the dot
#: products (a pair's cosine is the same bytes whatever the chunk: one dot product per row)
PAIR_CHUNK = 1 << 11
#: vector tables up to this size are read into memory once per retriever (larger ones stay mmap-ed)
IN_MEMORY_BYTES = 256 << 20
#: a pair set this dense (pairs · DENSE_SHARE > queries · vectors) is scored by one matrix product
DENSE_SHARE = 32
#: queries whose k-hop pools are listed at once (`pool_chunks`: hub pools hold thousands of triples
#: each); at most 256, so a chunk's owner fits 8 bits of a packed sort key
POOL_QUERIES = 256
#: groups whose maxima bound a dense block's top-k from below (`PairCosine.top_ids`)
TOP_GROUPS = 256
#: cells of the per-chunk (query × node) bitmaps and score blocks (bounds their memory to ~32 MB of bools)
BITMAP_CELLS = 1 << 25


def segment_starts(owner: np.ndarray, n: int) -> np.ndarray:
    """Start of each owner's segment in a sorted owner array (n + 1 bounds)."""
    return np.searchsorted(owner, np.arange(n + 1))


def rank_in_segment(owner: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal (sorted) owners: 0, 1, 2, ..."""
    if not len(owner):
        return np.empty(0, np.int64)
    first = np.r_[True, owner[1:] != owner[:-1]]
    idx = np.arange(len(owner))
    return idx - np.maximum.accumulate(np.where(first, idx, 0))


def sorted_unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`np.unique(keys, return_index=True, return_inverse=True)` as (unique, inverse, first index), by
    one stable argsort: keys packed per query come grouped by query, runs a stable sort merges cheaply."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    new = np.empty(len(sk), bool)
    new[:1] = True
    np.not_equal(sk[1:], sk[:-1], out=new[1:])
    inverse = np.empty(len(keys), np.int64)
    inverse[order] = np.cumsum(new) - 1
    return sk[new], inverse, order[new]


def compact_ids(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Each id's rank among the distinct ids present (order kept) and their count: a lookup table,
    no sort (ids are small non-negative ints)."""
    present = np.zeros(int(ids.max()) + 1 if len(ids) else 0, bool)
    present[ids] = True
    return (np.cumsum(present) - 1)[ids], int(present.sum())


def dense_unique(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(keys, return_inverse=True)` of keys in [0, size) by a table of `size` cells when
    that is small (no sort), else by `sorted_unique`."""
    if size > BITMAP_CELLS:
        return sorted_unique(keys)[:2]
    mark = np.zeros(size, bool)
    mark[keys] = True
    uniq = np.flatnonzero(mark)
    return uniq, np.searchsorted(uniq, keys)  # no size-long index table: its pages cost more than the search


def desc_rank(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank of each value among the distinct values, largest first, and their count."""
    uniq, inverse, _ = sorted_unique(values)
    return len(uniq) - 1 - inverse, len(uniq)


def ordered(major: np.ndarray, minor: np.ndarray, last: np.ndarray | None = None) -> np.ndarray:
    """`np.lexsort(([last,] -minor, major))`: by int major ascending, then float32 minor descending,
    then (if given) int `last` ascending, stable; as one int64 sort where the packed key fits (the
    minor's bits mapped to an order-keeping uint32)."""
    lbits = int(last.max()).bit_length() if last is not None and len(last) else 0
    if len(major) and int(major.max()).bit_length() + 32 + lbits > 63:
        return np.lexsort((-minor, major) if last is None else (last, -minor, major))
    bits = (np.asarray(minor, np.float32) + np.float32(0)).view(np.int32).astype(np.int64)  # + 0: -0.0 → 0.0
    ascending = np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF) - 1)
    key = (np.asarray(major, np.int64) << 32) | ((1 << 31) - 1 - ascending)
    if last is not None:
        key = (key << lbits) | last
    return np.argsort(key, kind="stable")


#: score bins of `top_candidates`
SCORE_BINS = 1024


def top_candidates(owner: np.ndarray, score: np.ndarray, n: int, k: int, lo: float = -1.0,
                   hi: float = 1.0) -> np.ndarray:
    """A mask holding each owner's k best scores (ties included) and few more: scores in [lo, hi] are
    binned, and an owner keeps the bins down to the one where its count reaches k (a histogram per
    owner instead of a sort)."""
    b = np.clip(((np.asarray(score, np.float64) - lo) * (SCORE_BINS / (hi - lo))).astype(np.int64), 0,
                SCORE_BINS - 1)
    hist = np.bincount(owner * SCORE_BINS + b, minlength=n * SCORE_BINS).reshape(n, SCORE_BINS)
    enough = np.cumsum(hist[:, ::-1], axis=1) >= k
    floor = np.where(enough.any(1), SCORE_BINS - 1 - enough.argmax(1), 0)
    return b >= floor[owner]


def _first_of(inverse: np.ndarray, n: int) -> np.ndarray:
    """An element of each of the `n` groups of an inverse index (the last one written)."""
    first = np.empty(n, np.int64)
    first[inverse] = np.arange(len(inverse))
    return first


def sequential_segment_sum(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per-owner sums added strictly in array order (as `np.add.at` does), vectorised over owners:
    one pass per position within a segment (segments are short; a pass reads only the segments that
    long), so the floats match exactly. `owner` is sorted."""
    out = np.zeros(n)
    if not len(owner):
        return out
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    lens = np.diff(np.r_[starts, len(owner)])
    by_len = np.argsort(-lens, kind="stable")               # longest first: pass k reads a prefix
    starts, seg_owner = starts[by_len], owner[starts[by_len]]
    longer = len(lens) - np.cumsum(np.bincount(lens))       # segments longer than k, k = 0, 1, ...
    for k in range(int(lens.max())):
        m = longer[k]
        out[seg_owner[:m]] += values[starts[:m] + k]
    return out


class PairCosine:
    """Cosine of (query, triple) or (query, entity) pairs: row vectors gathered per pair, in chunks."""

    def __init__(self, vectors: np.ndarray, row_of: np.ndarray, *, dense: bool = True):
        # dense=False: every pair by its own dot product, so a pair's cosine is the same bytes in any
        # batch (what incremental retrieval's byte identity needs)
        #: the memory-mapped file the vectors were read from (None: built in memory)
        self.source = getattr(vectors, "filename", None)
        if getattr(vectors, "nbytes", 0) <= IN_MEMORY_BYTES:  # gathers from RAM, not through the mmap
            vectors = np.array(vectors)
        self.vectors, self.row_of, self.dense = vectors, row_of, dense
        self.in_memory = type(vectors) is np.ndarray
        self.id_of_row = np.full(len(vectors), -1, np.int64)    # the inverse of row_of
        self.id_of_row[row_of[row_of >= 0]] = np.flatnonzero(row_of >= 0)

    def block(self, queries: np.ndarray) -> np.ndarray:
        """(m, rows) float32 cosine of each query with every vector: one matrix product."""
        return np.asarray(queries, np.float32) @ np.asarray(self.vectors, np.float32).T

    def top_ids(self, block: np.ndarray, k: int) -> np.ndarray:
        """(m, k) ids of each query's k best rows of `block`, best first, ties by the smaller id:
        what an exact search returns, without a second pass over the vectors."""
        m, n = block.shape
        k = min(k, n)
        if not k or not m:
            return np.empty((m, k), np.int64)
        # a floor under each row's k-th best: the k-th best of its group maxima (k of its values reach
        # it), so one comparison pass leaves a few candidates per row instead of a partition of each row
        gmax = np.maximum.reduceat(block, np.arange(0, n, max(1, n // TOP_GROUPS)), axis=1)
        floor = np.partition(gmax, -k, axis=1)[:, -k] if gmax.shape[1] >= k else np.full(m, -np.inf, np.float32)
        qi, col = np.nonzero(block >= floor[:, None])
        val, ids = block[qi, col], self.id_of_row[col]
        order = ordered(qi, val, ids)
        qi, ids = qi[order], ids[order]
        rank = rank_in_segment(qi)
        out = np.empty((m, k), np.int64)
        out[qi[rank < k], rank[rank < k]] = ids[rank < k]
        return out

    def __call__(self, queries: np.ndarray, q: np.ndarray, ids: np.ndarray,
                 block: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(has a vector, float32 cosine; 0 without a vector) of each pair (q[i], ids[i]); `block`:
        `self.block(queries)` when the caller has it already."""
        rows = self.row_of[ids] if len(ids) else np.empty(0, np.int64)
        has = rows >= 0
        out = np.zeros(len(ids), np.float32)
        idx = np.flatnonzero(has)
        if block is not None:
            out[idx] = block[q[idx], rows[idx]]
            return has, out
        qv = np.asarray(queries, np.float32)
        n_rows = len(self.vectors)
        if self.dense and len(idx) * DENSE_SHARE > len(qv) * n_rows:
            # dense pools (the paper scheme's hub neighbourhoods): one product of the query block with
            # every vector reads each vector once instead of once per pair
            step = max(1, BITMAP_CELLS // max(n_rows, 1))
            order = idx[np.argsort(q[idx], kind="stable")]
            bounds = np.searchsorted(q[order], np.arange(0, len(qv) + step, step))
            table = np.asarray(self.vectors, np.float32)
            for k, lo in enumerate(range(0, len(qv), step)):
                sel = order[bounds[k]:bounds[k + 1]]
                if len(sel):
                    block = qv[lo:lo + step] @ table.T
                    out[sel] = block[q[sel] - lo, rows[sel]]
            return has, out
        for lo in range(0, len(idx), PAIR_CHUNK):
            sel = idx[lo:lo + PAIR_CHUNK]
            v = np.asarray(self.vectors[rows[sel]], np.float32)
            out[sel] = np.einsum("ij,ij->i", v, qv[q[sel]])
        return has, out


# ---- paths of a batch of anchors ---------------------------------------------------------------------
def batch_paths(graph: CSRGraph, anchors: np.ndarray, num_relations: int, *, max_hops: int = 2,
                group: np.ndarray | None = None,
                inside: np.ndarray | None = None) -> tuple[Paths, np.ndarray, np.ndarray]:
    """`mmkg.retrieval.paths.paths_from` of every anchor, concatenated in anchor order (each anchor's
    1-hop paths, then its 2-hop ones), the anchor position of each path and the entity its first
    step reaches (the endpoint of a 1-hop path, the middle of a 2-hop one).

    With `inside` (a bool per entity) and `group` (the query of each anchor, sorted), a query keeps
    only its paths that end inside when it has any (the answer space), all of them otherwise."""
    anchors = np.asarray(anchors, np.int64)
    na = len(anchors)
    pos1, a1 = graph.edge_positions(anchors)
    n1, tid1 = graph.neighbor[pos1], graph.triple_id[pos1]
    keep1 = np.ones(len(n1), bool)
    filtered = inside is not None and group is not None
    if max_hops >= 2 and len(n1):
        walks = graph.degree(n1)
        capped = np.bincount(a1, weights=walks, minlength=na).max() > MAX_PATHS
        if filtered:  # only the walks into `inside` (where most 2-hop walks end outside it)
            pos, via = graph.edge_positions(n1, keep=inside[graph.neighbor])
            if capped:  # hub anchors cut at MAX_PATHS walks, counted over all of their walks
                before = np.cumsum(walks) - walks
                before -= before[np.searchsorted(a1, a1)]      # walks of the anchor's earlier edges
                cut = before[via] + pos - graph.indptr[n1[via]] < MAX_PATHS
                pos, via = pos[cut], via[cut]
        else:
            pos, via = graph.edge_positions(n1)             # via: index of the 1-hop edge each step extends
            if capped:
                keep = rank_in_segment(a1[via]) < MAX_PATHS  # hub anchors cut, as paths_from does
                pos, via = pos[keep], via[keep]
        a2 = a1[via]
        n2, tid2 = graph.neighbor[pos], graph.triple_id[pos]
        ok = (n2 != anchors[a2]) & (tid2 != tid1[via])
    else:
        pos = via = a2 = n2 = tid2 = np.empty(0, np.int64)
        ok = np.empty(0, bool)
    if filtered:
        ng = int(group.max()) + 1 if na else 0
        in1 = inside[n1]
        has = (np.bincount(group[a1[in1]], minlength=ng) + np.bincount(group[a2[ok]], minlength=ng)) > 0
        keep1 = in1 | ~has[group[a1]]
        lost = np.flatnonzero(~has[group[a1]])
        if max_hops >= 2 and len(lost):  # a query with no path into `inside` keeps all of its paths
            posl, vial = graph.edge_positions(n1[lost])
            vial = lost[vial]
            keep = rank_in_segment(a1[vial]) < MAX_PATHS
            posl, vial = posl[keep], vial[keep]
            n2l, tid2l = graph.neighbor[posl], graph.triple_id[posl]
            okl = (n2l != anchors[a1[vial]]) & (tid2l != tid1[vial])
            # walks in CSR order again (each anchor's walks come from one of the two parts)
            back = np.argsort(np.r_[via, vial], kind="stable")
            pos, via = np.r_[pos, posl][back], np.r_[via, vial][back]
            a2, n2, tid2, ok = a1[via], np.r_[n2, n2l][back], np.r_[tid2, tid2l][back], np.r_[ok, okl][back]
    sel1, sel2 = np.flatnonzero(keep1), np.flatnonzero(ok)
    o1, o2 = a1[sel1], a2[sel2]
    k1, k2 = np.bincount(o1, minlength=na), np.bincount(o2, minlength=na)
    block = np.cumsum(k1 + k2) - (k1 + k2)
    # place each kept path at its anchor's block: 1-hop ones first, then 2-hop ones (CSR order in each)
    at1 = (block - (np.cumsum(k1) - k1))[o1] + np.arange(len(sel1))
    at2 = (block + k1 - (np.cumsum(k2) - k2))[o2] + np.arange(len(sel2))
    P = len(sel1) + len(sel2)
    endpoint, ptype, t1, t2, owner, mid = (np.empty(P, np.int64) for _ in range(6))
    code1 = step_code(graph.relation[pos1], graph.direction[pos1])
    endpoint[at1], ptype[at1], t1[at1], t2[at1], owner[at1] = n1[sel1], path_type(code1[sel1], None, num_relations), \
        tid1[sel1], -1, o1
    mid[at1] = n1[sel1]
    if len(sel2):
        p2, v2 = pos[sel2], via[sel2]
        c2 = step_code(graph.relation[p2], graph.direction[p2])
        endpoint[at2], ptype[at2], t1[at2], t2[at2], owner[at2] = n2[sel2], path_type(code1[v2], c2, num_relations), \
            tid1[v2], tid2[sel2], o2
        mid[at2] = n1[v2]
    return Paths(endpoint, ptype, t1, t2), owner, mid


def batch_linking_types(graph: CSRGraph, heads: np.ndarray, tails: np.ndarray,
                        num_relations: int) -> tuple[np.ndarray, np.ndarray]:
    """`mmkg.retrieval.paths.linking_types` of every (head, tail) pair: (pair index, path type), sorted
    and distinct; a pair with an unknown end (-1) has none.

    Met in the middle: a 2-hop path head → m → tail joins an edge of the head with an edge of the
    tail at m, so only the two ends' edges are read, never the head's whole 2-hop neighbourhood
    (pairs whose head has more than MAX_PATHS 2-hop walks, where `paths_from` cuts, walk as it does)."""
    valid = np.flatnonzero((heads >= 0) & (tails >= 0))
    span = pack_base(num_relations)
    if not len(valid):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    h, t = heads[valid].astype(np.int64), tails[valid].astype(np.int64)
    deg = np.diff(graph.indptr)
    pos1, o1 = graph.edge_positions(h)
    n1 = graph.neighbor[pos1]
    walks = np.bincount(o1, weights=deg[n1], minlength=len(h))
    hub = walks > MAX_PATHS
    c1 = step_code(graph.relation[pos1], graph.direction[pos1])
    hit = (n1 == t[o1]) & ~hub[o1]
    owners, types = [o1[hit]], [path_type(c1[hit], None, num_relations)]
    # the tail's edges, seen from the middle entity m (the other end): the step m → tail
    post, ot = graph.edge_positions(t)
    m_t, tid_t = graph.neighbor[post], graph.triple_id[post]
    c2 = step_code(graph.relation[post], -graph.direction[post])
    n = max(graph.num_nodes, 1)
    lk = o1 * n + n1
    rk = ot * n + m_t
    order = np.argsort(rk, kind="stable")
    rk_s = rk[order]
    lo, hi = np.searchsorted(rk_s, lk), np.searchsorted(rk_s, lk, side="right")
    cnt = np.where(hub[o1] | (t[o1] == h[o1]), 0, hi - lo)
    left = np.repeat(np.arange(len(lk)), cnt)
    right = order[segment_positions(lo, cnt)]
    ok = graph.triple_id[pos1][left] != tid_t[right]
    owners.append(o1[left][ok])
    types.append(path_type(c1[left][ok], c2[right][ok], num_relations))
    if hub.any():  # hub heads: the capped walk of paths_from
        hubs = np.flatnonzero(hub)
        paths, of, _ = batch_paths(graph, h[hubs], num_relations)
        at = paths.endpoint == t[hubs][of]
        owners.append(hubs[of][at])
        types.append(paths.ptype[at])
    keys = np.unique(valid[np.concatenate(owners)] * span + np.concatenate(types))
    return keys // span, keys % span


# ---- the anchored retriever's ranking ------------------------------------------------------------
def rank_anchored(c: Any, vectors: np.ndarray, anchors_of: Sequence[np.ndarray], folds: np.ndarray,
                  example_ids: np.ndarray, entity_cosine: PairCosine, tie_weight: float) -> list[SubgraphOutput]:
    """Whole paths from each query's anchors, endpoints ranked by the prior, kept greedily (fewest
    new triples per endpoint) up to top_N — for the whole batch.

    Ties are broken by entity vectors: endpoints by the cosine of the endpoint entity to the query,
    the paths to one endpoint by the mean cosine of the entities they reach (middle and end)."""
    nq, R, top_N = len(anchors_of), c.store.num_relations, c.config.top_N
    lens = np.array([len(a) for a in anchors_of], np.int64)
    anchors = np.concatenate(list(anchors_of)).astype(np.int64) if nq else np.empty(0, np.int64)
    anchor_q = np.repeat(np.arange(nq), lens)
    space = None
    if c.answer_space is not None:  # no path into the answer space: keep the anchor's context
        space = np.zeros(max(c.graph.num_nodes, 1), bool)
        space[np.asarray(c.answer_space, np.int64)] = True
    paths, of_anchor, mid = batch_paths(c.graph, anchors, R, max_hops=c.config.path_hops, group=anchor_q,
                                        inside=space)
    q = anchor_q[of_anchor]
    pool = np.bincount(q, minlength=nq)

    # distinct endpoints of each query: (query, endpoint) keys, sorted
    span = max(c.graph.num_nodes, 1)
    end_key = q * span + paths.endpoint
    if c.prior is not None:
        ex_q, ex_type = batch_linking_types(c.graph, example_ids[:, 0], example_ids[:, 1], R)
        ctype, nt = compact_ids(paths.ptype)
        # a path's precision depends on its (query, type) only: computed once per distinct pair
        qt_key, of_qt = dense_unique(q * nt + ctype, nq * nt)
        qt_q, qt_type = qt_key // nt, paths.ptype[_first_of(of_qt, len(qt_key))]
        qt_prior = np.empty(len(qt_key))
        for fold in np.unique(folds).tolist():
            in_fold = (folds == fold)[qt_q]
            qt_prior[in_fold] = _path_precisions(c.prior.for_fold(fold), qt_type[in_fold], qt_q[in_fold], ex_q,
                                                 ex_type)
        qt_rank, n_path_rank = desc_rank(qt_prior)
        path_rank = qt_rank[of_qt]                              # each path's precision order, as ints
        # noisy-or over one vote per (query, type, endpoint), added in type order per endpoint
        ends_key, of_end, vote = _endpoint_votes(end_key, ctype, nt)
        log_miss = np.log1p(-np.clip(qt_prior[of_qt[vote]], 0, 1 - 1e-9))
        prior = 1.0 - np.exp(sequential_segment_sum(log_miss, of_end[vote], len(ends_key)))
    else:  # no train split: a 1-hop link beats a 2-hop one, then the text decides
        ends_key, of_end, _ = sorted_unique(end_key)
        path_prior = np.where(paths.t2 < 0, 1.0, 0.5)
        path_rank, n_path_rank = (paths.t2 >= 0).astype(np.int64), 2
        prior = np.zeros(len(ends_key))
        np.maximum.at(prior, of_end, path_prior)
    end_q = ends_key // span
    ends = ends_key % span
    # The greedy pass below visits at most 3·top_N + 1 endpoints of a query (each adds a triple, or
    # is an end of an added one, or is the one that does not fit), in order: only endpoints whose prior
    # ties or beats the (3·top_N + 1)-th best can be reached, so only they need a cosine, and only
    # the first 3·top_N + 1 of the order need their paths
    reach = 3 * top_N + 1
    # (a few more endpoints than those: priors are binned, on a square-root scale as they crowd near
    # 0; the greedy order below is exact)
    live_ends = np.flatnonzero(top_candidates(end_q, np.sqrt(prior), nq, reach, 0.0, 1.0))
    # the text cosine (entity vectors; an entity without a vector counts 0) of the live endpoints
    best_cos = np.full(len(ends_key), -np.inf)
    best_cos[live_ends] = entity_cosine(vectors, end_q[live_ends], ends[live_ends])[1]
    # endpoint order per query: prior, then the text cosine, then id (live ends come sorted by query
    # then id: a stable sort keeps ids ascending within ties)
    prior_rank, n_prior = desc_rank(prior[live_ends])
    order = live_ends[ordered(end_q[live_ends] * n_prior + prior_rank, best_cos[live_ends])]
    order = order[rank_in_segment(end_q[order]) < reach]
    end_start = segment_starts(end_q[order], nq)
    visit = np.zeros(len(ends_key), bool)
    visit[order] = True
    keep = np.flatnonzero(visit[of_end])
    paths, q, of_end, path_rank, mid = paths.select(keep), q[keep], of_end[keep], path_rank[keep], mid[keep]
    end_cos = best_cos[of_end].astype(np.float32)
    two = np.flatnonzero(paths.t2 >= 0)
    pcos = end_cos.copy()
    if len(two):  # a middle entity is a neighbour of an anchor: far fewer (query, middle) pairs than paths
        mid_key, of_mid, _ = sorted_unique(q[two] * span + mid[two])
        pcos[two] = (entity_cosine(vectors, mid_key // span, mid_key % span)[1][of_mid] + end_cos[two]) / 2
    # paths grouped by endpoint, each group best first (most telling type, then the text, then path order)
    by_end = ordered((np.cumsum(visit) - 1)[of_end] * n_path_rank + path_rank, pcos)
    group_start = segment_starts(of_end[by_end], len(ends_key))
    score_of_end = (1 - tie_weight) * prior + tie_weight * (best_cos + 1) / 2
    t1, t2 = paths.t1, paths.t2

    # greedy selection, one endpoint per query per round, every query at once
    have = np.full((nq, top_N), -1, np.int64)
    n_have = np.zeros(nq, np.int64)
    got_score = np.zeros((nq, top_N), np.float64)
    active = np.flatnonzero(end_start[1:] > end_start[:-1])
    k = 0
    while len(active):
        e = order[end_start[active] + k]                       # each active query's k-th endpoint
        g0, g1 = group_start[e], group_start[e + 1]
        glen = g1 - g0
        owner = np.repeat(np.arange(len(active)), glen)        # index into `active`
        j = by_end[segment_positions(g0, glen)]
        hv = have[active[owner]]
        new1 = ~(hv == t1[j][:, None]).any(1)
        new2 = (t2[j] >= 0) & ~(hv == t2[j][:, None]).any(1)
        cost = new1.astype(np.int64) + new2
        # the first path of least cost in each group
        local = rank_in_segment(owner)
        best = np.minimum.reduceat(cost * (int(glen.max()) + 1) + local, np.r_[0, np.cumsum(glen)[:-1]])
        pick = np.r_[0, np.cumsum(glen)[:-1]] + best % (int(glen.max()) + 1)
        jp, n1p, n2p = j[pick], new1[pick], new2[pick]
        need = n1p.astype(np.int64) + n2p
        fits = n_have[active] + need <= top_N
        qs_ = active[fits]
        for first_new, tids in ((n1p[fits], t1[jp[fits]]), (n2p[fits], t2[jp[fits]])):
            w = qs_[first_new]
            have[w, n_have[w]] = tids[first_new]
            got_score[w, n_have[w]] = score_of_end[e[fits][first_new]]
            n_have[w] += 1
        k += 1
        active = qs_[end_start[qs_] + k < end_start[qs_ + 1]]

    # each query's triples by descending score, stable (paths were taken in endpoint order)
    fq, slot = np.nonzero(np.arange(top_N)[None, :] < n_have[:, None])
    fs = got_score[fq, slot].astype(np.float32)
    order = np.lexsort((slot, -fs, fq))
    return _outputs(c.triples, have[fq, slot][order], fs[order], segment_starts(fq[order], nq), anchors_of, pool)


def _endpoint_votes(end_key: np.ndarray, ctype: np.ndarray, nt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct (query, endpoint) keys, the endpoint of each path, the first path of each distinct
    (endpoint, type) vote, in (endpoint, type) order): one stable sort by (query, endpoint, type)
    where the packed key fits an int64, else two."""
    if not len(end_key) or (int(end_key.max()) + 1) * nt >= 1 << 62:
        ends_key, of_end, _ = sorted_unique(end_key)
        return ends_key, of_end, sorted_unique(of_end * nt + ctype)[2]
    vote_key, of_vote, vote = sorted_unique(end_key * nt + ctype)
    vote_end = vote_key // nt
    new = np.r_[True, vote_end[1:] != vote_end[:-1]]
    return vote_end[new], (np.cumsum(new) - 1)[of_vote], vote


def _path_precisions(model: Any, ptypes: np.ndarray, q: np.ndarray, ex_q: np.ndarray,
                     ex_type: np.ndarray) -> np.ndarray:
    """`PathPrior.path_scores` of each path given its query's example types, for many queries."""
    k, p0 = model.smoothing, model.base_rate
    codes, hits, seen, ccodes, chits, cseen = model._tables()

    def look(table: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.clip(np.searchsorted(table, keys), 0, max(len(table) - 1, 0))
        return pos, (table[pos] == keys if len(table) else np.zeros(len(keys), bool))

    pos, found = look(codes, ptypes)
    h = np.where(found, hits[pos] if len(hits) else 0.0, 0.0)
    n = np.where(found, seen[pos] if len(seen) else 0.0, 0.0)
    uncond = (h + k * p0) / (n + k)
    best = np.full(len(ptypes), -1.0)
    if len(ex_q) and len(ptypes):
        # every (path, example type of its query) pair
        lo, hi = np.searchsorted(ex_q, q), np.searchsorted(ex_q, q, side="right")
        cnt = hi - lo
        path = np.repeat(np.arange(len(ptypes)), cnt)
        et = ex_type[segment_positions(lo, cnt)]
        cpos, cfound = look(ccodes, et * pack_base(model.num_relations) + ptypes[path])
        if cfound.any():
            cond = (chits[cpos[cfound]] + k * uncond[path[cfound]]) / (cseen[cpos[cfound]] + k)
            np.maximum.at(best, path[cfound], cond)
    return np.where(best >= 0, best, uncond)


# ---- the paper scheme's pools ---------------------------------------------------------------------
def reached(g: CSRGraph, seeds: Sequence[np.ndarray], hops: int) -> np.ndarray:
    """(query × node) bitmap of the nodes within `hops` hops of each query's seeds."""
    nq, n_nodes = len(seeds), g.num_nodes
    sq = np.repeat(np.arange(nq), [len(s) for s in seeds])
    sn = np.concatenate(list(seeds)).astype(np.int64) if nq else np.empty(0, np.int64)
    ok = (sn >= 0) & (sn < n_nodes)
    seen = np.zeros((nq, n_nodes), bool)                     # growing hop by hop
    seen[sq[ok], sn[ok]] = True
    start = sorted_unique(sq[ok] * n_nodes + sn[ok])[0]          # the seeds, as np.nonzero(seen) lists them
    fq, fn = start // n_nodes, start % n_nodes
    for hop in range(hops):
        pos, own = g.edge_positions(fn)
        if not len(pos):
            break
        eq, nbr = fq[own], g.neighbor[pos]
        if hop == hops - 1:  # the last frontier is never expanded: no need to list it
            seen[eq, nbr] = True
            break
        new = ~seen[eq, nbr]
        frontier = np.zeros((nq, n_nodes), bool)
        frontier[eq[new], nbr[new]] = True
        seen |= frontier
        fq, fn = np.nonzero(frontier)
    return seen


def pool_chunks(g: CSRGraph, seeds: Sequence[np.ndarray], hops: int):
    """`expand_hops` for a batch: yields (first query, owner, triple id) per chunk of queries, the
    triples within `hops` hops of each one's seeds (those touching a node within hops − 1), sorted
    by owner (the query's position in the chunk) then id."""
    nq, span = len(seeds), max(len(g.triple_id), 1)
    step = max(1, min(POOL_QUERIES, BITMAP_CELLS // max(g.num_nodes, 1)))
    for lo in range(0, nq, step):
        gq, gn = np.nonzero(reached(g, seeds[lo:lo + step], hops - 1))
        pos, own = g.edge_positions(gn)
        keys = sorted_unique(gq[own] * span + g.triple_id[pos])[0]
        yield lo, keys // span, keys % span


def mrmkg_seeds(c: Any, vectors: np.ndarray, named: Sequence[np.ndarray]
                ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The seeds E′ of a chunk of queries, and their (query × triple) cosine block when there is one:
    with an exact (Flat) triple index over vectors held in memory, the seeds' top-n and the pool's
    cosines come from one matrix product instead of the index search plus a second product."""
    cos = c.pair_cosine
    if c.config.top_n and c.seeds.exact_triples and cos.in_memory:
        block = cos.block(vectors)
        return c.seeds.seed_entities(vectors, named, triple_hits=cos.top_ids(block, c.config.top_n)), block
    return c.seeds.seed_entities(vectors, named), None


def rank_mrmkg(c: Any, vectors: np.ndarray, named: Sequence[np.ndarray], cosine: PairCosine
               ) -> list[SubgraphOutput]:
    """MR-MKG App. A.6 for a batch: E′ = the named entities and the ends of the top-n triples
    (`mrmkg_seeds`); G = E′, its `hops`-hop neighbours and every triple linking two nodes of G
    (`mmkg.retrieval.retrievers.neighbourhood_with_links`); its top-N by cosine.

    Set work is done on (query × node) bitmaps of a chunk of queries."""
    nq, n_nodes, n_triples = len(vectors), c.graph.num_nodes, len(c.triples)
    step = max(1, BITMAP_CELLS // max(n_nodes, n_triples, 1))
    out: list[SubgraphOutput] = []
    for lo in range(0, nq, step):
        seeds, block = mrmkg_seeds(c, vectors[lo:lo + step], named[lo:lo + step])
        out.extend(_mrmkg_chunk(c, vectors[lo:lo + step], seeds, cosine, block))
    return out


def _mrmkg_chunk(c: Any, vectors: np.ndarray, seeds: Sequence[np.ndarray], cosine: PairCosine,
                 block: np.ndarray | None) -> list[SubgraphOutput]:
    g, triples, top_N = c.graph, c.triples, c.config.top_N
    nq = len(seeds)
    seen = reached(g, seeds, c.config.hops)                      # G's nodes
    # every triple with both ends in G (the edges between neighbours included): read once, from its
    # head's side (the CSR lists a triple under both ends)
    gq, gn = np.nonzero(seen)
    pos, own = g.edge_positions(gn, keep=g.direction > 0)
    aq = gq[own]
    both = seen[aq, g.neighbor[pos]]
    aq, aid = aq[both], g.triple_id[pos[both]]
    has, cos = cosine(vectors, aq, aid, block)
    aq, aid, cos = aq[has], aid[has], cos[has]
    size = np.bincount(aq, minlength=nq)
    # each query's top_N by cosine, ties by id: one sort of packed (query, cosine, id) keys, over the
    # pairs that can make it only
    maybe = np.flatnonzero(top_candidates(aq, cos, nq, top_N))
    order = maybe[ordered(aq[maybe], cos[maybe], aid[maybe])]
    top = order[rank_in_segment(aq[order]) < top_N]
    aq, aid, cos = aq[top], aid[top], cos[top]
    return _outputs(triples, aid, cos, segment_starts(aq, nq), seeds, size)


def _outputs(triples: np.ndarray, tids: np.ndarray, scores: np.ndarray, starts: np.ndarray,
             seeds: Sequence[np.ndarray], pool: np.ndarray) -> list[SubgraphOutput]:
    """One `SubgraphOutput` per query from the batch's flat ranked triples (query i's are
    tids[starts[i]:starts[i + 1]]): the columns are gathered once, each query gets slices of them."""
    tids = np.asarray(tids, np.int64)
    h, r, t = (np.ascontiguousarray(col) for col in triples[tids].T)
    scores = np.asarray(scores, np.float32)
    out = []
    for i, (lo, hi) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist())):
        if lo == hi:
            out.append(empty_output(seeds[i], int(pool[i])))
        else:
            out.append(SubgraphOutput(tids[lo:hi], h[lo:hi], r[lo:hi], t[lo:hi], scores[lo:hi],
                                      np.asarray(seeds[i], np.int64), int(pool[i])))
    return out
