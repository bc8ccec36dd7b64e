"""One definition of which MARS entity is shown as an image, per mode, shared by the query builder
and the model's task: the image the model sees is the image of the entity it is aligned with.

Real MARS dev rows (one per mode) and real entity images; every entity of those rows is given
its own image file, so a wrong pairing shows up as a path of another entity."""
from __future__ import annotations

import json
import shutil

import pytest

from mmkg.model.kg_text import KGText
from mmkg.model.tasks import MarsTask
from mmkg.retrieval.datasets.mars import MARS_MODES, mars_image_slots, mars_model_image_slot
from mmkg.retrieval.datasets import build_queries
from tests.stores import build_markg_store

#: the image each mode gives a single-image model: question for modes 0 and 2, example head for 1
EXPECTED_MODEL_SLOT = {0: 2, 1: 0, 2: 2}


@pytest.fixture(scope="module")
def mars(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mars_roles")
    store = build_markg_store(data_dir, tmp / "kg")
    rows = [json.loads(line) for line in (data_dir / "markg/MARS/dev.json").read_text().splitlines()]
    picked = [next(r for r in rows if r["mode"] == m) for m in sorted(MARS_MODES)]
    real = sorted((data_dir / "entity_images/imagenet_markg_overlap/images").glob("*.JPEG"))
    keys = sorted({k for r in picked for k in (*r["example"], r["question"])})
    for key, src in zip(keys, real):  # a distinct real image per entity key
        (tmp / "MARS/images" / key).mkdir(parents=True)
        shutil.copy(src, tmp / "MARS/images" / key / f"{key}.jpg")
    (tmp / "MARS/dev.json").write_text("".join(json.dumps(r) + "\n" for r in picked))
    qs = build_queries(f"mars:{tmp / 'MARS'}", store=store, split="dev", with_images=True)
    return store, picked, qs


def test_slots_per_mode():
    assert {m: mars_image_slots(m) for m in MARS_MODES} == {0: (2,), 1: (0, 1), 2: (0, 2)}
    assert {m: mars_model_image_slot(m) for m in MARS_MODES} == EXPECTED_MODEL_SLOT
    assert mars_model_image_slot(7) is None  # an unknown mode shows no image


@pytest.mark.parametrize("mode", sorted(MARS_MODES))
def test_query_images_follow_the_mode(mars, mode):
    store, picked, qs = mars
    row, q = picked[mode], qs.queries[mode]
    entities = (*row["example"], row["question"])
    shown = [entities[s] for s in mars_image_slots(mode)]
    assert q.fields["image_entities"] == store.entity_ids(shown).tolist()
    assert q.image_paths == [str(q_path) for q_path in q.fields["image_paths"]]
    assert [p.rsplit("/", 1)[-1] for p in q.image_paths] == [f"{k}.jpg" for k in shown]
    assert q.text.count("this image") == len(shown)


@pytest.mark.parametrize("mode", sorted(MARS_MODES))
def test_model_image_is_the_aligned_entity(mars, mode):
    store, picked, qs = mars
    row, q = picked[mode], qs.queries[mode]
    kg = KGText.from_store(store)
    ex = MarsTask().make_example({"query_id": q.query_id, **q.fields}, kg, mode)
    key = (*row["example"], row["question"])[EXPECTED_MODEL_SLOT[mode]]
    assert ex.align_entity == kg.id_of(key) >= 0
    assert ex.image is not None and ex.image.name == f"{key}.jpg"  # that entity's own image, no other


@pytest.mark.parametrize("mode", sorted(MARS_MODES))
def test_image_entities_image_gives_image_roles_only_as_images(mars, mode):
    """`image_entities="image"`: the labels of the entities the mode shows as images leave the prompt;
    the model's own image is "this image", a further image role "another image"; text roles keep labels."""
    from mmkg.model.tasks import MARS_IMAGE_WORDS
    store, _, qs = mars
    q = qs.queries[mode]
    kg = KGText.from_store(store)
    labelled = MarsTask().make_example({"query_id": q.query_id, **q.fields}, kg, mode)
    imaged = MarsTask(image_entities="image").make_example({"query_id": q.query_id, **q.fields}, kg, mode)
    names = [*q.fields["example_labels"], q.fields["question_label"]]
    assert all(n in labelled.prompt for n in names)  # the default: every entity by its label
    shown = mars_image_slots(mode)
    assert imaged.meta["hidden_slots"] == list(shown)
    text_names = {n for s, n in enumerate(names) if s not in shown}
    for slot, name in enumerate(names):
        if slot not in shown:
            assert name in imaged.prompt
        elif name not in text_names:  # (an entity may hold an image role and a text role: mode 1's first dev row)
            assert f" {name} " not in f" {imaged.prompt} "
    assert imaged.prompt.count(MARS_IMAGE_WORDS[0]) == 1  # the one image the model is given
    assert imaged.prompt.count(MARS_IMAGE_WORDS[1]) == len(shown) - 1
    assert imaged.image == labelled.image and imaged.align_entity == labelled.align_entity
    with pytest.raises(ValueError, match="image_entities"):
        MarsTask(image_entities="both")
