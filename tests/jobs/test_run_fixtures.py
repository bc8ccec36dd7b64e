"""Real, small inputs for the `mmkg run` tests (helpers only; no tests in this module).

`make_sources(data_dir, out)` cuts a MarKG-format directory out of the real MarKG: every triple
touching the entities of the first `N_QUERIES` MARS dev queries plus every 300th triple as
distractors, with the real entity/relation texts of what they mention. One in eight of those
triples is held out and written as `extra.tsv` (head, relation, tail Wikidata ids) — the "small
extra TSV source" an incremental update appends. The store stays ~200 triples so MiniLM embeds it
in seconds on 2 shared cores.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

N_QUERIES = 3
DISTRACTOR_STRIDE = 600
HOLDOUT_EVERY = 8
MARS_LIMIT, SCIENCEQA_LIMIT = 10, 4


def make_sources(data_dir: Path, out: Path) -> dict[str, Path]:
    markg = Path(data_dir) / "markg" / "MarKG"
    rows = [json.loads(line) for line in (Path(data_dir) / "markg/MARS/dev.json").read_text().splitlines()]
    keys = {k for r in rows[:N_QUERIES] for k in (*r["example"], r["question"], r["answer"])}
    triples = [line.split("\t") for line in (markg / "wiki_tuple_ids.txt").read_text().splitlines() if line.strip()]
    first = {k for k in (*rows[0]["example"], rows[0]["question"], rows[0]["answer"])}
    picked = [t for i, t in enumerate(triples) if t[0] in keys or t[2] in keys or i % DISTRACTOR_STRIDE == 0]
    # held out: some triples of the first query's entities and some distractors, so the update
    # changes some subgraphs and leaves others (those the per-query reuse must keep) alone
    held = [i % HOLDOUT_EVERY == 3 and (t[0] in first or t[2] in first or not (t[0] in keys or t[2] in keys))
            for i, t in enumerate(picked)]
    base = [t for t, h in zip(picked, held) if not h]
    extra = [t for t, h in zip(picked, held) if h]
    base_dir = out / "base" / "MarKG"
    base_dir.mkdir(parents=True, exist_ok=True)
    ents = keys | {t[0] for t in base} | {t[2] for t in base}
    rels = {t[1] for t in base}
    for name, wanted in (("entity2text.txt", ents), ("entity2textlong.txt", ents),
                         ("relation2text.txt", rels), ("relation2textlong.txt", rels)):
        lines = [line for line in (markg / name).read_text().splitlines() if line.split("\t", 1)[0] in wanted]
        (base_dir / name).write_text("\n".join(lines) + "\n")
    (base_dir / "wiki_tuple_ids.txt").write_text("\n".join("\t".join(t) for t in base) + "\n")
    (out / "extra.tsv").write_text("head\trelation\ttail\n" + "\n".join("\t".join(t) for t in extra) + "\n")
    return {"base": base_dir, "extra": out / "extra.tsv", "n_base": len(base), "n_extra": len(extra)}


def pipeline_job(data_dir: Path, kg: Path, sources: list[str], *, engine: str = "local") -> dict[str, Any]:
    """The `job` block of a small pipeline config over `sources` (retrieval limited to a few queries)."""
    return {
        "kg": str(kg), "data": str(data_dir), "encoder": "minilm",
        "ingest": {"sources": sources, "engine": engine},
        "embed": {"dtype": "float32", "engine": "local", "batch_size": 32},
        "index": {"kind": "auto"},
        "retrieve": {"top_n": 10, "top_N": 10, "hops": 1, "datasets": [
            {"dataset": "mars:{data}/markg/MARS", "split": "dev", "limit": MARS_LIMIT},
            {"dataset": "scienceqa:{data}/scienceqa", "split": "test", "limit": SCIENCEQA_LIMIT}]},
        "train": {"enabled": False, "config": "configs/mrmkg/mars_tiny-t5.yaml"},
    }


def write_config(path: Path, job: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"metadata": {"title": "test pipeline"}, "job": job}, sort_keys=False))
    return path
