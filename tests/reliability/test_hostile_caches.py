"""Issue 32: caches verified before use. A vector cache segment or an embed resume chunk that
was overwritten with other bytes of the right size is discarded and encoded again (it was
committed as wrong vectors); the vector cache is keyed by the encoder's weights digest, runtime
and precision as well as the text. Real CLI (`mmkg.jobs.cli.main`; the interrupted run fails after two
chunks), real MiniLM on torch (the fastest path that needs no ONNX export)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mmkg.kg_store import open_store
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.vectors import load_vectors
from tests.reliability.hostile_fixtures import run_cli, small_store

EMBED = ("embed", "--encoder", "minilm", "--runtime", "torch", "--no-progress", "--chunk-size", "1")


def _vectors(kg: Path) -> dict[str, np.ndarray]:
    store = open_store(kg)
    return {kind: np.array(load_vectors(store, "minilm", kind)[0]) for kind in ("entity", "triple")}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A small store embedded once, untouched: (its folder, its vectors)."""
    root = tmp_path_factory.mktemp("clean")
    kg = small_store(root)
    from mmkg.jobs.cli import main
    with pytest.raises(SystemExit) as e:
        main([*EMBED[:1], "--kg", str(kg), *EMBED[1:]])
    assert e.value.code == 0
    return kg, _vectors(kg)


def test_an_overwritten_vector_cache_segment_is_discarded(clean, tmp_path, capsys):
    """Every cached vector replaced by zeros, files of the same size: the next embed encodes
    again and commits the true vectors (the zeros were committed)."""
    kg = tmp_path / "kg"
    shutil.copytree(clean[0], kg)
    segments = sorted((kg / "cache" / "embeddings").rglob("seg-*.vecs.npy"))
    assert segments
    for seg in segments:
        v = np.load(seg)
        np.save(seg, np.zeros_like(v))
    code, out, err = run_cli(capsys, *EMBED[:1], "--kg", kg, *EMBED[1:])
    assert code == 0, err
    got = _vectors(kg)
    for kind, want in clean[1].items():
        assert np.allclose(got[kind], want, atol=1e-6), kind


def test_an_overwritten_resume_chunk_is_encoded_again(clean, tmp_path, capsys, monkeypatch):
    """An embed that failed after its first two chunks; both finished chunks overwritten
    with zeros of the same size: the resumed run re-encodes them (their recorded sha256 was
    never compared, and the zeros were committed)."""
    import mmkg.pipeline.embed as embed
    kg = tmp_path / "kg"
    shutil.copytree(clean[0], kg, ignore=shutil.ignore_patterns("cache", "work"))
    write, written = embed.ChunkScratch.write, []

    def interrupted(self, *args):
        write(self, *args)
        written.append(args[:2])
        if len(written) == 2:
            raise KGStoreError("stopped after two chunks")

    monkeypatch.setattr(embed.ChunkScratch, "write", interrupted)
    assert run_cli(capsys, *EMBED[:1], "--kg", kg, *EMBED[1:])[:3:2] == (1, "mmkg: stopped after two chunks\n")
    monkeypatch.setattr(embed.ChunkScratch, "write", write)
    chunks = sorted((kg / "work" / "embed").rglob("chunk-*.npy"))
    assert len(chunks) == 2, chunks
    for chunk in chunks:
        np.save(chunk, np.zeros_like(np.load(chunk)))
    code, out, err = run_cli(capsys, *EMBED[:1], "--kg", kg, *EMBED[1:])
    assert code == 0, err
    got = _vectors(kg)
    for kind, want in clean[1].items():
        assert np.allclose(got[kind], want, atol=1e-6), kind


def test_the_vector_cache_is_keyed_by_the_encoders_weights(tmp_path):
    """Other weights (one byte of the safetensors changed) never share the cache folder of the
    original weights (the folder was keyed by name and precision alone)."""
    from mmkg.pipeline.encoders.minilm import MiniLMEncoder, minilm_path
    from mmkg.pipeline.vector_cache import VectorCache
    copy = tmp_path / "model"
    shutil.copytree(minilm_path(), copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1001] ^= 0x01
    weights.write_bytes(bytes(data))
    original = MiniLMEncoder(runtime="torch")
    changed = MiniLMEncoder(model_dir=copy, runtime="torch")
    assert VectorCache.for_encoder(tmp_path / "kg", original).root != VectorCache.for_encoder(tmp_path / "kg", changed).root


@pytest.mark.slow  # de-quantizes SmolLM2 twice (~15 s each on a shared CPU)
def test_an_overwritten_weights_cache_is_rebuilt(tmp_path):
    """The safetensors copy of SmolLM2 overwritten with other bytes of the same size: the next
    load re-hashes it, deletes it and builds it again (it was loaded as it was)."""
    import torch

    from mmkg.model.weights_cache import load_smollm2
    model, _ = load_smollm2(cache_dir=tmp_path)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    weights = tmp_path / "backbones" / "smollm2-135m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4096:] = bytes(4096)  # the tail of the last tensor: the file still loads
    weights.write_bytes(bytes(data))
    again, _ = load_smollm2(cache_dir=tmp_path)
    got = again.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())
