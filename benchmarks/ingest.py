"""Ingest benchmark: the full demo ingest, and a synthetic N-triple TSV ingested into a store,
against the same file read by pyarrow alone and through a plain-pyarrow pipeline (read,
dictionary-encode, dedupe, join, write: the floor of an in-process ingest), both measured in the
same run.

    python benchmarks/ingest.py [--triples 10000000] [--engines spark,local] [--master local[2]]

Prints one JSON object (and writes it to `--out` when given). Targets (2 cores): demo ≤ 30 s incl.
Spark start; 10M triples ≤ 60 s on Spark local[2], ≤ 10 s on the local engine. The synthetic file has 1 % duplicate lines, N/10 entities and 1,000 relations.

Scale rows (issue 19: no driver bottleneck):

    python benchmarks/ingest.py --scale 10000000,50000000 [--baseline-repo DIR] --out benchmarks/out/ingest_scale.json

RDF rows (issue 33: Oxigraph's N-Triples parser against the rdflib line parser it replaced):

    python benchmarks/ingest.py --rdf [--rdf-lines 10000000] [--rdf-old-max 1000000] --out benchmarks/out/ingest_rdf.json

The `rdf:` reader's parse of an N-Triples file (`parse_file`: the records the ingest gets) by this
checkout and by the reader of `--rdf-old-commit` (its `pipeline/readers/rdf.py`, loaded from git),
in the same run, each in its own forked process (wall time, peak RSS): MarKG's triples and labels
written as N-Triples, and a synthetic file of `--rdf-lines` lines (IRI triples, plain, language and
typed literals, blank nodes). The old parser reads at most `--rdf-old-max` lines (a prefix of the
synthetic file; the JSON says so), and the new one reads that prefix too, so the two compare on
the same lines; plus a full local-engine ingest of the MarKG file.

Each row is one Spark local[2] ingest in a fresh `python` process (the "mmkg process": where anything
collected lands) with `spark.driver.memory=2g` and `spark.driver.maxResultSize=16m`, reporting wall time,
phases and peak memory: the driver Python process (its ru_maxrss), the JVM (driver + executors in local
mode; VmHWM) and the executors' Python workers (the largest sum of their RSS seen, sampled every 0.2 s).
`--baseline-repo` runs the same row with another checkout's code (e.g. the commit before issue 19, whose
driver collects the triples: it gets the default maxResultSize, since 16m would fail it) in the same run.
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
#: the code under test: this checkout, or a baseline checkout's (`--baseline-repo`, scale rows)
sys.path.insert(0, os.environ.get("MMKG_BENCH_CODE", str(REPO)))


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
    from mmkg.pipeline.ingest import ingest
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    r = ingest(root, sources, engine=engine, master=master)
    wall = time.perf_counter() - t0
    c = r.counts
    return {"wall_s": round(wall, 2), "phases_s": r.phases, "entities": c["entities"], "triples": c["triples"],
            "duplicates": c["duplicates"], "images": c["images"], "rejects": c["rejects"],
            "merged_keys": c["merged_keys"]}


# ---- scale rows: one ingest per fresh process, with its process tree's peak memory ---------------

def _proc_tree(root: int) -> dict[int, str]:
    """pid → command name of every live descendant of `root` (from /proc, no psutil needed)."""
    parent: dict[int, int] = {}
    name: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        close = stat.rfind(")")
        name[int(entry)] = stat[stat.find("(") + 1:close]
        parent[int(entry)] = int(stat[close + 2:].split()[1])
    out, frontier = {}, [root]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in out:
                out[c] = name[c]
                frontier.append(c)
    return out


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples the process tree below this process: the JVM's peak RSS (VmHWM) and the largest
    sum of the Python workers' RSS at one moment (they come and go, so a per-pid peak would overcount)."""

    def __init__(self, every: float = 0.2):
        import threading
        self.jvm_kib = self.workers_kib = self.workers_n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        me = os.getpid()
        while not self._stop.wait(every):
            tree = _proc_tree(me)
            jvm = [p for p, n in tree.items() if n == "java"]
            workers = [p for p, n in tree.items() if n.startswith("python")]
            for p in jvm:
                self.jvm_kib = max(self.jvm_kib, _status_kib(p, "VmHWM"))
            rss = sum(_status_kib(p, "VmRSS") for p in workers)
            if rss > self.workers_kib:
                self.workers_kib, self.workers_n = rss, len(workers)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def one_scale_row(tsv: Path, kg: Path, master: str, max_result_size: str | None, driver_memory: str) -> dict:
    """The child of `--scale`: one Spark ingest of `tsv`, its memory, as one JSON line on stdout."""
    import resource
    os.environ["MMKG_SPARK_DRIVER_MEMORY"] = driver_memory
    conf = {"spark.driver.maxResultSize": max_result_size} if max_result_size else None
    mem = TreeMemory()
    from mmkg.pipeline.ingest import ingest
    shutil.rmtree(kg, ignore_errors=True)
    t0 = time.perf_counter()
    r = ingest(kg, [f"tsv:{tsv}"], engine="spark", master=master, spark_conf=conf)
    wall = time.perf_counter() - t0
    mem.stop()
    c, store = r.counts, r.store
    mib = 1 / 1024
    return {"wall_s": round(wall, 2), "phases_s": r.phases, "phase_peak_rss_mib": getattr(r, "phase_peak_rss_mib", None),
            "triples": c["triples"], "entities": c["entities"],
            "duplicates": c["duplicates"], "spark.driver.memory": driver_memory, "spark.driver.maxResultSize": max_result_size,
            "driver_python_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * mib, 1),
            "jvm_peak_rss_mib": round(mem.jvm_kib * mib, 1),
            "executor_python_workers_peak_rss_mib": round(mem.workers_kib * mib, 1),
            "executor_python_workers_at_peak": mem.workers_n,
            "table_parts": {n: len(store.table_parts(n)) if hasattr(store, "table_parts") else 1
                            for n in ("entities", "triples")}}


def scale_rows(args, work: Path) -> dict:
    import subprocess
    # rows already in --out are kept: a rerun measures only the missing or failed ones
    old = json.loads(Path(args.out).read_text()).get("rows", {}) if args.out and Path(args.out).exists() else {}
    rows: dict = old  # failed rows stay on record until a rerun measures them
    repos = {"current": REPO, **({"baseline": Path(args.baseline_repo).resolve()} if args.baseline_repo else {})}
    for n in [int(x) for x in args.scale.split(",") if x]:
        tsv = work / f"synthetic-{n}.tsv"
        todo = [label for label in repos if not (label == "baseline" and n > args.baseline_max)
                and "wall_s" not in rows.get(str(n), {}).get(label, {})]
        if todo and not tsv.exists():
            t0 = time.perf_counter()
            write_synthetic_tsv(tsv, n)
            print(f"[bench] wrote {tsv} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        for label in todo:
            repo = repos[label]
            size = args.max_result_size if label == "current" else None
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one-row", str(tsv), "--kg",
                   str(work / f"kg-{label}-{n}"), "--master", args.master, "--max-result-size", size or "",
                   "--driver-memory", args.driver_memory]
            env = {**os.environ, "PYTHONPATH": str(repo), "MMKG_BENCH_CODE": str(repo)}
            done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
            (work / f"{label}-{n}.stderr").write_text(done.stderr)
            if done.returncode:
                errors = [ln for ln in done.stderr.splitlines() if "Error" in ln or "Exception" in ln]
                row = {"failed": (errors[:3] or done.stderr.strip().splitlines()[-3:]),
                       "stderr": str(work / f"{label}-{n}.stderr")}
            else:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.setdefault(str(n), {})[label] = row
            shutil.rmtree(work / f"kg-{label}-{n}", ignore_errors=True)
            print(f"[bench] {n} {label}: {json.dumps(row)}", file=sys.stderr, flush=True)
    out = {"rows": rows, "spark.driver.memory": args.driver_memory}
    ns = sorted(int(k) for k in rows)
    if len(ns) >= 2 and all("wall_s" in rows[str(k)].get("current", {}) for k in ns):
        lo, hi = rows[str(ns[0])]["current"], rows[str(ns[-1])]["current"]
        out["scale"] = {"triples_ratio": ns[-1] / ns[0], "time_ratio": round(hi["wall_s"] / lo["wall_s"], 2),
                        "time_ratio_goal_max": round(1.1 * ns[-1] / ns[0], 2),  # linear + 10 %
                        "driver_rss_ratio": round(hi["driver_python_peak_rss_mib"] / lo["driver_python_peak_rss_mib"], 3),
                        "driver_rss_ratio_goal_max": 1.10}
    base = rows.get(str(ns[0]), {}).get("baseline") if ns else None
    if base and "wall_s" in base and "wall_s" in rows[str(ns[0])].get("current", {}):
        out["speedup_vs_baseline_at_smallest"] = round(base["wall_s"] / rows[str(ns[0])]["current"]["wall_s"], 2)
    return out


# ---- RDF rows (issue 33) ---------------------------------------------------------------------------
WD, WDT = "http://www.wikidata.org/entity/", "http://www.wikidata.org/prop/direct/"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"


def _nt_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def write_markg_ntriples(data: Path, path: Path) -> int:
    """MarKG's triples (Wikidata IRIs; analogy relations `A*` as urn:mmkg:relation:) and its
    English labels as N-Triples; returns the line count."""
    markg = data / "markg" / "MarKG"
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for line in open(markg / "wiki_tuple_ids.txt", encoding="utf-8"):
            h, r, t = line.rstrip("\n").split("\t")
            rel = WDT + r if r.startswith("P") else "urn:mmkg:relation:" + r
            out.write(f"<{WD}{h}> <{rel}> <{WD}{t}> .\n")
            n += 1
        for line in open(markg / "entity2text.txt", encoding="utf-8"):
            q, _, label = line.rstrip("\n").partition("\t")
            out.write(f"<{WD}{q}> <{RDFS_LABEL}> {_nt_string(label)}@en .\n")
            n += 1
    return n


def write_synthetic_ntriples(path: Path, n: int, seed: int = 0) -> None:
    """`n` N-Triples lines over n/10 subjects: 70 % IRI objects, 10 % plain, 10 % language-tagged
    and 10 % xsd:integer literals; one subject in 50 is a blank node."""
    import numpy as np
    rng = np.random.default_rng(seed)
    n_ent, chunk = max(n // 10, 10), 200_000
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            h, r, t, kind = (rng.integers(0, n_ent, m), rng.integers(0, 1000, m), rng.integers(0, n_ent, m),
                             rng.integers(0, 10, m))
            lines = []
            for a, b, c, k in zip(h.tolist(), r.tolist(), t.tolist(), kind.tolist()):
                s = f"_:b{a}" if a % 50 == 0 else f"<http://example.org/e{a}>"
                o = (f"<http://example.org/e{c}>" if k < 7 else f'"value {c}"' if k == 7
                     else f'"name {c}"@en' if k == 8 else f'"{c}"^^<http://www.w3.org/2001/XMLSchema#integer>')
                lines.append(f"{s} <http://example.org/r{b}> {o} .\n")
            out.write("".join(lines))


def _prefix(path: Path, lines: int, out: Path) -> Path:
    with open(path, "rb") as src, open(out, "wb") as dst:
        for i, line in enumerate(src):
            if i == lines:
                break
            dst.write(line)
    return out


def old_rdf_reader(commit: str):
    """The `rdf:` reader of `commit`, loaded from git (not registered: the registry holds this one's)."""
    import subprocess
    import types
    src = subprocess.check_output(["git", "-C", str(REPO), "show", f"{commit}:pipeline/readers/rdf.py"], text=True)
    src = src.replace('@reader_registry.register("rdf")\n', "")
    mod = types.ModuleType("old_rdf_reader")
    exec(compile(src, f"{commit}:pipeline/readers/rdf.py", "exec"), mod.__dict__)  # noqa: S102 - our own code
    return mod.RDFReader()


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _parse_row(which: str, commit: str, path: str, queue) -> None:
    """Child process: one parse_file by the new or the old reader; puts its row on `queue`."""
    import pyarrow.compute as pc
    from mmkg.pipeline.readers import reader_registry
    reader = reader_registry.get("rdf")() if which == "new" else old_rdf_reader(commit)
    t0 = time.perf_counter()
    batch = reader.parse_file(path, "nt", {"source": f"rdf:{Path(path).name}"})
    wall = time.perf_counter() - t0
    kinds = batch.column("kind")
    counts = {k: int(pc.sum(pc.equal(kinds, k)).as_py() or 0) for k in ("triple", "literal", "entity", "reject")}
    queue.put({"wall_s": round(wall, 2), "records": batch.num_rows, **counts, "peak_rss_mib": _vm_hwm_mib()})


def parse_row(which: str, commit: str, path: Path, lines: int) -> dict:
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_parse_row, args=(which, commit, str(path), q))
    p.start()
    row = q.get()
    p.join()
    row.update(lines=lines, lines_per_s=round(lines / row["wall_s"]) if row["wall_s"] else None)
    print(f"[bench] rdf {which} {path.name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def rdf_rows(args, work: Path) -> dict:
    out: dict = {"old_reader": f"{args.rdf_old_commit}:pipeline/readers/rdf.py (rdflib W3CNTriplesParser, line by line)",
                 "new_reader": "this checkout (pyoxigraph N-Triples parser, blocks of lines)"}
    markg = work / "markg.nt"
    n = write_markg_ntriples(Path(args.data), markg)
    out["markg_nt"] = {"lines": n, "bytes": markg.stat().st_size,
                       "new": parse_row("new", args.rdf_old_commit, markg, n),
                       "old": parse_row("old", args.rdf_old_commit, markg, n)}
    out["markg_nt"]["speedup"] = round(out["markg_nt"]["old"]["wall_s"] / out["markg_nt"]["new"]["wall_s"], 1)
    out["markg_nt"]["ingest_local_new"] = timed_ingest(work / "kg-markg-nt", [f"rdf:{markg}"], "local", None)
    syn = work / f"synthetic-{args.rdf_lines}.nt"
    t0 = time.perf_counter()
    write_synthetic_ntriples(syn, args.rdf_lines)
    row: dict = {"lines": args.rdf_lines, "bytes": syn.stat().st_size, "generate_s": round(time.perf_counter() - t0, 1),
                 "new": parse_row("new", args.rdf_old_commit, syn, args.rdf_lines)}
    if args.rdf_old_max < args.rdf_lines:
        prefix = _prefix(syn, args.rdf_old_max, work / f"synthetic-prefix-{args.rdf_old_max}.nt")
        row["old_on_prefix_only"] = (f"the old parser read the first {args.rdf_old_max:,} lines only "
                                     f"(at its rate {args.rdf_lines:,} lines would take too long for this run)")
        row["prefix"] = {"lines": args.rdf_old_max,
                         "new": parse_row("new", args.rdf_old_commit, prefix, args.rdf_old_max),
                         "old": parse_row("old", args.rdf_old_commit, prefix, args.rdf_old_max)}
        row["prefix"]["speedup"] = round(row["prefix"]["old"]["wall_s"] / row["prefix"]["new"]["wall_s"], 1)
    else:
        row["old"] = parse_row("old", args.rdf_old_commit, syn, args.rdf_lines)
        row["speedup"] = round(row["old"]["wall_s"] / row["new"]["wall_s"], 1)
    out["synthetic_nt"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--triples", type=int, default=10_000_000)
    ap.add_argument("--engines", default="spark,local")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--workdir", default=None, help="scratch dir (default: a temp dir, removed afterwards)")
    ap.add_argument("--out", default=None, help="also write the JSON here (e.g. benchmarks/out/ingest.json)")
    ap.add_argument("--scale", default=None, help="comma-separated triple counts: Spark scale rows (see top)")
    ap.add_argument("--baseline-repo", default=None, help="a checkout whose code gives the baseline scale rows")
    ap.add_argument("--baseline-max", type=int, default=10_000_000, help="largest scale row run for the baseline")
    ap.add_argument("--max-result-size", default="16m", help="spark.driver.maxResultSize of the scale rows")
    ap.add_argument("--driver-memory", default="2g", help="spark.driver.memory of the scale rows (local mode: "
                    "the JVM of the driver and the executors)")
    ap.add_argument("--rdf", action="store_true", help="RDF rows only: N-Triples parse, new vs old reader (see top)")
    ap.add_argument("--rdf-lines", type=int, default=10_000_000, help="lines of the synthetic N-Triples file")
    ap.add_argument("--rdf-old-max", type=int, default=1_000_000, help="most lines the old parser reads")
    ap.add_argument("--rdf-old-commit", default="224c19b", help="the commit whose rdf reader is the old one")
    ap.add_argument("--one-row", default=None, help=argparse.SUPPRESS)  # the scale row's child process
    ap.add_argument("--kg", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_row:
        print(json.dumps(one_scale_row(Path(args.one_row), Path(args.kg), args.master, args.max_result_size or None,
                                       args.driver_memory)))
        return
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    engines = [e for e in args.engines.split(",") if e]

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmkg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"benchmark": "ingest", "cpu_count": os.cpu_count(), "master": args.master,
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        if args.rdf:
            out["benchmark"] = "ingest_rdf"
            out.update(rdf_rows(args, work))
        elif args.scale:
            out.update(scale_rows(args, work))
        else:
            _demo_and_synthetic(args, engines, work, out)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    from benchmarks.report import emit
    emit(out, args.out)


def _demo_and_synthetic(args, engines: list[str], work: Path, out: dict) -> None:
    from mmkg.pipeline.demo_sources import demo_sources
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


if __name__ == "__main__":
    main()
