"""The `--source` list that ingests everything in ../shared/data (used by `make demo` and benchmarks)."""
from __future__ import annotations

from pathlib import Path

#: (format, path relative to the data dir); optional ones are skipped when absent
DEMO_SOURCES = [
    ("markg", "markg/MarKG"),
    ("mmkg", "mmkg/DB15K/DB15K_EntityTriples.reconstructed.txt"),
    ("image-index", "mmkg/DB15K/DB15K_ImageIndex.txt"),
    ("sameas", "mmkg/DB15K/DB15K_SameAsLink.txt"),
    ("fbmap", "mmkg/FB15K/fb15k_mid-wdurl-wpurl_14951.txt"),
    ("literals", "mmkg/YAGO15K/YAGO15K_NumericalTriples.v984182b.txt"),
    ("sameas", "mmkg/YAGO15K/YAGO15K_SameAsLink.txt"),
    ("image-index", "mmkg/YAGO15K/YAGO15K_ImageIndex.txt"),
    ("images", "markg/MARS/images"),
    ("images", "entity_images/imagenet_markg_overlap/mapping.tsv"),
]


def demo_sources(data_dir: str | Path) -> list[str]:
    """`FORMAT:PATH` for every demo input present under `data_dir`."""
    data_dir = Path(data_dir)
    return [f"{fmt}:{data_dir / rel}" for fmt, rel in DEMO_SOURCES if (data_dir / rel).exists()]
