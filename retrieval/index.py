"""FAISS inner-product indexes over the store's vectors (registry `index`: flat, ivf, hnsw, ivfpq, auto).

Vectors are L2-normalised, so inner product = cosine. Each index lives in
`<kg>/indexes/<encoder-slug>/<kind>.faiss` with `<kind>.ids.npy` (row → store id, the id map)
and `<kind>.meta.json` (type, factory string, parameters, ntotal, memory, build seconds and a
recall@10 self-check against exact search on a sample). One directory per encoder: vectors of
two encoders never share an index.

`auto` (after autofaiss's choice by size and memory budget):
* fewer than `AUTO_FLAT_MAX` vectors → exact `Flat` (brute force over that few is milliseconds);
* otherwise IVF with nlist ≈ 4·√n (a power of two), storing codes as the budget allows:
  full float32 (`IVF,Flat`), else 8-bit scalar (`IVF,SQ8`), else product quantisation
  (`IVF,PQm`, the largest m that fits). nprobe is then tuned on a sample of the vectors to the
  smallest value reaching `target_recall` recall@10 against exact search.
HNSW is offered explicitly (fast queries, but slow to build on a few CPU cores), never by auto.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmkg.kg_store import KGStore, atomic
from mmkg.kg_store.errors import ConfigError, CorruptFileError, DeviceError, KGStoreError
from mmkg.kg_store.hashing import cache_key, sha256_file
from mmkg.kg_store.registry import family
from mmkg.kg_store.vectors import encoder_slug, load_vectors, vector_meta, vectors_dir

log = logging.getLogger(__name__)

index_registry = family("index")

AUTO_FLAT_MAX = 50_000
DEFAULT_TARGET_RECALL = 0.95
#: k of the self-check and of nprobe/efSearch tuning
CHECK_K = 10
INDEXED_KINDS = ("entity", "triple", "image")


@dataclass
class IndexSpec:
    """What to build: a faiss factory string plus train/search parameters."""

    type: str                       # flat | ivf | hnsw | ivfpq (what auto resolved to)
    factory: str                    # faiss.index_factory string
    params: dict[str, Any] = field(default_factory=dict)
    #: the search parameter tuned to the target recall ("nprobe", "efSearch") or None (exact)
    tune: str | None = None


def parse_memory(text: str | int | None) -> int | None:
    """'4G', '512M', '2.5GB', '1000000' → bytes; None stays None (one grammar: mmkg.kg_store.graph.parse_size)."""
    from mmkg.kg_store.graph import parse_size
    return None if text is None else parse_size(text)


def estimate_memory(spec: IndexSpec, n: int, d: int) -> int:
    """Bytes the index needs in RAM (codes + ids + coarse centroids / graph links)."""
    p = spec.params
    if spec.type == "flat":
        return n * d * 4
    if spec.type == "hnsw":
        return int(n * (d * 4 + p["M"] * 2 * 4 * 1.1))
    code = {"Flat": d * 4, "SQ8": d}.get(p.get("codes", ""), p.get("m", 0) * p.get("nbits", 8) // 8)
    return n * (code + 8) + p["nlist"] * d * 4


def _nlist(n: int) -> int:
    # ~4·√n lists (autofaiss), a power of two, and at least 39 training points per list.
    target = max(1, min(4 * math.sqrt(n), n / 39))
    return int(2 ** max(0, round(math.log2(target))))


@index_registry.register("flat", "exact")
def flat_spec(n: int, d: int, **_: Any) -> IndexSpec:
    return IndexSpec("flat", "Flat")


@index_registry.register("ivf")
def ivf_spec(n: int, d: int, *, nlist: int | None = None, codes: str = "Flat", nprobe: int | None = None,
             **_: Any) -> IndexSpec:
    nlist = nlist or _nlist(n)
    return IndexSpec("ivf", f"IVF{nlist},{codes}", {"nlist": nlist, "codes": codes, "nprobe": nprobe},
                     tune=None if nprobe else "nprobe")


@index_registry.register("ivfpq")
def ivfpq_spec(n: int, d: int, *, nlist: int | None = None, m: int | None = None, nbits: int = 8,
               nprobe: int | None = None, **_: Any) -> IndexSpec:
    nlist = nlist or _nlist(n)
    m = m or _largest_pq_m(d, d // 8)
    return IndexSpec("ivfpq", f"IVF{nlist},PQ{m}x{nbits}np", {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": nprobe},
                     tune=None if nprobe else "nprobe")


@index_registry.register("hnsw")
def hnsw_spec(n: int, d: int, *, M: int = 32, efConstruction: int = 40, efSearch: int | None = None,
              **_: Any) -> IndexSpec:
    return IndexSpec("hnsw", f"HNSW{M},Flat", {"M": M, "efConstruction": efConstruction, "efSearch": efSearch},
                     tune=None if efSearch else "efSearch")


def _largest_pq_m(d: int, at_most: int) -> int:
    return max((m for m in range(1, max(1, at_most) + 1) if d % m == 0), default=1)


@index_registry.register("auto")
def auto_spec(n: int, d: int, *, max_memory: int | None = None, flat_max: int = AUTO_FLAT_MAX,
              **kw: Any) -> IndexSpec:
    """The module docstring's rule: Flat when small, else IVF with the richest codes that fit."""
    budget = max_memory if max_memory is not None else float("inf")
    if n < flat_max and n * d * 4 <= budget:
        return flat_spec(n, d)
    for codes in ("Flat", "SQ8"):
        spec = ivf_spec(n, d, codes=codes, **kw)
        if estimate_memory(spec, n, d) <= budget:
            return spec
    nlist = kw.get("nlist") or _nlist(n)
    per_vector = (budget - nlist * d * 4) / max(n, 1) - 8
    m = _largest_pq_m(d, int(per_vector))
    spec = ivfpq_spec(n, d, m=m, **{k: v for k, v in kw.items() if k != "m"})
    if estimate_memory(spec, n, d) > budget:
        raise ConfigError(f"--max-memory {budget:,} bytes is too small for {n:,} vectors of dim {d} "
                           f"(IVF,PQ{m} needs {estimate_memory(spec, n, d):,})")
    return spec


# ---- the index object ---------------------------------------------------------------------------
class VectorIndex:
    """A FAISS index plus its id map: `.search` returns store ids (-1 where fewer than k hits)."""

    def __init__(self, index: Any, ids: np.ndarray, meta: dict[str, Any]):
        self.index, self.ids, self.meta = index, np.asarray(ids, dtype=np.int64), meta
        self.apply_search_params(meta.get("params", {}))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def apply_search_params(self, params: dict[str, Any]) -> None:
        import faiss
        settings = [f"{k}={int(params[k])}" for k in ("nprobe", "efSearch") if params.get(k)]
        if settings:  # GPU indexes (GpuIndexIVF*, replicas over several GPUs) take their own setter
            space = faiss.GpuParameterSpace() if _is_gpu_index(self.index) else faiss.ParameterSpace()
            space.set_index_parameters(self.index, ",".join(settings))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product. Shapes: q (m, d) or (d,) → scores (m, k) float32, ids (m, k) int64."""
        q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise KGStoreError(f"query dim {q.shape[1]} != index dim {self.dim} "
                               f"(index built with encoder {self.meta.get('encoder')!r})")
        k = int(k)
        if k < 1:
            raise KGStoreError("k must be at least 1")
        scores, rows = self.index.search(q, min(k, max(self.ntotal, 1)))
        ids = np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1) if self.ntotal else rows
        if ids.shape[1] < k:  # pad to k so callers always get (m, k)
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def save(self, path: str | Path) -> list[Path]:
        """Write `<path>.faiss`, `<path>.ids.npy`, `<path>.meta.json` atomically."""
        import faiss
        path = Path(path)
        with atomic.atomic_path(path.with_suffix(".faiss")) as tmp:
            faiss.write_index(_to_cpu(self.index), str(tmp))
        atomic.write_npy(path.with_suffix(".ids.npy"), self.ids)
        atomic.write_json(path.with_suffix(".meta.json"), self.meta)
        return [path.with_suffix(s) for s in (".faiss", ".ids.npy", ".meta.json")]

    @classmethod
    def read(cls, path: str | Path, *, mmap: bool = False, meta: dict[str, Any] | None = None) -> "VectorIndex":
        import json
        import faiss
        path = Path(path)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(path.with_suffix(".faiss")), flags)
        ids = np.load(path.with_suffix(".ids.npy"), allow_pickle=False)
        meta = meta if meta is not None else json.loads(path.with_suffix(".meta.json").read_text())
        return cls(index, ids, meta)


# ---- GPU ----------------------------------------------------------------------------------------
#: the most nprobe a GPU IVF search accepts (faiss-gpu's k-selection limit)
GPU_MAX_NPROBE = 2048


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu (`pip install -e '.[gpu]'` brings faiss-gpu)."""
    import faiss
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def resolve_index_gpu(use_gpu: bool | str | None) -> bool:
    """`use_gpu` of the index stage → build on the GPU or not, by the rules of `mmkg.pipeline.device`:
    None/"auto" → the GPU when FAISS has one; True/"cuda" → the GPU, or a DeviceError (one line)
    when FAISS has none; False/"cpu" → the CPU."""
    from mmkg.pipeline.device import unavailable_message
    request = {"auto": None, "cpu": False, "cuda": True}.get(use_gpu, use_gpu) if isinstance(use_gpu, str) \
        else use_gpu
    if request is not None and not isinstance(request, bool):
        raise ConfigError(f"use_gpu must be true, false or auto (or device auto, cpu, cuda), not {use_gpu!r}")
    gpus = gpu_count()
    if request is None:
        log.info("index device auto → %s", f"{gpus} GPU(s)" if gpus else "cpu (FAISS sees no GPU)")
        return gpus > 0
    if request and not gpus:
        import faiss
        reason = ("the installed faiss has no GPU support (faiss-cpu); pip uninstall faiss-cpu && "
                  "pip install -e '.[gpu]'") if not hasattr(faiss, "StandardGpuResources") \
            else "FAISS sees no CUDA device"
        raise DeviceError(unavailable_message("cuda (use_gpu) for FAISS", reason,
                                              fallback="--device auto or cpu (use_gpu: auto or false)"))
    return request


def _is_gpu_index(index: Any) -> bool:
    # IndexReplicas/IndexShards are what index_cpu_to_all_gpus returns for several GPUs
    return gpu_count() > 0 and ("Gpu" in type(index).__name__ or type(index).__name__ in ("IndexReplicas",
                                                                                              "IndexShards"))


def _to_gpu(index: Any) -> Any:
    import faiss
    return faiss.index_cpu_to_all_gpus(index)


def _to_cpu(index: Any) -> Any:
    import faiss
    return faiss.index_gpu_to_cpu(index) if hasattr(faiss, "index_gpu_to_cpu") and _is_gpu_index(index) else index


# ---- build --------------------------------------------------------------------------------------
def _as_float32(vectors: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """A float32 C-contiguous copy/view (float16 mmap matrices are converted block by block)."""
    if vectors.dtype == np.float32 and vectors.flags.c_contiguous:
        return vectors
    out = np.empty(vectors.shape, np.float32)
    for i in range(0, len(vectors), block):
        out[i:i + block] = vectors[i:i + block]
    return out


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top-k by inner product (the self-check's ground truth)."""
    import faiss
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat.search(q, k)[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / |truth| per query (recall@k with k = truth.shape[1])."""
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, (t >= 0).sum())
            for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 1.0


def _without_self(found: np.ndarray, qrows: np.ndarray, k: int) -> np.ndarray:
    """Drop each query's own row from its hits and keep k (leave-one-out self-check)."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for i, (row, q) in enumerate(zip(found, qrows)):
        kept = row[row != q][:k]
        out[i, :len(kept)] = kept
    return out


def _sample_recall(index: Any, queries: np.ndarray, qrows: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return recall_at_k(_without_self(index.search(queries, k + 1)[1], qrows, k), truth)


def _tune(vi: VectorIndex, param: str, queries: np.ndarray, qrows: np.ndarray, truth: np.ndarray, target: float,
          upper: int) -> tuple[int, float]:
    """Smallest power-of-two value of nprobe/efSearch reaching `target` recall (or the best found)."""
    best = (upper, -1.0)
    value = 1 if param == "nprobe" else 16
    while True:
        value = min(value, upper)
        vi.apply_search_params({param: value})
        r = _sample_recall(vi.index, queries, qrows, truth)
        if r >= target:
            return value, r
        if r <= best[1] + 0.002 or value >= upper:  # plateau (lossy codes) or nothing left to probe
            return best if best[1] >= r else (value, r)
        best = (value, r)
        value *= 2


def build_index(vectors: np.ndarray, *, kind: str = "auto", ids: np.ndarray | None = None,
                max_memory: int | str | None = None, target_recall: float = DEFAULT_TARGET_RECALL,
                check_queries: int = 1000, seed: int = 0, use_gpu: bool | None = None,
                threads: int | None = None, encoder: str | None = None, **params: Any) -> VectorIndex:
    """Build an inner-product index over `vectors` (n, d); row i maps to `ids[i]` (default i).

    The meta records type, factory, params (with the tuned nprobe/efSearch), ntotal, memory,
    build seconds and recall@10 of `check_queries` sample rows against exact search.
    """
    import faiss
    if threads:
        faiss.omp_set_num_threads(int(threads))
    t0 = time.perf_counter()
    x = _as_float32(np.asarray(vectors))
    if x.ndim != 2:
        raise KGStoreError(f"vectors must be a 2-d matrix, got shape {x.shape}")
    n, d = x.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if len(ids) != n:
        raise KGStoreError(f"{n} vectors but {len(ids)} ids")
    make_spec: Callable[..., IndexSpec] = index_registry.get(kind)
    budget = parse_memory(max_memory)
    spec = make_spec(n, d, max_memory=budget, **params)
    if spec.type in ("ivf", "ivfpq") and n < spec.params["nlist"]:
        spec = flat_spec(n, d)  # too few vectors to train the lists: exact search is also the fastest
    index = faiss.index_factory(d, spec.factory, faiss.METRIC_INNER_PRODUCT)
    if spec.type in ("ivf", "ivfpq"):
        faiss.extract_index_ivf(index).cp.seed = seed  # reproducible k-means
    if spec.type == "hnsw":
        index.hnsw.efConstruction = int(spec.params["efConstruction"])
    use_gpu = resolve_index_gpu(use_gpu)
    gpu_note = None
    if use_gpu and spec.type == "hnsw":  # faiss-gpu has no HNSW: it stays on the CPU, and the meta says so
        gpu_note = "faiss-gpu has no HNSW index: built and searched on the CPU"
    elif use_gpu:
        try:
            index = _to_gpu(index)
        except RuntimeError as e:  # e.g. a PQ code size the GPU kernels lack: build on the CPU
            gpu_note = f"built on the CPU: {str(e).splitlines()[0][:200]}"
    if gpu_note:
        log.warning("index %s: %s", spec.factory, gpu_note)
        use_gpu = False
    rng = np.random.default_rng(seed)
    if not index.is_trained:
        # Train on a uniform sample: ~50 points per list is enough for k-means (faiss warns below
        # 39; autofaiss uses up to 256) and keeps a 1M-vector build within minutes on 2 cores.
        n_train = min(n, max(spec.params.get("nlist", 1) * 50, 10_000))
        train = x[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else x
        index.train(train)
    index.add(x)
    build_seconds = time.perf_counter() - t0

    meta: dict[str, Any] = {"type": spec.type, "kind_requested": kind, "factory": spec.factory,
                            "params": {k: v for k, v in spec.params.items() if v is not None},
                            "ntotal": int(index.ntotal), "dim": d, "metric": "inner_product",
                            "encoder": encoder, "memory_bytes": estimate_memory(spec, n, d),
                            "max_memory": budget, "gpu": bool(use_gpu), "seed": seed}
    if gpu_note:
        meta["gpu_note"] = gpu_note
    vi = VectorIndex(index, ids, meta)
    # Self-check: recall@10 of sample rows (as queries) against exact search, leave-one-out (each
    # query's own row is dropped from truth and hits, or a stored row would trivially find itself
    # and overstate recall for unseen queries); nprobe/efSearch are tuned on the same sample.
    k = min(CHECK_K, n - 1)
    if n > 1 and check_queries:
        t_check = time.perf_counter()
        qrows = np.sort(rng.choice(n, min(check_queries, n), replace=False))
        queries = x[qrows]
        truth = _without_self(exact_topk(x, queries, k + 1), qrows, k) if spec.type != "flat" else None
        if truth is None:
            recall = 1.0
        elif spec.tune:
            upper = spec.params["nlist"] if spec.tune == "nprobe" else 4096
            upper = min(upper, GPU_MAX_NPROBE) if use_gpu and spec.tune == "nprobe" else upper
            value, recall = _tune(vi, spec.tune, queries, qrows, truth, target_recall, upper)
            meta["params"][spec.tune] = value
            vi.apply_search_params(meta["params"])
        else:
            recall = _sample_recall(vi.index, queries, qrows, truth)
        meta["self_check"] = {"k": k, "queries": int(len(qrows)), "recall": round(recall, 4),
                              "target": target_recall, "seconds": round(time.perf_counter() - t_check, 3)}
    meta["build_seconds"] = round(build_seconds, 3)
    return vi


# ---- store level --------------------------------------------------------------------------------
def indexes_dir(encoder: str) -> str:
    return f"indexes/{encoder_slug(encoder)}"


@dataclass
class IndexResult:
    """What one index run did, per vector kind."""

    meta: dict[str, Any]                 # the committed `indexes/<slug>` artifact
    decisions: dict[str, str]            # kind → "append: …" | "rebuild: …"
    counts: dict[str, int]               # kind_built / kind_appended → rows
    outputs: list[str]
    seconds: float

    @property
    def appended(self) -> int:
        return sum(v for k, v in self.counts.items() if k.endswith("_appended"))


def append_plan(prev: dict[str, Any] | None, inc: dict[str, Any] | None, old_ids: np.ndarray | None,
                ids: np.ndarray, spec_type: str, cfg_hash: str) -> tuple[bool, str]:
    """(append?, why) for one vector kind: new rows may be added to the previous index only when
    its settings, type and every indexed row are unchanged."""
    if prev is None:
        return False, "no previous index"
    if prev.get("config_hash") != cfg_hash:
        return False, "index config changed"
    if prev.get("type") != spec_type:
        return False, f"index type changes from {prev.get('type')} to {spec_type} at this size"
    if prev["type"] == "hnsw":
        return False, "HNSW is rebuilt (inserting into a built graph would not equal a fresh build)"
    if not inc or inc.get("prev_sha256") != prev.get("vectors_sha256"):
        return False, "vectors were not derived from the indexed ones"
    n_old = int(prev["ntotal"])
    if inc.get("prefix_rows", 0) < n_old or old_ids is None or len(ids) < n_old \
            or not np.array_equal(old_ids, ids[:n_old]):
        return False, "indexed rows changed (e.g. an entity gained an image)"
    if prev["type"] in ("ivf", "ivfpq") and len(ids) > 2 * int(prev.get("trained_ntotal", n_old)):
        return False, "IVF lists outgrown (more than 2x the vectors they were trained on): retrained"
    return True, f"appended {len(ids) - n_old:,} vectors to {n_old:,}"


def recheck_after_append(vi: VectorIndex, x: np.ndarray, target: float, seed: int = 0,
                         check_queries: int = 1000) -> None:
    """Recall@10 self-check of an appended index; nprobe is raised (powers of two) if it fell below
    target: the lists were trained on the old vectors and new ones go to the nearest list, so
    recall can drift as an IVF index grows."""
    n = len(x)
    if n < 2 or vi.meta.get("type") == "flat":
        vi.meta["self_check"] = {**vi.meta.get("self_check", {}), "recall": 1.0}
        return
    rng = np.random.default_rng(seed)
    qrows = np.sort(rng.choice(n, min(check_queries, n), replace=False))
    k = min(CHECK_K, n - 1)
    truth = _without_self(exact_topk(x, x[qrows], k + 1), qrows, k)
    r = _sample_recall(vi.index, x[qrows], qrows, truth)
    params = vi.meta.setdefault("params", {})
    if vi.meta.get("type") in ("ivf", "ivfpq"):
        nprobe, nlist = int(params.get("nprobe") or 1), int(params["nlist"])
        while r < target and nprobe < nlist:
            nprobe = min(nprobe * 2, nlist)
            vi.apply_search_params({"nprobe": nprobe})
            r = _sample_recall(vi.index, x[qrows], qrows, truth)
        params["nprobe"] = nprobe
    vi.meta["self_check"] = {"k": k, "queries": int(len(qrows)), "recall": round(r, 4), "target": target}


def build_store_indexes(kg: str | Path, encoder: str, *, kind: str = "auto", max_memory: int | str | None = None,
                        kinds: tuple[str, ...] | list[str] | None = None,
                        target_recall: float = DEFAULT_TARGET_RECALL, threads: int | None = None,
                        use_gpu: bool | None = None, append: bool = True, **params: Any) -> IndexResult:
    """The index stage (`mmkg index` and the `mmkg run` DAG): index every vector kind of `encoder`
    in the store and commit `indexes/<slug>`.

    With `append` (the default), new vectors are added to a Flat/IVF index whose indexed rows are
    unchanged (`append_plan`); HNSW, a type change chosen by `auto`, or IVF lists outgrown 2× are
    rebuilt, and the reason is recorded per kind."""
    import copy
    t0 = time.perf_counter()
    use_gpu = resolve_index_gpu(use_gpu)  # a GPU request FAISS cannot meet fails here, not after an append
    store = KGStore(kg)
    vmeta = vector_meta(store, encoder)
    slug, base = encoder_slug(vmeta["encoder"]), indexes_dir(vmeta["encoder"])
    budget = parse_memory(max_memory)
    cfg_hash = cache_key({"kind": kind, "max_memory": budget, "target_recall": target_recall, "params": params})
    prev_art = (store.artifact(base) or {}) if append else {}
    built: dict[str, VectorIndex] = {}
    decisions: dict[str, str] = {}
    counts: dict[str, int] = {}
    for vkind in kinds or INDEXED_KINDS:
        if not vmeta.get("kinds", {}).get(vkind, {}).get("count"):
            continue
        matrix, ids = load_vectors(store, slug, vkind)
        n, d = matrix.shape
        try:
            spec = index_registry.get(kind)(n, d, max_memory=budget, **params)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if spec.type in ("ivf", "ivfpq") and n < spec.params["nlist"]:
            spec = flat_spec(n, d)
        prev = prev_art.get("kinds", {}).get(vkind)
        old_ids = None
        if prev is not None and store.has_file(f"{base}/{vkind}.ids.npy"):
            old_ids = np.load(store.checked_path(f"{base}/{vkind}.ids.npy"), allow_pickle=False)
        do_append, why = append_plan(prev, (vmeta.get("incremental") or {}).get(vkind), old_ids, ids, spec.type,
                                     cfg_hash)
        vrel = f"{vectors_dir(slug)}/{vkind}.npy"
        t_kind = time.perf_counter()
        if do_append:
            vi = VectorIndex.read(store.path(f"{base}/{vkind}"), meta=copy.deepcopy(prev))
            new_rows = _as_float32(np.asarray(matrix[vi.ntotal:]))
            if len(new_rows):
                vi.index.add(new_rows)
            vi.ids = np.asarray(ids, np.int64)
            vi.meta["ntotal"] = int(vi.index.ntotal)
            recheck_after_append(vi, _as_float32(np.asarray(matrix)), target_recall)
            vi.meta["appended"] = {"rows": int(len(new_rows)), "seconds": round(time.perf_counter() - t_kind, 3)}
            counts[f"{vkind}_appended"] = int(len(new_rows))
        else:
            vi = build_index(matrix, kind=kind, ids=ids, max_memory=budget, target_recall=target_recall,
                             threads=threads, use_gpu=use_gpu, encoder=vmeta["encoder"], **params)
            vi.meta["trained_ntotal"] = int(n)
            counts[f"{vkind}_built"] = int(n)
        vi.meta.update({"vector_kind": vkind, "vectors": vrel, "config_hash": cfg_hash,
                        "vectors_sha256": store.file_sha(vrel),
                        "update": "append" if do_append else "rebuild", "update_reason": why})
        decisions[vkind] = ("append: " if do_append else "rebuild: ") + why
        log.info("index %s/%s: %s ntotal=%d recall@10=%s (%s)", slug, vkind, vi.meta["factory"], vi.ntotal,
                 vi.meta.get("self_check", {}).get("recall"), decisions[vkind])
        built[vkind] = vi
    if not built:
        raise KGStoreError(f"no vectors to index for encoder {encoder!r}; run the embed stage first")
    seconds = round(time.perf_counter() - t0, 3)
    with KGStore.writer(kg) as w:
        files = []
        for vkind, vi in built.items():
            files += [str(p.relative_to(w.root)) for p in vi.save(w.root / base / vkind)]
        meta = {"encoder": vmeta["encoder"], "kinds": {k: vi.meta for k, vi in built.items()}}
        w.set_artifact(base, meta, files=files)
        w.record_stage("index", config={"encoder": vmeta["encoder"], "kind": kind, "max_memory": budget,
                                        "target_recall": target_recall, **params},
                       counts={k: vi.ntotal for k, vi in built.items()}, outputs=files, decisions=decisions,
                       seconds=seconds)
        w.commit()
    return IndexResult(meta=meta, decisions=decisions, counts=counts, outputs=files, seconds=seconds)


def load_index(store: KGStore | str | Path, encoder: str, kind: str, *, mmap: bool = False) -> VectorIndex:
    """The committed index of one vector kind (entity | triple | image) for `encoder`."""
    store = store if isinstance(store, KGStore) else KGStore(store)
    base = indexes_dir(encoder)
    art = store.artifact(base)
    if art is None or kind not in art.get("kinds", {}):
        have = ", ".join(art["kinds"]) if art else "none"
        raise KGStoreError(f"{store.root} has no {kind} index for encoder {encoder!r} (indexed: {have}); "
                           f"run `mmkg index --kg {store.root} --encoder {encoder}`")
    meta = art["kinds"][kind]
    vrel = meta.get("vectors")
    current = store.file_sha(vrel)
    if vrel and current != meta.get("vectors_sha256"):
        raise KGStoreError(f"the {kind} index of {encoder!r} is stale (vectors changed since it was built); "
                           f"rerun `mmkg index --kg {store.root} --encoder {encoder}`")
    for suffix in (".faiss", ".ids.npy"):
        rel = f"{base}/{kind}{suffix}"
        path = store.checked_path(rel)
        # read whole anyway (unless mmap), so hashing costs about what reading does, and faiss
        # would load a flipped vector byte silently or die in C++ on a flipped header
        if not mmap and sha256_file(path) != store.file_sha(rel):
            raise CorruptFileError(path, "sha256 differs from the manifest (see `mmkg verify`)")
    try:
        return VectorIndex.read(store.path(f"{base}/{kind}"), mmap=mmap, meta=meta)
    except (RuntimeError, ValueError, OSError) as e:  # faiss raises RuntimeError for bad files
        raise CorruptFileError(store.path(f"{base}/{kind}.faiss"),
                               f"unreadable FAISS index ({str(e).splitlines()[0][:200]})") from None
