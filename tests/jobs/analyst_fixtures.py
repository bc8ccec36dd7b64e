"""Stores for the analyst tests (CLI, web, browser): MarKG ingested for real with its images.

Built once per test session and shared by the three test modules (an ingest takes ~10 s).
"""
from __future__ import annotations

from pathlib import Path

_BUILT: dict[str, Path] = {}


def markg_images_kg(data_dir: Path, tmp_path_factory) -> Path:
    """MarKG + the ImageNet-overlap and MARS entity images, through the real local ingest."""
    if "markg" not in _BUILT:
        from mmkg.pipeline.ingest import ingest
        root = tmp_path_factory.mktemp("analyst") / "kg"
        ingest(root, [f"markg:{data_dir / 'markg' / 'MarKG'}",
                      f"images:{data_dir / 'entity_images' / 'imagenet_markg_overlap' / 'mapping.tsv'}",
                      f"images:{data_dir / 'markg' / 'MARS' / 'images'}"], engine="local")
        _BUILT["markg"] = root
    return _BUILT["markg"]
