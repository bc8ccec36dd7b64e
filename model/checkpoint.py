"""Checkpoints: trainable weights (+ optimizer state) as safetensors, config and progress as JSON.

Only the trainable parts are saved (adapters, KG encoder: a few MB even for the 7B presets); the
frozen backbone is re-loaded by name. No pickle anywhere: optimizer tensors go to safetensors
under flattened names, its scalars and param groups to JSON. A checkpoint directory is written
under a temporary name and renamed into place, then `latest.json` is replaced, so a run killed
mid-save resumes from the previous complete checkpoint.

Layout: `<dir>/{model.safetensors, config.json, optimizer.safetensors?, state.json?}`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmkg.kg_store import atomic
from mmkg.kg_store.errors import KGStoreError

MODEL_FILE, CONFIG_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "config.json", "optimizer.safetensors", "state.json"
LATEST = "latest.json"


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def save_checkpoint(directory: str | Path, *, model, model_name: str, optimizer: torch.optim.Optimizer | None = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write one checkpoint directory atomically; returns its path."""
    directory = Path(directory)
    with atomic.atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        save_file(_contiguous(model.trainable_state_dict()), str(tmp / MODEL_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps({"model": model_name, "model_kwargs": model.config},
                                                  indent=2, sort_keys=True, default=str))
        if optimizer is not None:
            tensors, meta = _flatten_optimizer(optimizer.state_dict())
            save_file(_contiguous(tensors), str(tmp / OPTIMIZER_FILE))
            (tmp / STATE_FILE).write_text(json.dumps({"optimizer": meta, **(state or {})}, indent=2, default=str))
    return directory


def mark_latest(root: str | Path, checkpoint: str | Path) -> None:
    atomic.write_json(Path(root) / LATEST, {"checkpoint": Path(checkpoint).name})


def latest_checkpoint(root: str | Path) -> Path | None:
    p = Path(root) / LATEST
    if not p.exists():
        return None
    ckpt = Path(root) / json.loads(p.read_text())["checkpoint"]
    return ckpt if (ckpt / MODEL_FILE).exists() else None


def read_config(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / CONFIG_FILE
    if not p.exists():
        raise KGStoreError(f"{directory} is not a checkpoint (no {CONFIG_FILE})")
    return json.loads(p.read_text())


def load_weights(directory: str | Path, model) -> None:
    """Load trainable weights into an already built model of the same config."""
    model.load_trainable_state_dict(load_file(str(Path(directory) / MODEL_FILE)))


def load_model(directory: str | Path, **overrides: Any):
    """Rebuild the model from a checkpoint's config (frozen parts loaded by name) + its weights."""
    from mmkg.model.base import model_registry, resolve_model
    cfg = read_config(directory)
    # options added after a checkpoint was written take the values that checkpoint was built with
    legacy = getattr(model_registry.get(cfg["model"]), "LEGACY_KWARGS", {})
    kwargs = {**{k: v for k, v in legacy.items() if k not in cfg["model_kwargs"]}, **cfg["model_kwargs"]}
    model = resolve_model(cfg["model"], **{**kwargs, **overrides})
    load_weights(directory, model)
    return model


def read_progress(directory: str | Path) -> dict[str, Any]:
    """The progress a training checkpoint saved (stage, epoch, batch, global_step, …)."""
    state = json.loads((Path(directory) / STATE_FILE).read_text())
    state.pop("optimizer", None)
    return state


def load_training_state(directory: str | Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer in place; returns the saved progress (stage, step, epoch, …)."""
    state = json.loads((Path(directory) / STATE_FILE).read_text())
    tensors = load_file(str(Path(directory) / OPTIMIZER_FILE))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state.pop("optimizer")))
    return state


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for k, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in [*tensors.items(), *meta["scalars"].items()]:
        idx, _, name = key.partition(".")
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}
