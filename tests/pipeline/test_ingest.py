"""Ingest with the local engine on the real data: README counts, merging, images, rejects, ids."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from mmkg.kg_store import open_store
from mmkg.kg_store.errors import KGStoreError
from mmkg.pipeline.demo_sources import demo_sources
from mmkg.pipeline.ingest import IngestRejectedError, ingest
from tests.stores import build_markg_store


def _accounting_holds(inputs):
    for i in inputs:
        c = i["counts"]
        assert c["read"] == c["accepted"] + c["rejected"] + c["duplicates"], i["source"]
        assert i["files"] and all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in i["files"])


@pytest.fixture(scope="module")
def markg_store(data_dir, tmp_path_factory):
    return build_markg_store(data_dir, tmp_path_factory.mktemp("markg"))


@pytest.fixture(scope="module")
def demo(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "kg"
    return ingest(root, demo_sources(data_dir), engine="local")


def test_markg_counts_from_the_readme(markg_store, data_dir):
    s = markg_store
    assert (s.count("entities"), s.count("relations"), s.count("triples")) == (11_292, 192, 33_301)
    [inp] = s.manifest["inputs"]
    assert inp["format"] == "markg"
    assert inp["counts"]["duplicates"] == 6                     # 33,307 lines → 33,301 distinct
    assert inp["counts"]["rejected"] == 0
    _accounting_holds(s.manifest["inputs"])
    # ids follow entity2text order; labels and descriptions come from the two text files
    first = (data_dir / "markg/MarKG/entity2text.txt").read_text(encoding="utf-8").splitlines()[:3]
    ents = s.table("entities").slice(0, 3).to_pylist()
    assert [(e["key"], e["label"]) for e in ents] == [tuple(line.split("\t")) for line in first]
    assert ents[1]["description"] == "country in North Africa"
    assert s.table("relations").slice(0, 1).to_pylist()[0]["label"] == "location"
    # triples are distinct, id = row index, graph covers them
    t = s.triples_array()
    assert len(np.unique(t, axis=0)) == len(t)
    assert s.table("triples", ["id"])["id"].to_pylist() == list(range(len(t)))
    assert s.graph.num_nodes == 11_292 and len(s.graph.neighbor) == 2 * 33_301
    assert s.verify() == []


def test_stats_json_fed_by_the_manifest(markg_store):
    from mmkg.jobs.cli import cli
    out = CliRunner().invoke(cli, ["stats", "--kg", str(markg_store.root), "--json"])
    assert out.exit_code == 0, out.output
    stats = json.loads(out.output)
    assert {k: stats[k] for k in ("entities", "relations", "triples", "duplicates", "rejects", "kg_version")} == {
        "entities": 11_292, "relations": 192, "triples": 33_301, "duplicates": 6, "rejects": 0, "kg_version": 1}


def test_demo_ingest_merges_db15k_and_markg(demo, data_dir):
    s, c = demo.store, demo.counts
    by_source = {i["source"]: i["counts"] for i in demo.inputs}
    _accounting_holds(demo.inputs)
    db = by_source["mmkg:DB15K_EntityTriples.reconstructed.txt"]
    assert (db["read"], db["accepted"], db["duplicates"]) == (99_028, 89_197, 9_831)
    assert by_source["markg:MarKG"]["duplicates"] == 6
    assert c["triples"] == 33_301 + 89_197                       # the two KGs share no triple
    assert c["relations"] == 192 + 279
    assert c["merged_keys"] > 10_000 and c["merged_entities"] > 10_000
    assert c["rejects"] == 0                                     # the real data is clean
    # progress/timing per phase, in the result and in the manifest's stage record
    phases = ["plan", "engine_start", "parse", "ids", "triples", "images", "write"]
    assert list(demo.phases) == phases and all(v >= 0 for v in demo.phases.values())
    assert s.manifest["stages"][-1]["phase_seconds"] == demo.phases
    # components holding two QIDs (one DBpedia URI sameAs two mids) are still one row, ids dense
    assert s.table("entities", ["id"])["id"].to_pylist() == list(range(c["entities"]))
    hiphop = s.entity_ids(["Q438503", "Q965635", "http://dbpedia.org/resource/Underground_hip_hop"])
    assert hiphop[0] >= 0 and (hiphop == hiphop[0]).all()
    # one node for one thing: a MarKG QID, its Freebase mid and DBpedia URI resolve to one id
    fb = (data_dir / "mmkg/FB15K/fb15k_mid-wdurl-wpurl_14951.txt").read_text().splitlines()
    same = (data_dir / "mmkg/DB15K/DB15K_SameAsLink.txt").read_text().splitlines()
    mid_to_qid = {ln.split("\t")[0]: ln.split("\t")[1].rsplit("/", 1)[1] for ln in fb}
    markg_keys = set(s.table("entities", ["key"])["key"].to_pylist()[:11_292])
    mid, _, uri = next(ln.split(" ", 3)[:3] for ln in same if mid_to_qid.get(ln.split(" ")[0]) in markg_keys)
    qid = mid_to_qid[mid]
    got = s.entity_ids([qid, mid, uri.strip("<>")])
    assert got[0] >= 0 and (got == got[0]).all()
    row = s.table("entities").filter(pc.equal(s.table("entities")["id"], int(got[0]))).to_pylist()[0]
    assert row["key"] == qid and row["source"] == "markg:MarKG"  # canonical = Wikidata QID, MarKG label kept
    # DB15K and MarKG meet: hundreds of nodes carry triples from both KGs
    t = s.triples_array()
    src = s.table("triples", ["source"])["source"].to_numpy(zero_copy_only=False)
    in_markg = set(t[src == "markg:MarKG"][:, [0, 2]].ravel())
    in_db15k = set(t[src == "mmkg:DB15K_EntityTriples.reconstructed.txt"][:, [0, 2]].ravel())
    assert len(in_markg & in_db15k) > 100


def test_demo_labels_literals_images(demo):
    s = demo.store
    ents = s.table("entities")
    uri = "http://dbpedia.org/resource/Wheaton_College_(Illinois)"
    eid = int(s.entity_ids([uri])[0])
    assert ents["label"][eid].as_py() in ("Wheaton College (Illinois)", "Wheaton College")
    lit = s.table("literals")
    assert "mmkg:imageIndex" in set(lit["attribute"].to_pylist())
    assert {"hasLatitude", "wasBornOnDate"} <= set(lit["attribute"].to_pylist())
    by_source = {i["source"]: i["counts"] for i in demo.inputs}
    assert by_source["literals:YAGO15K_NumericalTriples.v984182b.txt"]["accepted"] == 23_532
    # images: 17 MARS files of 2 entities, 133 ImageNet files mapped to MarKG QIDs (some to several)
    assert by_source["images:images"]["accepted"] == 17
    assert by_source["images:mapping.tsv"] == {"read": 133, "accepted": 133, "rejected": 0, "duplicates": 0,
                                              "skipped": {"header": 1}}
    img = s.table("images")
    assert demo.counts["image_blobs"] == 150
    assert img.num_rows > 150 and len(set(img["sha256"].to_pylist())) == 150
    q1501 = int(s.entity_ids(["Q1501"])[0])
    assert pc.sum(pc.equal(img["entity_id"], q1501)).as_py() == 8
    zebra = img.filter(pc.match_substring(img["source_uri"], "zebra")).to_pylist()
    assert zebra and ents["label"][zebra[0]["entity_id"]].as_py().lower() == "zebra"
    blob = s.path(zebra[0]["blob"])
    assert blob.exists() and zebra[0]["blob"] in s.manifest["files"]
    assert all(0 < w <= 1024 for w in img["width"].to_pylist())


def test_bad_inputs_become_rejects_with_reasons(tmp_path, data_dir):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tr\tb\nonly-two\tfields\na\tr\tb\nc\tr\t\n")
    imgs = tmp_path / "imgs" / "Q42"
    imgs.mkdir(parents=True)
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (imgs / "notes.txt").write_text("hello")
    good = data_dir / "markg/MARS/images/Q1501/02009000.jpg"
    (imgs / "ok.jpg").write_bytes(good.read_bytes())
    (imgs / "ok-again.jpg").write_bytes(good.read_bytes())      # exact duplicate: stored once, counted
    r = ingest(tmp_path / "kg", [f"tsv:{tsv}", f"images:{tmp_path / 'imgs'}"], engine="local")
    by_source = {i["source"]: i["counts"] for i in r.inputs}
    assert by_source["tsv:t.tsv"] == {"read": 4, "accepted": 1, "rejected": 2, "duplicates": 1, "skipped": {}}
    assert by_source["images:imgs"] == {"read": 4, "accepted": 1, "rejected": 2, "duplicates": 1, "skipped": {}}
    rej = r.store.table("rejects").to_pylist()
    assert len(rej) == 4 and all(x["reason"] and x["location"] and x["stage"] == "ingest" for x in rej)
    assert any(x["location"].endswith("t.tsv:2") and "got 2" in x["reason"] for x in rej)
    assert any("image" in x["reason"] and x["raw"] == b"Q42/notes.txt" for x in rej)
    assert r.store.count("images") == 1
    assert r.store.table("entities")["key"].to_pylist() == ["a", "b", "Q42"]   # rejected "c" line adds nothing


def test_strict_commits_nothing(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tr\tb\nbroken\n")
    with pytest.raises(IngestRejectedError, match="1 input record"):
        ingest(tmp_path / "kg", [f"tsv:{tsv}"], engine="local", strict=True)
    with pytest.raises(KGStoreError):
        open_store(tmp_path / "kg")


def test_second_ingest_keeps_ids_and_appends(tmp_path, data_dir, markg_store):
    root = tmp_path / "kg"
    build_markg_store(data_dir, root)
    before = open_store(root)
    tsv = tmp_path / "more.tsv"
    tsv.write_text("Q262\tP47\tQ999999999\nQ15026\tP276\tQ107\n")        # one new triple, one known
    r = ingest(root, [f"tsv:{tsv}"], engine="local")
    after = r.store
    assert after.kg_version == before.kg_version + 1
    assert after.table("entities").slice(0, 11_292).equals(before.table("entities"))
    assert after.table("triples").slice(0, 33_301).equals(before.table("triples"))
    assert (after.count("entities"), after.count("triples")) == (11_293, 33_302)
    assert r.counts["triples_already_in_store"] == 1
    assert after.entity_ids(["Q999999999"])[0] == 11_292


def test_cli_ingest_local(tmp_path, data_dir):
    from mmkg.jobs.cli import cli
    kg = tmp_path / "kg"
    src = f"sameas:{data_dir / 'mmkg/YAGO15K/YAGO15K_SameAsLink.txt'}"
    lits = f"image-index:{data_dir / 'mmkg/YAGO15K/YAGO15K_ImageIndex.txt'}"
    out = CliRunner().invoke(cli, ["ingest", "--kg", str(kg), "--engine", "local", "--source", src,
                                   "--source", lits, "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.output.strip().splitlines()[-1])
    assert res["counts"]["entities"] == 11_194 and res["counts"]["literals"] == 11_194
    assert res["counts"]["same_as"] == 11_194                   # every YAGO entity has its mid as alias
    bad = CliRunner().invoke(cli, ["ingest", "--kg", str(kg), "--engine", "local", "--source", "nope:/x"])
    assert bad.exit_code != 0 and "unknown source format" in str(bad.exception or bad.output)
    assert Path(kg / "manifest.json").exists()
