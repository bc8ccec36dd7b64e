"""The `dataset` family's template: every registered dataset, on real data (a copy of it in
tmp_path, so its files can be changed), builds queries, names the files that define it and its
splits, and changing any of those files changes its digest, which every cache key holds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmkg.kg_store.registry import ALL
from mmkg.retrieval.datasets import datasets, resolve_dataset
from mmkg.retrieval.retriever import RetrievalConfig
from mmkg.retrieval.shards import shard_cache_key, shard_rel
from tests.stores import build_markg_store


def _mars(data_dir: Path, tmp: Path) -> Path:
    src = data_dir / "markg/MARS"
    for name in ("dev.json", "train.json", "analogy_entities.txt"):
        shutil.copy(src / name, tmp / name)
    shutil.copytree(src / "images", tmp / "images")
    return tmp


def _scienceqa(data_dir: Path, tmp: Path) -> Path:
    src = data_dir / "scienceqa"
    shutil.copy(src / "problems.subset150.json", tmp / "problems.subset150.json")
    shutil.copytree(src / "images", tmp / "images")
    return tmp


def _jsonl(data_dir: Path, tmp: Path) -> Path:
    shutil.copy(data_dir / "scienceqa/images/test/23/image.png", tmp / "web.png")
    f = tmp / "q.jsonl"
    f.write_text(json.dumps({"id": "a", "text": "what eats grass?", "entities": ["Q1501"]}) + "\n"
                 + json.dumps({"id": "b", "text": "food web", "image": "web.png"}) + "\n")
    return f


#: name → (copy the real data into a folder, split, (train, fit, eval) splits, defining files
#: every build must name (relative to the dataset's folder), queries of the split)
CASES = {
    "mars": (_mars, "dev", ("train", "dev", "test"),
             {"dev.json", "train.json", "analogy_entities.txt", "images/Q1501/02009000.jpg"}, 1020),
    "scienceqa": (_scienceqa, "test", ("train", "val", "test"),
                  {"problems.subset150.json", "images/test/23/image.png"}, 50),
    "jsonl": (_jsonl, None, (None, None, None), {"q.jsonl", "web.png"}, 2),
}


def test_every_dataset_has_a_case():
    assert set(ALL["dataset"].names()) == set(CASES)


@pytest.fixture(scope="module")
def markg_store(data_dir, tmp_path_factory):
    return build_markg_store(data_dir, tmp_path_factory.mktemp("datasets") / "kg")


def _touch(f: Path) -> None:
    """Change one byte's worth of a file (appended), keeping it readable for a digest."""
    with f.open("ab") as fh:
        fh.write(b"\n")


@pytest.mark.parametrize("name", sorted(CASES))
def test_dataset_template(name, data_dir, markg_store, tmp_path):
    copy, split, splits, must, count = CASES[name]
    path = copy(data_dir, tmp_path)
    ds = resolve_dataset(f"{name}:{path}")
    assert type(ds) is datasets.get(name) and ds.name == name
    assert (ds.train_split, ds.fit_split, ds.eval_split) == splits

    qs = ds.build(store=markg_store, split=split)
    assert qs.dataset == name and len(qs.queries) == count
    assert len({q.query_id for q in qs.queries}) == count and all(q.text for q in qs.queries)
    assert qs.source_sha256() == ds.digest(split)  # the shard cache key holds the dataset's digest

    files = ds.defining_files(split)
    named = {f.relative_to(ds.root).as_posix() for f in files}
    assert must <= named and all(f.is_file() for f in files)

    config = RetrievalConfig(encoder="minilm", retriever="mrmkg")
    key = shard_cache_key(markg_store, config, qs, None)
    digests = {ds.digest(split)}
    for f in files:  # every defining file, one at a time: a new digest and a new cache key each
        _touch(f)
        digests.add(ds.digest(split))
        again = ds.build(store=markg_store, split=split)
        assert shard_cache_key(markg_store, config, again, None) != key, f
    assert len(digests) == len(files) + 1


def test_two_folders_of_one_dataset_keep_their_shard_sets_apart(data_dir, markg_store, tmp_path):
    """Same dataset name and split, two folders: two shard folders (they used to replace each other)."""
    a, b = (tmp_path / "a", tmp_path / "b")
    for d in (a, b):
        d.mkdir()
        _mars(data_dir, d)
    config = RetrievalConfig(encoder="minilm")
    qa, qb = (resolve_dataset(f"mars:{d}").build(store=markg_store, split="dev", limit=3) for d in (a, b))
    assert qa.source_sha256() == qb.source_sha256()  # same bytes
    assert shard_rel(qa, config, 3) != shard_rel(qb, config, 3)
    assert shard_rel(qa, config, 3).startswith("subgraphs/mars/dev/")


def test_datasets_without_leakage_say_so_in_one_line(data_dir, markg_store, tmp_path):
    from mmkg.kg_store.errors import ConfigError
    from mmkg.retrieval.reports import leakage_for_dataset
    with pytest.raises(ConfigError, match="leakage is defined for mars, scienceqa, not jsonl"):
        leakage_for_dataset(markg_store, f"jsonl:{_jsonl(data_dir, tmp_path)}")
