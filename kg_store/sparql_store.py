"""The persistent SPARQL store of a KG version (issue 30): an Oxigraph database on disk.

Layout: `<kg>/sparql/v<NNNNNN>/` (a RocksDB directory, built once per KG version) and
`<kg>/sparql/v<NNNNNN>.json` (its build meta). The statements are exactly those of
`mmkg export --format nt` (`rdf.iter_rdf_chunks`, serialised chunk by chunk and streamed into
`Store.bulk_load`), so a query answers the same here as over rdflib's in-memory graph.

Manifest: artifact `sparql` = the build meta, and only the meta file is registered. RocksDB
rewrites its own files (LOG, MANIFEST, compactions) whenever a database is opened read-write, so
hashing them would make `mmkg verify` fail on a healthy store; the meta instead records an
order-independent digest (`nt_digest`) and the size of the N-Triples stream the database was loaded
from (what `mmkg export --format nt` writes, in another order) and its statement count,
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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from mmkg.kg_store import atomic
from mmkg.kg_store import manifest as mf

if TYPE_CHECKING:
    from mmkg.kg_store.store import KGStore

SPARQL_DIR = "sparql"
ARTIFACT = "sparql"
#: the tables whose rows become statements (rdf.iter_rdf_chunks)
SOURCE_TABLES = ("entities", "relations", "triples", "literals", "images")


def store_rel(kg_version: int) -> str:
    return f"{SPARQL_DIR}/v{kg_version:06d}"


def table_fingerprints(manifest: dict[str, Any]) -> dict[str, str | None]:
    return {name: mf.table_fingerprint(manifest, name) for name in SOURCE_TABLES}


def current_meta(store: KGStore) -> dict[str, Any] | None:
    """The build meta of a SPARQL store built from exactly the committed tables, or None."""
    return _current(store.root, store.manifest)


def current_meta_at(root: str | Path) -> dict[str, Any] | None:
    """`current_meta` from the manifest alone (no table is opened: `mmkg sparql`'s fast path)."""
    return _current(Path(root), mf.read_manifest(root))


def _current(root: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    meta = manifest["artifacts"].get(ARTIFACT)
    if not isinstance(meta, dict) or meta.get("tables") != table_fingerprints(manifest) \
            or mf.check_relpath(meta.get("path")):
        return None
    path = root / meta["path"]
    return meta if (path / "CURRENT").is_file() and not path.is_symlink() else None


def nt_digest(lines: Iterable[bytes], start: int = 0) -> int:
    """Order-independent digest of N-Triples lines (sum of their 128-bit BLAKE2b hashes mod 2^128):
    rdflib writes a graph's statements in no fixed order, so the export and the build agree on the
    multiset of lines, not on the bytes."""
    total = start
    for line in lines:
        if line.strip():
            total += int.from_bytes(hashlib.blake2b(line.rstrip(b"\r"), digest_size=16).digest(), "big")
    return total % (1 << 128)


def nt_file_digest(path: str | Path) -> str:
    """`nt_digest` of an N-Triples file (e.g. `mmkg export --format nt`), as the build meta writes it."""
    with open(path, "rb") as f:
        digest = nt_digest(line.rstrip(b"\n") for line in f)
    return f"{digest:032x}"


class _NTriplesStream(io.RawIOBase):
    """A read-only byte stream over rdflib chunks serialised as N-Triples, digested as it is read."""

    def __init__(self, chunks: Iterator[Any]):
        self._chunks = chunks
        self._buf = memoryview(b"")
        self.digest = 0
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
            self.digest = nt_digest(data.split(b"\n"), self.digest)
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

    from mmkg.kg_store import rdf
    from mmkg.kg_store.store import KGStore
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
        meta = {"path": rel, "kg_version": store.kg_version, "tables": table_fingerprints(store.manifest),
                "statements": n, "nt_statements": stream.statements, "nt_bytes": stream.bytes,
                "nt_digest": f"{stream.digest:032x}", "prefixes": {k: str(v) for k, v in rdf.PREFIXES.items()},
                "engine": f"oxigraph {pyoxigraph.__version__}", "seconds": round(time.perf_counter() - t0, 3),
                "bytes": sum(p.stat().st_size for p in final.iterdir() if p.is_file())}
        meta_rel = f"{rel}.json"
        atomic.write_json(store.root / meta_rel, meta)
        w.set_artifact(ARTIFACT, meta, files=[meta_rel])
        w.commit()
        return {**meta, "built": True}


def ensure_sparql_store(kg: str | Path, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The current store's meta, building it first (and saying so through `echo`) when missing."""
    meta = current_meta_at(kg)
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


__all__ = ["ARTIFACT", "SPARQL_DIR", "build_sparql_store", "current_meta", "current_meta_at", "ensure_sparql_store",
           "live_sparql_dirs", "store_rel", "verify_sparql_store"]
