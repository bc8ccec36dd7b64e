"""The persistent SPARQL store against the rdflib path it replaces, in one run (issue 30).

1. The demo KG: every demo source ingested (local engine; no embeddings: SPARQL needs none), or
   `--kg DIR` to reuse one.
2. Store build time for the demo KG (a fresh subprocess: wall seconds and peak RSS).
3. One-shot `mmkg sparql` wall time (a subprocess per call, as an analyst runs it) for a count by
   relation and a 2-hop pattern from one entity, after the store exists; and the rdflib baseline
   in the same run: the same queries through `mmkg.kg_store.rdf.sparql_page` (what `mmkg sparql` did
   before: build the in-memory graph of the whole KG, then query), also one subprocess per call.
4. A synthetic KG of `--synthetic` triples (random h/r/t over 10 % as many entities, labelled),
   written straight into a store: SPARQL store build time and peak RSS.
5. `/sparql` under `--clients` concurrent loopback clients for `--seconds`: errors, p50/p95/p99.

Writes benchmarks/out/sparql.json. `python benchmarks/sparql.py [--kg DIR] [--synthetic 10000000]`.
The machine is shared (2 cores, other jobs running): figures are wall times under that load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "out" / "sparql.json"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

QUERIES = {
    "count_by_relation": "SELECT ?p (COUNT(*) AS ?n) WHERE { ?s ?p ?o } GROUP BY ?p ORDER BY DESC(?n)",
    "two_hop_from_berlin": "SELECT ?p1 ?mid ?p2 ?end WHERE { wd:Q64 ?p1 ?mid . ?mid ?p2 ?end }",
}
LOAD_QUERIES = [
    QUERIES["two_hop_from_berlin"],
    'SELECT ?e ?d WHERE { ?e rdfs:label "zebra" . OPTIONAL { ?e schema:description ?d } }',
    "SELECT ?t (COUNT(*) AS ?n) WHERE { ?s wdt:P31 ?t } GROUP BY ?t ORDER BY DESC(?n) LIMIT 10",
    "SELECT ?c ?l WHERE { ?c wdt:P17 wd:Q183 ; rdfs:label ?l } LIMIT 50",
]
GOALS = {"count_by_relation_s": 0.5, "two_hop_s": 0.3, "demo_build_s": 60.0}


def run_rss(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) through os.wait4 (the child's own rusage)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[:4]} failed: {err.read().decode()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def build_demo(kg: Path, data: Path) -> dict:
    from mmkg.pipeline.demo_sources import demo_sources
    from mmkg.pipeline.ingest import ingest
    t0 = time.perf_counter()
    ingest(kg, demo_sources(data), engine="local")
    return {"ingest_s": round(time.perf_counter() - t0, 1)}


BUILD = ("import json, sys; from mmkg.kg_store.sparql_store import build_sparql_store; "
         "m = build_sparql_store(sys.argv[1], force=True); print(json.dumps(m))")


def build_store(kg: Path) -> dict:
    wall, rss, out = run_rss([sys.executable, "-c", BUILD, str(kg)])
    meta = json.loads(out)
    return {"wall_s": round(wall, 2), "build_s": meta["seconds"], "peak_rss_mib": round(rss),
            "statements": meta["statements"], "nt_bytes": meta["nt_bytes"], "store_bytes": meta["bytes"]}


RDFLIB = ("import sys; from kg_store import open_store, rdf; "
          "a = rdf.sparql_page(open_store(sys.argv[1]), sys.argv[2], limit=100000); print(len(a.rows))")


def one_shot(kg: Path, repeats: int, baseline_repeats: int) -> dict:
    out = {}
    for name, q in QUERIES.items():
        ours, rows = [], None
        for _ in range(repeats):
            wall, _, text = run_rss([sys.executable, "-m", "mmkg.jobs", "sparql", "--kg", str(kg), "--json",
                                       "--limit", "100000", q])
            ours.append(wall)
            rows = len(json.loads(text)["rows"])
        theirs, their_rows = [], None
        for _ in range(baseline_repeats):
            wall, rss, text = run_rss([sys.executable, "-c", RDFLIB, str(kg), q])
            theirs.append((wall, rss))
            their_rows = int(text.strip())
        out[name] = {"rows": rows, "rdflib_rows": their_rows,
                     "oxigraph_wall_s": {"median": round(statistics.median(ours), 3), "min": round(min(ours), 3),
                                         "max": round(max(ours), 3), "runs": len(ours)},
                     "rdflib_wall_s": {"median": round(statistics.median(w for w, _ in theirs), 2),
                                       "min": round(min(w for w, _ in theirs), 2), "runs": len(theirs)},
                     "rdflib_peak_rss_mib": round(max(r for _, r in theirs))}
        out[name]["speedup"] = round(out[name]["rdflib_wall_s"]["median"] / out[name]["oxigraph_wall_s"]["median"], 1)
    # the same process with nothing but the interpreter, the CLI import and the fork: what one-shot costs anyway
    floor = [run_rss([sys.executable, "-m", "mmkg.jobs", "sparql", "--kg", str(kg), "ASK { wd:Q64 ?p ?o }"])[0]
             for _ in range(repeats)]
    out["ask_floor_wall_s"] = round(statistics.median(floor), 3)
    return out


def synthetic_kg(root: Path, n_triples: int, seed: int = 0) -> dict:
    """Random triples over n/10 entities and 500 relations, every entity and relation labelled."""
    import numpy as np
    import pyarrow as pa

    from mmkg.kg_store import KGStore
    rng = np.random.default_rng(seed)
    n_ent, n_rel = max(10, n_triples // 10), 500
    h = rng.integers(0, n_ent, n_triples, dtype=np.int64)
    r = rng.integers(0, n_rel, n_triples, dtype=np.int64)
    t = rng.integers(0, n_ent, n_triples, dtype=np.int64)
    key = np.unique((h * n_rel + r) * n_ent + t)  # distinct (RDF keeps a statement once)
    t, hr = key % n_ent, key // n_ent
    h, r = hr // n_rel, hr % n_rel
    ids = np.arange(n_ent)
    ents = pa.table({"id": ids, "key": pa.array([f"S{i}" for i in range(n_ent)]),
                     "label": pa.array([f"entity {i}" for i in range(n_ent)]), "source": ["synthetic"] * n_ent})
    rels = pa.table({"id": np.arange(n_rel), "key": [f"R{i}" for i in range(n_rel)],
                     "label": [f"relation {i}" for i in range(n_rel)], "source": ["synthetic"] * n_rel})
    tri = pa.table({"id": np.arange(key.size), "h": h, "r": r, "t": t})
    with KGStore.writer(root) as w:
        for name, table in (("entities", ents), ("relations", rels), ("triples", tri)):
            w.write_table(name, table)
        w.commit(bump_version=True)
    return {"triples": int(key.size), "entities": n_ent, "relations": n_rel}


def load_test(kg: Path, clients: int, seconds: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "mmkg.jobs", "serve", "--kg", str(kg), "--port", "0"], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        while line and "serving" not in line:
            line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0) + "sparql"
        lat: list[list[float]] = [[] for _ in LOAD_QUERIES]
        errors: list[str] = []
        stop = time.monotonic() + seconds
        lock = threading.Lock()

        def client(k: int) -> None:
            i = k
            while time.monotonic() < stop:
                qi = i % len(LOAD_QUERIES)
                i += 1
                req = urllib.request.Request(f"{url}?query={urllib.parse.quote(LOAD_QUERIES[qi])}",
                                             headers={"Accept": "application/sparql-results+json"})
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        json.loads(r.read())
                        ok = r.status == 200
                except Exception as e:  # noqa: BLE001 - every failure is counted, whatever it is
                    ok = False
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}"[:200])
                dt = time.perf_counter() - t0
                if ok:
                    with lock:
                        lat[qi].append(dt)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    every = sorted(x for per in lat for x in per)

    def pct(xs: list[float], p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 1) if xs else None

    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(every) + len(errors),
            "errors": len(errors), "error_samples": errors[:5], "throughput_rps": round(len(every) / elapsed, 1),
            "latency_ms": {"p50": pct(every, 50), "p95": pct(every, 95), "p99": pct(every, 99),
                           "max": round(every[-1] * 1000, 1) if every else None},
            "per_query_p95_ms": {q[:60]: pct(sorted(x), 95) for q, x in zip(LOAD_QUERIES, lat)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--kg", default=None, help="a demo KG to reuse (default: ingest one into a temp dir)")
    ap.add_argument("--synthetic", type=int, default=10_000_000, help="triples of the synthetic KG (0: skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline-repeats", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    import pyoxigraph
    import rdflib
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "note": "shared 2-core machine, other jobs running during the run",
                                "loadavg_start": os.getloadavg()},
                    "versions": {"pyoxigraph": pyoxigraph.__version__, "rdflib": rdflib.__version__},
                    "goals": GOALS, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = Path(tempfile.mkdtemp(prefix="bench-sparql-"))
    try:
        kg = Path(args.kg) if args.kg else tmp / "demo-kg"
        if not args.kg:
            result["demo_ingest"] = build_demo(kg, Path(args.data))
        result["demo_build"] = build_store(kg)
        print(json.dumps({"demo_build": result["demo_build"]}), flush=True)
        result["one_shot"] = one_shot(kg, args.repeats, args.baseline_repeats)
        print(json.dumps({"one_shot": result["one_shot"]}), flush=True)
        result["load_test"] = load_test(kg, args.clients, args.seconds)
        print(json.dumps({"load_test": result["load_test"]}), flush=True)
        if args.synthetic:
            syn = tmp / "synthetic-kg"
            t0 = time.perf_counter()
            result["synthetic"] = synthetic_kg(syn, args.synthetic)
            result["synthetic"]["write_tables_s"] = round(time.perf_counter() - t0, 1)
            result["synthetic"]["build"] = build_store(syn)
            print(json.dumps({"synthetic": result["synthetic"]}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    one = result["one_shot"]
    result["goals_met"] = {
        "count_by_relation": one["count_by_relation"]["oxigraph_wall_s"]["median"] <= GOALS["count_by_relation_s"],
        "two_hop": one["two_hop_from_berlin"]["oxigraph_wall_s"]["median"] <= GOALS["two_hop_s"],
        "demo_build": result["demo_build"]["wall_s"] <= GOALS["demo_build_s"],
        "load_test_errors": result["load_test"]["errors"] == 0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["goals_met"]))


if __name__ == "__main__":
    main()
