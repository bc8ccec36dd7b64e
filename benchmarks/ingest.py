"""Ingest benchmark: the full demo ingest, and a synthetic N-triple TSV ingested into a store,
against the same file read by pyarrow alone and through a plain-pyarrow pipeline (read,
dictionary-encode, dedupe, join, write: the floor of an in-process ingest), both measured in the
same run.

    python benchmarks/ingest.py [--triples 10000000] [--engines spark,local] [--master local[2]]

Prints one JSON object (and writes it to `--out` when given). Targets (2 cores): demo ≤ 30 s incl.
Spark start; 10M triples ≤ 60 s on Spark local[2], ≤ 10 s on the local engine. The synthetic file has 1 % duplicate lines, N/10 entities and 1,000 relations.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_synthetic_tsv(path: Path, n: int, seed: int = 0) -> None:
    """`e<h>\\tr<r>\\te<t>` lines; the last 1 % repeat earlier lines (exact duplicates)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as csv

    rng = np.random.default_rng(seed)
    n_ent, n_rel, chunk = max(n // 10, 10), 1_000, 1_000_000
    fresh = n - n // 100
    first: tuple | None = None
    with csv.CSVWriter(str(path), pa.schema([("h", pa.string()), ("r", pa.string()), ("t", pa.string())]),
                       write_options=csv.WriteOptions(include_header=False, delimiter="\t",
                                                      quoting_style="none")) as w:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            h, r, t = rng.integers(0, n_ent, m), rng.integers(0, n_rel, m), rng.integers(0, n_ent, m)
            if first is None:
                first = (h.copy(), r.copy(), t.copy())
            if start + m > fresh:  # the last 1 %: exact copies of the first lines
                k = start + m - max(start, fresh)
                h[-k:], r[-k:], t[-k:] = first[0][:k], first[1][:k], first[2][:k]
            cols = [pc.binary_join_element_wise(prefix, pa.array(x).cast(pa.string()), "")
                    for prefix, x in (("e", h), ("r", r), ("e", t))]
            w.write_table(pa.table(cols, names=["h", "r", "t"]))


def pyarrow_baseline(path: Path) -> tuple[float, int]:
    import pyarrow.csv as csv
    t0 = time.perf_counter()
    table = csv.read_csv(path, read_options=csv.ReadOptions(column_names=["h", "r", "t"]),
                         parse_options=csv.ParseOptions(delimiter="\t", quote_char=False))
    return time.perf_counter() - t0, table.num_rows


def pyarrow_pipeline(path: Path, out_dir: Path) -> float:
    """The plain-pyarrow floor of an ingest: read, dictionary-encode the keys (one dictionary for
    heads and tails), dedupe the id triples, join the key ids back, write Parquet."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as csv
    import pyarrow.parquet as pq
    t0 = time.perf_counter()
    t = csv.read_csv(path, read_options=csv.ReadOptions(column_names=["h", "r", "t"]),
                     parse_options=csv.ParseOptions(delimiter="\t", quote_char=False))
    ents = pc.unique(pa.chunked_array(t["h"].chunks + t["t"].chunks))
    rels = pc.unique(t["r"])
    ids = pa.table({"h": pc.index_in(t["h"], value_set=ents), "r": pc.index_in(t["r"], value_set=rels),
                    "t": pc.index_in(t["t"], value_set=ents),
                    "pos": pa.array(np.arange(t.num_rows, dtype=np.int64))})
    distinct = ids.group_by(["h", "r", "t"]).aggregate([("pos", "min")]).sort_by("pos_min")
    keys = pa.table({"id": pa.array(np.arange(len(ents), dtype=np.int32)), "key": ents})
    labelled = distinct.join(keys, "h", "id")  # a join back to the entity table, as the store's writer does
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(distinct, out_dir / "triples.parquet", compression="zstd")
    pq.write_table(keys, out_dir / "entities.parquet", compression="zstd")
    assert labelled.num_rows == distinct.num_rows
    return time.perf_counter() - t0


def timed_ingest(root: Path, sources: list[str], engine: str, master: str | None) -> dict:
    from pipeline.ingest import ingest
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    r = ingest(root, sources, engine=engine, master=master)
    wall = time.perf_counter() - t0
    c = r.counts
    return {"wall_s": round(wall, 2), "phases_s": r.phases, "entities": c["entities"], "triples": c["triples"],
            "duplicates": c["duplicates"], "images": c["images"], "rejects": c["rejects"],
            "merged_keys": c["merged_keys"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--triples", type=int, default=10_000_000)
    ap.add_argument("--engines", default="spark,local")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--workdir", default=None, help="scratch dir (default: a temp dir, removed afterwards)")
    ap.add_argument("--out", default=None, help="also write the JSON here (e.g. benchmarks/out/ingest.json)")
    args = ap.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    engines = [e for e in args.engines.split(",") if e]
    from pipeline.demo_sources import demo_sources

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmkg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"benchmark": "ingest", "cpu_count": os.cpu_count(), "master": args.master,
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        if not args.skip_demo:
            out["demo"] = {e: timed_ingest(work / f"demo-{e}", demo_sources(args.data), e, args.master)
                           for e in engines}
            out["demo"]["target_s"] = 30
            print(f"[bench] demo: {json.dumps(out['demo'])}", file=sys.stderr, flush=True)
        tsv = work / f"synthetic-{args.triples}.tsv"
        t0 = time.perf_counter()
        if not (args.workdir and tsv.exists()):  # a kept workdir reuses the generated file
            write_synthetic_tsv(tsv, args.triples)
        out["synthetic"] = {"lines": args.triples, "bytes": tsv.stat().st_size,
                            "generate_s": round(time.perf_counter() - t0, 2)}
        base_s, rows = pyarrow_baseline(tsv)
        out["synthetic"]["pyarrow_read_s"] = round(base_s, 3)
        assert rows == args.triples
        floor_s = pyarrow_pipeline(tsv, work / "pyarrow-pipeline")
        out["synthetic"]["pyarrow_pipeline_s"] = round(floor_s, 3)
        for e in engines:
            res = timed_ingest(work / f"syn-{e}", [f"tsv:{tsv}"], e, args.master)
            res["ratio_vs_pyarrow_read"] = round(res["wall_s"] / base_s, 1)
            res["ratio_vs_pyarrow_pipeline"] = round(res["wall_s"] / floor_s, 2)
            out["synthetic"][e] = res
            print(f"[bench] synthetic {e}: {json.dumps(res)}", file=sys.stderr, flush=True)  # partial results
        out["synthetic"]["target_s"] = 60  # Spark local[2]
        out["synthetic"]["target_local_s"] = 10  # the local engine (issue 18)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(out, sort_keys=True)
    print(text)
    if args.out:
        from kg_store import atomic
        atomic.write_bytes(args.out, (text + "\n").encode())


if __name__ == "__main__":
    main()
