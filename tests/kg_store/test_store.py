"""kg_store core: atomic commits, manifest accounting, lock, CSR, registry, integrity."""
from __future__ import annotations

import multiprocessing as mp
import numpy as np
import pyarrow as pa
import pytest

from mmkg.kg_store import CorruptFileError, KGStore, KGStoreError, LockedError, open_store
from mmkg.kg_store.atomic import cleanup_temp, write_bytes
from mmkg.kg_store.graph import build_csr
from mmkg.kg_store.registry import Registry
from tests.stores import build_markg_store


@pytest.fixture(scope="module")
def markg(data_dir, tmp_path_factory) -> KGStore:
    return build_markg_store(data_dir, tmp_path_factory.mktemp("markg"))


def test_markg_counts_match_readme(markg):
    # ../shared/data/markg/README.md: 11,292 entities, 192 relations, 33,301 distinct triples
    assert markg.count("entities") == 11_292
    assert markg.count("relations") == 192
    assert markg.count("triples") == 33_301
    assert markg.kg_version == 1


def test_reopen_reads_memory_mapped_graph(markg):
    store = open_store(markg.root)
    assert isinstance(store.graph.indptr, np.memmap)
    assert store.graph.num_nodes == 11_292


def test_entity_lookup_by_key(markg):
    ids = markg.entity_ids(["Q15026", "Q107", "not-a-key"])
    ents = markg.table("entities", ["id", "key"]).to_pydict()
    assert ents["key"][ids[0]] == "Q15026" and ents["key"][ids[1]] == "Q107"
    assert ids[2] == -1


def test_csr_matches_triples(markg):
    tri = markg.triples_array()
    g = markg.graph
    # every triple appears twice (once per endpoint) and degrees add up
    assert len(g.neighbor) == 2 * len(tri)
    deg = np.bincount(np.concatenate([tri[:, 0], tri[:, 2]]), minlength=g.num_nodes)
    assert np.array_equal(g.degree(), deg)
    # the MarKG README example triple Q15026 -P276-> Q107 is an out-edge of Q15026
    h, t = markg.entity_ids(["Q15026", "Q107"])
    r = markg.relation_ids(["P276"])[0]
    nb, rel, direction, _ = g.neighbors(h)
    assert ((nb == t) & (rel == r) & (direction == 1)).any()


def test_incident_triples_vectorised_equals_loop(markg):
    g = markg.graph
    nodes = np.array([0, 5, 17, 400, 11_000])
    expected = np.unique(np.concatenate([g.neighbors(n)[3] for n in nodes]))
    assert np.array_equal(g.incident_triples(nodes), expected)
    assert g.incident_triples(np.array([], dtype=np.int64)).size == 0


def test_verify_detects_corruption(data_dir, tmp_path):
    store = build_markg_store(data_dir, tmp_path / "kg")
    assert store.verify() == []
    rel = store.manifest["tables"]["triples"]
    path = store.root / rel
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # same size, different content: only the sha256 catches it
    path.write_bytes(bytes(data))
    problems = open_store(store.root).verify()
    assert len(problems) == 1 and rel in problems[0]
    path.write_bytes(bytes(data[:-10]))  # truncated: caught on every read by the size check
    with pytest.raises(CorruptFileError, match="triples"):
        open_store(store.root).table("triples")


def test_uncommitted_writes_are_invisible(data_dir, tmp_path):
    store = build_markg_store(data_dir, tmp_path / "kg")
    with KGStore.writer(store.root) as w:
        w.write_table("literals", pa.table({"entity_id": [0], "attribute": ["a"], "value": ["1"]}))
        # no commit: a killed writer looks exactly like this
    again = open_store(store.root)
    assert again.count("literals") == 0 and again.kg_version == store.kg_version


def test_not_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(KGStoreError, match="not a KG store"):
        open_store(tmp_path)


def _hold_lock(root, ready, release):
    with KGStore.writer(root):
        ready.set()
        release.wait(30)


def test_second_writer_is_refused(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    p.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockedError, match="locked by another writer"):
            with KGStore.writer(tmp_path):
                pass
    finally:
        release.set()
        p.join(30)
    with KGStore.writer(tmp_path) as w:  # free again once the holder is gone
        w.commit()


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.bin"
    write_bytes(target, b"old")
    (tmp_path / "x.bin.tmp-deadbeef").write_bytes(b"half")  # litter of a killed writer
    assert target.read_bytes() == b"old"
    assert cleanup_temp(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_build_csr_small_graph_by_hand():
    # 0 -r0-> 1, 1 -r1-> 2
    g = build_csr(np.array([0, 1]), np.array([0, 1]), np.array([1, 2]), num_nodes=4)
    assert g.indptr.tolist() == [0, 1, 3, 4, 4]
    nb, rel, d, tid = g.neighbors(1)
    assert sorted(zip(nb.tolist(), rel.tolist(), d.tolist(), tid.tolist())) == [(0, 0, -1, 0), (2, 1, 1, 1)]


def test_registry_normalises_and_lists_choices():
    reg: Registry[type] = Registry("widget")

    @reg.register("Fancy-Thing", "fancy")
    class Fancy:
        pass

    assert reg.get("fancy_thing") is Fancy and reg.get("FANCY") is Fancy
    with pytest.raises(ValueError, match="choose one of: Fancy-Thing"):
        reg.get("plain")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("fancy")(Fancy)


def test_a_table_of_several_part_files_reads_as_one(markg, tmp_path):
    """Spark executors write a table as several Parquet parts; the manifest lists them in row
    order and every reader sees one table (rows, count, fingerprint, gc's live set, verify)."""
    import shutil
    import pyarrow.parquet as pq
    from mmkg.kg_store.versions import live_files
    root = tmp_path / "kg"
    shutil.copytree(markg.root, root)
    whole = open_store(root).table("triples")
    with KGStore.writer(root) as w:
        rels = []
        for i, lo in enumerate(range(0, whole.num_rows, 10_000)):
            rel = f"tables/triples.v{w.new_version:06d}/part-{i:05d}.parquet"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(whole.slice(lo, 10_000), root / rel)
            rels.append(rel)
        assert len(w.register_table("triples", rels)) == 4
        store = w.commit(bump_version=True)
    assert store.manifest["tables"]["triples"] == rels
    assert store.count("triples") == 33_301
    assert store.table("triples").equals(whole)
    assert store.table("triples", ["h"])["h"].to_pylist() == whole["h"].to_pylist()
    assert store.table_fingerprint("triples") not in (None, markg.table_fingerprint("triples"))
    assert set(rels) <= live_files(store.manifest) and store.verify() == []
    (root / rels[2]).write_bytes(b"truncated")
    with pytest.raises(CorruptFileError, match="part-00002"):
        open_store(root).table("triples")
