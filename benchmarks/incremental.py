"""Incremental update vs full rebuild, in one run: add 1 % new triples to a KG and rerun the DAG.

Real data: a random sample of `--triples` MarKG triples (with the real texts of every entity and
relation they mention) is the base KG; `--added` (default 1 %) further real MarKG triples form an
extra TSV source. Steps (all in this process, so the encoder is loaded once for every step):

1. build the base KG with `mmkg run` (not timed: the state before the update);
2. **incremental**: rerun the same DAG with the TSV source added (timed);
3. **full rebuild**: run the DAG on base + TSV into a fresh directory (timed);
4. check that both give the same shards.

Prints and writes (`benchmarks/out/incremental.json`) one JSON object: seconds of each step and
stage, what was re-embedded, the ratio incremental / full (goal ≤ 0.10), the retrieve stage's own
ratio (incremental retrieval reranks only the queries whose inputs changed; goal ≤ 0.15) and the KG
disk growth of a rerun that changed nothing (goal ≤ 1 MB).
`--whole` is the demo scale: the whole MarKG (~34k triples: base + 1 %) with every MARS dev and
ScienceQA test query, so the ratios are those of a real update (write it with `--out`).
`python benchmarks/incremental.py [--triples 3000] [--added 0.01] [--quick | --whole] [--profile DIR]`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

GOAL = 0.10
RETRIEVE_GOAL = 0.15
NOCHANGE_GROWTH_GOAL = 1 << 20


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def make_inputs(data: Path, out: Path, n_triples: int, added: float, seed: int) -> dict:
    markg = data / "markg" / "MarKG"
    triples = [line.split("\t") for line in (markg / "wiki_tuple_ids.txt").read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    n_add = max(1, round(n_triples * added))
    sample = rng.sample(range(len(triples)), n_triples + n_add)
    base = [triples[i] for i in sorted(sample[:n_triples])]
    extra = [triples[i] for i in sorted(sample[n_triples:])]
    base_dir = out / "base" / "MarKG"
    base_dir.mkdir(parents=True)
    ents = {t[0] for t in base} | {t[2] for t in base}
    rels = {t[1] for t in base}
    for name, wanted in (("entity2text.txt", ents), ("entity2textlong.txt", ents),
                         ("relation2text.txt", rels), ("relation2textlong.txt", rels)):
        lines = [line for line in (markg / name).read_text().splitlines() if line.split("\t", 1)[0] in wanted]
        (base_dir / name).write_text("\n".join(lines) + "\n")
    (base_dir / "wiki_tuple_ids.txt").write_text("\n".join("\t".join(t) for t in base) + "\n")
    (out / "extra.tsv").write_text("\n".join("\t".join(t) for t in extra) + "\n")
    return {"base": base_dir, "extra": out / "extra.tsv", "n_base": len(base), "n_extra": len(extra)}


def whole_base(data: Path, added: float) -> int:
    """Base size of the `--whole` row: the whole MarKG is base + `added` × base."""
    lines = (data / "markg" / "MarKG" / "wiki_tuple_ids.txt").read_text().splitlines()
    return round(sum(1 for line in lines if line.strip()) / (1 + added))


def job(data: Path, kg: Path, sources: list[str], mars: int, sqa: int) -> dict:
    return {"kg": str(kg), "data": str(data), "encoder": "minilm",
            "ingest": {"sources": sources, "engine": "local"},
            "embed": {"dtype": "float32", "engine": "local", "batch_size": 64},
            "index": {"kind": "auto"},
            "retrieve": {"top_n": 10, "top_N": 10, "datasets": [
                {"dataset": "mars:{data}/markg/MARS", "split": "dev", "limit": mars},
                {"dataset": "scienceqa:{data}/scienceqa", "split": "test", "limit": sqa}]}}


def timed(**kw):
    from mmkg.jobs.runner import run_pipeline
    t0 = time.perf_counter()
    report = run_pipeline(**kw, progress=False)
    return time.perf_counter() - t0, report


class retrieve_profile:
    """cProfile of the retrieve stage (every `retrieve_dataset` call) of one run, written to `path`
    (`--profile DIR`: where the retrieve stage's time goes; off by default)."""

    def __init__(self, path: Path | None):
        self.path = path

    def __enter__(self):
        if self.path is None:
            return self
        import cProfile
        import mmkg.retrieval.batch as batch
        self.batch, self.orig, self.prof = batch, batch.retrieve_dataset, cProfile.Profile()

        def profiled(*a, **kw):
            return self.prof.runcall(self.orig, *a, **kw)
        batch.retrieve_dataset = profiled
        return self

    def __exit__(self, *exc):
        if self.path is not None:
            self.batch.retrieve_dataset = self.orig
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.prof.dump_stats(str(self.path))


def same_shards(a: dict, b: dict) -> bool:
    import numpy as np
    from mmkg.kg_store.shards import read_shards
    for key in a:
        x, y = read_shards(a[key]), read_shards(b[key])
        for col in x.column_names:
            if col == "scores":
                u = np.concatenate([np.asarray(v, np.float32) for v in x[col].to_pylist()] or [np.zeros(0)])
                w = np.concatenate([np.asarray(v, np.float32) for v in y[col].to_pylist()] or [np.zeros(0)])
                if u.shape != w.shape or not np.allclose(u, w, atol=1e-5):
                    return False
            elif x[col].to_pylist() != y[col].to_pylist():
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("MMKG_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--triples", type=int, default=3000, help="base KG size in MarKG triples")
    ap.add_argument("--added", type=float, default=0.01, help="fraction of new triples in the update")
    ap.add_argument("--mars", type=int, default=100, help="MARS dev queries retrieved (a seeded random sample)")
    ap.add_argument("--scienceqa", type=int, default=20, help="ScienceQA test queries retrieved (a seeded random sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary KGs")
    ap.add_argument("--quick", action="store_true", help="1,500 triples, 40 MARS and 10 ScienceQA queries")
    ap.add_argument("--whole", action="store_true",
                    help="the demo scale: the whole MarKG (base + 1 %% = every triple), every MARS dev and "
                         "ScienceQA test query (a real update's ratio; several minutes)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out/incremental.json")
    ap.add_argument("--profile", type=Path, help="write cProfile stats of the incremental and full "
                    "retrieve stages into this folder (retrieve-incremental.prof, retrieve-full.prof)")
    args = ap.parse_args()
    if args.quick:
        args.triples, args.mars, args.scienceqa = min(args.triples, 1500), min(args.mars, 40), min(args.scienceqa, 10)
    if args.whole:
        args.triples, args.mars, args.scienceqa = whole_base(Path(args.data), args.added), None, None
    import torch
    torch.set_num_threads(min(os.cpu_count() or 1, 16))

    data = Path(args.data).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="mmkg-bench-incremental-"))
    try:
        src = make_inputs(data, tmp / "src", args.triples, args.added, args.seed)
        base, both = [f"markg:{src['base']}"], [f"markg:{src['base']}", f"tsv:{src['extra']}"]
        from mmkg.pipeline.encoders import resolve_encoder
        resolve_encoder("minilm")  # load once, outside every timing
        t_base, _ = timed(**job(data, tmp / "kg", base, args.mars, args.scienceqa))
        before = tree_bytes(tmp / "kg")
        t_same, same = timed(**job(data, tmp / "kg", base, args.mars, args.scienceqa))  # nothing changed
        growth = tree_bytes(tmp / "kg") - before
        with retrieve_profile(args.profile / "retrieve-incremental.prof" if args.profile else None):
            t_inc, inc = timed(**job(data, tmp / "kg", both, args.mars, args.scienceqa))
        with retrieve_profile(args.profile / "retrieve-full.prof" if args.profile else None):
            t_full, full = timed(**job(data, tmp / "full", both, args.mars, args.scienceqa))
        stage = lambda r, n: next(s for s in r.stages if s.name == n)  # noqa: E731
        out = {
            "benchmark": "incremental_update_vs_full_rebuild",
            "encoder": "minilm", "device": "cpu", "torch_threads": torch.get_num_threads(),
            "base_triples": src["n_base"], "added_triples": src["n_extra"],
            "added_fraction": round(src["n_extra"] / src["n_base"], 4),
            "base_build_seconds": round(t_base, 2),
            "incremental_seconds": round(t_inc, 2), "full_rebuild_seconds": round(t_full, 2),
            "ratio": round(t_inc / t_full, 4), "goal_ratio": GOAL, "meets_goal": t_inc / t_full <= GOAL,
            "retrieve_stage": {
                "incremental_seconds": stage(inc, "retrieve").seconds, "full_seconds": stage(full, "retrieve").seconds,
                "ratio": round(stage(inc, "retrieve").seconds / max(stage(full, "retrieve").seconds, 1e-9), 4),
                "goal_ratio": RETRIEVE_GOAL, "queries": stage(inc, "retrieve").counts},
            "no_change_rerun": {"seconds": round(t_same, 2), "all_cached": same.all_cached,
                                "kg_growth_bytes": growth, "goal_bytes": NOCHANGE_GROWTH_GOAL,
                                "meets_goal": growth <= NOCHANGE_GROWTH_GOAL},
            "quick": args.quick, "whole": args.whole, "load_avg_1m": os.getloadavg()[0],
            "incremental_stages": {s.name: {"status": s.status, "seconds": s.seconds, "note": s.note}
                                   for s in inc.stages if s.status != "skipped"},
            "full_stages": {s.name: {"status": s.status, "seconds": s.seconds}
                            for s in full.stages if s.status != "skipped"},
            "embedded_incremental": stage(inc, "embed").counts,
            "index_updates": stage(inc, "index").outputs,
            "queries": stage(inc, "retrieve").counts,
            "shards_equal_full_rebuild": same_shards(stage(inc, "retrieve").outputs, stage(full, "retrieve").outputs),
        }
        text = json.dumps(out, indent=2, sort_keys=True, default=str)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(text)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
