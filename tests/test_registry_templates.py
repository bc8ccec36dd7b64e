"""One generic test template per pluggable family (PyKEEN's test cases), run by every registered
name, and a meta-test: a name registered in any family without a case here fails the suite.

The `model` family keeps its richer template in `tests/model/cases.py` (forward/backward on both
tiny backbones, checkpoint round-trip) with its own meta-test in `tests/model/test_meta.py`; the
`retrieval_engine` family's two engines are compared row for row in
`tests/retrieval/test_shards.py::test_spark_engine_matches_local`.
"""
from __future__ import annotations

import importlib

import numpy as np
import pyarrow.compute as pc
import pytest

from mmkg.kg_store.registry import ALL

# import every package that registers a family, so ALL is complete
for _module in ("mmkg.pipeline.readers", "mmkg.pipeline.engines", "mmkg.pipeline.encoders", "mmkg.retrieval.index", "mmkg.retrieval.datasets",
                "mmkg.retrieval.batch", "mmkg.retrieval.retrievers", "mmkg.model", "mmkg.model.gnn", "mmkg.model.backbones", "mmkg.model.tasks",
                "mmkg.model.rankers", "mmkg.model.reranker", "mmkg.model.facts_gate"):
    importlib.import_module(_module)

# ---- the cases: family → registered name → what the template runs it on ------------------------
READER_SAMPLES = {  # a real file (or a small generated one) per format, and the record kind it must give
    "markg": ("markg/MarKG", "triple"), "mmkg": ("mmkg/DB15K/DB15K_EntityTriples.reconstructed.txt", "triple"),
    "openke": ("mmkg/DB15K/openke", "triple"), "sameas": ("mmkg/DB15K/DB15K_SameAsLink.txt", "link"),
    "fbmap": ("mmkg/FB15K/fb15k_mid-wdurl-wpurl_14951.txt", "link"),
    "image-index": ("mmkg/DB15K/DB15K_ImageIndex.txt", "literal"),
    "literals": ("mmkg/YAGO15K/YAGO15K_NumericalTriples.v984182b.txt", "literal"),
    "images": ("markg/MARS/images", "image"), "tsv": (None, "triple"), "rdf": (None, "triple"),
}
INDEX_CASES = {"auto": "flat", "flat": "flat", "ivf": "ivf", "ivfpq": "ivfpq", "hnsw": "hnsw"}  # name → type built
ENCODER_CASES = {"minilm": "minilm", "tiny-clip": "tiny-clip", "open_clip": "open_clip:ViT-S-32"}
ENGINE_CASES = {"local": {}, "spark": {"shuffle_partitions": 2}}
GNN_CASES = {"gat": {}, "rgat": {}}
TASK_CASES = {"mars": "mars", "scienceqa": "scienceqa", "kg-triple": "mars", "kg-image": "mars"}
BACKBONE_CASES = {"tiny-t5": "forward", "tiny-llama": "forward", "smollm2-135m": "spec", "flan-t5-3b": "spec",
                  "flan-t5-11b": "spec", "llama-2-7b": "spec"}
CASES = {"reader": READER_SAMPLES, "index": INDEX_CASES, "encoder": ENCODER_CASES,
         "engine": ENGINE_CASES, "gnn_layer": GNN_CASES, "task": TASK_CASES, "backbone": BACKBONE_CASES}
#: families whose template lives elsewhere (see the module docstring)
ELSEWHERE = {"model": "tests/model/test_meta.py", "retrieval_engine": "tests/retrieval/test_shards.py",
             "retriever": "tests/retrieval/test_retrievers.py", "ranker": "tests/model/test_rankers.py",
             "dataset": "tests/retrieval/test_datasets.py", "facts_gate": "tests/model/test_facts_gate.py"}


def test_every_registered_name_has_a_case():
    assert set(ALL) == set(CASES) | set(ELSEWHERE), "a family without a test template"
    for family, cases in CASES.items():
        registered = set(ALL[family].names())
        assert registered == set(cases), f"{family}: no case for {registered - set(cases)}; stale {set(cases) - registered}"
    from tests.retrieval import test_shards
    assert set(ALL["retrieval_engine"].names()) == {"local", "spark"}
    assert hasattr(test_shards, "test_spark_engine_matches_local")
    from tests.retrieval import test_retrievers
    cases = next(m.args[1] for m in test_retrievers.test_retriever_template.pytestmark if m.name == "parametrize")
    assert set(ALL["retriever"].names()) == set(cases)
    from tests.model import test_rankers
    cases = next(m.args[1] for m in test_rankers.test_ranker_template.pytestmark if m.name == "parametrize")
    assert set(ALL["ranker"].names()) == set(cases)
    from tests.retrieval import test_datasets
    assert set(ALL["dataset"].names()) == set(test_datasets.CASES)
    from tests.model import test_facts_gate
    assert set(ALL["facts_gate"].names()) == set(test_facts_gate.SIGNAL_CASES)


# ---- reader ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(READER_SAMPLES))
def test_reader_template(name, data_dir, tmp_path):
    from tests.pipeline.test_readers import kinds, parse_all
    rel, kind = READER_SAMPLES[name]
    if name == "tsv":
        path = tmp_path / "t.tsv"
        path.write_text("head\trelation\ttail\nQ1\tP31\tQ5\nQ2\tP31\tQ5\n")
    elif name == "rdf":
        path = tmp_path / "t.nt"
        path.write_text("<http://ex.org/a> <http://ex.org/p> <http://ex.org/b> .\n")
    else:
        path = data_dir / rel
    t = parse_all(f"{name}:{path}")
    got = kinds(t)
    assert got.get(kind, 0) > 0 and "reject" not in got, got
    assert pc.all(pc.is_valid(t["src"])).as_py()  # every record says where it came from


# ---- index -----------------------------------------------------------------------------------------
@pytest.mark.faiss
@pytest.mark.parametrize("name", sorted(INDEX_CASES))
def test_index_template(name, tmp_path):
    from mmkg.retrieval.index import VectorIndex, build_index
    x = np.random.default_rng(0).standard_normal((4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(4000, dtype=np.int64) + 100
    vi = build_index(x, kind=name, ids=ids, threads=1)
    assert vi.meta["type"] == INDEX_CASES[name] and vi.meta["kind_requested"] == name and vi.ntotal == 4000
    assert vi.meta["self_check"]["recall"] >= (0.3 if name == "ivfpq" else 0.9)
    scores, found = vi.search(x[:50], 5)
    assert found.shape == (50, 5) and np.all(np.diff(scores, axis=1) <= 1e-6)  # sorted best first
    if name != "ivfpq":  # lossy codes may rank a neighbour above the vector itself
        assert np.mean(found[:, 0] == ids[:50]) >= 0.9
    again = VectorIndex.read(vi.save(tmp_path / name)[0].with_suffix(""))
    assert np.array_equal(again.search(x[:50], 5)[1], found)


# ---- encoder ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ENCODER_CASES))
def test_encoder_template(name):
    from mmkg.pipeline.encoders import resolve_encoder
    enc = resolve_encoder(ENCODER_CASES[name])
    texts = ["zebra, instance of, animal", "Paris", "zebra, instance of, animal"]
    v = enc.encode_text(texts)
    assert v.shape == (3, enc.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert np.allclose(v[0], v[2], atol=1e-5) and not np.allclose(v[0], v[1], atol=1e-2)
    assert enc.describe()["name"] == enc.name


# ---- the MarKG store the task template reads (the dataset template: tests/retrieval/test_datasets.py)
@pytest.fixture(scope="module")
def markg_store(data_dir, tmp_path_factory):
    from tests.stores import build_markg_store
    return build_markg_store(data_dir, tmp_path_factory.mktemp("registry") / "kg")


# ---- engine ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ENGINE_CASES))
def test_engine_template(name, tmp_path, request):
    from mmkg.kg_store import open_store
    from mmkg.pipeline.ingest import ingest
    if name == "spark":
        request.getfixturevalue("spark")  # the module's shared local[2] session
    src = tmp_path / "t.tsv"
    src.write_text("head\trelation\ttail\nQ1\tP31\tQ5\nQ2\tP31\tQ5\nQ1\tP31\tQ5\nQ3\tP279\tQ2\n")
    res = ingest(tmp_path / "kg", [f"tsv:{src}"], engine=name, **ENGINE_CASES[name])
    store = open_store(tmp_path / "kg")
    assert (store.count("entities"), store.count("relations"), store.count("triples")) == (4, 2, 3)
    assert res.counts["duplicates"] == 1


# ---- gnn layer -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GNN_CASES))
def test_gnn_layer_template(name):
    import torch
    from mmkg.model.gnn import gnn_layer_registry
    torch.manual_seed(0)
    layer = gnn_layer_registry.get(name)(channels=16, num_relations=3, **GNN_CASES[name])
    x = torch.randn(5, 16, requires_grad=True)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    out = layer(x, edge_index, torch.tensor([0, 1, 2, 0]), torch.randn(4, 16))
    assert out.shape == (5, 16) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and x.grad[0].abs().sum() > 0  # node 0 sends a message along 0 → 1


# ---- task ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TASK_CASES))
def test_task_template(name, data_dir, markg_store):
    from mmkg.model.kg_text import KGText
    from mmkg.model.tasks import resolve_task
    kg = KGText.from_store(markg_store)
    if TASK_CASES[name] == "mars":
        from mmkg.retrieval.datasets import build_queries
        q = build_queries(f"mars:{data_dir / 'markg/MARS'}", store=markg_store, split="dev", limit=1).queries[0]
        fields = q.fields
    else:
        from mmkg.retrieval.datasets import build_queries
        q = build_queries(f"scienceqa:{data_dir / 'scienceqa'}", split="test", limit=1).queries[0]
        fields = q.fields
    h, r, t = markg_store.triples_array()[:3].T
    labels = lambda ids, table: [kg.entity(i) if table == "e" else kg.relation(i) for i in ids]  # noqa: E731
    row = {"query_id": "q0", **fields, "head_ids": h, "relation_ids": r, "tail_ids": t,
           "head_labels": labels(h, "e"), "relation_labels": labels(r, "r"), "tail_labels": labels(t, "e")}
    ex = resolve_task(name).make_example(row, kg, 0)
    if name == "kg-image":  # MarKG alone has no stored images: the task must say so with None
        assert ex is None
        return
    assert ex is not None and ex.prompt and ex.target and ex.query_id.startswith("q0")
    if name == "kg-triple":
        assert ex.target in row["tail_labels"]


# ---- backbone --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BACKBONE_CASES))
def test_backbone_template(name):
    from mmkg.model.backbones import CAUSAL, SEQ2SEQ, backbone_registry, build_on_meta
    spec = backbone_registry.get(name)
    assert spec.name == name and spec.kind in (SEQ2SEQ, CAUSAL)
    n_params = sum(p.numel() for p in build_on_meta(spec).parameters())  # no weights needed
    assert n_params > 0
    if BACKBONE_CASES[name] == "forward":
        from mmkg.model.backbones import load_backbone
        llm = load_backbone(name)
        assert all(not p.requires_grad for p in llm.parameters())  # frozen
    else:
        assert spec.hf_name or spec.loader  # real weights come from a named source
