"""End to end in headless Chromium against `mmkg serve` on localhost: search "zebra", open it,
see its image and neighbours, run a retrieval (MiniLM + FAISS), search by text; screenshots go
to test-artifacts/web/.

Chromium and chromedriver are Debian packages (scripts/ensure_browser.sh installs them for
`make test`). Without them the test skips, unless MMKG_REQUIRE_BROWSER=1 (set by CI), where
a missing browser is a failure rather than a silent skip.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.jobs.analyst_fixtures import markg_images_kg
from tests.jobs.webdriver import Browser, find_browser

pytestmark = pytest.mark.browser
ARTIFACTS = REPO / "test-artifacts" / "web"


@pytest.fixture(scope="module")
def browser():
    found = find_browser()
    if found is None:
        if os.environ.get("MMKG_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium/chromedriver missing; run scripts/ensure_browser.sh")
        pytest.skip("chromium/chromedriver not installed (scripts/ensure_browser.sh installs them)")
    with Browser(*found) as b:
        yield b


#: rows of each kind to embed: MiniLM on the whole of MarKG (45k texts) takes minutes on 2 CPU
#: cores; the first 200 entities/relations/triples make the retrieval page real in seconds.
EMBED_LIMIT = 200


@pytest.fixture(scope="module")
def embedded_kg(data_dir, tmp_path_factory) -> Path:
    """A copy of the MarKG+images store with MiniLM vectors and FAISS indexes (embed → index)."""
    from mmkg.pipeline.embed import embed_store
    from mmkg.retrieval.index import build_store_indexes
    kg = tmp_path_factory.mktemp("browser") / "kg"
    shutil.copytree(markg_images_kg(data_dir, tmp_path_factory), kg)
    embed_store(kg, "minilm", limit=EMBED_LIMIT, progress=False)
    build_store_indexes(kg, "minilm")
    return kg


@pytest.fixture(scope="module")
def server(embedded_kg):
    proc = subprocess.Popen([sys.executable, "-m", "mmkg.jobs", "serve", "--kg", str(embedded_kg), "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # "serving KG on http://127.0.0.1:PORT/ ..."
        while line.startswith(("building the SPARQL store", "built sparql/")):  # first serve of this version
            line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"mmkg serve did not start: {line}{proc.stdout.read() if proc.poll() is not None else ''}"
        yield match.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _image_loaded(browser: Browser, css: str) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if browser.execute("const i = document.querySelector(arguments[0]);"
                           "return !!i && i.complete && i.naturalWidth > 0;", css):
            return True
        time.sleep(0.2)
    return False


def test_search_open_entity_and_retrieve(browser: Browser, server: str):
    # 1. search "zebra" by label
    browser.get(server)
    browser.type(browser.wait_for("#search-input"), "zebra")
    browser.click(browser.find("#search-button"))
    browser.wait_for("#results li.result")
    first = browser.find("#results li.result a")
    assert browser.text(first) == "zebra"
    browser.screenshot(ARTIFACTS / "01-search-zebra.png")

    # 2. open the entity: its image is shown and its neighbours are drawn and listed
    browser.click(first)
    assert browser.text(browser.wait_for("#entity-key")) == "Q32789"
    assert _image_loaded(browser, "img.entity-image"), "the zebra image did not load"
    assert len(browser.find_all("#neighbourhood circle")) == 8
    names = [browser.text(e) for e in browser.find_all("li.neighbour a")]
    assert "Equus" in names and len(names) == 7
    browser.screenshot(ARTIFACTS / "02-entity-zebra.png")

    # 3. follow a neighbour from the drawing's list: navigation by key works both ways
    browser.click(next(e for e in browser.find_all("li.neighbour a") if browser.text(e) == "Equus"))
    assert browser.text(browser.wait_for("#entity-key")) == "Q27022"

    # 4. one retrieval: the top-10 triples, drawn and listed with descending scores
    browser.get(server + "retrieve")
    browser.type(browser.wait_for("#question-input"), "Which country is a neighbour of France?")
    browser.click(browser.find("#retrieve-button"))
    browser.wait_for("#retrieved, #retrieve-message", timeout=300)  # first query loads MiniLM
    assert not browser.find_all("#retrieve-message"), browser.text(browser.find("#retrieve-message"))
    rows = browser.find_all("#retrieved tr.triple")
    assert len(rows) == 10
    assert browser.text(browser.find("#retriever-name")) == "anchored"  # the page names its retriever
    # a triple's text cosine where the store has its vector (the anchored retriever needs none, and
    # this store embedded only the first EMBED_LIMIT triples), a dash otherwise
    cosines = [browser.text(e) for e in browser.find_all("#retrieved td.cosine")]
    assert len(cosines) == 10 and all(c == "–" or -1 <= float(c) <= 1 for c in cosines), cosines
    scores = [float(browser.text(e)) for e in browser.find_all("#retrieved td.score")]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
    assert len(set(scores)) > 1  # a score that tells the triples apart
    assert len(browser.find_all("#retrieved-graph line")) == 10
    browser.screenshot(ARTIFACTS / "03-retrieve.png")

    # the same store answers text search through the FAISS entity index
    browser.get(server + "search?mode=text&q=a+country+in+Europe")
    browser.wait_for("#results li.result")
    assert "encoder minilm" in browser.text(browser.find("#result-count"))
    browser.screenshot(ARTIFACTS / "05-text-search.png")

    # 5. the plots render
    browser.get(server + "stats")
    assert _image_loaded(browser, "#degree-plot") and _image_loaded(browser, "#relation-plot")
    browser.screenshot(ARTIFACTS / "04-stats.png")

    # 6. the SPARQL query page: an example query runs and its results table links to entities
    browser.get(server + "query")
    examples = browser.find_all("a.example")
    assert len(examples) >= 4
    browser.click(next(e for e in examples if browser.text(e) == "Triples per relation"))
    browser.wait_for("#query-results")
    cells = [browser.text(e) for e in browser.find_all("#query-results tbody tr td")]
    assert "wdt:P1343" in cells and "4430 integer" in cells  # IRIs with the predefined prefixes; value, datatype
    browser.screenshot(ARTIFACTS / "06-query.png")
    for name in ("01-search-zebra", "02-entity-zebra", "03-retrieve", "04-stats", "05-text-search", "06-query"):
        assert (ARTIFACTS / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
