"""A small end-to-end store shared by the kill/resume and integrity tests.

`pipeline_inputs`: ~330 TSV triples over 120 entities, 6 images (one 2300x1450, so decoding takes
a moment), 40 JSONL queries. `reference_store`: an uninterrupted ingest → embed → index →
retrieve of them, each stage run as `mmkg` subprocess (tiny-clip: seeded random weights, cheap,
and it has a vision tower, so image vectors and fusion are covered). Built once per session:
every process start pays a torch import, which dominates on 2 shared cores.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.helpers import mmkg

ENCODER = "tiny-clip"
CHUNK_SIZE = "32"   # rows per embed chunk: ~15 chunks, so a kill lands between chunks


@dataclass(frozen=True)
class Inputs:
    tsv: Path
    images_root: Path
    mapping: Path
    queries: Path

    def ingest_args(self, kg: Path) -> list:
        return ["ingest", "--kg", kg, "--engine", "local", "--source", f"tsv:{self.tsv}",
                "--source", f"images(root={self.images_root}):{self.mapping}"]


def embed_args(kg: Path) -> list:
    return ["embed", "--kg", kg, "--encoder", ENCODER, "--chunk-size", CHUNK_SIZE, "--no-progress"]


def index_args(kg: Path) -> list:
    return ["index", "--kg", kg, "--encoder", ENCODER]


def retrieve_args(kg: Path, inputs: Inputs) -> list:
    return ["retrieve", "--kg", kg, "--encoder", ENCODER, "--dataset", f"jsonl:{inputs.queries}"]


@pytest.fixture(scope="session")
def pipeline_inputs(tmp_path_factory) -> Inputs:
    from tests.fixtures.hostile_images import _save, photo
    d = tmp_path_factory.mktemp("inputs")
    rng = random.Random(7)
    words = "river stone forest city king queen music paint bird ocean mountain bridge tower castle".split()
    ents = [f"{rng.choice(words)}_{i}" for i in range(120)]
    rels = ["located_in", "part_of", "near", "made_of", "owned_by"]
    lines = sorted({f"{rng.choice(ents)}\t{rng.choice(rels)}\t{rng.choice(ents)}" for _ in range(330)})
    (d / "kg.tsv").write_text("\n".join(lines) + "\n")
    root = d / "imgs"
    root.mkdir()
    rows = ["file\tentity"]
    for i in range(6):
        (root / f"im{i}.jpg").write_bytes(_save(photo((300 + i * 400, 200 + i * 250)), "JPEG", quality=90))
        rows.append(f"im{i}.jpg\t{ents[i]}")
    (d / "map.tsv").write_text("\n".join(rows) + "\n")
    (d / "q.jsonl").write_text("\n".join(json.dumps({"id": f"q{i}", "text": f"which {words[i % 14]} is near "
                                                     f"the {words[(i * 3) % 14]}?", "entities": [ents[i]]})
                                         for i in range(40)) + "\n")
    return Inputs(d / "kg.tsv", root, d / "map.tsv", d / "q.jsonl")


@pytest.fixture(scope="session")
def reference_store(pipeline_inputs, tmp_path_factory) -> Path:
    """The uninterrupted run every killed-and-resumed run must reproduce."""
    kg = tmp_path_factory.mktemp("reference") / "kg"
    for args in (pipeline_inputs.ingest_args(kg), embed_args(kg), index_args(kg),
                 retrieve_args(kg, pipeline_inputs)):
        run = mmkg(*args, timeout=300)
        assert run.rc == 0, str(run)
    return kg
