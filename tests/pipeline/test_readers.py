"""Readers: each format on real files (counts from the data READMEs) and on hostile snippets."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.pipeline.engines.plan import make_plan, run_task, scan_file
from mmkg.pipeline.readers import parse_source, reader_registry
from mmkg.pipeline.readers import records as R


def parse_all(spec: str, chunk_bytes: int = 32 << 20) -> pa.Table:
    """Run a source's reader over all its tasks in-process (what the local engine does)."""
    plan = make_plan([spec], chunk_bytes=chunk_bytes)
    batches = [run_task(t, plan.readers[t.src], plan.contexts[t.src]) for t in plan.tasks]
    for src, seq, path, role in plan.whole:
        from mmkg.pipeline.engines.plan import locate
        batches.append(locate(plan.readers[src].parse_file(path, role, plan.contexts[src]), src, seq))
    return pa.Table.from_batches(batches, R.LOCATED)


def kinds(t: pa.Table) -> dict[str, int]:
    g = t.group_by("kind").aggregate([("kind", "count")])
    return dict(zip(g["kind"].to_pylist(), g["kind_count"].to_pylist()))


def test_registry_lists_every_format():
    expected = {"markg", "mmkg", "openke", "sameas", "image-index", "literals", "fbmap", "tsv", "rdf", "images"}
    assert set(reader_registry.names()) == expected


@pytest.mark.parametrize("spec, message", [
    ("nosuch:/x", "unknown source format 'nosuch'"),
    ("markg", "expected FORMAT:PATH"),
    ("tsv(base):/x", "expected k=v"),
])
def test_bad_source_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_source(spec)


def test_source_options_are_parsed():
    s = parse_source("literals(base=http://yago-knowledge.org/resource/):/data/x.txt")
    assert (s.format, s.path, s.options) == ("literals", "/data/x.txt", {"base": "http://yago-knowledge.org/resource/"})


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(KGStoreError, match="does not exist"):
        make_plan([f"tsv:{tmp_path / 'nope.tsv'}"])


def test_markg_reader_counts(data_dir):
    t = parse_all(f"markg:{data_dir / 'markg'}")
    k = kinds(t)
    assert k[R.TRIPLE] == 33_307
    assert k[R.ENTITY] == 2 * 11_292     # label + description lines
    assert k[R.RELATION] == 2 * 192
    assert R.REJECT not in k
    first = t.filter(pc.equal(t["kind"], R.TRIPLE)).slice(0, 1).to_pylist()[0]
    assert (first["s"], first["p"], first["o"], first["line_no"]) == ("Q15026", "P276", "Q107", 1)


def test_chunking_gives_the_same_records_as_one_chunk(data_dir):
    path = data_dir / "markg" / "MarKG" / "wiki_tuple_ids.txt"
    size, _, chunks = scan_file(str(path), 64 << 10)
    assert len(chunks) > 5 and chunks[-1][1] == size
    small = parse_all(f"tsv:{path}", chunk_bytes=64 << 10)
    whole = parse_all(f"tsv:{path}")
    assert small.select(["s", "p", "o", "line_no"]).equals(whole.select(["s", "p", "o", "line_no"]))
    assert small["line_no"].to_pylist() == list(range(1, 33_308))


def test_mmkg_db15k_lines(data_dir):
    t = parse_all(f"mmkg:{data_dir / 'mmkg/DB15K/DB15K_EntityTriples.reconstructed.txt'}")
    assert kinds(t) == {R.TRIPLE: 99_028}
    distinct = t.group_by(["s", "p", "o"]).aggregate([]).num_rows
    assert distinct == 89_197
    assert t["s"][0].as_py() == "http://dbpedia.org/resource/Wheaton_College_(Illinois)"  # <> stripped


def test_openke_reader_decodes_ids_to_the_same_triples(data_dir):
    t = parse_all(f"openke:{data_dir / 'mmkg/DB15K/openke'}")
    k = kinds(t)
    assert (k[R.TRIPLE], k[R.ENTITY], k[R.RELATION]) == (99_028, 12_842, 279)
    assert k[R.HEADER] == 5  # the count line of each file
    tri = t.filter(pc.equal(t["kind"], R.TRIPLE))
    assert tri.group_by(["s", "p", "o"]).aggregate([]).num_rows == 89_197


def test_sameas_fbmap_imageindex_literals(data_dir):
    mm = data_dir / "mmkg"
    same = parse_all(f"sameas:{mm / 'DB15K/DB15K_SameAsLink.txt'}")
    assert kinds(same) == {R.LINK: 12_846}
    assert same.slice(0, 1).select(["s", "o"]).to_pylist() == [
        {"s": "/m/01m4kpp", "o": "http://dbpedia.org/resource/Andy_Griffith"}]

    fb = parse_all(f"fbmap:{mm / 'FB15K/fb15k_mid-wdurl-wpurl_14951.txt'}")
    assert kinds(fb)[R.LINK] == 14_951 and R.REJECT not in kinds(fb)
    row = fb.filter(pc.equal(fb["s"], "Q171745")).to_pylist()[0]   # /m/016ywr → Q171745, hint "Jeremy Irons"
    assert (row["kind"], row["o"]) == (R.ENTITY_HINT, "Jeremy Irons")

    idx = parse_all(f"image-index:{mm / 'DB15K/DB15K_ImageIndex.txt'}")
    assert kinds(idx) == {R.LITERAL: 12_841}
    assert idx.slice(0, 1).select(["s", "p", "o"]).to_pylist() == [
        {"s": "http://dbpedia.org/resource/Andy_Griffith", "p": "mmkg:imageIndex", "o": "DBIMG00001"}]

    lit = parse_all(f"literals:{mm / 'YAGO15K/YAGO15K_NumericalTriples.v984182b.txt'}")
    assert kinds(lit) == {R.LITERAL: 48_405}
    row = lit.slice(0, 1).to_pylist()[0]
    assert row["s"] == "http://yago-knowledge.org/resource/Tisch_School_of_the_Arts"   # joins the YAGO sameAs URIs
    assert (row["p"], row["o"], row["dt"]) == ("hasLongitude", "-73.99377777777778", "xsd:decimal")


def test_tsv_header_extra_columns_and_bad_lines(tmp_path):
    p = tmp_path / "fb.tsv"
    p.write_bytes(b"head\trelation\ttail\tsplit\n"
                  b"/m/a\t/film/genre\t/m/b\tvalid\n"
                  b"\n"
                  b"/m/a\t/film/genre\r\n"
                  b"/m/c\t\t/m/d\ttest\n"
                  b"\xff\xfe\t/r\t/m/e\n"
                  b"/m/a\t/film/genre\t/m/b\ttest\n")
    t = parse_all(f"tsv:{p}")
    tri = t.filter(pc.equal(t["kind"], R.TRIPLE))
    assert tri.select(["s", "p", "o", "line_no"]).to_pylist() == [
        {"s": "/m/a", "p": "/film/genre", "o": "/m/b", "line_no": 2},
        {"s": "/m/a", "p": "/film/genre", "o": "/m/b", "line_no": 7}]
    rej = t.filter(pc.equal(t["kind"], R.REJECT)).sort_by("line_no")
    assert rej["line_no"].to_pylist() == [4, 5, 6]
    reasons = rej["reason"].to_pylist()
    assert "got 2" in reasons[0] and "empty field" in reasons[1] and reasons[2] == "invalid UTF-8"
    skipped = t.filter(pc.equal(t["kind"], R.HEADER))
    assert sorted(skipped["reason"].to_pylist()) == ["blank line", "header"]


def test_rdf_turtle_and_ntriples_with_a_bad_line(tmp_path):
    ttl = tmp_path / "g.ttl"
    ttl.write_text('@prefix ex: <http://ex.org/> .\n@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n'
                   'ex:a ex:knows ex:b ; rdfs:label "A" ; ex:age 42 .\n')
    t = parse_all(f"rdf:{ttl}")
    # the rdfs:label statement is kept as a literal (exported as ingested) and gives the label
    assert kinds(t) == {R.TRIPLE: 1, R.ENTITY: 1, R.LITERAL: 2}
    lits = t.filter(pc.equal(t["kind"], R.LITERAL)).to_pylist()
    assert [(x["s"], x["o"], x["dt"]) for x in lits] == [("http://ex.org/a", "A", "xsd:string"),
                                                         ("http://ex.org/a", "42", "xsd:integer")]
    (label,) = t.filter(pc.equal(t["kind"], R.ENTITY)).to_pylist()
    assert (label["p"], label["o"], label["primary"]) == ("label", "A", False)

    nt = tmp_path / "g.nt"
    nt.write_text('<http://ex.org/a> <http://ex.org/p> <http://ex.org/b> .\nthis is not rdf\n'
                  '<http://ex.org/b> <http://ex.org/p> <http://ex.org/c> .\n')
    t = parse_all(f"rdf:{nt}")
    k = kinds(t)
    assert (k[R.TRIPLE], k[R.REJECT]) == (2, 1)
    assert t.filter(pc.equal(t["kind"], R.REJECT))["line_no"].to_pylist() == [2]

    bad = tmp_path / "bad.ttl"
    bad.write_text("@prefix ex <oops> .\n")
    t = parse_all(f"rdf:{bad}")
    assert kinds(t) == {R.REJECT: 1} and t["reason"][0].as_py().startswith("not Turtle: ")
    assert t["line_no"].to_pylist() == [1]


def test_images_dir_and_mapping(data_dir, tmp_path):
    d = parse_all(f"images:{data_dir / 'markg/MARS/images'}")
    assert kinds(d) == {R.IMAGE: 17}
    assert set(d["s"].to_pylist()) == {"Q1501", "Q6574"}
    assert "Q6574/1.timezones2008_utc%2b0_gray.png" in d["o"].to_pylist()

    m = parse_all(f"images:{data_dir / 'entity_images/imagenet_markg_overlap/mapping.tsv'}")
    img = m.filter(pc.equal(m["kind"], R.IMAGE))
    assert pc.sum(img["primary"]).as_py() == 133          # one line per image file
    assert img.num_rows > 133                             # some images map to several QIDs
    assert kinds(m)[R.HEADER] == 1

    loose = tmp_path / "imgs"
    (loose / "Q1").mkdir(parents=True)
    (loose / "Q1" / "a.jpg").write_bytes(b"x")
    (loose / "stray.jpg").write_bytes(b"x")
    t = parse_all(f"images:{loose}")
    assert kinds(t) == {R.IMAGE: 1, R.REJECT: 1}
    assert t.filter(pc.equal(t["kind"], R.REJECT))["reason"][0].as_py().startswith("image not inside")
