"""Trainable-parameter share of a preset, counted on the meta device (no weights, no memory).

The paper presets use CLIP ViT-L/14 (vision width 1024, 768-d vectors in the store) and MarKG's
192 relations; the frozen total includes the LLM and the CLIP vision tower.
"""
from __future__ import annotations

from typing import Any

import torch

from mmkg.model.backbones import FrozenLLM, backbone_registry, build_on_meta
from mmkg.model.base import resolve_model
from mmkg.model.text import ByteTokenizer
from mmkg.model.vision import FrozenVisionTower

#: CLIP ViT-L/14 (open_clip "ViT-L-14"): the image encoder of the paper
VIT_L_14 = {"layers": 24, "width": 1024, "head_width": 64, "patch_size": 14, "image_size": 224, "embed_dim": 768}


def meta_vision_tower(cfg: dict[str, Any] = VIT_L_14, name: str = "open_clip:ViT-L-14:openai") -> FrozenVisionTower:
    from open_clip.model import CLIPVisionCfg, _build_vision_tower
    vcfg = {k: v for k, v in cfg.items() if k != "embed_dim"}
    with torch.device("meta"):
        visual = _build_vision_tower(cfg["embed_dim"], CLIPVisionCfg(**vcfg))
    return FrozenVisionTower.from_module(visual, width=cfg["width"], encoder_name=name)


def count_preset(backbone: str, *, model: str = "mrmkg", node_dim: int = 768, num_relations: int = 192,
                 with_vision: bool = True, **model_kwargs: Any) -> dict[str, Any]:
    """Parameter counts of `model` around `backbone`, built entirely on the meta device."""
    spec = backbone_registry.get(backbone)
    llm = FrozenLLM(model=build_on_meta(spec), tokenizer=ByteTokenizer(), kind=spec.kind, name=spec.name)
    vision = meta_vision_tower() if with_vision else None
    with torch.device("meta"):
        net = resolve_model(model, backbone=llm, vision=vision, node_dim=node_dim, num_relations=num_relations,
                            **model_kwargs)
    counts = net.parameter_counts()
    counts["llm"] = sum(p.numel() for p in net.llm.parameters())
    counts["vision"] = sum(p.numel() for p in vision.parameters()) if vision is not None else 0
    return {"backbone": backbone, "model": model, **counts}
