"""The embed stage on the real MarKG with the real MiniLM encoder, and `mmkg search` on top."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mmkg.jobs.cli import cli
from mmkg.kg_store.vectors import load_vectors, vector_meta
from mmkg.pipeline.embed import labelled_text, plan_tasks, triple_text
from mmkg.pipeline.encoders import resolve_encoder
from mmkg.retrieval.index import load_index
from tests.pipeline.embedded import MINILM_TRIPLES, markg_minilm_store


@pytest.fixture(scope="module")
def store(data_dir, tmp_path_factory):
    return markg_minilm_store(data_dir, tmp_path_factory)


def test_text_rules():
    assert labelled_text("zebra", "species of mammal") == "zebra: species of mammal"
    assert labelled_text("zebra", "") == labelled_text("zebra", "Zebra") == "zebra"
    assert labelled_text(None, "a thing") == "a thing"
    assert triple_text("Paris", "capital of", "France") == "Paris, capital of, France"


def test_vectors_committed(store):
    meta = vector_meta(store, "minilm")
    assert meta["encoder"] == "minilm" and meta["dim"] == 384 and meta["dtype"] == "float32"
    assert {k: v["count"] for k, v in meta["kinds"].items()} == {
        "entity": 11_292, "relation": 192, "triple": MINILM_TRIPLES}
    assert set(meta["rules"]) == {"entity", "relation", "triple", "fusion"}
    for kind, n in (("entity", 11_292), ("relation", 192), ("triple", MINILM_TRIPLES)):
        matrix, ids = load_vectors(store, "minilm", kind)
        assert matrix.shape == (n, 384) and np.array_equal(ids, np.arange(n))
        assert np.all(np.isfinite(matrix))
        assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-4)
    assert store.verify() == []
    assert not any((store.root / "work" / "embed" / "minilm").iterdir())  # scratch removed after commit
    run = [s for s in store.manifest["stages"] if s["stage"] == "embed"][-1]
    assert run["counts"] == {"entity": 11_292, "relation": 192, "triple": MINILM_TRIPLES}


def test_exact_label_finds_the_entity(store):
    labels = store.table("entities", ["label"])["label"].to_pylist()
    sample = np.random.default_rng(0).choice(len(labels), 500, replace=False)
    q = resolve_encoder("minilm").encode_text([labels[i] for i in sample])
    _, ids = load_index(store, "minilm", "entity").search(q, 1)
    # MiniLM is uncased: an entity whose label differs only in case scores the same.
    hit = [labels[top].lower() == labels[i].lower() for top, i in zip(ids[:, 0], sample)]
    assert np.mean(hit) >= 0.95, np.mean(hit)


def test_triple_text_finds_the_triple(store):
    texts = plan_tasks(store, with_images=False, limit={"triple": MINILM_TRIPLES})[-1].items
    sample = np.random.default_rng(1).choice(len(texts), 200, replace=False)
    q = resolve_encoder("minilm").encode_text([texts[i] for i in sample])
    _, ids = load_index(store, "minilm", "triple").search(q, 5)
    # MarKG has up to 6 triples with one text (homonym entities); when more than 5 share the text,
    # the top 5 are all ties of equal score and need not include this one.
    found = [i in row or all(texts[j] == texts[i] for j in row) for i, row in zip(sample, ids)]
    assert all(found), [texts[i] for i, f in zip(sample, found) if not f]


def test_cli_search_json(store):
    runner = CliRunner()
    res = runner.invoke(cli, ["search", "--kg", str(store.root), "--encoder", "minilm", "--text", "zebra",
                              "--k", "3", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["encoder"] == "minilm" and out["what"] == "entities" and len(out["hits"]) == 3
    assert out["hits"][0]["label"].lower() == "zebra" and out["hits"][0]["key"].startswith("Q")
    assert out["hits"][0]["score"] >= out["hits"][1]["score"]
    texts = plan_tasks(store, with_images=False, limit={"triple": MINILM_TRIPLES})[-1].items
    res = runner.invoke(cli, ["search", "--kg", str(store.root), "--encoder", "minilm", "--text", texts[7],
                              "--what", "triples", "--k", "5", "--json"], catch_exceptions=False)
    hits = json.loads(res.output)["hits"]
    assert 7 in [h["id"] for h in hits]
    assert {"head", "relation", "tail"} <= set(hits[0]) and hits[0]["label"].count(", ") >= 2


def test_cli_user_errors(store):
    runner = CliRunner()
    res = runner.invoke(cli, ["search", "--kg", str(store.root), "--encoder", "tiny-clip", "--text", "x"])
    assert res.exit_code != 0 and "no vectors for encoder 'tiny-clip'" in str(res.exception)
    res = runner.invoke(cli, ["search", "--kg", str(store.root), "--encoder", "minilm"])
    assert res.exit_code == 2 and "exactly one of --text or --image" in res.output
