"""The analyst web app through Flask's test client, on MarKG ingested with its real images."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from mmkg.jobs.web.app import create_app
from mmkg.kg_store import open_store
from tests.jobs.analyst_fixtures import markg_images_kg


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return markg_images_kg(data_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def client(kg):
    return create_app(kg).test_client()


def html(client, url: str, status: int = 200) -> str:
    r = client.get(url)
    assert r.status_code == status, (url, r.status_code)
    return r.get_data(as_text=True)


def test_search_by_label_ranks_the_exact_label_first_and_pages(client):
    page = html(client, "/search?q=zebra")
    links = re.findall(r'<li class="result"><a href="/entity\?key=([^"]+)">([^<]+)</a>', page)
    assert links[0] == ("Q32789", "zebra") and ("Q21044738", "zebra skin") in links
    first = html(client, "/search?q=an")
    second = html(client, "/search?q=an&page=2")
    total = int(re.search(r'id="result-count">([\d,]+) results', first).group(1).replace(",", ""))
    keys1 = re.findall(r'class="result"><a href="/entity\?key=([^"]+)"', first)
    keys2 = re.findall(r'class="result"><a href="/entity\?key=([^"]+)"', second)
    assert total > 40 and len(keys1) == len(keys2) == 20 and not set(keys1) & set(keys2)
    assert 'id="next-page"' in first and 'id="prev-page"' in second


def test_entity_page_shows_its_image_and_neighbourhood(client, kg):
    page = html(client, "/entity?key=zebra")
    assert 'id="entity-key">Q32789<' in page
    (src,) = re.findall(r'<img class="entity-image" src="(/image/[0-9a-f]{64})"', page)
    blob = client.get(src)
    assert blob.status_code == 200 and blob.mimetype == "image/jpeg"
    assert hashlib.sha256(blob.data).hexdigest() == src.rsplit("/", 1)[1]  # content-addressed
    svg = page[page.index('<svg id="neighbourhood"'):page.index("</svg>")]
    assert svg.count("<circle") == 8 and svg.count("<line") == 7
    neighbours = re.findall(r'<li class="neighbour"><a href="/entity\?key=(Q\d+)"', page)
    assert len(neighbours) == 7 and "Q27022" in neighbours  # Equus, the parent taxon
    assert html(client, "/entity?key=Q32789") == page  # by key or by label: same page


def test_urls_are_validated_never_paths(client):
    for url in ("/entity?key=../../manifest.json", "/entity?key=", "/entity?key=%00x",
                "/image/" + "0" * 64, "/image/../../manifest.json", "/image/..%2F..%2Fmanifest.json",
                "/shards/set?name=subgraphs/../../tables", "/shards/set?name=/etc",
                "/shards/query?name=tables&qid=x", "/plot/secret.png", "/nope"):
        r = client.get(url)
        assert r.status_code in (400, 404), url
        assert b"Traceback" not in r.data
    assert client.post("/search", data={"q": "zebra"}).status_code == 405
    assert client.get("/search?q=zebra&page=x").status_code == 400
    assert client.get("/retrieve?q=zebra&k=7").status_code == 400
    r = client.get("/")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]


def test_text_search_and_retrieval_say_when_there_are_no_embeddings(client, kg):
    if any(k.startswith("vectors/") for k in open_store(kg).manifest["artifacts"]):
        pytest.skip("this store has embeddings")
    assert "no embeddings yet" in html(client, "/search?q=striped+horse&mode=text")
    assert "no embeddings yet" in html(client, "/retrieve?q=Which+animal+has+stripes%3F&k=10")


def test_stats_page_and_plots(client):
    page = html(client, "/stats")
    assert "P1343" in page and "described by source" in page and "image coverage" in page
    for name in ("degree", "relations"):
        r = client.get(f"/plot/{name}.png")
        assert r.status_code == 200 and r.data[:8] == b"\x89PNG\r\n\x1a\n"


def _write_random_shards(store, data_dir, n_queries: int = 5) -> list[list[int]]:
    """A MARS test shard set of random 1-hop triples, written in the shard format of
    mmkg.kg_store.shards and registered like `mmkg retrieve` does (needs no embeddings)."""
    import json

    import pyarrow as pa

    from mmkg.kg_store import KGStore
    from mmkg.kg_store.rdf import neighbourhood_triples
    from mmkg.kg_store.shards import BASE_SCHEMA, ShardWriter, subgraph_rel

    lines = (data_dir / "markg" / "MARS" / "test.json").read_text().splitlines()[:n_queries]
    tri, rng, rows, picked = store.triples_array(), np.random.default_rng(0), [], []
    keys = store.table("entities", ["key"])["key"].to_pylist()
    for i, line in enumerate(lines):
        inst = json.loads(line)
        seeds = store.entity_ids(inst["example"] + [inst["question"]])
        cands = neighbourhood_triples(store, seeds[seeds >= 0], 1)
        tids = np.sort(rng.choice(cands, size=min(10, cands.size), replace=False))
        picked.append(tids.tolist())
        h, r, t = tri[tids].T
        rows.append({"query_id": f"test-{i}", "dataset": "mars", "split": "test",
                     "query_text": " : ".join(inst["example"]) + f" :: {inst['question']} : ?",
                     "seed_entity_ids": seeds.tolist(), "triple_ids": tids.tolist(), "head_ids": h.tolist(),
                     "relation_ids": r.tolist(), "tail_ids": t.tolist(), "head_keys": [keys[x] for x in h],
                     "relation_keys": [str(x) for x in r], "tail_keys": [keys[x] for x in t],
                     "head_labels": [], "relation_labels": [], "tail_labels": [],
                     "scores": np.linspace(1, 0.5, len(tids)).tolist(), "num_candidates": int(cands.size),
                     "empty": len(tids) == 0})
    rel = subgraph_rel("mars", "test", "0123456789abcdef")
    with KGStore.writer(store.root) as w:
        sw = ShardWriter(w.root / rel)
        sw.write(pa.Table.from_pylist(rows, schema=BASE_SCHEMA))
        sw.close({"dataset": "mars", "split": "test", "queries": len(rows), "encoder": "random-baseline"})
        w.set_artifact(rel, {"queries": len(rows)}, files=[str(p.relative_to(w.root)) for p in (w.root / rel).rglob("*") if p.is_file()])
        w.commit()
    return picked


def test_shard_browser_lists_sets_queries_and_subgraphs(kg, data_dir):
    picked = _write_random_shards(open_store(kg), data_dir)
    app = create_app(kg).test_client()  # a new app sees the new manifest
    listing = html(app, "/shards")
    (set_url,) = re.findall(r'href="(/shards/set\?name=subgraphs/mars/test/0123456789abcdef)"', listing)
    queries = html(app, set_url)
    qurls = re.findall(r'href="(/shards/query\?[^"]+)"', queries)
    assert len(qurls) == 5
    page = html(app, qurls[0].replace("&amp;", "&"))
    shown = [int(x) for x in re.findall(r'<tr class="triple" data-triple="(\d+)">', page)]
    assert shown == picked[0] and len(shown) > 0
    assert page.count('<td class="score">') == len(shown)
    svg = page[page.index('<svg id="shard-graph"'):page.index("</svg>")]
    assert svg.count("<line") == len(shown)


# ---- issue 30: the stats page, image counts and the neighbourhood drawing ----------------------------
@pytest.fixture(scope="module")
def db15k_images(data_dir, tmp_path_factory):
    """DB15K's triples (two of them foaf:depiction) and its image index (references, no files), merged
    into Wikidata ids, plus MarKG with its real images: the demo's image cases in one small store."""
    from mmkg.pipeline.ingest import ingest
    mm = data_dir / "mmkg"
    root = tmp_path_factory.mktemp("web-db15k") / "kg"
    ingest(root, [f"markg:{data_dir / 'markg' / 'MarKG'}",
                  f"images:{data_dir / 'entity_images' / 'imagenet_markg_overlap' / 'mapping.tsv'}",
                  f"mmkg:{mm / 'DB15K' / 'DB15K_EntityTriples.reconstructed.txt'}",
                  f"image-index:{mm / 'DB15K' / 'DB15K_ImageIndex.txt'}",
                  f"sameas:{mm / 'DB15K' / 'DB15K_SameAsLink.txt'}",
                  f"fbmap:{mm / 'FB15K' / 'fb15k_mid-wdurl-wpurl_14951.txt'}"], engine="local")
    return root


def test_images_are_counted_once_as_sparql_counts_them(db15k_images):
    from click.testing import CliRunner

    from mmkg.jobs.cli import cli
    from mmkg.jobs.commands.store import analyst_stats
    store = open_store(db15k_images)
    cov = analyst_stats(store)["image_coverage"]
    assert cov["depiction_triples"] == 2
    stored = len(set(store.table("images", ["entity_id"])["entity_id"].to_pylist()))
    assert cov["entities_with_images"] == stored + 2  # the two depicting entities have no stored image
    out = CliRunner().invoke(cli, ["sparql", "--kg", str(db15k_images), "--json",
                                   "SELECT (COUNT(DISTINCT ?e) AS ?n) WHERE { ?e foaf:depiction ?img }"])
    assert int(__import__("json").loads(out.stdout)["rows"][0]["n"]) == cov["entities_with_images"]
    client = create_app(db15k_images).test_client()
    page = html(client, "/stats")
    assert f'id="image-coverage">{cov["entities_with_images"]:,} of' in page
    berlin = html(client, "/entity?key=Q64")
    heading = re.search(r'<h2 id="images-heading">(.*?)</h2>', berlin).group(1)
    assert heading.startswith("Images (0)") and "1 image-index reference without files" in heading
    assert "DBIMG" in berlin[berlin.index('id="image-refs"'):]
    hp = html(client, "/entity?key=Q80978")  # Hewlett-Packard foaf:depiction software (a DB15K triple)
    assert re.search(r'<h2 id="images-heading">Images \(1\)', hp) and 'class="depiction"' in hp


def test_stats_page_numbers_and_relation_ticks(client):
    from mmkg.jobs.web.plots import relation_tick
    page = html(client, "/stats")
    summary = re.search(r'<p id="degree-summary">(.*?)</p>', page).group(1)
    assert not re.search(r"\d\.\d{3,}", summary), summary  # no 67.90000000000146
    assert relation_tick("http://dbpedia.org/ontology/starring", "starring") == "starring"
    assert relation_tick("P1343", "described by source") == "described by source (P1343)"
    assert client.get("/plot/relations.png").status_code == 200


def test_neighbourhood_labels_lie_on_their_own_rays(db15k_images):
    """Berlin has 156 triples: 36 of its edges are drawn, each neighbour's label along its own ray."""
    from mmkg.jobs.web import drawing
    from mmkg.jobs.web.queries import StoreView
    view = StoreView(open_store(db15k_images))
    eid, _ = view.resolve("Q64")
    star = drawing.star(view.card(eid), view.neighbours(eid))
    ring = [n for n in star.nodes if not n["center"]]
    assert len(ring) > 20 and star.hidden > 0  # 36 edges drawn; some neighbours have two relations
    rays = {(n["rot"], n["anchor"]) for n in ring}
    assert len(rays) == len(ring)  # no two labels share a direction, so none overlap
    for n in ring:  # each label starts just outside its node, on the ray from the centre
        cx = cy = drawing.STAR_SIZE / 2
        assert abs(((n["tx"] - cx) ** 2 + (n["ty"] - cy) ** 2) ** 0.5 - (drawing.STAR_RADIUS + 14)) < 1
