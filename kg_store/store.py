"""`KGStore`: open a KG directory read-only, or write a new committed version.

Reading is cheap (manifest + memory-mapped Parquet/.npy), so opening takes milliseconds.
Writing goes through `KGStore.writer()`: it takes the directory lock, writes new files next
to the old ones, and publishes them all at once by replacing manifest.json. A writer killed
before `commit()` leaves the previous version intact (and litter that `gc` removes).
"""
from __future__ import annotations

import copy
import os
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmkg.kg_store import atomic, graph, manifest as mf, schema, versions
from mmkg.kg_store.errors import ConfigError, CorruptFileError, KGStoreError
from mmkg.kg_store.hashing import config_hash, sha256_file, sha256_fileobj
from mmkg.kg_store.layout import check_new_store_dir
from mmkg.kg_store.lock import StoreLock
from mmkg.kg_store.safe_io import UnsafeFileError, check_regular, open_regular


class KGStore:
    """Read-only view of the last committed version of a KG directory."""

    def __init__(self, root: str | Path, manifest: dict[str, Any] | None = None):
        self.root = _local_root(root)
        self.manifest = manifest if manifest is not None else mf.read_manifest(self.root)

    # ---- identity -------------------------------------------------------------------------
    @property
    def kg_version(self) -> int:
        return int(self.manifest["kg_version"])

    def path(self, rel: str) -> Path:
        return self.root / rel

    def __repr__(self) -> str:
        return f"KGStore({str(self.root)!r}, kg_version={self.kg_version})"

    # ---- files ----------------------------------------------------------------------------
    def checked_path(self, rel: str) -> Path:
        """Path of a committed file; a cheap size check catches truncation on every read.

        The file must be a regular file inside the store (symlinks resolved): a manifest entry
        naming a FIFO or a device fails here instead of hanging the reader (issue 17).
        """
        p = self.root / rel
        info = self.manifest["files"].get(rel)
        if info is None:
            raise KGStoreError(f"{rel} is not committed in {self.root}")
        if not p.exists():
            raise CorruptFileError(p, "missing")
        try:
            check_regular(p, root=self.root)
        except UnsafeFileError as e:
            raise CorruptFileError(p, e.detail) from None
        if p.stat().st_size != info["bytes"]:
            raise CorruptFileError(p, f"{p.stat().st_size} bytes, manifest says {info['bytes']}")
        return p

    def verify(self) -> list[str]:
        """Re-hash every committed file; returns one line per problem (empty = healthy).

        Files are opened with `safe_io.open_regular` inside the store: a path that is not a
        regular file inside the KG directory is a problem line, never read (or waited on).
        """
        problems = []
        for rel, info in sorted(self.manifest["files"].items()):
            p = self.root / rel
            if not p.exists() and not p.is_symlink():
                problems.append(f"{rel}: missing")
                continue
            try:
                with open_regular(p, root=self.root) as f:
                    size = os.fstat(f.fileno()).st_size
                    if size != info["bytes"]:
                        problems.append(f"{rel}: {size} bytes, manifest says {info['bytes']}")
                    elif sha256_fileobj(f) != info["sha256"]:
                        problems.append(f"{rel}: sha256 differs from the manifest")
            except UnsafeFileError as e:
                problems.append(f"{rel}: {e.detail}")
        return problems

    # ---- tables ---------------------------------------------------------------------------
    def has_table(self, name: str) -> bool:
        return name in self.manifest["tables"]

    def table_parts(self, name: str) -> list[str]:
        """The committed part files of a table, in row order (row i of their concatenation is
        id i for the id tables). One file (the local engine) or several (Spark executors, appends)."""
        if name not in schema.TABLES:
            raise ConfigError(f"unknown table {name!r}; tables: {', '.join(schema.TABLES)}")
        return mf.table_parts(self.manifest, name)

    def table_files(self, name: str) -> list[Path]:
        """Checked local paths of `table_parts(name)`."""
        return [self.checked_path(rel) for rel in self.table_parts(name)]

    def table_fingerprint(self, name: str) -> str | None:
        """One sha256 for a table's content as committed (its parts' hashes), None if absent."""
        self.table_parts(name)  # an unknown table name is a ConfigError
        return mf.table_fingerprint(self.manifest, name)

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        paths = self.table_files(name)
        if not paths:
            return schema.empty(name).select(columns) if columns else schema.empty(name)
        tables = []
        for p in paths:
            try:
                tables.append(pq.read_table(p, columns=columns, memory_map=True))
            except (pa.ArrowInvalid, OSError) as e:
                raise CorruptFileError(p, f"unreadable Parquet ({e})") from None
        if len(tables) == 1:
            return tables[0]
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise CorruptFileError(paths[0], f"parts of table {name!r} disagree on their schema ({e})") from None

    def count(self, name: str) -> int:
        n = 0
        for p in self.table_files(name):
            try:
                n += pq.ParquetFile(p).metadata.num_rows
            except (pa.ArrowInvalid, OSError) as e:  # e.g. "magic bytes not found in footer"
                raise CorruptFileError(p, f"unreadable Parquet ({e})") from None
        return n

    @property
    def num_entities(self) -> int:
        return self.count("entities")

    @property
    def num_relations(self) -> int:
        return self.count("relations")

    # ---- lookups --------------------------------------------------------------------------
    @cached_property
    def _key_index(self) -> tuple[pa.Array, pa.Array]:
        ents = self.table("entities", ["id", "key"])
        alias = self.table("same_as", ["entity_id", "key"])
        keys = pa.concat_arrays([ents["key"].combine_chunks(), alias["key"].combine_chunks().cast(pa.string())])
        ids = pa.concat_arrays([ents["id"].combine_chunks(), alias["entity_id"].combine_chunks()])
        return keys, ids

    def entity_ids(self, keys: Iterable[str]) -> np.ndarray:
        """Store ids for source keys (canonical or merged alias); -1 where unknown."""
        all_keys, all_ids = self._key_index
        idx = pc.index_in(pa.array(list(keys), pa.string()), value_set=all_keys)
        return pc.fill_null(pc.take(all_ids, idx), -1).to_numpy().astype(np.int64)

    def relation_ids(self, keys: Iterable[str]) -> np.ndarray:
        rel = self.table("relations", ["id", "key"])
        idx = pc.index_in(pa.array(list(keys), pa.string()), value_set=rel["key"].combine_chunks())
        return pc.fill_null(pc.take(rel["id"].combine_chunks(), idx), -1).to_numpy().astype(np.int64)

    def triples_array(self) -> np.ndarray:
        """(n, 3) int64 array of (h, r, t), row i = triple id i."""
        t = self.table("triples", ["h", "r", "t"])
        return np.stack([t[c].to_numpy() for c in ("h", "r", "t")], axis=1).astype(np.int64)

    # ---- graph ----------------------------------------------------------------------------
    @cached_property
    def graph(self) -> graph.CSRGraph:
        gdir = self.manifest.get("graph")
        if gdir is None:
            raise KGStoreError(f"{self.root} has no graph yet; run `mmkg ingest`")
        for name in graph.ARRAYS:
            self.checked_path(f"{gdir}/{name}.npy")
        return graph.load_csr(self.root / gdir)

    # ---- the manifest, read through methods (callers never index `manifest[...]`) -------------
    @property
    def graph_rel(self) -> str | None:
        """The committed graph folder (`graph/v000003`), None before the first ingest."""
        return self.manifest.get("graph")

    def has_file(self, rel: str) -> bool:
        """Whether `rel` is a committed file of this version."""
        return rel in self.manifest["files"]

    def file_sha(self, rel: str | None) -> str | None:
        """The committed sha256 of a file, None when it is not committed (or `rel` is None)."""
        info = self.manifest["files"].get(rel) if rel else None
        return info["sha256"] if info else None

    def files(self, prefix: str | None = None) -> list[str]:
        """Committed files, sorted; with `prefix`, those inside that folder (`vectors/minilm`)."""
        if prefix is None:
            return sorted(self.manifest["files"])
        base = prefix.rstrip("/") + "/"
        return sorted(f for f in self.manifest["files"] if f.startswith(base))

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """Every ingested input (source, format, files, counts), a copy."""
        return copy.deepcopy(self.manifest["inputs"])

    # ---- artifacts of later stages --------------------------------------------------------
    def artifact(self, name: str) -> dict[str, Any] | None:
        return self.manifest["artifacts"].get(name)

    def artifact_meta(self, name: str) -> dict[str, Any] | None:
        """A copy of an artifact's meta (None when absent)."""
        meta = self.manifest["artifacts"].get(name)
        return copy.deepcopy(meta) if meta is not None else None

    def artifacts(self, prefix: str | tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
        """Artifact name → meta (copies), sorted by name; with `prefix`, names starting with it
        (`"subgraphs/"`, or a tuple of prefixes)."""
        return {k: copy.deepcopy(v) for k, v in sorted(self.manifest["artifacts"].items())
                if prefix is None or k.startswith(prefix)}

    def stats(self) -> dict[str, Any]:
        ingest = [s for s in self.manifest["stages"] if s.get("stage") == "ingest"]
        duplicates = sum(int(i.get("counts", {}).get("duplicates", 0)) for i in self.manifest["inputs"])
        return {
            "kg_version": self.kg_version,
            "entities": self.count("entities"),
            "relations": self.count("relations"),
            "triples": self.count("triples"),
            "literals": self.count("literals"),
            "same_as": self.count("same_as"),
            "images": self.count("images"),
            "rejects": self.count("rejects"),
            "duplicates": duplicates,
            "ingest_runs": len(ingest),
        }

    # ---- writing --------------------------------------------------------------------------
    @staticmethod
    def writer(root: str | Path, *, wait: float = 0.0, create: bool = True, force: bool = False) -> "StoreWriter":
        return StoreWriter(root, wait=wait, create=create, force=force)


def _is_url(root: str | Path) -> bool:
    if "://" not in str(root):
        return False
    from mmkg.kg_store.remote import is_url  # remote imports the store: only when a URL is given
    return is_url(root)


def _local_root(root: str | Path) -> Path:
    """A KG folder; an object-store URL (`s3://bucket/kg`) is read through its working copy
    (mmkg.kg_store.remote: synced to the committed version, or the open session's copy)."""
    if _is_url(root):
        from mmkg.kg_store.remote import resolve_kg
        return resolve_kg(root, create=False)
    return Path(root)


class StoreWriter:
    """A write transaction: lock, stage files, then `commit()` publishes them atomically.

    On an object-store URL the transaction runs on the working copy of the open remote session
    (or its own session, published when the writer exits)."""

    def __init__(self, root: str | Path, *, wait: float = 0.0, create: bool = True, force: bool = False):
        self._url = str(root) if _is_url(root) else None
        self._session = None
        self.root = Path(root) if self._url is None else Path()
        self._wait = wait
        self._create = create
        self._force = force
        self.manifest: dict[str, Any] = {}
        self.new_version: int = 0
        self.committed = False

    def __enter__(self) -> "StoreWriter":
        if self._url is not None:
            from mmkg.kg_store import remote
            self._session = remote.session()
            self._session.__enter__()
        try:
            if self._url is not None:
                self.root = remote.resolve_kg(self._url, create=self._create)
            return self._enter_local()
        except BaseException as e:
            if self._session is not None:
                session, self._session = self._session, None
                session.__exit__(type(e), e, e.__traceback__)
            raise

    def _enter_local(self) -> "StoreWriter":
        self._lock = StoreLock(self.root, wait=self._wait)
        if self._create and not self._force:
            check_new_store_dir(self.root)  # before the lock file or any cleanup touches it
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            if (self.root / mf.MANIFEST).exists():
                self.manifest = copy.deepcopy(mf.read_manifest(self.root))
            elif self._create:
                self.manifest = mf.new_manifest()
            else:
                raise KGStoreError(f"{self.root} is not a KG store")
            atomic.cleanup_temp(self.root)
            if (self.root / mf.MANIFEST).exists():
                versions.repair_snapshot(self.root, self.manifest)  # a kill after the last commit
            # derived files the new version may replace in place stay restorable (versions.py)
            versions.preserve_files(self.root, self.manifest)
        except BaseException:
            self._lock.release()
            raise
        self.new_version = int(self.manifest["kg_version"]) + 1
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
        if self._session is not None:
            session, self._session = self._session, None
            session.__exit__(*exc)  # publishes when this writer opened the session

    @property
    def store(self) -> KGStore:
        """The committed state as of now (what readers see)."""
        return KGStore(self.root, copy.deepcopy(self.manifest))

    # staging -------------------------------------------------------------------------------
    def register_file(self, rel: str) -> None:
        p = self.root / rel
        self.manifest["files"][rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}

    def write_table(self, name: str, table: pa.Table) -> str:
        rel = f"tables/{name}.v{self.new_version:06d}.parquet"
        atomic.write_parquet(self.root / rel, schema.conform(name, table))
        self.register_file(rel)
        self.manifest["tables"][name] = rel
        return rel

    def register_table(self, name: str, parts: list[str]) -> list[str]:
        """Publish part files already written inside the store (e.g. by Spark executors, with
        Spark's commit protocol) as table `name` of the new version: sizes and sha256 go into the
        manifest, which stays the single commit point. Parts in row order."""
        for rel in parts:
            problem = mf.check_relpath(rel)
            if problem:
                raise KGStoreError(f"table {name!r}: {problem}")
            self.register_file(rel)
        self.manifest["tables"][name] = parts[0] if len(parts) == 1 else list(parts)
        return list(parts)

    def write_graph(self, csr: graph.CSRGraph) -> str:
        return self._publish_graph(lambda folder: graph.save_csr(csr, folder))

    def write_graph_external(self, triple_parts: list[Path], num_nodes: int, memory_bytes: int | None = None) -> str:
        """`write_graph` built out of core from the triple Parquet parts (graph.build_csr_external):
        memory bounded by `memory_bytes`, else env MMKG_GRAPH_MEMORY ("256m"), else 256 MiB."""
        return self._publish_graph(lambda folder: graph.build_csr_external(
            triple_parts, num_nodes, folder, memory_bytes=graph.memory_budget(memory_bytes)))

    def graph_staging(self) -> Path:
        """A new folder inside the store for a graph built in node ranges by other processes
        (`graph_ranges`); a temp name, so an interrupted build leaves litter `gc` removes."""
        folder = atomic._tmp_sibling(self.root / "graph" / f"v{self.new_version:06d}-ranges")
        folder.mkdir(parents=True)
        return folder

    def write_graph_ranges(self, folder: Path, bounds: list[int], edges: int) -> str:
        """`write_graph` assembled from the node ranges in `folder` (graph_ranges.assemble_csr),
        which is removed afterwards."""
        from mmkg.kg_store import graph_ranges
        try:
            return self._publish_graph(lambda out: graph_ranges.assemble_csr(folder, bounds, edges, out))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _publish_graph(self, build) -> str:
        """`build(folder)` writes the new version's graph arrays there; register them as the graph."""
        rel = f"graph/v{self.new_version:06d}"
        build(self.root / rel)
        for name in graph.ARRAYS:
            self.register_file(f"{rel}/{name}.npy")
        self.manifest["graph"] = rel
        stale = {n: m for n, m in self.manifest["artifacts"].items()
                 if isinstance(m, dict) and m.get("graph") not in (None, rel)}
        for name in stale:
            self.drop(name)  # fitted on the previous graph (set_artifact(graph_bound=True))
        # their files: `<name>.*`, or the content-addressed `file` they name unless a kept artifact shares it
        shared = {m.get("file") for m in self.manifest["artifacts"].values() if isinstance(m, dict)}
        for f in [f for f in self.manifest["files"]
                  if any(f.startswith(n + ".") or f == m.get("file") for n, m in stale.items()) and f not in shared]:
            del self.manifest["files"][f]
        return rel

    def set_artifact(self, name: str, meta: dict[str, Any], files: Iterable[str] = (), *,
                     graph_bound: bool = False) -> None:
        """Register `files` and record `meta` as artifact `name`. `graph_bound`: the artifact is
        derived from the current graph only (a path prior); a version with a new graph drops it,
        so gc reclaims it once no kept version has that graph."""
        for rel in files:
            self.register_file(rel)
        if graph_bound:
            meta = {**meta, "graph": self.manifest.get("graph")}
        self.manifest["artifacts"][name] = meta

    def drop(self, prefix: str) -> list[str]:
        """Unregister every file inside folder `prefix` and every artifact named `prefix` or below
        it (a replaced shard set); the files stay on disk for older versions until gc."""
        base = prefix.rstrip("/")
        gone = [f for f in self.manifest["files"] if f.startswith(base + "/")]
        for f in gone:
            del self.manifest["files"][f]
        for name in [a for a in self.manifest["artifacts"] if a == base or a.startswith(base + "/")]:
            del self.manifest["artifacts"][name]
        return sorted(gone)

    def add_inputs(self, inputs: Iterable[dict[str, Any]]) -> None:
        """Record ingested inputs (source, format, files, counts) in the new version."""
        self.manifest["inputs"].extend(inputs)

    def record_stage(self, stage: str, *, config: dict[str, Any], counts: dict[str, Any] | None = None,
                     inputs: dict[str, str] | None = None, outputs: list[str] | None = None,
                     seconds: float | None = None, **extra: Any) -> dict[str, Any]:
        run = {
            "stage": stage, "kg_version": self.new_version if extra.pop("bumps_version", False)
            else int(self.manifest["kg_version"]), "config": config, "config_hash": config_hash(config),
            "input_hashes": inputs or {}, "outputs": outputs or [], "counts": counts or {},
            "seconds": seconds, "finished": mf.now(), "pid": os.getpid(), **extra,
        }
        self.manifest["stages"].append(run)
        return run

    def commit(self, *, bump_version: bool = False) -> KGStore:
        if bump_version:
            self.manifest["kg_version"] = self.new_version
        mf.write_manifest(self.root, self.manifest)
        versions.write_snapshot(self.root, self.manifest)  # every committed version has its snapshot
        self.committed = True
        return KGStore(self.root, copy.deepcopy(self.manifest))


def open_store(root: str | Path) -> KGStore:
    return KGStore(root)


__all__ = ["KGStore", "StoreWriter", "check_new_store_dir", "open_store"]
