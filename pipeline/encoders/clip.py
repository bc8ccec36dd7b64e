"""open_clip encoders: `open_clip:<model>[:<pretrained tag or weights file>]` and `tiny-clip`.

Images and text land in one space, so entity images, entity text, triples and queries can be
compared by cosine. Without a pretrained tag the model is randomly initialised (speed
benchmarks); weights are never downloaded here unless open_clip finds them in its cache.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.pipeline.encoders.base import Encoder, l2_normalize, resolve_runtime

log = logging.getLogger(__name__)

#: tiny-clip: a ViT/transformer pair small enough for CPU tests (~3.6M parameters, mostly
#: the token embedding); same tokenizer and preprocessing as the real CLIP models.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_CLIP_SEED = 20240617


#: the runtime "auto" picks on the CPU. torch for now: the ONNX towers match torch (probe cosine
#: 1.0) and the text tower runs ~1.5x faster, but images gain little on 2 cores and a cold start
#: hashes the weights and builds two sessions; `runtime="onnx"` (`--runtime onnx`) opts in.
CPU_DEFAULT_RUNTIME = "torch"


class OpenCLIPEncoder(Encoder):
    """Any open_clip model; `pretrained` is a tag known to open_clip or a weights file.

    On the `onnx` runtime both towers (text: token ids → vector; image: pixels → vector) are
    exported once per weights digest and verified against torch on a fixed probe (the text probe,
    and deterministic synthetic pixels); tokenising and image preprocessing stay open_clip's. The
    torch model is released once the graphs are verified and reloaded only if `.model` is used
    (e.g. by `mmkg.model.vision.FrozenVisionTower`).
    """

    has_vision = True

    def __init__(self, *, name: str, model: str, pretrained: str | None = None,
                 device: str = "cpu", precision: str = "auto", model_cfg: dict[str, Any] | None = None,
                 seed: int | None = None, runtime: str = "auto", cache_dir: str | None = None):
        rt, tag = resolve_runtime(runtime, precision, device, cpu_default=CPU_DEFAULT_RUNTIME)
        super().__init__(name=name, device=device, precision=tag if rt == "onnx" else precision,
                         runtime="torch" if rt == "torch" else "onnx")
        self.model_name, self.pretrained, self.model_cfg, self.seed = model, pretrained, model_cfg, seed
        self._model: Any = None
        self._text_onnx: Any = None
        self._image_onnx: Any = None
        #: one line for the user about the runtime (int8 quality, a fallback to torch), or None
        self.runtime_note: str | None = None
        if model_cfg is None:
            import open_clip
            if model not in open_clip.list_models():
                raise ConfigError(f"unknown open_clip model {model!r}; e.g. ViT-B-32, ViT-L-14, ViT-S-32")
        torch_model = self._load(device="cpu" if rt == "onnx" else str(self.device))
        self.dim = int(torch_model.text_projection.shape[1]) if getattr(torch_model, "text_projection", None) \
            is not None else int(model_cfg["embed_dim"] if model_cfg else torch_model.visual.output_dim)
        self.context_length = int(getattr(self.tokenizer, "context_length", 77))
        self.image_size = getattr(torch_model.visual, "image_size", None)
        if rt == "onnx":
            from mmkg.pipeline.encoders.ort import OnnxUnavailable
            try:
                self._init_onnx(torch_model, tag, cache_dir)
                return  # the torch weights are not kept: `.model` reloads them on demand
            except OnnxUnavailable as e:
                self.runtime_note = f"{name}: ONNX runtime not used ({e}); running torch instead"
                log.warning(self.runtime_note)
                self._text_onnx = self._image_onnx = None  # both towers on one runtime, or neither
                Encoder.__init__(self, name=name, device=device, precision="auto", runtime="torch")
        self._model = torch_model.to(self.device)

    def _load(self, device: str) -> Any:
        """The torch CLIP model (eval, frozen) on `device`; sets the tokenizer and image transform."""
        import open_clip
        import torch
        model, model_cfg, seed = self.model_name, self.model_cfg, self.seed
        if model_cfg is not None:
            # A config of our own (tiny-clip): build it directly, seeded so every process gets
            # the same random weights without touching the caller's RNG state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed or 0)
                net = open_clip.CLIP(**model_cfg)
            self.tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
            self.image_transform = open_clip.image_transform(model_cfg["vision_cfg"]["image_size"], is_train=False)
        else:
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed or 0)
                    net, _, self.image_transform = open_clip.create_model_and_transforms(
                        model, pretrained=self.pretrained, device="cpu")
            except RuntimeError as e:
                raise KGStoreError(f"cannot load open_clip {model} weights {self.pretrained!r} "
                                   f"(offline and not cached?): {str(e).splitlines()[0]}") from None
            self.tokenizer = open_clip.get_tokenizer(model)
        return net.eval().requires_grad_(False).to(device)

    @property
    def model(self) -> Any:
        """The torch CLIP model (reloaded on first use when the towers run on ONNX Runtime)."""
        if self._model is None:
            import torch
            self._model = self._load(str(torch.device(str(self.device))))
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model = value

    def weights_digest(self) -> str:
        if self._text_onnx is not None:
            return f"{self._text_onnx.graph_sha256}+{self._image_onnx.graph_sha256}"
        from mmkg.pipeline.encoders.ort import state_dict_digest
        return state_dict_digest(self.model, extra={"model": self.model_name, "cfg": self.model_cfg,
                                                    "pretrained": self.pretrained, "seed": self.seed})

    # ONNX ------------------------------------------------------------------------------------
    def _init_onnx(self, net: Any, tag: str, cache_dir: str | None) -> None:
        from mmkg.pipeline.encoders.ort import OnnxTower, TowerSpec, quality_line, state_dict_digest
        digest = state_dict_digest(net, extra={"model": self.model_name, "cfg": self.model_cfg,
                                               "tokenizer": type(self.tokenizer).__name__,
                                               "context_length": self.context_length})
        label = f"clip-{self.slug}"
        info = {"model": self.model_name, "pretrained": self.pretrained}
        text_probe, image_probe = self._text_probe(), self._image_probe()
        norm = lambda outputs: l2_normalize(outputs[0])  # noqa: E731
        text = TowerSpec(label=f"{label}-text", digest=digest, probe=lambda: {"text": text_probe},
                         reference=lambda: self._torch_forward(net.encode_text, text_probe),
                         export=lambda path, sample: _export_tower(net.encode_text, "text", sample["text"], path),
                         postprocess=norm, info={**info, "tower": "text"})
        image = TowerSpec(label=f"{label}-image", digest=digest, probe=lambda: {"image": image_probe},
                          reference=lambda: self._torch_forward(net.encode_image, image_probe),
                          export=lambda path, sample: _export_tower(net.encode_image, "image", sample["image"], path),
                          postprocess=norm, info={**info, "tower": "image"})
        self._text_onnx = OnnxTower(text, tag=tag, device=str(self.device), cache_dir=cache_dir)
        self._image_onnx = OnnxTower(image, tag=tag, device=str(self.device), cache_dir=cache_dir)
        if tag != "onnx-float32":
            self.runtime_note = "; ".join(quality_line(f"{self.name} {t}", tag, tower.quality) for t, tower in
                                          (("text", self._text_onnx), ("image", self._image_onnx)))
            log.warning(self.runtime_note + " (opt-in; onnx-float32 matches torch)")

    def _text_probe(self) -> np.ndarray:
        from mmkg.pipeline.encoders.ort import PROBE_TEXTS
        return self.tokenizer(PROBE_TEXTS).numpy().astype(np.int64)

    def _image_probe(self) -> np.ndarray:
        """16 deterministic normalised images: smooth gradients and noise, at the tower's size."""
        size = self.image_size if isinstance(self.image_size, (tuple, list)) else (self.image_size,) * 2
        rng = np.random.default_rng(20240617)
        yy, xx = np.meshgrid(np.linspace(-1, 1, size[0]), np.linspace(-1, 1, size[1]), indexing="ij")
        smooth = [np.stack([np.sin(3 * k * xx + c) * np.cos(2 * k * yy - c) for c in (0.0, 1.0, 2.0)]) * 1.5
                  for k in range(1, 9)]
        noise = [rng.normal(0, 1, (3, *size)) for _ in range(8)]
        return np.stack(smooth + noise).astype(np.float32)

    @staticmethod
    def _torch_forward(fn: Any, x: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            return l2_normalize(fn(torch.from_numpy(x)).float().numpy())

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "model": self.model_name, "pretrained": self.pretrained}
        if self._text_onnx is not None:
            out["onnx"] = {"text": self._text_onnx.describe(), "image": self._image_onnx.describe()}
        return out

    # text ------------------------------------------------------------------------------------
    def prepare_text(self, texts: Sequence[str]) -> Any:
        tokens = self.tokenizer(list(texts))
        return tokens.numpy().astype(np.int64) if self._text_onnx is not None else tokens

    def forward_text(self, batch: Any) -> np.ndarray:
        if self._text_onnx is not None:
            return self._text_onnx.run({"text": batch})
        import torch
        with torch.inference_mode(), self._autocast():
            return self._to_numpy(self.model.encode_text(batch.to(self.device)))

    # images ----------------------------------------------------------------------------------
    def prepare_images(self, images: Sequence[Any]) -> Any:
        import torch
        pixels = torch.stack([self.image_transform(im.convert("RGB")) for im in images])
        return pixels.numpy() if self._image_onnx is not None else pixels

    def forward_images(self, batch: Any) -> np.ndarray:
        if self._image_onnx is not None:
            return self._image_onnx.run({"image": batch})
        import torch
        with torch.inference_mode(), self._autocast():
            return self._to_numpy(self.model.encode_image(batch.to(self.device)))


def _export_tower(fn: Any, name: str, sample: np.ndarray, path: Any) -> None:
    """Trace one tower (a bound `encode_text` / `encode_image`) with a dynamic batch axis."""
    import warnings

    import torch

    from mmkg.pipeline.encoders.ort import OPSET

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = fn.__self__  # registers the CLIP module's parameters

        def forward(self, x: Any) -> Any:
            return fn(x)

    # nn.MultiheadAttention's inference fast path is one fused op ONNX has no export for.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Tower().eval(), (torch.from_numpy(sample),), str(path), input_names=[name],
                              output_names=["vector"], dynamic_axes={name: {0: "batch"}, "vector": {0: "batch"}},
                              opset_version=OPSET, do_constant_folding=True, dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
