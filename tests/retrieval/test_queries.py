"""Query builders on the real MARS / ScienceQA files (no encoder needed)."""
from __future__ import annotations

import json

import pytest

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.retrieval.datasets.mars import MARS_MODES, mars_queries
from mmkg.retrieval.datasets import build_queries, parse_dataset_spec
from mmkg.retrieval.datasets.scienceqa import scienceqa_text
from tests.stores import build_markg_store


@pytest.fixture(scope="module")
def full_store(data_dir, tmp_path_factory):
    # labels only: the full MarKG store, no vectors (built in seconds)
    return build_markg_store(data_dir, tmp_path_factory.mktemp("queries") / "kg")


def _labels(data_dir):
    rows = (data_dir / "markg/MarKG/entity2text.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) for line in rows)


def test_mars_dev_queries_name_example_pair_and_question(full_store, data_dir):
    qs = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=full_store, split="dev")
    assert (qs.dataset, qs.split, len(qs.queries)) == ("mars", "dev", 1020)  # README count
    labels = _labels(data_dir)
    raw = json.loads((data_dir / "markg/MARS/dev.json").read_text().splitlines()[0])
    q = qs.queries[0]
    (eh, et), eq = raw["example"], raw["question"]
    assert q.text == f"{labels[eh]} is to {labels[et]} as {labels[eq]} is to ?"
    assert q.entity_keys == [eq] and q.image_paths == []
    assert q.fields["answer"] == raw["answer"] and q.fields["relation"] == raw["relation"]
    assert q.fields["mode"] == raw["mode"]
    assert q.fields["answer_entity"] == int(full_store.entity_ids([raw["answer"]])[0]) >= 0
    assert len({x.query_id for x in qs.queries}) == 1020


def test_mars_image_roles_follow_the_mode_when_the_encoder_sees_images(full_store, data_dir, tmp_path):
    # No MARS instance uses Q1501 / Q6574, the two entities with images here: pose analogies with them.
    (tmp_path / "images").symlink_to(data_dir / "markg/MARS/images")
    rows = [{"example": ["Q1501", "Q6574"], "question": "Q1501", "answer": "Q6574", "relation": "P31", "mode": m}
            for m in (0, 1, 2)]
    (tmp_path / "probe.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    qs = mars_queries(tmp_path / "probe.json", store=full_store, with_images=True)
    first = lambda k: str(sorted((tmp_path / "images" / k).iterdir())[0])  # noqa: E731
    zone = _labels(data_dir)["Q6574"]
    for q in qs.queries:
        roles = MARS_MODES[q.fields["mode"]]
        assert q.image_paths == [first(k) for k, role in zip(("Q1501", "Q6574", "Q1501"), roles)
                                              if role == "image"]
    assert qs.queries[0].text == f"{_labels(data_dir)['Q1501']} is to {zone} as this image is to ?"
    assert qs.queries[1].text == f"this image is to this image as {_labels(data_dir)['Q1501']} is to ?"
    text_only = mars_queries(tmp_path / "probe.json", store=full_store, with_images=False)
    assert not any(q.image_paths for q in text_only.queries)
    assert "this image" not in text_only.queries[2].text


def test_scienceqa_test_split_carries_the_model_fields(data_dir):
    qs = build_queries(f"scienceqa:{data_dir / 'scienceqa'}", split="test", with_images=True)
    assert len(qs.queries) == 50  # README: 50 test problems in the subset
    by_id = {q.query_id: q for q in qs.queries}
    q23 = by_id["23"]
    assert q23.image_paths == [str(data_dir / "scienceqa/images/test/23/image.png")]
    assert q23.fields["image_path"] == q23.image_paths[0] and q23.fields["image"] == "image.png"
    assert "(A) bilberry (B) mushroom" in q23.text and "Context: Below is a food web" in q23.text
    assert {"question", "choices", "answer", "hint", "subject", "grade"} <= set(q23.fields)
    no_file = [q for q in qs.queries if q.fields["image"] and q.query_id != "23"]
    assert no_file and all(q.fields["image_path"] is None and not q.image_paths for q in no_file)
    assert scienceqa_text({"question": "Q?", "choices": ["a", "b"], "hint": ""}) == "Question: Q?\nOptions: (A) a (B) b"


def test_jsonl_queries_and_bad_specs(tmp_path, data_dir):
    img = data_dir / "scienceqa/images/test/23/image.png"
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"id": 1, "text": "pool", "entities": ["Q1501"]}) + "\n\n"
                 + json.dumps({"id": "b", "text": "food web", "image": str(img)}) + "\n")
    qs = build_queries(f"jsonl:{f}", with_images=True)
    assert [q.query_id for q in qs.queries] == ["1", "b"]
    assert qs.queries[0].entity_keys == ["Q1501"] and qs.queries[1].image_paths == [str(img)]
    assert qs.split == "q"
    # issue 7: a bad line is one reject (location, reason), the other lines still make queries
    f.write_text('{"text": "no id"}\n' + json.dumps({"id": "ok", "text": "fine"}) + "\n")
    qs = build_queries(f"jsonl:{f}")
    assert [q.query_id for q in qs.queries] == ["ok"]
    assert [r["location"] for r in qs.rejects] == [f"{f}:1"] and "KeyError: 'id'" in qs.rejects[0]["reason"]
    with pytest.raises(ConfigError, match="NAME:PATH"):
        parse_dataset_spec("scienceqa")
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        parse_dataset_spec(f"imagenet:{tmp_path}")
    with pytest.raises(KGStoreError, match="does not exist"):
        parse_dataset_spec(f"mars:{tmp_path / 'nope'}")
