"""Every `model` option side by side: same backbone, seed, shards and step budget, on MARS and ScienceQA.

    python benchmarks/compare_models.py --backbone tiny-llama --steps 20 --seed 0

Steps: MarKG store with the real entity images (ingest) → `minilm` vectors and FAISS indexes →
retrieval shards for the first `--train-examples` MARS train queries and a held subset of MARS dev
(`--eval-queries`), and for the ScienceQA problems available (train → test) → for each option
(`--models`, MR-MKG included) a fresh model with the same seed, `--steps` finetuning steps through
`model.training.train`, then `model.evaluation.evaluate` (the code behind `mmkg train` /
`mmkg evaluate`) → one table: metric, trainable parameters, step time.

Then Simignore's accuracy-vs-tokens-kept curve: the Simignore checkpoint trained on MARS is
re-evaluated on the held MARS queries *that have an image* at several `keep_ratio`s (Simignore
is applied at inference, as in the paper), recording the image tokens kept, the prompt tokens
the LLM reads and the seconds per query; the PNG goes to `--png`.

Prints one JSON object on stdout, then the markdown table. Everything expensive (store, vectors,
shards) is cached under `--work`, so a second run spends its time on training and evaluation.
Caveats: tiny backbones are randomly initialised (mechanics, not quality); entity vectors come
from minilm (a text encoder; the paper uses CLIP); only ScienceQA's one real image exists here.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENCODER = "minilm"
MODELS = ("mrmkg", "kamt", "simignore", "mks2")
#: per-option constructor kwargs on top of the shared ones; sizes chosen so a step stays well under
#: a second on 2 CPU cores for the tiny backbones
OPTION_KWARGS: dict[str, dict[str, Any]] = {
    "mrmkg": {"gnn_layer": "gat", "kg_hidden": 64},
    "simignore": {"gnn_layer": "gat", "kg_hidden": 64, "keep_ratio": 0.5},
    "kamt": {"hidden_size": 128, "num_layers": 2},
    "mks2": {"gnn_layer": "gat", "kg_hidden": 64},
}
KEEP_RATIOS = (1.0, 0.75, 0.5, 0.25, 0.125, 0.0)


def prepare_store(kg: Path, data: Path) -> None:
    """MarKG + entity images store, minilm vectors, indexes (each step skipped when already committed)."""
    from kg_store import open_store
    if not (kg / "manifest.json").exists():
        from pipeline.ingest import ingest
        sources = [f"markg:{data / 'markg' / 'MarKG'}", f"images:{data / 'markg' / 'MARS' / 'images'}",
                   f"images:{data / 'entity_images' / 'imagenet_markg_overlap' / 'mapping.tsv'}"]
        ingest(kg, sources, engine="local")
    if open_store(kg).artifact(f"vectors/{ENCODER}") is None:
        from pipeline.embed import embed_store
        embed_store(kg, ENCODER, progress=False)
    if open_store(kg).artifact(f"indexes/{ENCODER}") is None:
        from retrieval.index import build_store_indexes
        build_store_indexes(kg, ENCODER)


def retrieve(kg: Path, dataset: str, split: str, limit: int | None, top_n: int) -> Path:
    from retrieval.batch import retrieve_dataset
    from retrieval.retriever import RetrievalConfig
    return Path(retrieve_dataset(kg, dataset, RetrievalConfig(encoder=ENCODER, top_N=top_n), split=split,
                                 limit=limit).shard_dir)


def prepare_shards(args, kg: Path, data: Path) -> dict[str, Path]:
    mars, sqa = f"mars:{data / 'markg' / 'MARS'}", f"scienceqa:{data / 'scienceqa'}"
    return {"mars/train": retrieve(kg, mars, "train", args.train_examples, args.top_n),
            # the dev subset is larger than the evaluated one: the image-bearing queries of the
            # Simignore curve are picked from it
            "mars/dev": retrieve(kg, mars, "dev", args.curve_pool, args.top_n),
            "scienceqa/train": retrieve(kg, sqa, "train", None, args.top_n),
            "scienceqa/test": retrieve(kg, sqa, "test", None, args.top_n)}
