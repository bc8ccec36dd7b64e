"""open_clip encoders: `open_clip:<model>[:<pretrained tag or weights file>]` and `tiny-clip`.

Images and text land in one space, so entity images, entity text, triples and queries can be
compared by cosine. Without a pretrained tag the model is randomly initialised (speed
benchmarks); weights are never downloaded here unless open_clip finds them in its cache.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from kg_store.errors import KGStoreError
from pipeline.encoders.base import Encoder, resolve_runtime

log = logging.getLogger(__name__)

#: tiny-clip: a ViT/transformer pair small enough for CPU tests (~3.6M parameters, mostly
#: the token embedding); same tokenizer and preprocessing as the real CLIP models.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_CLIP_SEED = 20240617


class OpenCLIPEncoder(Encoder):
    """Any open_clip model; `pretrained` is a tag known to open_clip or a weights file."""

    has_vision = True

    def __init__(self, *, name: str, model: str, pretrained: str | None = None,
                 device: str = "cpu", precision: str = "auto", model_cfg: dict[str, Any] | None = None,
                 seed: int | None = None, runtime: str = "auto"):
        requested = (runtime, precision)
        rt, tag = resolve_runtime(runtime, precision, device)
        if rt == "onnx":
            if requested != ("auto", "auto"):
                raise KGStoreError(f"{name}: the onnx runtime is not available for open_clip towers yet; "
                                   "use --runtime torch")
            precision = "auto"
        super().__init__(name=name, device=device, precision=precision)
        import open_clip
        import torch
        self.model_name, self.pretrained = model, pretrained
        if model_cfg is not None:
            # A config of our own (tiny-clip): build it directly, seeded so every process gets
            # the same random weights without touching the caller's RNG state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed or 0)
                self.model = open_clip.CLIP(**model_cfg)
            self.tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
            self.image_transform = open_clip.image_transform(model_cfg["vision_cfg"]["image_size"], is_train=False)
        else:
            if model not in open_clip.list_models():
                raise KGStoreError(f"unknown open_clip model {model!r}; e.g. ViT-B-32, ViT-L-14, ViT-S-32")
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed or 0)
                    self.model, _, self.image_transform = open_clip.create_model_and_transforms(
                        model, pretrained=pretrained, device="cpu")
            except RuntimeError as e:
                raise KGStoreError(f"cannot load open_clip {model} weights {pretrained!r} "
                                   f"(offline and not cached?): {str(e).splitlines()[0]}") from None
            self.tokenizer = open_clip.get_tokenizer(model)
        self.model.eval().requires_grad_(False).to(self.device)
        self.dim = int(self.model.text_projection.shape[1]) if getattr(self.model, "text_projection", None) \
            is not None else int(model_cfg["embed_dim"] if model_cfg else self.model.visual.output_dim)
        self.context_length = int(getattr(self.tokenizer, "context_length", 77))
        self.image_size = getattr(self.model.visual, "image_size", None)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model_name, "pretrained": self.pretrained}

    # text ------------------------------------------------------------------------------------
    def prepare_text(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(list(texts))

    def forward_text(self, batch: Any) -> np.ndarray:
        import torch
        with torch.inference_mode(), self._autocast():
            return self._to_numpy(self.model.encode_text(batch.to(self.device)))

    # images ----------------------------------------------------------------------------------
    def prepare_images(self, images: Sequence[Any]) -> Any:
        import torch
        return torch.stack([self.image_transform(im.convert("RGB")) for im in images])

    def forward_images(self, batch: Any) -> np.ndarray:
        import torch
        with torch.inference_mode(), self._autocast():
            return self._to_numpy(self.model.encode_image(batch.to(self.device)))
