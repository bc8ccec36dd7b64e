"""The read-only commands start fast (issue 18): `mmkg search`, `entity`, `neighbors`, `stats` and
`sparql` import neither torch nor Spark. Each runs in a fresh interpreter (`mmkg.jobs.cli.main` with
its argv), which then reports what `sys.modules` holds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stores import build_markg_store

REPO = Path(__file__).resolve().parents[2]

#: runs `mmkg <args>` in-process, then prints the heavy modules it loaded on the last stderr line
WRAPPER = r"""
import json, sys, time
t0 = time.perf_counter()
sys.argv = ["mmkg"] + json.loads(sys.argv[1])
from mmkg.jobs.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
heavy = [m for m in ("torch", "pyspark", "transformers", "open_clip", "torchvision") if m in sys.modules]
print("MMKG-MODULES " + json.dumps({"heavy": heavy, "seconds": round(time.perf_counter() - t0, 2)}),
      file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory) -> Path:
    """Real MarKG with minilm vectors (first 256 rows per kind) and indexes. Embedding with the
    default runtime also exports and verifies the ONNX graph the query path then uses."""
    pytest.importorskip("onnxruntime")
    from mmkg.pipeline.embed import embed_store
    from mmkg.retrieval.index import build_store_indexes
    root = tmp_path_factory.mktemp("cli-imports") / "kg"
    build_markg_store(data_dir, root)
    res = embed_store(root, "minilm", threads=2, limit=256, progress=False)
    assert res.meta["encoder_info"]["runtime"] == "onnx"  # the CPU default
    assert res.meta["encoder_info"]["precision"] == "onnx-float32"
    build_store_indexes(root, "minilm", threads=1)
    return root


def run_mmkg(args: list[str]) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MMKG-MODULES ")]
    assert line, proc.stderr
    return proc, json.loads(line[-1].split(" ", 1)[1])


@pytest.mark.parametrize("args", [
    ["search", "--encoder", "minilm", "--text", "zebra", "--k", "3"],
    ["search", "--encoder", "minilm", "--text", "zebra, color, white", "--what", "triples", "--json"],
    ["entity", "zebra"],
    ["neighbors", "zebra", "--limit", "3"],
    ["stats", "--top", "3"],
    ["sparql", "SELECT ?s WHERE { ?s ?p ?o } LIMIT 2"],
], ids=["search", "search-triples", "entity", "neighbors", "stats", "sparql"])
def test_read_only_commands_import_neither_torch_nor_spark(kg, args):
    proc, report = run_mmkg(args + ["--kg", str(kg)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "torch" not in report["heavy"] and "pyspark" not in report["heavy"], report
    assert report["heavy"] == [], report  # nor transformers / open_clip, which would pull torch in


def test_search_finds_an_entity_by_its_label_through_the_onnx_query_path(kg):
    from mmkg.kg_store import open_store
    label = open_store(kg).table("entities", ["label"])["label"].to_pylist()[17]
    proc, report = run_mmkg(["search", "--kg", str(kg), "--encoder", "minilm", "--text", label, "--json"])
    assert proc.returncode == 0 and report["heavy"] == [], proc.stderr
    hits = json.loads(proc.stdout)["hits"]
    assert hits[0]["label"].lower() == label.lower() and hits[0]["score"] > 0.5
    assert len(hits) == 10
