"""One implementation per stage: `mmkg embed`/`index`/`retrieve` and the `mmkg run` DAG, given the
same settings on copies of the same store, write byte-identical vectors, FAISS files and shard
parts, and the same reports (timings aside). Real MarKG slice, the real MiniLM encoder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmkg.kg_store import open_store
from mmkg.kg_store.hashing import sha256_file
from tests.jobs.test_run_fixtures import MARS_LIMIT, SCIENCEQA_LIMIT, make_sources, pipeline_job

pytestmark = pytest.mark.faiss


def _untimed(obj):
    """A report without its wall-clock fields (the only thing two equal runs may differ in)."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _cli(*args: str) -> str:
    from mmkg.jobs.cli import cli
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def pair(data_dir, tmp_path_factory):
    """(DAG store, CLI store): one ingest, copied, then each path runs embed → index → retrieve."""
    from mmkg.jobs.runner import run_pipeline

    tmp = tmp_path_factory.mktemp("parity")
    src = make_sources(data_dir, tmp / "src")
    dag, cli = tmp / "dag", tmp / "cli"
    job = pipeline_job(data_dir, dag, [f"markg:{src['base']}"])
    run_pipeline(**job, only="ingest", progress=False)
    shutil.copytree(dag, cli)
    report = run_pipeline(**job, progress=False)
    assert [s.status for s in report.stages if s.name in ("embed", "index", "retrieve")] == ["ran"] * 3

    # the kinds the DAG embeds for this configuration (the anchored retriever: no triple vectors)
    _cli("embed", "--kg", str(cli), "--encoder", "minilm", "--batch-size", "32", "--no-progress",
         "--kinds", "entity,relation,image")
    _cli("index", "--kg", str(cli), "--encoder", "minilm")
    for spec, split, limit in ((f"mars:{data_dir}/markg/MARS", "dev", MARS_LIMIT),
                               (f"scienceqa:{data_dir}/scienceqa", "test", SCIENCEQA_LIMIT)):
        _cli("retrieve", "--kg", str(cli), "--encoder", "minilm", "--dataset", spec, "--split", split,
             "--limit", str(limit), "--seed-triples", "10", "--triples", "10")
    return dag, cli


def _files(root: Path, sub: str, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted((root / sub).rglob(pattern))}


def test_embed_vectors_are_byte_identical(pair):
    dag, cli = pair
    a, b = _files(dag, "vectors/minilm", "*.npy"), _files(cli, "vectors/minilm", "*.npy")
    assert len(a) == 4 and a == b  # entity and relation matrices and their id arrays (text encoder, anchored)
    meta_a, meta_b = (_untimed(open_store(r).artifact("vectors/minilm")) for r in (dag, cli))
    assert meta_a == meta_b


def test_index_files_and_meta_are_identical(pair):
    dag, cli = pair
    a, b = _files(dag, "indexes/minilm", "*.faiss"), _files(cli, "indexes/minilm", "*.faiss")
    assert set(a) == {"indexes/minilm/entity.faiss"} and a == b
    assert _files(dag, "indexes/minilm", "*.ids.npy") == _files(cli, "indexes/minilm", "*.ids.npy")
    for kind in ("entity",):
        ma, mb = (_untimed(json.loads((r / f"indexes/minilm/{kind}.meta.json").read_text())) for r in (dag, cli))
        assert ma == mb and ma["self_check"]["recall"] == 1.0


def test_retrieve_shards_and_reports_are_identical(pair):
    dag, cli = pair
    a, b = _files(dag, "subgraphs", "part-*.parquet"), _files(cli, "subgraphs", "part-*.parquet")
    assert {Path(p).parts[1] for p in a} == {"mars", "scienceqa"} and a == b
    for d in sorted({Path(p).parents[1] for p in a}):  # <shard set>/parts/part-*.parquet
        for report in ("quality.json", "rejects.json"):
            fa, fb = dag / d / report, cli / d / report
            assert fa.exists() == fb.exists()
            if fa.exists():
                assert _untimed(json.loads(fa.read_text())) == _untimed(json.loads(fb.read_text()))
        if d.parts[1] == "mars":  # the DAG ranks to N = 20 for the report, as `mmkg retrieve` does
            hits = json.loads((dag / d / "quality.json").read_text())["hits"]
            assert set(hits) == {"10", "20"}
