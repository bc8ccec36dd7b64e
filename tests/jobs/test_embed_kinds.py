"""Embed what is used: the `mmkg run` DAG embeds only the vector kinds its stages need (the default
anchored retriever needs no triple vectors), and `mmkg search --what triples` on such a store embeds
them then, from the same vector cache. Real MarKG triples, the real MiniLM encoder."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmkg.kg_store import open_store
from mmkg.kg_store.vectors import vector_meta
from tests.jobs.test_run_fixtures import make_sources, pipeline_job

pytestmark = pytest.mark.faiss


@pytest.fixture(scope="module")
def anchored_run(data_dir, tmp_path_factory):
    from mmkg.jobs.runner import run_pipeline
    tmp = tmp_path_factory.mktemp("embed-kinds")
    src = make_sources(data_dir, tmp / "src")
    kg = tmp / "kg"
    job = pipeline_job(data_dir, kg, [f"markg:{src['base']}"])
    job["retrieve"]["datasets"] = job["retrieve"]["datasets"][:1]  # MARS dev only: the point is the embed stage
    report = run_pipeline(**job, progress=False)
    return kg, report


def test_the_dag_embeds_no_triple_vectors_for_a_config_that_needs_none(anchored_run):
    kg, report = anchored_run
    assert report.status == "ok"
    store = open_store(kg)
    kinds = vector_meta(store, "minilm")["kinds"]
    assert set(kinds) == {"entity", "relation"}  # text encoder: no images; anchored: no triples
    assert kinds["entity"]["count"] == store.num_entities
    embed = next(s for s in report.stages if s.name == "embed")
    assert embed.status == "ran" and not any(k.startswith("triple") for k in embed.counts)
    assert not any(f.startswith("vectors/minilm/triple") for f in store.manifest["files"])
    retrieve = next(s for s in report.stages if s.name == "retrieve")
    assert retrieve.status == "ran" and retrieve.counts["queries"] > 0  # retrieved without triple vectors


def test_search_triples_embeds_them_then_from_the_same_cache(anchored_run):
    from mmkg.jobs.cli import cli
    kg, _ = anchored_run
    before = open_store(kg)
    n_triples = before.count("triples")
    entity_sha = before.manifest["files"]["vectors/minilm/entity.npy"]["sha256"]
    res = CliRunner().invoke(cli, ["search", "--kg", str(kg), "--encoder", "minilm", "--text", "capital city",
                                    "--what", "triples", "--k", "5", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)["hits"]
    assert len(hits) == 5 and all(0 <= h["id"] < n_triples for h in hits)
    after = open_store(kg)
    meta = vector_meta(after, "minilm")
    assert set(meta["kinds"]) == {"entity", "relation", "triple"}
    assert meta["kinds"]["triple"]["count"] == n_triples
    # entities came from the vector cache (nothing re-encoded, the same bytes), only triple texts were new
    assert meta["incremental"]["entity"]["encoded"] == 0
    assert after.manifest["files"]["vectors/minilm/entity.npy"]["sha256"] == entity_sha
    assert meta["incremental"]["triple"]["encoded"] == n_triples
    # a second search finds them there: nothing embedded again
    version = after.manifest.get("stages")
    again = CliRunner().invoke(cli, ["search", "--kg", str(kg), "--encoder", "minilm", "--text", "capital city",
                                      "--what", "triples", "--k", "5", "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["hits"] == hits
    assert open_store(kg).manifest.get("stages") == version
