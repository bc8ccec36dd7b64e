"""Screenshots of the web view for docs/img/, with the headless Chromium the browser tests use.

    PYTHONPATH=. .venv/bin/python scripts/web_screenshots.py --kg build/demo-kg

Serves the KG on a free loopback port, opens the SPARQL query page (an example query run), the stats
page and an entity page, and writes palette PNGs (small enough for the repository) to docs/img/.
"""
from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.jobs.webdriver import Browser, find_browser  # noqa: E402

PAGES = {  # file name → (path, CSS selector that says the page is ready, element to scroll to or None)
    "query-page.png": ("query?query=SELECT+%3Fp+%28COUNT%28*%29+AS+%3Fn%29+WHERE+%7B+%3Fs+%3Fp+%3Fo+%7D+GROUP+BY+"
                       "%3Fp+ORDER+BY+DESC%28%3Fn%29+LIMIT+12", "#query-results", None),
    "stats-page.png": ("stats", "#relation-plot", None),
    "stats-relations.png": ("stats", "#relation-plot", "degree-summary"),
    "entity-berlin.png": ("entity?key=Q64", "#neighbourhood", "images-heading"),
}


def small_png(raw: bytes, height: int) -> bytes:
    from PIL import Image
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    img = img.crop((0, 0, img.width, min(img.height, height))).quantize(colors=64)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kg", required=True)
    ap.add_argument("--out", default=str(REPO / "docs" / "img"))
    ap.add_argument("--height", type=int, default=1100, help="crop the pages to this many pixels")
    args = ap.parse_args()
    found = find_browser()
    if found is None:
        sys.exit("chromium/chromedriver missing (scripts/ensure_browser.sh)")
    proc = subprocess.Popen([sys.executable, "-m", "mmkg.jobs", "serve", "--kg", args.kg, "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            if not line:
                sys.exit("mmkg serve did not start")
            m = re.search(r"http://127\.0\.0\.1:\d+/", line)
            url = m.group(0) if m else None
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with Browser(*found) as b:
            for name, (path, ready, scroll_to) in PAGES.items():
                b.get(url + path)
                b.wait_for(ready, timeout=120)
                if scroll_to:
                    b.execute(f"document.getElementById('{scroll_to}').scrollIntoView()")
                time.sleep(1.0)  # the plots are images: let them load
                tmp = out / f".{name}.raw"
                b.screenshot(tmp)
                (out / name).write_bytes(small_png(tmp.read_bytes(), args.height))
                tmp.unlink()
                print(f"{out / name}: {(out / name).stat().st_size:,} bytes")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
