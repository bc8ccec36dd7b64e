"""mmkg.pipeline.encoders: every registered encoder family through one template (PyKEEN K4)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.pipeline.encoders import encoder_registry, parse_encoder_name, resolve_encoder

#: one offline-runnable name per registered family (open_clip without a tag = random init)
CASES = {"tiny-clip": "tiny-clip", "minilm": "minilm", "open_clip": "open_clip:ViT-S-32"}
TEXTS = ["zebra", "a striped African horse", "stock market crash", "Albert Einstein"]


@pytest.fixture(scope="module")
def images(data_dir) -> list[Image.Image]:
    files = sorted((data_dir / "entity_images" / "imagenet_markg_overlap" / "images").glob("*.JPEG"))[:2]
    files += [data_dir / "markg" / "MARS" / "images" / "Q1501" / "2.image.jpg.png"]
    return [Image.open(f) for f in files]


def test_every_family_has_a_case():
    assert sorted(encoder_registry.names()) == sorted(CASES)


@pytest.mark.parametrize("family", sorted(CASES))
def test_encoder_template(family, images):
    enc = resolve_encoder(CASES[family])
    assert enc.name == CASES[family] and enc.slug == CASES[family].replace(":", "__")
    assert enc.describe()["dim"] == enc.dim > 0
    v = enc.encode_text(TEXTS)
    assert v.shape == (len(TEXTS), enc.dim) and v.dtype == np.float32
    assert np.all(np.isfinite(v)) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.array_equal(v, enc.encode_text(TEXTS))  # deterministic
    assert np.allclose(v[1], enc.encode_text([TEXTS[1]])[0], atol=1e-5)  # batch-independent
    assert enc.encode_text([]).shape == (0, enc.dim)
    if enc.has_vision:
        im = enc.encode_images(images)
        assert im.shape == (len(images), enc.dim) and np.all(np.isfinite(im))
        assert np.allclose(np.linalg.norm(im, axis=1), 1, atol=1e-5)
    else:
        with pytest.raises(KGStoreError, match="no vision tower"):
            enc.encode_images(images)


def test_resolve_is_cached_and_names_parse():
    assert resolve_encoder("tiny-clip") is resolve_encoder("tiny-clip")
    assert parse_encoder_name("open_clip:ViT-B-32:openai") == ("open_clip", "ViT-B-32:openai")
    assert parse_encoder_name("open_clip:ViT-B-32:/w/model.bin") == ("open_clip", "ViT-B-32:/w/model.bin")


def test_tiny_clip_weights_are_seeded():
    from mmkg.pipeline.encoders.clip import TINY_CLIP_CONFIG, TINY_CLIP_SEED, OpenCLIPEncoder
    a = OpenCLIPEncoder(name="tiny-clip", model="tiny-clip", model_cfg=TINY_CLIP_CONFIG, seed=TINY_CLIP_SEED)
    assert np.array_equal(a.encode_text(TEXTS), resolve_encoder("tiny-clip").encode_text(TEXTS))


def test_minilm_is_the_real_sentence_encoder():
    v = resolve_encoder("minilm").encode_text(TEXTS)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1  # zebra is closer to a striped horse than to stocks
    from mmkg.pipeline.encoders.minilm import minilm_path
    assert (minilm_path() / "model.safetensors").stat().st_size > 80_000_000


def test_unknown_names_are_user_errors():
    with pytest.raises(ConfigError, match="unknown encoder 'clip-xl'.*minilm"):
        resolve_encoder("clip-xl")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        resolve_encoder("open_clip:ViT-Q-99")
    with pytest.raises(ConfigError, match="open_clip:<model>"):
        resolve_encoder("open_clip")
    with pytest.raises(KGStoreError, match="cannot load open_clip"):
        resolve_encoder("open_clip:ViT-S-32:" + str(Path("/nonexistent/weights.bin")))
