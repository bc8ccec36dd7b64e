"""The `Encoder` interface shared by the embed stage, retrieval (queries) and the model.

An encoder is split into a CPU-side `prepare_*` step (tokenise / decode + resize) and a
`forward_*` step (the network), so the embed stage can prepare batch i+1 in a loader thread
while batch i runs through the model; `encode_*` is the two in a row for callers that do not care.
`encode_texts` is the bulk path: identical texts once, one length-sorted order over all of them,
tokenisation of the next batch overlapping the current forward.

Runtimes (`runtime=`): `torch`, or `onnx` — the same network exported once to ONNX and run by
ONNX Runtime (`mmkg.pipeline.encoders.ort`), verified against torch on a fixed probe before first use.
`Encoder.precision` is the numerics *tag* that keys the vector cache and the embed scratch, so
vectors of two runtimes are never mixed: `float32` / `float16` / `bfloat16` for torch (autocast),
`onnx-float32` / `onnx-int8` for ONNX Runtime. `resolve_runtime` maps a request to a tag:

* precision `auto` + runtime `auto`: `onnx-float32` on the CPU (torch when onnxruntime is absent
  or the exported graph fails its probe), torch `float16` autocast on CUDA; open_clip models stay
  on torch here (their ONNX towers are opt-in: `runtime="onnx"`), see `clip.py`;
* an explicit torch precision (`float32`, `float16`, `bfloat16`) with runtime `auto` keeps its
  meaning (torch), so a tag handed to a Spark worker resolves to the same runtime;
* `int8` is ONNX only (dynamic quantisation, opt-in: its quality is printed when chosen);
* `onnx-float32` / `onnx-int8` are accepted as given.

`MMKG_ENCODER_RUNTIME=torch|onnx` replaces runtime `auto` (e.g. to force torch everywhere).
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.vectors import encoder_slug as slugify


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (a zero row stays zero instead of NaN)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


class Encoder(ABC):
    """A text (and optionally image) encoder producing L2-normalised float32 vectors.

    Shapes: `encode_text(list[str]) -> (n, dim)`, `encode_images(list[PIL.Image]) -> (n, dim)`.
    """

    #: registry name as resolved, e.g. "open_clip:ViT-B-32:openai", "minilm", "tiny-clip"
    name: str
    dim: int
    has_vision: bool = False
    #: the longest text in tokens the model sees; longer texts are truncated
    context_length: int = 77

    #: "torch" or "onnx" (see the module docstring)
    runtime: str

    def __init__(self, *, name: str, device: str = "cpu", precision: str = "auto", runtime: str = "torch"):
        self.name = name
        self.runtime = runtime
        if runtime == "onnx":
            # No torch import on this path (the fast CLI): the device is only a name here.
            self.device = DeviceName(device)
            if precision not in ONNX_TAGS:
                raise ConfigError(f"unsupported ONNX precision {precision!r}; use one of {', '.join(ONNX_TAGS)}")
            self.precision = precision
            return
        import torch
        self.device = torch.device(device)
        # "auto": float16 autocast on CUDA (the usual CLIP inference setting), exact float32 on CPU.
        if precision == "auto":
            precision = "float16" if self.device.type == "cuda" else "float32"
        if precision not in TORCH_PRECISIONS:
            raise ConfigError(f"unsupported encoder precision {precision!r}; use float32, float16 or bfloat16")
        self.precision = precision

    @property
    def slug(self) -> str:
        return slugify(self.name)

    def weights_digest(self) -> str:
        """sha256 of what computes the vectors (the weights, or the ONNX graph in use); "" when
        the encoder cannot say. Keys the vector cache (issue 32): vectors of other weights, of a
        graph that was replaced, or of another runtime are never served from it."""
        return ""

    def cache_identity(self) -> str:
        """The vector cache folder of this encoder: runtime, precision and weights digest."""
        from mmkg.kg_store.hashing import cache_key
        return f"{self.runtime}-{cache_key({'precision': self.precision, 'weights': self.weights_digest()})}"

    def describe(self) -> dict[str, Any]:
        """What the vector meta records about the encoder."""
        return {"name": self.name, "slug": self.slug, "dim": self.dim, "has_vision": self.has_vision,
                "context_length": self.context_length, "precision": self.precision, "runtime": self.runtime}

    # ---- text -------------------------------------------------------------------------------
    @abstractmethod
    def prepare_text(self, texts: Sequence[str]) -> Any:
        """Tokenise on the CPU (runs in the loader thread)."""

    @abstractmethod
    def forward_text(self, batch: Any) -> np.ndarray:
        """Run the text tower on a prepared batch; float32 (n, dim), L2-normalised."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.forward_text(self.prepare_text(list(texts)))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64,
                     on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Bulk encoding, rows in input order: each distinct text is encoded once, all distinct
        texts in one length-sorted order (batches pad to little more than their own length), and
        the next batch is tokenised in a background thread while the current one runs.
        `on_batch(n)` is called after each batch with the number of distinct texts it encoded."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        uniq, inverse = dedupe(texts)
        order = length_order(uniq)
        batches = [[uniq[i] for i in order[lo:lo + batch_size]] for lo in range(0, len(order), batch_size)]
        out = np.zeros((len(uniq), self.dim), np.float32)
        lo = 0
        for prepared in prefetch(self.prepare_text(b) for b in batches):
            vecs = self.forward_text(prepared)
            out[order[lo:lo + len(vecs)]] = vecs
            lo += len(vecs)
            if on_batch is not None:
                on_batch(len(vecs))
        return out[inverse]

    # ---- images -----------------------------------------------------------------------------
    def prepare_images(self, images: Sequence[Any]) -> Any:
        raise KGStoreError(f"encoder {self.name!r} has no vision tower; use an open_clip encoder for images")

    def forward_images(self, batch: Any) -> np.ndarray:
        raise KGStoreError(f"encoder {self.name!r} has no vision tower; use an open_clip encoder for images")

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.forward_images(self.prepare_images(list(images)))

    # ---- helpers for subclasses -------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        """Reduced precision through autocast (CUDA or CPU bfloat16); float32 runs as is."""
        import torch
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.precision))

    @staticmethod
    def _to_numpy(x: Any) -> np.ndarray:
        import torch
        x = torch.nn.functional.normalize(x.float(), dim=-1)
        return x.cpu().numpy().astype(np.float32, copy=False)


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def dedupe(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(distinct texts in first-seen order, index of each input row into them)."""
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), np.int64, len(texts))
    return list(first), inverse


def length_order(texts: Sequence[str]) -> np.ndarray:
    """Indices of `texts` by character length (stable, so deterministic): similar lengths batch together."""
    return np.argsort(np.fromiter((len(t) for t in texts), np.int64, len(texts)), kind="stable")


def prefetch(iterable: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Run `iterable` in a daemon thread, `depth` items ahead (tokenisers release the GIL, and
    torch / ONNX Runtime release it during the forward, so the two overlap)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    end, stop = object(), threading.Event()

    def work() -> None:
        try:
            for item in iterable:
                if stop.is_set():
                    return
                q.put(item)
            q.put(end)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)

    thread = threading.Thread(target=work, name="encode-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):  # unblock a producer waiting on a full queue
            while True:
                q.get_nowait()


# ---- runtimes ----------------------------------------------------------------------------------
RUNTIMES = ("auto", "torch", "onnx")
TORCH_PRECISIONS = ("float32", "float16", "bfloat16")
ONNX_TAGS = ("onnx-float32", "onnx-int8")
PRECISIONS = ("auto", *TORCH_PRECISIONS, "int8", *ONNX_TAGS)
RUNTIME_ENV = "MMKG_ENCODER_RUNTIME"


class DeviceName(str):
    """A device named without importing torch (ONNX runtime): `str(d)`, `d.type`, `d.index`."""

    @property
    def type(self) -> str:
        return self.partition(":")[0]

    @property
    def index(self) -> int | None:
        _, _, i = self.partition(":")
        return int(i) if i else None


def onnx_runtime_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_runtime(runtime: str, precision: str, device: str, cpu_default: str = "onnx") -> tuple[str, str]:
    """(runtime, precision tag) for a request; see the module docstring. `runtime` "auto" may
    still become torch later, when the ONNX graph cannot be exported or fails its probe.
    `cpu_default`: what runtime and precision "auto" pick on the CPU for this encoder."""
    runtime = (runtime or "auto").strip().lower()
    precision = (precision or "auto").strip().lower()
    if runtime == "auto":
        runtime = os.environ.get(RUNTIME_ENV, "").strip().lower() or "auto"
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown encoder runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unsupported encoder precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    cuda = str(device).startswith("cuda")
    if precision in ONNX_TAGS or precision == "int8":
        if runtime == "torch":
            raise KGStoreError(f"precision {precision} needs the onnx runtime (torch runs float32/float16/bfloat16)")
        tag = precision if precision in ONNX_TAGS else "onnx-int8"
        if not onnx_runtime_available():
            raise KGStoreError(f"precision {precision} needs the onnxruntime package (requirements.txt)")
        return "onnx", tag
    if runtime == "onnx":
        if precision not in ("auto", "float32"):
            raise KGStoreError(f"the onnx runtime runs float32 or int8, not {precision}")
        if not onnx_runtime_available():
            raise KGStoreError("runtime onnx needs the onnxruntime package (requirements.txt)")
        return "onnx", "onnx-float32"
    if runtime == "auto" and precision == "auto" and not cuda and cpu_default == "onnx" and onnx_runtime_available():
        return "onnx", "onnx-float32"
    return "torch", precision
