"""ONNX Runtime for the encoders: export a tower once per model, verify it against torch, run it.

A tower (MiniLM's sentence encoder, a CLIP text or image tower) is exported once per model to a
cache directory keyed by the digest of the model's files (or weights) and of the export recipe:

    <root>/<label>-<digest[:16]>/
        model.onnx              float32 graph, dynamic batch (and sequence) axes; written atomically
        probe.npy               the torch float32 output on the fixed probe (the reference)
        export.json             digest, sources, torch/onnx versions, opset, input names
        model.int8-ort<v>.onnx  dynamic int8 weights (`quantize_dynamic`), built on first request
        verify.json             per (precision tag, provider, onnxruntime version): probe cosines

`root` is the `cache_dir` the caller gives (e.g. a store's work dir), else `$MMKG_ONNX_CACHE`, else
`~/.cache/mmkg/onnx`. A changed model file changes the digest, so a stale graph is never used. The
digest of large files is memoised by (path, size, mtime) in `<root>/digests.json`.

Before first use a graph runs the probe and is compared with the torch reference: float32 must
reach cosine ≥ `PROBE_MIN_COSINE` on every probe row, else the caller falls back to torch (and
says so); int8 is opt-in and reports its quality (mean / min cosine, top-10 neighbour overlap).
The verdict is recorded, so later processes (the fast CLI) need neither torch nor the probe.

The cache is trusted only as far as it is verified (issue 32): its folders are created 0700 and a
symlinked or foreign folder or file is refused; `export.json` records the sha256 of `model.onnx`
and `probe.npy` (the int8 graph's goes next to it), every use re-hashes them, and a graph that
differs (planted, truncated, half-copied) is discarded and exported again, or the caller falls
back to torch. The probe verdict is keyed by the graph's sha256, so a new graph is probed anew.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mmkg.kg_store import atomic
from mmkg.kg_store.hashing import Fingerprint, sha256_file
from mmkg.kg_store.safe_io import UnsafeFileError, check_cached_file, private_dir

log = logging.getLogger(__name__)

CACHE_ENV = "MMKG_ONNX_CACHE"
#: bump when the export recipe changes: it enters every cache key
EXPORT_VERSION = 1
OPSET = 17
PROBE_MIN_COSINE = 0.9999
TOP_K = 10


#: the fixed text probe: labels, described labels, triple texts, one text past every context
#: length (truncation), an empty string and non-ASCII text — 48 rows of very different lengths
_SUBJECTS = ["zebra", "Albert Einstein", "Paris", "the Nile", "a red bicycle", "photosynthesis", "jazz",
             "Mount Fuji"]
_RELATIONS = ["instance of", "located in", "part of", "has color"]
_OBJECTS = ["mammal", "physicist", "France", "river", "vehicle", "biological process", "music genre", "volcano"]
PROBE_TEXTS: list[str] = (
    ["", "zebra", "stock market crash", "Albert Einstein: German-born theoretical physicist",
     "a striped African horse grazing on the savanna at dusk", "Zürich — ville suisse, 東京, Москва",
     "the quick brown fox jumps over the lazy dog", "DNA", "capital of",
     "Mount Fuji: active stratovolcano on Honshu, the highest peak in Japan",
     " ".join(["a very long description that keeps going"] * 60),
     "spoon: utensil consisting of a small shallow bowl on a handle, used for eating and serving"]
    + [f"{s}, {r}, {o}" for s, o in zip(_SUBJECTS, _OBJECTS) for r in _RELATIONS][:32]
    + ["cat", "dog", "car", "airplane"]
)


class OnnxUnavailable(Exception):
    """The ONNX path cannot be used for this model (export failed, probe mismatch); carries why."""


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "mmkg" / "onnx"


def configured_threads() -> int:
    """The intra-op threads to run with: torch's setting when torch is loaded (the embed stage
    sets it from --threads), else all cores up to 16."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return int(torch.get_num_threads())
    return min(os.cpu_count() or 1, 16)


# ---- digests -----------------------------------------------------------------------------------
def files_digest(files: Sequence[Path], base: Path, memo_dir: Path) -> str:
    """sha256 over (name relative to `base`, content sha256) of every file, memoised by stat."""
    memo_path = memo_dir / "digests.json"
    try:
        check_cached_file(memo_path, "ONNX digest memo")  # a planted link or foreign file is refused
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    h = Fingerprint(f"mmkg-onnx-export-v{EXPORT_VERSION}")
    changed = False
    for f in sorted(Path(p) for p in files):
        st = f.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        entry = memo.get(str(f.resolve()))
        if not entry or entry.get("stat") != stamp:
            entry = {"stat": stamp, "sha256": sha256_file(f)}
            memo[str(f.resolve())] = entry
            changed = True
        h.file_entry(f.relative_to(base).as_posix(), entry["sha256"])
    if changed:
        try:
            atomic.write_json(memo_path, memo)
        except OSError as e:  # a read-only cache only costs re-hashing
            log.debug("cannot write %s: %s", memo_path, e)
    return h.hexdigest()


def state_dict_digest(module: Any, extra: dict[str, Any]) -> str:
    """sha256 over a torch module's weights (names, dtypes, shapes, bytes) and `extra` (the model's
    name and config): for models built in memory (open_clip tags, seeded random weights)."""
    import torch
    h = Fingerprint(f"mmkg-onnx-export-v{EXPORT_VERSION}").json(extra)
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.bytes(f"\n{name}|{t.dtype}|{t.numel()}\n".encode()).bytes(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_files(model_dir: Path) -> list[Path]:
    """Every regular file of a model directory (weights, config, tokenizer), hidden files and
    READMEs excepted."""
    return sorted(p for p in Path(model_dir).rglob("*")
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".md")


# ---- quality -----------------------------------------------------------------------------------
def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> float:
    """Mean overlap of each row's k nearest other rows (cosine) under `a` and under `b`."""
    a, b = _normalize(a), _normalize(b)
    n = len(a)
    k = min(k, n - 1)
    if k < 1:
        return 1.0
    sa, sb = a @ a.T, b @ b.T
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    ta, tb = np.argsort(-sa, axis=1)[:, :k], np.argsort(-sb, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta.tolist(), tb.tolist())]))


def probe_quality(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Row cosines of `got` against `reference` (mean, min) and the top-10 neighbour overlap."""
    cos = np.sum(_normalize(reference) * _normalize(got), axis=1)
    return {"mean_cosine": round(float(cos.mean()), 6), "min_cosine": round(float(cos.min()), 6),
            "top10_overlap": round(top_k_overlap(reference, got), 4), "rows": int(len(cos))}


def quality_line(label: str, tag: str, q: dict[str, Any]) -> str:
    return (f"{label} {tag}: probe vs torch float32 ({q['rows']} texts/images): mean cosine {q['mean_cosine']:.4f}, "
            f"min {q['min_cosine']:.4f}, top-{TOP_K} overlap {q['top10_overlap']:.2f}")


# ---- sessions ----------------------------------------------------------------------------------
def providers_for(device: str) -> list[Any]:
    import onnxruntime as ort
    dev = str(device)
    if dev.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(dev.partition(":")[2] or 0)
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        log.warning("onnxruntime here has no CUDA provider (onnxruntime-gpu); the ONNX graph runs on the CPU")
    return ["CPUExecutionProvider"]


#: ONNX Runtime session config entries, chosen for a shared machine (benchmarks/embed.py
#: `session_options`, quiet and beside a busy process): threads that spin-wait for work burn the
#: cores another process needs, and a stage beside other work ran slower than a plain torch loop.
#: `MMKG_ORT_SESSION_CONFIG="key=value,..."` overrides entries (e.g. `session.intra_op.allow_spinning=1`).
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def session_config(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The session config entries in force: the defaults, the environment's, then `overrides`."""
    out = dict(SESSION_CONFIG)
    for item in filter(None, (x.strip() for x in os.environ.get("MMKG_ORT_SESSION_CONFIG", "").split(","))):
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return {**out, **(overrides or {})}


def make_session(path: Path, device: str, threads: int, *, config: dict[str, str] | None = None,
                 inter_threads: int = 1) -> Any:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = max(1, int(inter_threads))
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if inter_threads <= 1 else ort.ExecutionMode.ORT_PARALLEL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    for key, value in session_config(config).items():
        so.add_session_config_entry(key, str(value))
    return ort.InferenceSession(str(path), sess_options=so, providers=providers_for(device))


# ---- one tower ---------------------------------------------------------------------------------
@dataclass
class TowerSpec:
    """What `OnnxTower` needs to know about one network.

    export(path, sample): write the float32 graph to `path`, traced on `sample` (probe feeds, a
        padded batch for text); must import torch only inside.
    reference(): the torch float32 output on the probe, (n, dim), before normalisation or after,
        as `postprocess` gives for the ONNX output.
    probe(): the probe feeds (name -> np.ndarray), the same inputs `reference` encodes.
    postprocess(outputs): ONNX outputs -> (n, dim) float32 (e.g. L2 normalisation).
    """

    label: str
    digest: str
    export: Callable[[Path, dict[str, np.ndarray]], None]
    reference: Callable[[], np.ndarray]
    probe: Callable[[], dict[str, np.ndarray]]
    postprocess: Callable[[list[np.ndarray]], np.ndarray]
    info: dict[str, Any]


class OnnxTower:
    """A verified ONNX graph of one tower, run with ONNX Runtime at the configured threads."""

    def __init__(self, spec: TowerSpec, *, tag: str, device: str = "cpu", cache_dir: str | Path | None = None,
                 threads: int | None = None):
        import onnxruntime as ort
        self.spec, self.tag, self.device = spec, tag, str(device)
        self.root = cache_root(cache_dir)
        self.dir = self.root / f"{spec.label}-{spec.digest[:16]}"
        self._fixed_threads = threads
        self.exported_now = False
        try:
            private_dir(self.dir, root=self.root, what="ONNX cache folder")
            self._ensure_export()
            self.path = self._graph_path()
        except UnsafeFileError:  # a planted symlink or a foreign folder: refused, never used
            raise
        except OSError as e:  # an unwritable or full cache: the caller runs torch instead
            raise OnnxUnavailable(f"cannot write the ONNX cache {self.dir}: {e.strerror or e}") from e
        provider = providers_for(self.device)[0]
        self.provider = provider[0] if isinstance(provider, tuple) else provider
        #: the sha256 of the graph in use (checked against the one recorded at export)
        self.graph_sha256 = self._graph_digest
        self.verify_key = f"{tag}|{self.provider}|ort{ort.__version__}|{self.graph_sha256[:16]}"
        self._threads = self._want_threads()
        try:
            self.session = make_session(self.path, self.device, self._threads)
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error types: a graph it cannot load means torch
            raise OnnxUnavailable(f"ONNX Runtime cannot load {self.path}: {str(e).splitlines()[0][:200]}") from e
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.quality = self._verify()
        # Verified: drop the export/reference callables (they may hold the torch model).
        self.spec = dataclasses.replace(spec, export=None, reference=None, probe=None)

    # -- export ----------------------------------------------------------------------------------
    def _recorded_ok(self) -> bool:
        """Whether the export on disk is the one `export.json` recorded (re-hashed now)."""
        info = self.dir / "export.json"
        if check_cached_file(info, "ONNX cache file") is None:
            return False
        try:
            recorded = json.loads(info.read_text()).get("files")
        except (OSError, ValueError):
            return False
        if not isinstance(recorded, dict) or set(recorded) != {"model.onnx", "probe.npy"}:
            return False  # an export from before digests were recorded: made again, once
        for name, sha in recorded.items():
            if check_cached_file(self.dir / name, "ONNX cache file") is None or sha256_file(self.dir / name) != sha:
                log.warning("ONNX cache %s: %s differs from the sha256 recorded at export; exporting again",
                            self.dir, name)
                return False
        self._graph_digest = recorded["model.onnx"]
        return True

    def _ensure_export(self) -> None:
        graph, probe, info = self.dir / "model.onnx", self.dir / "probe.npy", self.dir / "export.json"
        if self._recorded_ok():
            return
        for stale in self.dir.iterdir():  # nothing of an unverified export is kept (int8, verdicts)
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
            elif stale.is_symlink():
                raise UnsafeFileError(stale, "symlink-escapes-root", f"ONNX cache entry {stale} is a symbolic link")
        t0 = time.perf_counter()
        log.info("exporting %s to ONNX in %s (once per model)", self.spec.label, self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            reference = np.asarray(self.spec.reference(), np.float32)
            with atomic.atomic_path(graph) as tmp:
                self.spec.export(tmp, self.spec.probe())
        except (OnnxUnavailable, OSError):
            raise
        except Exception as e:  # noqa: BLE001 — any exporter failure means: use torch
            raise OnnxUnavailable(f"export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") \
                from e
        atomic.write_npy(probe, reference)
        import torch
        self._graph_digest = sha256_file(graph)
        meta = {"label": self.spec.label, "digest": self.spec.digest, "export_version": EXPORT_VERSION,
                "opset": OPSET, "torch": torch.__version__, "seconds": round(time.perf_counter() - t0, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **self.spec.info,
                "files": {"model.onnx": self._graph_digest, "probe.npy": sha256_file(probe)}}
        atomic.write_json(info, meta)  # last: the export counts once this exists
        self.exported_now = True

    def _graph_path(self) -> Path:
        fp32 = self.dir / "model.onnx"
        if self.tag == "onnx-float32":
            return fp32
        if self.tag != "onnx-int8":
            raise ValueError(f"unknown ONNX precision tag {self.tag!r}")
        import onnxruntime as ort
        int8 = self.dir / f"model.int8-ort{ort.__version__}.onnx"
        recorded = self.dir / f"{int8.name}.sha256"
        if (check_cached_file(int8, "ONNX cache file") is None or check_cached_file(recorded, "ONNX cache file") is None
                or recorded.read_text().strip() != sha256_file(int8)):
            from onnxruntime.quantization import QuantType, quantize_dynamic
            log.info("quantising %s to int8 (dynamic, once)", self.spec.label)
            with atomic.atomic_path(int8) as tmp:
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
            atomic.write_bytes(recorded, sha256_file(int8).encode())
        self._graph_digest = recorded.read_text().strip()
        return int8

    # -- verification ----------------------------------------------------------------------------
    def _verify(self) -> dict[str, Any]:
        path = self.dir / "verify.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        q = record.get(self.verify_key)
        if q is None:
            reference = np.load(self.dir / "probe.npy", allow_pickle=False)
            q = probe_quality(reference, self.run(self.spec.probe()))
            q["ok"] = q["min_cosine"] >= PROBE_MIN_COSINE
            record[self.verify_key] = q
            try:
                atomic.write_json(path, record)
            except OSError as e:
                log.debug("cannot record the probe verdict in %s: %s", path, e)
        if self.tag == "onnx-float32" and not q["ok"]:
            raise OnnxUnavailable(f"the ONNX graph does not match torch on the probe "
                                  f"(min cosine {q['min_cosine']:.6f} < {PROBE_MIN_COSINE})")
        return q

    # -- running ---------------------------------------------------------------------------------
    def _want_threads(self) -> int:
        return self._fixed_threads or configured_threads()

    def set_session_options(self, *, threads: int | None = None, inter_threads: int = 1,
                            config: dict[str, str] | None = None) -> None:
        """Rebuild the session with other threads / config entries (benchmarks/embed.py compares them)."""
        self._fixed_threads = threads
        self._threads = self._want_threads()
        self.session = make_session(self.path, self.device, self._threads, config=config, inter_threads=inter_threads)
        self.session_options = {"threads": self._threads, "inter_threads": inter_threads,
                                "config": session_config(config)}

    def set_threads(self, threads: int | None) -> None:
        self._fixed_threads = threads

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        want = self._want_threads()
        if want != self._threads:  # the caller changed --threads since the session was made
            self._threads = want
            self.session = make_session(self.path, self.device, want)
        outputs = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})
        return self.spec.postprocess(outputs)

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort
        out = {"graph": str(self.path), "digest": self.spec.digest[:16], "threads": self._threads,
               "provider": self.provider, "onnxruntime": ort.__version__, "graph_sha256": self.graph_sha256[:16],
               "probe": {k: self.quality[k] for k in ("mean_cosine", "min_cosine", "top10_overlap", "rows")},
               "session_config": session_config()}
        return out
