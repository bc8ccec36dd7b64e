"""Issue 29, sources: Wikidata IRIs onto MarKG's keys (an export re-ingests onto itself), labels of
properties label the relation, TSV label columns, source names unique by path, rejects in the
ingest summary, the documented list of formats, and `demo` composed with an extra source."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmkg.jobs.cli import cli
from mmkg.kg_store import open_store
from mmkg.pipeline.ingest import ingest
from mmkg.pipeline.readers import reader_registry

REPO = Path(__file__).resolve().parents[2]
N_TRIPLES = 400


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def markg_subset(data_dir, tmp_path_factory) -> Path:
    """A MarKG folder of the first 400 real triples, the texts of their entities and every relation."""
    src, out = data_dir / "markg/MarKG", tmp_path_factory.mktemp("markg-subset") / "MarKG"
    out.mkdir()
    triples = _lines(src / "wiki_tuple_ids.txt")[:N_TRIPLES]
    keys = {k for line in triples for k in (line.split("\t")[0], line.split("\t")[2])}
    (out / "wiki_tuple_ids.txt").write_text("\n".join(triples) + "\n")
    for name in ("entity2text.txt", "entity2textlong.txt"):
        (out / name).write_text("".join(f"{ln}\n" for ln in _lines(src / name) if ln.split("\t")[0] in keys))
    for name in ("relation2text.txt", "relation2textlong.txt"):
        (out / name).write_text((src / name).read_text(encoding="utf-8"))
    return out


def _counts(store) -> tuple[int, int, int]:
    return store.count("entities"), store.count("relations"), store.count("triples")


def _labels(store, table: str) -> dict[str, str]:
    t = store.table(table, ["key", "label"])
    return dict(zip(t["key"].to_pylist(), t["label"].to_pylist()))


def _cli(*args: str):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def test_an_nt_export_of_markg_reingests_onto_itself(markg_subset, tmp_path):
    """`mmkg export --format nt` writes `wd:Q…`/`wdt:P…` IRIs; ingested into a fresh KG they give
    the same keys, counts and labels (relations labelled by their `rdfs:label`, not as entities);
    ingested into the same KG they add no entity, relation or triple (no `wdt:P31` beside `P31`)."""
    kg, fresh = tmp_path / "kg", tmp_path / "fresh"
    _cli("ingest", "--kg", kg, "--engine", "local", "--source", f"markg:{markg_subset}")
    store = open_store(kg)
    n_ent, n_rel, n_tri = _counts(store)
    assert n_tri == N_TRIPLES and n_rel == 192  # every relation of relation2text, used or not
    _cli("export", "--kg", kg, "--format", "nt", "--out", tmp_path / "kg.nt")
    _cli("export", "--kg", kg, "--format", "nt", "--no-annotations", "--out", tmp_path / "bare.nt")
    assert "<http://www.wikidata.org/prop/direct/P31>" in (tmp_path / "kg.nt").read_text()

    _cli("ingest", "--kg", fresh, "--engine", "local", "--source", f"rdf:{tmp_path / 'kg.nt'}")
    again = open_store(fresh)
    assert _counts(again) == (n_ent, n_rel, n_tri)
    assert _labels(again, "relations") == _labels(store, "relations")  # keys P31 …, MarKG's labels
    assert _labels(again, "entities") == _labels(store, "entities")

    for export in ("bare.nt", "kg.nt"):
        res = _cli("ingest", "--kg", kg, "--engine", "local", "--json", "--source", f"rdf:{tmp_path / export}")
        c = json.loads(res.stdout.strip().splitlines()[-1])["counts"]
        assert (c["entities_added"], c["relations_added"], c["triples_added"], c["rejects_added"]) == (0, 0, 0, 0)
    assert _counts(open_store(kg)) == (n_ent, n_rel, n_tri)
    assert not [k for k in _labels(open_store(kg), "relations") if "wikidata" in k]


def test_wikidata_prefixed_names_in_a_tsv_meet_markg_keys(markg_subset, tmp_path):
    """`wd:Q42 wdt:P31 wd:Q5` in a line format and `…/entity/P31` are MarKG's `Q42`, `P31`, `Q5`."""
    kg = tmp_path / "kg"
    ingest(kg, [f"markg:{markg_subset}"], engine="local")
    h, r, t = _lines(markg_subset / "wiki_tuple_ids.txt")[0].split("\t")
    tsv = tmp_path / "prefixed.tsv"
    tsv.write_text(f"wd:{h}\twdt:{r}\twd:{t}\n"
                   f"<http://www.wikidata.org/entity/{h}>\t<http://www.wikidata.org/entity/{r}>\t"
                   f"<https://www.wikidata.org/wiki/{t}>\n")
    res = ingest(kg, [f"tsv:{tsv}"], engine="local")
    assert (res.counts["entities_added"], res.counts["relations_added"], res.counts["triples_added"]) == (0, 0, 0)
    assert res.inputs[0]["counts"]["duplicates"] == 1  # both lines name the same MarKG triple


def test_a_label_on_a_property_labels_the_relation(data_dir, tmp_path):
    """`rdfs:label` / `schema:description` of a property (a `wdt:` IRI, or an IRI used as a
    predicate) label the relation; no isolated entity is made of it."""
    rel_text = dict(ln.split("\t", 1) for ln in _lines(data_dir / "markg/MarKG/relation2text.txt"))
    nt = tmp_path / "zoo.nt"
    nt.write_text(
        "<http://www.wikidata.org/entity/Q42> <http://www.wikidata.org/prop/direct/P31> "
        "<http://www.wikidata.org/entity/Q5> .\n"
        f'<http://www.wikidata.org/prop/direct/P31> <http://www.w3.org/2000/01/rdf-schema#label> "{rel_text["P31"]}" .\n'
        '<http://www.wikidata.org/prop/direct/P279> <https://schema.org/description> "a subclass" .\n'
        "<http://ex.org/Q5> <http://ex.org/eats> <http://ex.org/plant> .\n"
        '<http://ex.org/eats> <http://www.w3.org/2000/01/rdf-schema#label> "eats" .\n')
    store = ingest(tmp_path / "kg", [f"rdf:{nt}"], engine="local").store
    rels = {r["key"]: r for r in store.table("relations").to_pylist()}
    assert rels["P31"]["label"] == rel_text["P31"] == "instance of"
    assert rels["P279"]["description"] == "a subclass"  # a wdt: IRI is a property even without a triple
    assert rels["http://ex.org/eats"]["label"] == "eats"
    ents = set(store.table("entities", ["key"])["key"].to_pylist())
    assert ents == {"Q42", "Q5", "http://ex.org/Q5", "http://ex.org/plant"}
    assert store.count("literals") == 0


def test_tsv_label_columns(data_dir, tmp_path):
    """Header columns `head_label`, `relation_label`, `tail_label` (any order after the first
    three) label the entities and relations of real MarKG triples; empty cells give nothing."""
    markg = data_dir / "markg/MarKG"
    ent = dict(ln.split("\t", 1) for ln in _lines(markg / "entity2text.txt"))
    rel = dict(ln.split("\t", 1) for ln in _lines(markg / "relation2text.txt"))
    triples = [ln.split("\t") for ln in _lines(markg / "wiki_tuple_ids.txt")[:5]]
    tsv = tmp_path / "labelled.tsv"
    rows = ["head\trelation\ttail\ttail_label\tnote\thead_label\trelation_label"]
    rows += [f"{h}\t{r}\t{t}\t{ent[t]}\tx\t{ent[h] if i else ''}\t{rel[r]}" for i, (h, r, t) in enumerate(triples)]
    tsv.write_text("\n".join(rows) + "\n")
    store = ingest(tmp_path / "kg", [f"tsv:{tsv}"], engine="local").store
    labels = _labels(store, "entities")
    h0 = triples[0][0]
    assert labels[h0] == h0  # its only head_label cell is empty: the key
    assert all(labels[t] == ent[t] for _, _, t in triples)
    assert all(labels[h] == ent[h] for h, _, _ in triples[1:] if h != h0)
    assert _labels(store, "relations") == {r: rel[r] for _, r, _ in triples}
    assert store.manifest["inputs"][0]["counts"]["read"] == 5 and store.count("triples") == 5


def test_source_names_are_unique_by_path(data_dir, tmp_path):
    """Two `mapping.tsv` in different folders are two sources, in one ingest and across ingests;
    a path the store already has keeps its name."""
    lines = _lines(data_dir / "markg/MarKG/wiki_tuple_ids.txt")
    for i, folder in enumerate(("a", "b", "c")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "mapping.tsv").write_text("\n".join(lines[i * 10:(i + 1) * 10]) + "\n")
    kg = tmp_path / "kg"
    first = ingest(kg, [f"tsv:{tmp_path / 'a/mapping.tsv'}", f"tsv:{tmp_path / 'b/mapping.tsv'}"], engine="local")
    assert [i["source"] for i in first.inputs] == ["tsv:a/mapping.tsv", "tsv:b/mapping.tsv"]
    sources = first.store.table("triples", ["source"])["source"].to_pylist()
    assert sources == ["tsv:a/mapping.tsv"] * 10 + ["tsv:b/mapping.tsv"] * 10
    later = ingest(kg, [f"tsv:{tmp_path / 'c/mapping.tsv'}"], engine="local")
    assert [i["source"] for i in later.inputs] == ["tsv:c/mapping.tsv"]
    (tmp_path / "a/mapping.tsv").write_text("\n".join(lines[30:35]) + "\n")  # changed: same name
    again = ingest(kg, [f"tsv:{tmp_path / 'a/mapping.tsv'}"], engine="local")
    assert [i["source"] for i in again.inputs] == ["tsv:a/mapping.tsv"]
    alone = ingest(tmp_path / "kg2", [f"tsv:{tmp_path / 'c/mapping.tsv'}"], engine="local")
    assert [i["source"] for i in alone.inputs] == ["tsv:mapping.tsv"]  # no rival: the plain name


def test_ingest_summary_reports_rejects(data_dir, tmp_path):
    lines = _lines(data_dir / "markg/MarKG/wiki_tuple_ids.txt")[:3]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("\n".join([*lines, "only\ttwo"]) + "\n")
    res = _cli("ingest", "--kg", tmp_path / "kg", "--engine", "local", "--source", f"tsv:{tsv}")
    assert "rejects: 1 input records rejected in this ingest: expected 3 tab-separated fields" in res.stdout
    assert "FROM rejects" in res.stdout
    res = _cli("ingest", "--kg", tmp_path / "kg2", "--engine", "local", "--source", f"tsv:{tmp_path / 't.tsv'}",
               "--source", f"markg:{data_dir / 'markg/MarKG'}")
    assert "rejects: 1 input records rejected" in res.stdout


def test_every_source_format_is_documented():
    """`mmkg ingest --help` and docs/SOURCES.md (linked from the README) list every reader."""
    help_text = CliRunner().invoke(cli, ["ingest", "--help"]).output
    doc = (REPO / "docs/SOURCES.md").read_text()
    for name in reader_registry:
        assert f"{name}:" in help_text or name == "numeric", name
        assert f"`{name}`" in doc, name
    assert "head_label" in help_text and "head_label" in doc and "wdt:" in doc
    assert "docs/SOURCES.md" in (REPO / "README.md").read_text()


def test_ingest_demo_source_needs_the_data_folder(tmp_path):
    res = CliRunner().invoke(cli, ["ingest", "--kg", str(tmp_path / "kg"), "--source", "demo", "--source",
                                   f"tsv:{tmp_path / 'x.tsv'}"])
    assert res.exit_code == 2 and "--source demo needs --data DIR" in res.output
    assert not (tmp_path / "kg").exists()


@pytest.mark.slow
def test_demo_composes_with_an_extra_source(data_dir, tmp_path):
    """`sources: [demo, "tsv:extra.tsv"]` through the ingest stage: every demo input and the extra
    one (with its label columns) in one store, every source named once."""
    from mmkg.jobs.stages import Context, ingest_run
    from mmkg.pipeline.demo_sources import demo_sources
    extra = tmp_path / "extra" / "mapping.tsv"
    extra.parent.mkdir()
    extra.write_text("head\trelation\ttail\thead_label\ttail_label\nQ42\tP31\tQ5\tDouglas Adams\thuman\n")
    ctx = Context(kg=tmp_path / "kg", data=data_dir, encoder="minilm", progress=False)
    out = ingest_run(ctx, sources=["demo", f"tsv:{extra}"], engine="local")
    store = open_store(tmp_path / "kg")
    names = [i["source"] for i in store.manifest["inputs"]]
    assert out["counts"]["sources_ingested"] == len(demo_sources(data_dir)) + 1 == len(names)
    assert len(set(names)) == len(names) and "tsv:mapping.tsv" in names
    assert "images:imagenet_markg_overlap/mapping.tsv" not in names  # no rival among the images sources
    labels = _labels(store, "entities")
    assert labels["Q42"] == "Douglas Adams" and labels["Q5"] == "human"
    assert store.verify() == []


def test_a_source_keeps_its_name_when_its_spec_is_written_from_another_folder(data_dir, tmp_path, monkeypatch):
    """The same file given by a relative path from another working folder is the same source."""
    lines = _lines(data_dir / "markg/MarKG/wiki_tuple_ids.txt")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "mapping.tsv").write_text("\n".join(lines[:10]) + "\n")
    kg = tmp_path / "kg"
    monkeypatch.chdir(tmp_path / "a")
    ingest(kg, ["tsv:mapping.tsv"], engine="local")
    monkeypatch.chdir(tmp_path)
    res = ingest(kg, ["tsv:a/mapping.tsv", "tsv:b/mapping.tsv"], engine="local")
    assert [i["source"] for i in res.inputs] == ["tsv:mapping.tsv", "tsv:b/mapping.tsv"]
