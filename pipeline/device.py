"""Which device a job runs on: the one place a device request becomes a `torch.device`.

Requests (`--device` of `mmkg embed|search|retrieve|index`, `device:` of stage blocks and of
train/evaluate configs, the encoders' `device=`):

* `auto` — CUDA when torch sees a GPU, else the CPU; the choice is logged ("device auto → cuda
  (NVIDIA H200)") and recorded by the caller (vector meta `device`, train summary `device`);
* `cpu` — the CPU;
* `cuda` / `cuda:N` — that GPU, or a `DeviceError` (one line, CLI exit 1) when this machine has
  no CUDA device or fewer than N+1 of them: never a silent run on the CPU instead.

Anything else is a `ConfigError` (exit 2). FAISS has its own GPU count (faiss-gpu vs faiss-cpu):
`mmkg.retrieval.index.resolve_index_gpu` applies the same rules to `use_gpu` with `unavailable_reason`'s
wording. torch is imported lazily (this module is imported by the CLI before any heavy work).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from mmkg.kg_store.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DEVICE_HELP = "auto (CUDA when present, else CPU) | cpu | cuda[:N]; cuda on a machine without CUDA is an error"


def cuda_unavailable_reason() -> str | None:
    """Why torch cannot use CUDA here (one clause), or None when it can."""
    import torch
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return "this torch build has no CUDA support"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "CUDA_VISIBLE_DEVICES is empty, which hides every GPU"
    return "no CUDA device or driver was found"


def unavailable_message(request: Any, reason: str, fallback: str = "--device cpu or auto") -> str:
    """The one line every unmet GPU request reports (torch and FAISS alike)."""
    return f"device {request!s} was requested but {reason}; use {fallback}"


def describe_device(device: Any) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H200)'."""
    import torch
    dev = torch.device(device)
    if dev.type != "cuda":
        return str(dev)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def resolve_device(device: Any = "auto") -> "torch.device":  # noqa: F821 (torch is imported lazily)
    """A device request (str, `torch.device` or None = auto) → the `torch.device` to run on.

    Raises DeviceError when CUDA is requested and absent (or the index is out of range), and
    ConfigError for a request that names no supported device.
    """
    import torch
    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        reason = cuda_unavailable_reason()
        dev = torch.device("cpu") if reason else torch.device("cuda")
        log.info("device auto → %s", f"cpu ({reason})" if reason else describe_device(dev))
        return dev
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use {DEVICE_CHOICES}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ConfigError(f"device {device!r} is not supported; use {DEVICE_CHOICES}")
    reason = cuda_unavailable_reason()
    if reason:
        raise DeviceError(unavailable_message(repr(text), reason))
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DeviceError(unavailable_message(repr(text), f"this machine has {count} CUDA device(s)",
                                              fallback="cuda:0 … cuda:" + str(count - 1)))
    return dev
