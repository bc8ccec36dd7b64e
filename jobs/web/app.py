"""`mmkg serve`: the analyst's read-only web view of one KG store (Flask).

Pages: search (label, or text through the FAISS entity index when embeddings exist), entity
(card, images, 1-hop neighbourhood drawn and listed), retrieval (question → top 10/20 triples
with scores), shard browser (dataset/split/config → queries → subgraph), stats with plots.

SPARQL: `/sparql` (the SPARQL 1.1 Protocol, read-only) and `/query` (a page with examples and a
results table), both over the KG's persistent SPARQL store (`jobs/web/sparql_endpoint.py`).

Safety: GET only (except `/sparql`, which also takes protocol POSTs of at most 1 MiB); every key or name from the URL is a store lookup (entity keys through
`store.entity_ids`, shard sets by exact manifest artifact name, images by a sha256 found in
the images table), so no URL can name a file. `mmkg serve` binds 127.0.0.1 only, and every request
must carry a trusted `Host` (127.0.0.1, localhost, ::1, plus `--trusted-host` names): a page on
another site that rebinds its DNS name to 127.0.0.1 (DNS rebinding) gets 400, not the KG.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

from flask import Flask, Response, abort, render_template, request, send_file, url_for

from mmkg.jobs.web import drawing, plots
from mmkg.jobs.web.queries import StoreView, check_text
from mmkg.jobs.web.semantic import Semantic, SemanticUnavailable
from mmkg.kg_store import open_store
from mmkg.kg_store.errors import KGStoreError

logger = logging.getLogger(__name__)

PAGE_SIZE = 20
SHARD_PAGE_SIZE = 50
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_QUERY_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def _page() -> int:
    try:
        return max(1, min(10_000, int(request.args.get("page", "1"))))
    except ValueError:
        abort(400, "page must be a number")


def _pager(page: int, total: int, size: int) -> dict:
    last = max(1, -(-total // size))
    args = {k: v for k, v in request.args.items() if k != "page"}
    return {"page": page, "last": last, "total": total,
            "prev": url_for(request.endpoint, **args, page=page - 1) if page > 1 else None,
            "next": url_for(request.endpoint, **args, page=page + 1) if page < last else None}


#: Host names the view answers to (with any port); `create_app(trusted_hosts=…)` adds more
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def host_name(header: str) -> str | None:
    """The host of a `Host` header without its port (`[::1]:8000` → `::1`), lower-cased; None if malformed."""
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        if end < 0 or (h[end + 1:] and not re.fullmatch(r":\d{1,5}", h[end + 1:])):
            return None
        return h[1:end]
    name, _, port = h.partition(":")
    if port and not port.isdigit():
        return None
    name = name[:-1] if name.endswith(".") else name
    return name if name and re.fullmatch(r"[a-z0-9._-]+", name) else None


def create_app(kg: str | Path, *, trusted_hosts: tuple[str, ...] | list[str] = (), sparql_timeout: float = 30.0,
               sparql_max_rows: int = 10_000, sparql_memory: int = 1 << 30) -> Flask:
    store = open_store(kg)
    view = StoreView(store)
    semantic = Semantic(store)
    app = Flask(__name__)
    trusted = frozenset(h.strip().lower().strip("[]") for h in (*LOCAL_HOSTS, *trusted_hosts) if h.strip())
    app.config.update(KG=str(kg), KG_VERSION=store.kg_version, MAX_CONTENT_LENGTH=1024, MMKG_TRUSTED_HOSTS=trusted)

    @app.before_request
    def trusted_host():
        # DNS rebinding: a browser sends the attacker's name as Host; only local names are answered
        if host_name(request.headers.get("Host", "")) not in trusted:
            abort(400, "untrusted Host header (the view answers only to 127.0.0.1, localhost, ::1 "
                       "and --trusted-host names)")

    @app.after_request
    def headers(resp: Response) -> Response:
        # Everything is served from here: no CDN, no inline script, nothing sniffed.
        resp.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self'"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @app.errorhandler(KGStoreError)
    def store_error(e: KGStoreError):
        return render_template("error.html", message=str(e), code=400), 400

    @app.errorhandler(400)
    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(e):
        return render_template("error.html", message=e.description, code=e.code), e.code

    @app.context_processor
    def globals_():
        return {"kg_name": Path(store.root).name, "kg_version": store.kg_version}

    # ---- pages ---------------------------------------------------------------------------
    @app.get("/")
    def index():
        return render_template("index.html", stats=store.stats(), encoders=_encoders())

    def _encoders() -> list[str]:
        from mmkg.jobs.web.semantic import embedded_encoders
        return embedded_encoders(store)

    @app.get("/search")
    def search():
        q = request.args.get("q", "").strip()
        mode = request.args.get("mode", "label")
        if mode not in ("label", "text"):
            abort(400, "mode must be label or text")
        page, rows, total, message, encoder = _page(), [], 0, None, None
        if q:
            check_text(q, "search text")
            if mode == "label":
                rows, total = view.search(q, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
            else:
                try:
                    pairs, encoder = semantic.search_entities(q, k=PAGE_SIZE)
                    rows = view.entity_rows([i for i, _ in pairs])
                    for r, (_, s) in zip(rows, pairs):
                        r["score"] = s
                    total = len(rows)
                except SemanticUnavailable as e:
                    message = str(e)
        return render_template("search.html", q=q, mode=mode, rows=rows, message=message, encoder=encoder,
                               pg=_pager(page, total, PAGE_SIZE) if mode == "label" and total else None,
                               total=total)

    @app.get("/entity")
    def entity():
        key = request.args.get("key", "")
        try:
            eid, others = view.resolve(key)
        except KGStoreError as e:
            abort(404, str(e))
        card = view.card(eid)
        groups = view.neighbours(eid)
        graph = drawing.star(card, groups)
        same_label = view.entity_rows(others[:20]) if others else []
        from mmkg.kg_store.depictions import DEPICTION_KEYS
        from mmkg.pipeline.readers.mmkg import IMAGE_INDEX_ATTRIBUTE
        # foaf:depiction triples are images too (counted once with the stored ones); image-index
        # rows name images of the source's index whose files are not in the KG: listed, not counted
        depictions = [n for g in groups if g["direction"] == "out" and g["relation"] in DEPICTION_KEYS
                      for n in g["neighbours"]]
        image_refs = [lit["value"] for lit in card["literals"] if lit["attribute"] == IMAGE_INDEX_ATTRIBUTE]
        return render_template("entity.html", e=card, groups=groups, graph=graph, same_label=same_label,
                               depictions=depictions, image_refs=image_refs)

    @app.get("/image/<sha256>")
    def image(sha256: str):
        found = view.image_blob(sha256)
        if found is None:
            abort(404, "no such image in this KG")
        path, fmt = found
        resp = send_file(path, mimetype=_MIME.get(fmt.lower(), "application/octet-stream"), max_age=86400)
        return resp

    @app.get("/retrieve")
    def retrieve():
        q = request.args.get("q", "").strip()
        try:
            k = int(request.args.get("k", "10"))
        except ValueError:
            abort(400, "k must be 10 or 20")
        if k not in (10, 20):
            abort(400, "k must be 10 or 20")
        rows, message, found, graph = [], None, None, None
        if q:
            check_text(q, "question")
            try:
                found = semantic.retrieve(q, k)
                rows = view.triple_rows(found["triple_ids"], found["scores"])
                for r, c in zip(rows, found["cosines"]):
                    r["cosine"] = c
                graph = drawing.triples(rows)
            except SemanticUnavailable as e:
                message = str(e)
        return render_template("retrieve.html", q=q, k=k, rows=rows, graph=graph, message=message, found=found)

    # ---- shard browser ---------------------------------------------------------------------
    def _shard_sets() -> dict[str, dict]:
        return {name: meta for name, meta in store.artifacts("subgraphs/").items() if name.count("/") == 3}

    def _shard_dir(name: str) -> Path:
        sets = _shard_sets()
        if name not in sets:  # only names the manifest lists; never a path from the URL
            abort(404, "no such shard set in this KG")
        return store.path(name)

    @app.get("/shards")
    def shards():
        from mmkg.kg_store.shards import is_complete, read_meta
        sets = []
        for name, art in sorted(_shard_sets().items()):
            _, dataset, split, key = name.split("/")
            d = store.path(name)
            meta = read_meta(d) if is_complete(d) else {}
            sets.append({"name": name, "dataset": dataset, "split": split, "key": key,
                         "queries": meta.get("queries", art.get("queries")), "empty": meta.get("empty"),
                         "config": meta.get("config"), "encoder": meta.get("encoder")})
        return render_template("shards.html", sets=sets)

    @app.get("/shards/set")
    def shard_set():
        from mmkg.kg_store.shards import read_shards
        name = request.args.get("name", "")
        table = read_shards(_shard_dir(name), columns=["query_id", "query_text", "triple_ids", "empty"])
        page = _page()
        chunk = table.slice((page - 1) * SHARD_PAGE_SIZE, SHARD_PAGE_SIZE).to_pylist()
        rows = [{"query_id": r["query_id"], "query_text": r["query_text"] or "", "n": len(r["triple_ids"] or []),
                 "empty": r["empty"]} for r in chunk]
        return render_template("shard_set.html", name=name, rows=rows,
                               pg=_pager(page, table.num_rows, SHARD_PAGE_SIZE))

    @app.get("/shards/query")
    def shard_query():
        import pyarrow.compute as pc

        from mmkg.kg_store.shards import read_shards
        name = request.args.get("name", "")
        qid = request.args.get("qid", "")
        if not _QUERY_ID.fullmatch(qid):
            abort(400, "invalid query id")
        table = read_shards(_shard_dir(name))
        hit = table.filter(pc.equal(table["query_id"], qid))
        if hit.num_rows == 0:
            abort(404, "no such query in this shard set")
        row = hit.slice(0, 1).to_pylist()[0]
        rows = view.triple_rows(row["triple_ids"] or [], row["scores"] or [])
        extra = {k: v for k, v in row.items() if k not in _SHARD_LIST_COLUMNS and not isinstance(v, (list, dict))}
        return render_template("shard_query.html", name=name, row=row, rows=rows, graph=drawing.triples(rows),
                               extra=extra)

    from mmkg.jobs.web.sparql_endpoint import register_sparql
    register_sparql(app, store, timeout=sparql_timeout, max_rows=sparql_max_rows, memory=sparql_memory)

    # ---- stats and plots ---------------------------------------------------------------------
    @lru_cache(maxsize=1)
    def _analyst_stats() -> dict:
        from mmkg.jobs.commands.store import analyst_stats
        return analyst_stats(store, top=None)

    @app.get("/stats")
    def stats():
        s = _analyst_stats()
        return render_template("stats.html", stats=store.stats(), a=s, top=s["relation_frequency"][:50])

    @lru_cache(maxsize=2)
    def _plot(name: str) -> bytes:
        if name == "degree":
            return plots.degree_png(view.degree)
        return plots.relation_png(_analyst_stats()["relation_frequency"])

    @app.get("/plot/<name>.png")
    def plot(name: str):
        if name not in ("degree", "relations"):
            abort(404, "no such plot")
        return Response(_plot(name), mimetype="image/png")

    return app


#: shard columns shown as the triple list, not as query fields
_SHARD_LIST_COLUMNS = {"query_id", "query_text", "seed_entity_ids", "triple_ids", "head_ids", "relation_ids",
                       "tail_ids", "head_keys", "relation_keys", "tail_keys", "head_labels", "relation_labels",
                       "tail_labels", "scores", "num_candidates", "empty"}


class LiveApp:
    """The WSGI app `mmkg serve` runs: the view of the KG's current version, which it pins while
    it serves it (`mmkg.kg_store.versions.Pin`: `mmkg gc` keeps that version's files), and which it
    replaces when a newer version is committed. The manifest is checked at most every `check_s`
    seconds (a stat, then a read when it changed); a new view is built and pinned, then swapped
    in with one assignment, so each request is answered wholly by one version. The old view's pin
    is released once no request is using it."""

    def __init__(self, kg: str | Path, *, check_s: float = 1.0, **options):
        import threading
        self.kg, self.options, self.check_s = Path(kg), options, check_s
        self._lock = threading.Lock()
        self._stamp = None
        self._last_check = 0.0
        self._current = self._open()
        self._retired: list[dict] = []

    def _open(self) -> dict:
        from mmkg.kg_store.versions import pin_current
        while True:
            pin = pin_current(self.kg)
            try:
                app = create_app(self.kg, **self.options)
            except BaseException:
                pin.release()
                raise
            if app.config["KG_VERSION"] == pin.version:
                return {"version": pin.version, "app": app, "pin": pin, "active": 0}
            pin.release()  # a commit came between the pin and the open: pin what was opened

    def _manifest_stamp(self):
        import os
        from mmkg.kg_store.layout import MANIFEST
        try:
            st = os.stat(self.kg / MANIFEST)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        import time
        from mmkg.kg_store.manifest import read_manifest
        now = time.monotonic()
        if now - self._last_check < self.check_s:
            return
        self._last_check = now
        stamp = self._manifest_stamp()
        if stamp is None or stamp == self._stamp:
            return
        try:
            newer = int(read_manifest(self.kg)["kg_version"]) > self._current["version"]
        except KGStoreError:
            return  # keep serving what is open
        self._stamp = stamp
        if newer:
            try:
                fresh = self._open()
            except KGStoreError as e:
                logger.warning("kept serving kg_version %s: %s", self._current["version"], e)
                return
            self._retired.append(self._current)
            self._current = fresh
            logger.info("now serving kg_version %s", fresh["version"])

    def _release_idle(self) -> None:
        for old in [o for o in self._retired if o["active"] == 0]:
            old["pin"].release()
            self._retired.remove(old)

    def __call__(self, environ, start_response):
        from werkzeug.wsgi import ClosingIterator
        with self._lock:
            self._refresh()
            entry = self._current
            entry["active"] += 1

        def done() -> None:  # the server closes the body once it is sent (or the client left)
            with self._lock:
                entry["active"] -= 1
                self._release_idle()
        try:
            body = entry["app"](environ, start_response)
        except BaseException:
            done()
            raise
        return ClosingIterator(body, [done])

    @property
    def version(self) -> int:
        return self._current["version"]

    def close(self) -> None:
        with self._lock:
            for entry in [*self._retired, self._current]:
                entry["pin"].release()
            self._retired = []
