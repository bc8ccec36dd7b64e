"""The ONNX Runtime path of the encoders (issue 18) on the real MiniLM: same vectors as torch,
export keyed by the model files, int8 with its quality shown, fallback to torch on a bad graph."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmkg.kg_store.errors import MMKGError
from mmkg.kg_store.hashing import sha256_file
from mmkg.pipeline.encoders import resolve_encoder
from mmkg.pipeline.encoders.base import resolve_runtime
from mmkg.pipeline.encoders.minilm import MiniLMEncoder, minilm_path
from mmkg.pipeline.encoders.ort import PROBE_MIN_COSINE, PROBE_TEXTS, probe_quality, top_k_overlap

pytest.importorskip("onnxruntime")


def markg_triple_texts(data_dir: Path, n: int) -> list[str]:
    from mmkg.pipeline.embed import triple_text
    mk = data_dir / "markg" / "MarKG"
    ent = dict(line.split("\t", 1) for line in (mk / "entity2text.txt").read_text().splitlines())
    rel = dict(line.split("\t", 1) for line in (mk / "relation2text.txt").read_text().splitlines())
    rows = [line.split("\t") for line in (mk / "wiki_tuple_ids.txt").read_text().splitlines()[:n]]
    return [triple_text(ent.get(h, h), rel.get(r, r), ent.get(t, t)) for h, r, t in rows]


@pytest.fixture(scope="module")
def torch_minilm():
    return resolve_encoder("minilm", runtime="torch")


@pytest.fixture(scope="module")
def onnx_minilm():
    return resolve_encoder("minilm", runtime="onnx")


def test_runtime_resolution(monkeypatch):
    monkeypatch.delenv("MMKG_ENCODER_RUNTIME", raising=False)
    assert resolve_runtime("auto", "auto", "cpu") == ("onnx", "onnx-float32")  # the CPU default
    assert resolve_runtime("auto", "auto", "cuda") == ("torch", "auto")
    assert resolve_runtime("auto", "float32", "cpu") == ("torch", "float32")  # an explicit torch tag stays torch
    assert resolve_runtime("onnx", "float32", "cpu") == ("onnx", "onnx-float32")
    assert resolve_runtime("auto", "int8", "cpu") == ("onnx", "onnx-int8")
    assert resolve_runtime("auto", "onnx-int8", "cpu") == ("onnx", "onnx-int8")  # tags round-trip (Spark workers)
    with pytest.raises(MMKGError, match="needs the onnx runtime"):
        resolve_runtime("torch", "int8", "cpu")
    with pytest.raises(MMKGError, match="float32 or int8"):
        resolve_runtime("onnx", "float16", "cpu")
    with pytest.raises(MMKGError, match="unknown encoder runtime"):
        resolve_runtime("tensorrt", "auto", "cpu")
    monkeypatch.setenv("MMKG_ENCODER_RUNTIME", "torch")
    assert resolve_runtime("auto", "auto", "cpu") == ("torch", "auto")


def test_tokenizers_package_matches_transformers(data_dir, onnx_minilm, torch_minilm):
    """The ONNX path tokenises with `tokenizers` (no torch); ids must equal transformers'."""
    texts = PROBE_TEXTS + markg_triple_texts(data_dir, 200)
    for lo in range(0, len(texts), 64):
        batch = texts[lo:lo + 64]
        ours = onnx_minilm.prepare_text(batch)
        ref = torch_minilm.prepare_text(batch)
        assert np.array_equal(ours["input_ids"], ref["input_ids"].numpy())
        assert np.array_equal(ours["attention_mask"], ref["attention_mask"].numpy())


def test_onnx_and_torch_give_the_same_vectors(data_dir, onnx_minilm, torch_minilm):
    assert (onnx_minilm.runtime, onnx_minilm.precision) == ("onnx", "onnx-float32")
    assert (torch_minilm.runtime, torch_minilm.precision) == ("torch", "float32")
    texts = markg_triple_texts(data_dir, 512) + PROBE_TEXTS
    a = torch_minilm.encode_texts(texts, batch_size=64)
    b = onnx_minilm.encode_texts(texts, batch_size=64)
    cos = np.sum(a * b, axis=1)
    assert cos.min() >= PROBE_MIN_COSINE, cos.min()
    assert top_k_overlap(a, b) >= 0.99
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    # one text alone (a query), and batches whose padding differs, agree too
    for q in ("zebra", "", texts[7]):
        assert float(torch_minilm.encode_text([q])[0] @ onnx_minilm.encode_text([q])[0]) >= PROBE_MIN_COSINE
    info = onnx_minilm.describe()
    assert info["runtime"] == "onnx" and info["onnx"]["probe"]["min_cosine"] >= PROBE_MIN_COSINE
    assert torch_minilm.describe()["runtime"] == "torch"


def test_runtimes_never_share_a_vector_cache(tmp_path, onnx_minilm, torch_minilm):
    from mmkg.pipeline.vector_cache import VectorCache
    assert VectorCache.for_encoder(tmp_path, onnx_minilm).root != VectorCache.for_encoder(tmp_path, torch_minilm).root


def test_encode_texts_dedupes_and_keeps_input_order(onnx_minilm):
    texts = ["b longer text here", "a", "b longer text here", "", "a", "ccc"]
    seen = []
    v = onnx_minilm.encode_texts(texts, batch_size=2, on_batch=seen.append)
    assert sum(seen) == 4  # four distinct texts encoded, once each
    assert np.array_equal(v[0], v[2]) and np.array_equal(v[1], v[4])
    single = np.concatenate([onnx_minilm.encode_text([t]) for t in texts])
    assert np.min(np.sum(v * single, axis=1)) >= PROBE_MIN_COSINE
    assert onnx_minilm.encode_texts([]).shape == (0, 384)


def test_int8_is_opt_in_and_reports_its_quality(onnx_minilm):
    enc = resolve_encoder("minilm", precision="int8")
    assert (enc.runtime, enc.precision) == ("onnx", "onnx-int8")
    assert "top-10 overlap" in enc.runtime_note and "mean cosine" in enc.runtime_note
    q = enc.describe()["onnx"]["probe"]
    assert 0.8 < q["mean_cosine"] < 1.0 and 0 < q["top10_overlap"] <= 1
    v = enc.encode_text(PROBE_TEXTS)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    got = probe_quality(onnx_minilm.encode_text(PROBE_TEXTS), v)
    assert got["mean_cosine"] > 0.8  # the same model, coarser weights


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory) -> Path:
    src = minilm_path()
    dst = tmp_path_factory.mktemp("minilm-copy") / "model"
    shutil.copytree(src, dst)
    return dst


def test_changed_model_file_invalidates_the_export(model_copy, onnx_cache, onnx_minilm):
    cache = onnx_cache
    # the export of the unchanged model, copied from the default cache (exported there once per
    # machine): a copy of the model finds it by its content digest, so only the changed model
    # below costs an export here (~17 s)
    shutil.copytree(onnx_minilm._onnx.dir, cache / onnx_minilm._onnx.dir.name)
    first = MiniLMEncoder(model_dir=model_copy, cache_dir=cache, runtime="onnx")
    assert first._onnx.dir == cache / onnx_minilm._onnx.dir.name and (first._onnx.dir / "model.onnx").exists()
    assert not first._onnx.exported_now  # reused, not re-exported

    # a touched file with the same bytes keeps the export (the digest is of the content)
    cfg = model_copy / "config.json"
    cfg.write_bytes(cfg.read_bytes())
    assert MiniLMEncoder(model_dir=model_copy, cache_dir=cache, runtime="onnx")._onnx.dir == first._onnx.dir

    # one changed byte of the weights: a new digest, a new export, verified against the new torch model
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1001] ^= 0x01  # inside the last tensor's float data: the file still loads
    weights.write_bytes(bytes(data))
    changed = MiniLMEncoder(model_dir=model_copy, cache_dir=cache, runtime="onnx")
    assert changed._onnx.exported_now and changed._onnx.dir != first._onnx.dir
    assert changed._onnx.quality["ok"]
    exports = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert len(exports) == 2, exports


@pytest.mark.slow  # each case exports MiniLM again (~35 s on a shared CPU)
@pytest.mark.parametrize("damage", ["planted-graph", "truncated-graph"])
def test_a_damaged_or_planted_export_is_never_used(model_copy, onnx_cache, torch_minilm, damage):
    """Issue 32: another graph planted as `model.onnx` (here the int8 one: it loads and runs, with
    other vectors) or a truncated one: the sha256 recorded at export differs, the graph is
    exported again, and the vectors are torch's (the planted graph was used; the truncated one
    was a traceback)."""
    enc = MiniLMEncoder(model_dir=model_copy, cache_dir=onnx_cache, runtime="onnx")
    graph = enc._onnx.dir / "model.onnx"
    if damage == "planted-graph":
        int8 = MiniLMEncoder(model_dir=model_copy, cache_dir=onnx_cache, precision="int8")._onnx.path
        shutil.copyfile(int8, graph)
    else:
        with open(graph, "r+b") as f:
            f.truncate(graph.stat().st_size // 2)
    again = MiniLMEncoder(model_dir=model_copy, cache_dir=onnx_cache, runtime="onnx")
    assert again.runtime == "onnx" and again._onnx.exported_now
    v = again.encode_text(PROBE_TEXTS)
    assert np.min(np.sum(v * torch_minilm.encode_text(PROBE_TEXTS), axis=1)) >= PROBE_MIN_COSINE


def test_a_graph_that_fails_its_probe_falls_back_to_torch(model_copy, onnx_cache):
    cache = onnx_cache  # reuses the export of the tests above when they ran
    enc = MiniLMEncoder(model_dir=model_copy, cache_dir=cache, runtime="onnx")
    assert enc.runtime == "onnx"
    # Replace the torch reference by other vectors (as if the graph computed something else).
    probe = enc._onnx.dir / "probe.npy"
    ref = np.load(probe)
    np.save(probe, np.roll(ref, 1, axis=0))
    (enc._onnx.dir / "verify.json").unlink()
    # ... consistently recorded (a changed file that export.json does not record is exported again)
    info = json.loads((enc._onnx.dir / "export.json").read_text())
    info["files"]["probe.npy"] = sha256_file(probe)
    (enc._onnx.dir / "export.json").write_text(json.dumps(info))
    fallen = MiniLMEncoder(model_dir=model_copy, cache_dir=cache, runtime="onnx")
    assert (fallen.runtime, fallen.precision) == ("torch", "float32")
    assert "does not match torch on the probe" in fallen.runtime_note
    verdicts = json.loads((enc._onnx.dir / "verify.json").read_text())
    assert [v["ok"] for v in verdicts.values()] == [False]
    v = fallen.encode_text(["zebra"])  # and the torch path works
    assert v.shape == (1, 384)


def test_clip_towers_on_onnx_match_torch(data_dir):
    """Both open_clip towers (text: token ids, image: pixels) exported and verified; opt-in."""
    from PIL import Image
    assert resolve_encoder("tiny-clip").runtime == "torch"  # open_clip stays on torch unless asked
    onnx_clip = resolve_encoder("tiny-clip", runtime="onnx")
    torch_clip = resolve_encoder("tiny-clip", runtime="torch")
    assert (onnx_clip.runtime, onnx_clip.precision) == ("onnx", "onnx-float32")
    texts = markg_triple_texts(data_dir, 128) + PROBE_TEXTS
    cos = np.sum(onnx_clip.encode_texts(texts) * torch_clip.encode_texts(texts), axis=1)
    assert cos.min() >= PROBE_MIN_COSINE, cos.min()
    files = sorted((data_dir / "entity_images" / "imagenet_markg_overlap" / "images").glob("*.JPEG"))[:6]
    images = [Image.open(f) for f in files] + [Image.open(data_dir / "markg" / "MARS" / "images" / "Q1501" /
                                                          "2.image.jpg.png")]
    cos = np.sum(onnx_clip.encode_images(images) * torch_clip.encode_images(images), axis=1)
    assert cos.min() >= PROBE_MIN_COSINE, cos.min()
    info = onnx_clip.describe()["onnx"]
    assert info["text"]["probe"]["min_cosine"] >= PROBE_MIN_COSINE
    assert info["image"]["probe"]["min_cosine"] >= PROBE_MIN_COSINE
    # the torch weights were released after verification and come back on demand (mmkg.model.vision)
    assert onnx_clip._model is None and onnx_clip.model.visual is not None


@pytest.mark.spark
def test_spark_workers_run_the_drivers_runtime(spark, data_dir, tmp_path):
    """The precision tag travels to the Spark workers: they resolve the same ONNX graph (int8 here,
    so a worker on float32 or torch would give visibly different vectors)."""
    from mmkg.kg_store import KGStore
    from mmkg.kg_store.vectors import load_vectors, vector_meta
    from mmkg.pipeline.embed import embed_store
    from tests.stores import build_markg_store
    local, distributed = tmp_path / "local", tmp_path / "spark"
    build_markg_store(data_dir, local)
    build_markg_store(data_dir, distributed)
    kw = dict(limit=40, chunk_size=16, batch_size=8, threads=1, progress=False, precision="int8")
    embed_store(local, "minilm", **kw)
    embed_store(distributed, "minilm", engine="spark", **kw)
    assert vector_meta(KGStore(distributed), "minilm")["encoder_info"]["precision"] == "onnx-int8"
    for kind in ("entity", "relation", "triple"):
        a, _ = load_vectors(KGStore(local), "minilm", kind)
        b, _ = load_vectors(KGStore(distributed), "minilm", kind)
        assert np.allclose(a, b, atol=1e-5), kind


def test_an_unwritable_cache_falls_back_to_torch(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    enc = MiniLMEncoder(cache_dir=blocker / "onnx", runtime="onnx")
    assert (enc.runtime, enc.precision) == ("torch", "float32")
    assert "cannot write the ONNX cache" in enc.runtime_note
