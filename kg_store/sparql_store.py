"""The persistent SPARQL store of a KG version (issue 30): an Oxigraph database on disk.

Layout: `<kg>/sparql/v<NNNNNN>/` (a RocksDB directory, built once per KG version) and
`<kg>/sparql/v<NNNNNN>.json` (its build meta). The statements are exactly those of
`mmkg export --format nt` (`rdf.iter_rdf_chunks`, serialised chunk by chunk and streamed into
`Store.bulk_load`), so a query answers the same here as over rdflib's in-memory graph.

Manifest: artifact `sparql` = the build meta, and only the meta file is registered. RocksDB
rewrites its own files (LOG, MANIFEST, compactions) whenever a database is opened read-write, so
hashing them would make `mmkg verify` fail on a healthy store; the meta instead records the
sha256 and size of the N-Triples stream the database was loaded from and its statement count,
and `verify_sparql_store` reopens the database read-only and compares that count. Queries open
it with `Store.read_only`, which never writes. Freshness is by content: the meta records the
fingerprints of the tables it was built from; a store whose tables changed is rebuilt.
`mmkg gc` removes the folders that no kept version's artifact names (`live_sparql_dirs`).
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from kg_store import atomic
from kg_store.store import KGStore

SPARQL_DIR = "sparql"
ARTIFACT = "sparql"
#: the tables whose rows become statements (rdf.iter_rdf_chunks)
SOURCE_TABLES = ("entities", "relations", "triples", "literals", "images")


def store_rel(kg_version: int) -> str:
    return f"{SPARQL_DIR}/v{kg_version:06d}"


def table_fingerprints(store: KGStore) -> dict[str, str | None]:
    return {name: store.table_fingerprint(name) for name in SOURCE_TABLES}


def current_meta(store: KGStore) -> dict[str, Any] | None:
    """The build meta of a SPARQL store built from exactly the committed tables, or None."""
    from kg_store.manifest import check_relpath
    meta = store.artifact(ARTIFACT)
    if not meta or meta.get("tables") != table_fingerprints(store) or check_relpath(meta.get("path")):
        return None
    path = store.root / meta["path"]
    return meta if (path / "CURRENT").is_file() and not path.is_symlink() else None


class _NTriplesStream(io.RawIOBase):
    """A read-only byte stream over rdflib chunks serialised as N-Triples, hashed as it is read."""

    def __init__(self, chunks: Iterator[Any]):
        self._chunks = chunks
        self._buf = memoryview(b"")
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.statements = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                g = next(self._chunks)
            except StopIteration:
                return 0
            data = g.serialize(format="nt", encoding="utf-8")
            self.statements += len(g)
            self.sha.update(data)
            self.bytes += len(data)
            self._buf = memoryview(data)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def build_sparql_store(kg: str | Path, *, force: bool = False, wait: float = 60.0,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Build (or find) the SPARQL store of the committed version; returns its build meta.

    Holds the store's writer lock, so concurrent callers build once: the second finds the store
    current when it gets the lock. The database is bulk-loaded into a temp folder and renamed into
    place before the manifest names it (an interrupted build leaves litter that writers clean up).
    """
    import pyoxigraph

    from kg_store import rdf
    with KGStore.writer(kg, wait=wait, create=False) as w:
        store = w.store
        meta = current_meta(store)
        if meta is not None and not force:
            return {**meta, "built": False}
        t0 = time.perf_counter()
        rel = store_rel(store.kg_version)
        final = store.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic._tmp_sibling(final)
        try:
            stream = _NTriplesStream(rdf.iter_rdf_chunks(store, progress=progress))
            db = pyoxigraph.Store(str(tmp))
            db.bulk_load(input=io.BufferedReader(stream, 1 << 20), format=pyoxigraph.RdfFormat.N_TRIPLES)
            db.flush()
            n = len(db)
            del db  # closes RocksDB before the rename
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        meta = {"path": rel, "kg_version": store.kg_version, "tables": table_fingerprints(store),
                "statements": n, "nt_statements": stream.statements, "nt_bytes": stream.bytes,
                "nt_sha256": stream.sha.hexdigest(), "prefixes": {k: str(v) for k, v in rdf.PREFIXES.items()},
                "engine": f"oxigraph {pyoxigraph.__version__}", "seconds": round(time.perf_counter() - t0, 3),
                "bytes": sum(p.stat().st_size for p in final.iterdir() if p.is_file())}
        meta_rel = f"{rel}.json"
        atomic.write_json(store.root / meta_rel, meta)
        w.set_artifact(ARTIFACT, meta, files=[meta_rel])
        w.commit()
        return {**meta, "built": True}


def ensure_sparql_store(kg: str | Path, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The current store's meta, building it first (and saying so through `echo`) when missing."""
    from kg_store import open_store
    meta = current_meta(open_store(kg))
    if meta is not None:
        return meta
    if echo:
        echo("building the SPARQL store of this KG version (once; later queries reuse it) …")
    meta = build_sparql_store(kg)
    if echo and meta.get("built"):
        echo(f"built {meta['path']}: {meta['statements']:,} statements in {meta['seconds']:.1f} s")
    return meta


def verify_sparql_store(store: KGStore) -> list[str]:
    """Problems of the committed SPARQL store (empty = healthy or none built)."""
    meta = store.artifact(ARTIFACT)
    if not meta:
        return []
    path = store.root / meta["path"]
    if path.is_symlink() or not (path / "CURRENT").is_file():
        return [f"{meta['path']}: SPARQL store missing (rebuild: mmkg sparql or mmkg run)"]
    try:
        import pyoxigraph
        n = len(pyoxigraph.Store.read_only(str(path)))
    except OSError as e:
        return [f"{meta['path']}: SPARQL store unreadable ({' '.join(str(e).split())[:200]})"]
    if n != meta["statements"]:
        return [f"{meta['path']}: {n:,} statements, its build meta says {meta['statements']:,}"]
    return []


def live_sparql_dirs(manifests: list[dict[str, Any]]) -> set[str]:
    """The SPARQL store folders (and their meta files) that these manifests name."""
    out = set()
    for m in manifests:
        meta = m.get("artifacts", {}).get(ARTIFACT)
        if meta and isinstance(meta.get("path"), str):
            out |= {meta["path"], meta["path"] + ".json"}
    return out


__all__ = ["ARTIFACT", "SPARQL_DIR", "build_sparql_store", "current_meta", "ensure_sparql_store",
           "live_sparql_dirs", "store_rel", "verify_sparql_store"]
