"""tiny-clip over real entity images: 133 ImageNet∩MarKG images and 17 MARS images in a store."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from mmkg.kg_store import KGStore
from mmkg.kg_store.vectors import load_vectors
from mmkg.pipeline.embed import embed_store, open_images
from mmkg.pipeline.encoders import resolve_encoder
from mmkg.retrieval.index import build_store_indexes, load_index
from mmkg.retrieval.index_search import search_store
from tests.stores import build_markg_store


def _image_files(data_dir):
    """(file, entity QID) of every real entity image: the mapping's first QID, or the MARS folder."""
    base = data_dir / "entity_images" / "imagenet_markg_overlap"
    rows = [line.split("\t") for line in (base / "mapping.tsv").read_text().splitlines()[1:]]
    files = [(base / "images" / r[0], r[3].split(",")[0]) for r in rows]
    files += [(f, f.parent.name) for f in sorted((data_dir / "markg" / "MARS" / "images").glob("Q*/*"))]
    return files


@pytest.fixture(scope="module")
def store(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("images") / "markg"
    st = build_markg_store(data_dir, root)
    files = _image_files(data_dir)
    assert len(files) == 150
    ent_ids = st.entity_ids([qid for _, qid in files])
    assert (ent_ids >= 0).all()
    rows = []
    with KGStore.writer(root) as w:
        for i, ((path, _), eid) in enumerate(zip(files, ent_ids)):
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            blob = f"blobs/images/{sha[:2]}/{sha}"
            (root / blob).parent.mkdir(parents=True, exist_ok=True)
            (root / blob).write_bytes(data)
            w.register_file(blob)
            with Image.open(path) as im:
                rows.append({"id": i, "entity_id": int(eid), "sha256": sha, "width": im.width, "height": im.height,
                             "format": im.format, "blob": blob, "source_uri": str(path), "source": "test"})
        w.write_table("images", pa.Table.from_pylist(rows))
        w.commit()
    embed_store(root, "tiny-clip", threads=1, limit={"triple": 512}, batch_size=32, progress=False)
    build_store_indexes(root, "tiny-clip", threads=1)
    return KGStore(root), files


def test_image_vectors(store):
    st, files = store
    matrix, ids = load_vectors(st, "tiny-clip", "image")
    assert matrix.shape == (150, 64) and ids.tolist() == list(range(150))
    assert np.all(np.isfinite(matrix)) and np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    assert len({m.tobytes() for m in np.asarray(matrix)}) == 150  # 150 distinct images, 150 distinct vectors
    # the stage's vectors are the encoder's vectors of the same files
    direct = resolve_encoder("tiny-clip").encode_images(open_images([str(f) for f, _ in files[:8]]))
    assert np.allclose(direct, matrix[:8], atol=1e-5)


def test_entity_image_fusion(store):
    st, files = store
    meta = st.artifact("vectors/tiny-clip")
    with_images = set(st.entity_ids([q for _, q in files]).tolist())
    assert meta["entities_with_images"] == len(with_images)
    ent, _ = load_vectors(st, "tiny-clip", "entity")
    img, _ = load_vectors(st, "tiny-clip", "image")
    pool = int(st.entity_ids(["Q1501"])[0])  # swimming pool: 8 MARS images
    label = st.table("entities", ["label", "description"]).slice(pool, 1).to_pylist()[0]
    enc = resolve_encoder("tiny-clip")
    text = enc.encode_text([label["label"], f"{label['label']}: {label['description']}"]).sum(0)
    text /= np.linalg.norm(text)
    img_mean = np.asarray(img[[i for i, (f, q) in enumerate(files) if q == "Q1501"]]).mean(0)
    expected = text + img_mean / np.linalg.norm(img_mean)
    assert np.allclose(ent[pool], expected / np.linalg.norm(expected), atol=1e-5)


def test_image_search_returns_the_same_file_first(store):
    st, files = store
    q = resolve_encoder("tiny-clip").encode_images(open_images([str(f) for f, _ in files]))
    scores, ids = load_index(st, "tiny-clip", "image").search(q, 3)
    assert ids[:, 0].tolist() == list(range(150))
    assert np.allclose(scores[:, 0], 1, atol=1e-4)
    out = search_store(st.root, "tiny-clip", image=files[140][0], what="images", k=2)
    assert out["hits"][0]["id"] == 140 and out["hits"][0]["key"] == files[140][1]
    assert out["hits"][0]["blob"].startswith("blobs/images/")
