"""KG stores on object storage: `--kg s3://bucket/prefix` (issue 19).

Layout under the URL (nothing else is read or written there):

    manifest.json            the commit point: the same JSON as a local store's manifest
    objects/<aa>/<sha256>    every committed file, named by its content (the manifest already
                             records each file's sha256): written once, never overwritten
    history/<sha256>.json    every manifest ever published, immutable (audit, rollback by hand)

Commit protocol (object stores have no atomic rename): a writer uploads the new files under their
sha256, then puts manifest.json *conditionally* — `If-None-Match: *` when it created the store,
`If-Match: <ETag of the manifest it started from>` otherwise. A writer that lost the race gets
`RemoteConflictError` (a `LockedError`: exit 4) and publishes nothing; the objects it uploaded
are unreferenced and harmless. A writer killed at any point before the put leaves the previous
version as it was. Readers read manifest.json and only the objects it names.

The stage code is unchanged: it runs on a local *working copy* of the committed version
(`WorkingCopy`), a folder under the cache directory (`--cache-dir`, else `$MMKG_REMOTE_CACHE`,
else `~/.cache/mmkg/remote`) laid out as a local store, whose files are hard links into a local
object cache keyed by sha256 (each download verified against the manifest; shared across versions
and stores). When the command ends, whatever the working copy's manifest committed beyond the
version it started from is uploaded and published. Limits:

* the working copy needs local disk for the files of the current version (old versions' files
  the manifest still lists are not downloaded), plus the object cache;
* one `mmkg` command per remote store and cache directory at a time on a machine (a local lock);
  several machines may work on one store concurrently: the conditional put orders them;
* what a command commits reaches the object store when the command ends (`mmkg run`: once, after
  its last stage, also when a later stage failed); a kill -9 loses the local commits;
* the embedding cache (`cache/`), resumable scratch (`work/`), run reports and version snapshots
  stay in the working copy on this machine; they are not uploaded;
* objects no manifest names any more (old versions, lost races) are not deleted remotely yet.

Nothing remote or cached is trusted before it is checked (issue 32): a remote manifest is
refused over `MAX_REMOTE_MANIFEST_BYTES` before it is read, and its entries are validated before
anything touches disk (64-hex sha256, non-negative size, plain relative path, nothing under the
local-only `cache/` and `work/`); objects are streamed, hashed while read and cut off at the size
the entry gives; a cached object is re-hashed on every use and fetched again when it differs, and
`verify --kg URL` re-downloads every object into the cache (repairing it); an object already in
the bucket is re-read before a publish skips it; every cache folder is created 0700 and a folder
on the way that is a symlink or another user's is refused (`safe_io.private_dir`).

Filesystems come from fsspec (`s3fs` for s3://, `gcsfs` for gs://, `adlfs` for abfs://), so
reading a store needs only the fsspec implementation of its scheme. Publishing also needs the
scheme's conditional put: implemented for S3 (boto3 `put_object(IfMatch=/IfNoneMatch=)`, tested
against moto's S3 server); gs:// and abfs:// stores are readable but refuse to publish until an
adapter like `_S3Conditional` is added for them (GCS: ifGenerationMatch; Azure: If-Match).
Credentials and endpoint come from the standard environment (AWS_ACCESS_KEY_ID, AWS_PROFILE,
AWS_ENDPOINT_URL, ...); nothing about them is written to the store or the logs.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from mmkg.kg_store import atomic, manifest as mf
from mmkg.kg_store.errors import ConfigError, CorruptFileError, KGStoreError, LockedError
from mmkg.kg_store.hashing import sha256_file
from mmkg.kg_store.safe_io import check_cached_file, open_new, private_dir

log = logging.getLogger(__name__)

#: a URL of a remote filesystem (`file://` is a local path, not remote)
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
CACHE_ENV = "MMKG_REMOTE_CACHE"
OBJECTS, HISTORY = "objects", "history"
#: a remote manifest larger than this is refused before it is read: parsing JSON costs about 35
#: times its size in memory (a 20 MB manifest: 740 MB), and a store of 100,000 files has ~15 MB
MAX_REMOTE_MANIFEST_BYTES = 32 << 20
#: an object's sha256 as the manifest must record it (it becomes a file name in the object cache)
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: working-copy folders that are local state, never committed: a remote manifest may not name them
LOCAL_ONLY = ("cache", "work", "objects", "pins")
_STREAM = 1 << 20
#: install hint per scheme (s3 is pinned in requirements.txt; the others are the user's choice)
_INSTALL = {"s3": "pip install -r requirements.txt (s3fs, boto3)", "s3a": "pip install -r requirements.txt (s3fs, boto3)",
            "gs": "pip install gcsfs", "gcs": "pip install gcsfs", "abfs": "pip install adlfs", "az": "pip install adlfs"}


class RemoteConflictError(LockedError):
    """Another writer published the store's manifest after this one read it (a lost race)."""


def is_url(path: str | os.PathLike) -> bool:
    """True for `scheme://...` paths of remote filesystems (s3://, gs://, abfs://, ...)."""
    m = _URL.match(str(path))
    return bool(m) and m.group(1).lower() != "file"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmkg" / "remote")


def _filesystem(url: str):
    """(fsspec filesystem, path without scheme) for a remote URL; missing packages say what to install."""
    m = _URL.match(url)
    if not m or not m.group(2).strip("/"):
        raise ConfigError(f"bad object-store URL {url!r}: expected SCHEME://BUCKET[/PREFIX]")
    scheme = m.group(1).lower()
    try:
        import fsspec
        fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except ImportError as e:
        hint = _INSTALL.get(scheme, f"the fsspec implementation of {scheme}://")
        raise ImportError(f"{url}: object-store access needs {hint}: {e}") from None
    except ValueError as e:  # unknown protocol
        raise ConfigError(f"{url}: {e}") from None
    return fs, path.rstrip("/")


class _S3Conditional:
    """Manifest get/put with ETags on S3 (boto3 reads AWS_* env vars and AWS_ENDPOINT_URL itself)."""

    def __init__(self, path: str):
        try:
            import boto3
            from botocore.exceptions import ClientError
        except ImportError as e:
            raise ImportError(f"s3:// stores need boto3 (pip install -r requirements.txt): {e}") from None
        self._client, self._ClientError = boto3.client("s3"), ClientError
        self.bucket, _, self.key = path.partition("/")

    def get(self) -> tuple[bytes, str] | None:
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=self.key)
        except self._ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise KGStoreError(f"s3://{self.bucket}/{self.key}: {e}") from None
        with contextlib.closing(resp["Body"]) as body:  # refused from its length, never read whole
            if int(resp.get("ContentLength") or 0) > MAX_REMOTE_MANIFEST_BYTES:
                raise CorruptFileError(f"s3://{self.bucket}/{self.key}",
                                       f"{resp['ContentLength']} bytes > limit {MAX_REMOTE_MANIFEST_BYTES}")
            return body.read(MAX_REMOTE_MANIFEST_BYTES + 1), resp["ETag"]

    def put(self, data: bytes, etag: str | None) -> str:
        cond = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            return self._client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **cond)["ETag"]
        except self._ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            # 412: the manifest changed (or appeared) since it was read; 409: a concurrent conditional
            # put is in flight; NoSuchKey: the store was deleted meanwhile
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"):
                raise RemoteConflictError(
                    f"s3://{self.bucket}/{self.key} was published by another writer after this command read "
                    "it; nothing was published: rerun the command on the new version") from None
            raise KGStoreError(f"publishing s3://{self.bucket}/{self.key} failed: {e}") from None


class _ReadOnlyConditional:
    """Schemes without a conditional-put adapter: readable (plain fsspec read), never published."""

    def __init__(self, fs, path: str, scheme: str):
        self.fs, self.path, self.scheme = fs, path, scheme

    def get(self) -> tuple[bytes, str] | None:
        if not self.fs.exists(self.path):
            return None
        if self.fs.size(self.path) > MAX_REMOTE_MANIFEST_BYTES:
            raise CorruptFileError(f"{self.scheme}://{self.path}", f"more than {MAX_REMOTE_MANIFEST_BYTES} bytes")
        with self.fs.open(self.path, "rb") as f:
            return f.read(MAX_REMOTE_MANIFEST_BYTES + 1), ""

    def put(self, data: bytes, etag: str | None) -> str:
        raise ConfigError(f"publishing to {self.scheme}:// needs a conditional put, which is implemented for s3:// "
                          "only; this store can be read but not written")


_CONDITIONAL = {"s3": _S3Conditional, "s3a": _S3Conditional}


class RemoteStore:
    """The objects of one store URL: its manifest (with the ETag to publish against) and its
    content-addressed files. Every key is under the URL; nothing else is touched."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.scheme = _URL.match(url).group(1).lower() if _URL.match(url) else ""
        self.fs, self.root = _filesystem(self.url)
        cls = _CONDITIONAL.get(self.scheme)
        manifest_path = f"{self.root}/{mf.MANIFEST}"
        self._cond = cls(manifest_path) if cls else _ReadOnlyConditional(self.fs, manifest_path, self.scheme)

    def object_key(self, sha256: str) -> str:
        return f"{self.root}/{OBJECTS}/{sha256[:2]}/{sha256}"

    def read_manifest(self) -> tuple[bytes, dict[str, Any], str] | None:
        """(raw bytes, parsed and checked manifest, ETag), or None when no store exists there yet."""
        got = self._cond.get()
        if got is None:
            return None
        data, etag = got
        if len(data) > MAX_REMOTE_MANIFEST_BYTES:
            raise CorruptFileError(f"{self.url}/{mf.MANIFEST}", f"more than {MAX_REMOTE_MANIFEST_BYTES} bytes")
        try:
            manifest = json.loads(data.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise CorruptFileError(f"{self.url}/{mf.MANIFEST}", f"not valid JSON ({e})") from None
        if not isinstance(manifest, dict):
            raise CorruptFileError(f"{self.url}/{mf.MANIFEST}", "not a JSON object")
        if manifest.get("format_version") != mf.FORMAT_VERSION:
            raise KGStoreError(f"{self.url}: store format {manifest.get('format_version')} is not supported "
                               f"(this code reads {mf.FORMAT_VERSION})")
        problem = mf.manifest_problem(manifest) or remote_entry_problem(manifest)
        if problem:
            raise CorruptFileError(f"{self.url}/{mf.MANIFEST}", problem)
        return data, manifest, etag

    def has_object(self, sha256: str) -> bool:
        return self.fs.exists(self.object_key(sha256))

    def upload(self, local: Path, sha256: str, size: int) -> bool:
        """Upload a file under its sha256 unless a good object is there already.

        An existing object is re-read and hashed (bounded by `size`) before it is trusted: a
        damaged or planted one under the right name is overwritten with the good bytes."""
        if self.has_object(sha256):
            if self.object_problem(sha256, size) is None:
                return False
            log.warning("object %s in %s is damaged: uploading it again", sha256[:12], self.url)
            self.fs.put_file(str(local), self.object_key(sha256))
            return True
        try:  # create-only where the scheme has it (s3fs: If-None-Match), so not even a race overwrites
            self.fs.put_file(str(local), self.object_key(sha256), mode="create")
        except FileExistsError:
            return False
        return True

    def _stream(self, sha256: str, size: int, out) -> str | None:
        """Copy the object to `out` (a file, or None) while hashing it; stops reading at `size`+1
        bytes, so a huge object under a small entry costs no more than the entry. Why it is bad, or None."""
        h = hashlib.sha256()
        got = 0
        try:
            with self.fs.open(self.object_key(sha256), "rb", block_size=_STREAM) as f:
                while chunk := f.read(min(_STREAM, size + 1 - got)):
                    got += len(chunk)
                    if got > size:
                        return f"more than the {size} bytes the manifest says"
                    h.update(chunk)
                    if out is not None:
                        out.write(chunk)
        except FileNotFoundError:
            return "missing from the object store"
        if got != size:
            return f"{got} bytes, manifest says {size}"
        return None if h.hexdigest() == sha256 else "sha256 differs from the manifest"

    def object_problem(self, sha256: str, size: int) -> str | None:
        """Why the stored object is not the one named (streamed and hashed, nothing kept), or None."""
        return self._stream(sha256, size, None)

    def download(self, sha256: str, size: int, dest: Path) -> str | None:
        """Fetch an object to `dest` (via a temp sibling) if its size and sha256 match; else say why
        not (and `dest` is left as it was)."""
        tmp = dest.with_name(f"{dest.name}{atomic.TMP_MARK}{uuid.uuid4().hex[:8]}")
        try:
            with open_new(tmp, 0o600) as out:  # O_EXCL|O_NOFOLLOW: never through a planted link
                problem = self._stream(sha256, size, out)
            if problem is None:
                os.replace(tmp, dest)
            return problem
        finally:
            tmp.unlink(missing_ok=True)

    def publish(self, data: bytes, etag: str | None) -> str:
        """The conditional put of manifest.json, then an immutable copy in history/ (auxiliary:
        a crash in between only loses that copy)."""
        etag = self._cond.put(data, etag)
        self.fs.pipe_file(f"{self.root}/{HISTORY}/{hashlib.sha256(data).hexdigest()}.json", data)
        return etag


def remote_entry_problem(manifest: dict[str, Any]) -> str | None:
    """What a remote manifest may not hold beyond a local one's checks (issue 32), or None.

    Its entries become local paths before anything else checks them: each sha256 names a file
    in the object cache (64 lowercase hex only, never a path), each size bounds a download (a
    non-negative int), and no file may land in the working copy's local-only folders (`cache/`,
    `work/`), which no commit names and which a planted file there would outlive a rollback in."""
    for rel, info in manifest["files"].items():
        if not _SHA256.fullmatch(info["sha256"]):
            return f"files: entry {rel!r} has sha256 {info['sha256'][:80]!r}, not 64 hex digits"
        if info["bytes"] < 0:
            return f"files: entry {rel!r} has a negative size"
        if rel.split("/", 1)[0] in LOCAL_ONLY:
            return f"files: {rel!r} is in a local-only folder ({', '.join(LOCAL_ONLY)}), never committed"
    return None


@contextlib.contextmanager
def _io_errors(url: str) -> Iterator[None]:
    """Network, permission and credential failures of the object store as one `KGStoreError` line."""
    try:
        yield
    except (KGStoreError, ConfigError, ImportError):
        raise
    except Exception as e:  # noqa: BLE001 - OSError from fsspec, botocore's NoCredentialsError, ...
        if not isinstance(e, OSError) and not type(e).__module__.startswith(("botocore", "aiobotocore", "s3fs")):
            raise
        raise KGStoreError(f"{url}: {type(e).__name__}: {e}") from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _local_lock(path: Path, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"another mmkg command on this machine is using the working copy of {what} "
                              f"({path.parent}); wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def _replace_prefix(obj: Any, old: str, new: str) -> Any:
    """`obj` with every string (value or key) starting with `old` rewritten to start with `new`."""
    if isinstance(obj, str):
        return new + obj[len(old):] if obj.startswith(old) else obj
    if isinstance(obj, list):
        return [_replace_prefix(v, old, new) for v in obj]
    if isinstance(obj, dict):
        return {_replace_prefix(k, old, new): _replace_prefix(v, old, new) for k, v in obj.items()}
    return obj


class WorkingCopy:
    """A local store folder mirroring the committed version of a remote store; see the module doc.

    `sync()` makes it the remote's current version, `publish()` commits what local stage code
    committed since. Use `open_working_copy` (lock, sync, publish) rather than this class alone.
    """

    def __init__(self, url: str, cache_dir: str | os.PathLike | None = None):
        self.remote = RemoteStore(url)
        self.cache = Path(cache_dir) if cache_dir else default_cache_dir()
        self.path = self.cache / "work" / _digest(self.remote.url)
        self.objects = self.cache / OBJECTS
        for folder in (self.path, self.objects):  # 0700, no planted symlink or foreign folder on the way
            private_dir(folder, root=self.cache)
        self.base: tuple[bytes, dict[str, Any], str] | None = None
        #: local source folders → the URLs they were downloaded from (provenance in the manifest)
        self.sources: dict[str, str] = {}
        #: what `sync(verify=True)` found wrong with the remote objects
        self.problems: list[str] = []

    def lock(self):
        return _local_lock(self.cache / "work" / f"{self.path.name}.lock", self.remote.url)

    # ---- remote → local ----------------------------------------------------------------------
    def object_path(self, sha256: str) -> Path:
        """Where the object cache keeps an object (its folder checked: real, ours, 0700)."""
        return private_dir(self.objects / sha256[:2], root=self.cache) / sha256

    def cached_object(self, sha256: str, size: int) -> Path:
        """The verified local copy of an object (downloaded once, then shared by every version).

        A cached copy is re-hashed on every use (whoever can write to the cache could have
        replaced it with other bytes of the same size) and downloaded again when it differs."""
        p = self.object_path(sha256)
        st = check_cached_file(p, "object cache entry")
        if st is not None and st.st_size == size and sha256_file(p) == sha256:
            return p
        problem = self.remote.download(sha256, size, p)
        if problem:
            raise CorruptFileError(self.remote.object_key(sha256), problem)
        return p

    def _place(self, src: Path, dest: Path) -> None:
        """`dest` becomes a hard link to `src` (a copy across filesystems), replaced atomically;
        every folder on the way is a real one inside the working copy (no planted symlink)."""
        private_dir(dest.parent, root=self.path, what="working-copy folder")
        if os.path.islink(dest):
            dest.unlink()
        with contextlib.suppress(FileNotFoundError):
            if os.path.samefile(src, dest):
                return
        tmp = dest.with_name(f"{dest.name}{atomic.TMP_MARK}{uuid.uuid4().hex[:8]}")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)

    def sync(self, *, verify: bool = False) -> list[str]:
        """Make the working copy the remote's committed version; returns problems (verify only).

        Only the files the current version reads are fetched (`gc.live_files`). With `verify`,
        every file the manifest lists is downloaded afresh into the object cache (repairing a
        damaged cached copy) and a bad remote object is reported, not raised: it is left out.
        """
        from mmkg.kg_store.versions import live_files
        self.base = self.remote.read_manifest()
        local_manifest = self.path / mf.MANIFEST
        if self.base is None:
            if local_manifest.exists():  # an earlier run's unpublished store: start anew
                local_manifest.unlink()
            return []
        data, manifest, _ = self.base
        wanted = manifest["files"] if verify else {rel: manifest["files"][rel] for rel in live_files(manifest)}
        problems = []
        for rel, info in sorted(wanted.items()):
            dest = self.path / rel
            if verify:  # the bucket's copy is what is checked; a good one also repairs the cache
                obj = self.object_path(info["sha256"])
                problem = self.remote.download(info["sha256"], info["bytes"], obj)
                if problem:
                    if os.path.lexists(dest) and not os.path.isdir(dest):
                        dest.unlink()
                    problems.append(f"{rel}: object {info['sha256'][:12]}… {problem}")
                    continue
            else:
                obj = self.cached_object(info["sha256"], info["bytes"])
            self._place(obj, dest)
        atomic.write_bytes(local_manifest, data)
        return problems

    def add_source(self, url: str) -> str:
        """`fetch_source` into this cache; the URL replaces the local path in what gets published."""
        with _io_errors(url):
            local = fetch_source(url, self.cache)
        self.sources[local] = url.rstrip("/")
        return local

    # ---- local → remote ----------------------------------------------------------------------
    def changed(self) -> bool:
        local = self.path / mf.MANIFEST
        if not local.exists():
            return False
        return self.base is None or local.read_bytes() != self.base[0]

    def publish(self) -> bool:
        """Upload the files the local manifest added since `sync()`, then the conditional put.

        Returns False when there is nothing to publish (the command committed nothing)."""
        if not self.changed():
            return False
        manifest = mf.read_manifest(self.path)
        base_files = self.base[1]["files"] if self.base else {}
        for rel, info in sorted(manifest["files"].items()):
            if base_files.get(rel) == info:
                continue
            p = self.path / rel
            if not p.is_file() or p.stat().st_size != info["bytes"] or sha256_file(p) != info["sha256"]:
                raise CorruptFileError(p, "changed after it was committed; nothing was published")
            self.remote.upload(p, info["sha256"], info["bytes"])
            with contextlib.suppress(OSError):  # the next sync then keeps this file as it is
                obj = self.object_path(info["sha256"])
                if not os.path.lexists(obj):
                    os.link(p, obj)
        # provenance: this run's inputs and stage records name the URL, not the local download
        n_in, n_st = (len(self.base[1]["inputs"]), len(self.base[1]["stages"])) if self.base else (0, 0)
        for old, new in self.sources.items():
            manifest["inputs"][n_in:] = _replace_prefix(manifest["inputs"][n_in:], old, new)
            manifest["stages"][n_st:] = _replace_prefix(manifest["stages"][n_st:], old, new)
        data = (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()
        self.remote.publish(data, self.base[2] if self.base else None)
        atomic.write_bytes(self.path / mf.MANIFEST, data)
        log.info("published %s (kg_version %s)", self.remote.url, manifest["kg_version"])
        self.base = (data, manifest, "")
        return True


def fetch_source(url: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Download an ingest source (one object, or every object under a prefix) into
    `<cache>/sources/<digest of the URL>/<last URL component>`; returns that local path.

    Downloaded afresh on every call (a source may change under its URL); the local name keeps the
    URL's last component, so the source's name in the tables (`markg:MarKG`) is the one a local
    ingest of the same folder gives. Object names that are not plain relative paths are refused.
    """
    fs, path = _filesystem(url)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if mf.check_relpath(name):
        raise KGStoreError(f"{url}: the source's name {name!r} is not a plain file name")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    home = private_dir(cache / "sources" / _digest(url.rstrip("/")), root=cache)  # no planted symlink
    dest = home / name
    tmp = home / f"{name}{atomic.TMP_MARK}{uuid.uuid4().hex[:8]}"
    try:
        if fs.isdir(path):
            for key in sorted(fs.find(path)):
                if not key.startswith(path.rstrip("/") + "/"):  # a sibling sharing the name's prefix
                    continue
                rel = key[len(path.rstrip("/")) + 1:]
                problem = mf.check_relpath(rel)
                if problem:
                    raise KGStoreError(f"{url}: object {key!r} has an unsafe name ({problem})")
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(key, str(tmp / rel))
            tmp.mkdir(exist_ok=True)
        elif fs.exists(path):
            fs.get_file(path, str(tmp))
        else:
            raise KGStoreError(f"source {url} does not exist")
        if os.path.isdir(dest) and not os.path.islink(dest):  # a symlink is unlinked, never followed
            shutil.rmtree(dest)
        elif os.path.lexists(dest):
            dest.unlink()
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return str(dest)


def fetch_local_source(url: str, cache_dir: str | os.PathLike | None = None) -> str:
    """`fetch_source` for a local store (its manifest then records the downloaded copy's path)."""
    with _io_errors(url):
        return fetch_source(url, cache_dir)


@contextlib.contextmanager
def open_working_copy(url: str, *, cache_dir: str | os.PathLike | None = None, sources: list[str] = (),
                      verify: bool = False) -> Iterator[WorkingCopy]:
    """Lock and sync the working copy of `url`, yield it, then publish what was committed.

    The local manifest only ever holds committed versions (stage code replaces it atomically), so
    what it committed is published also when the command then failed (a later `mmkg run` stage);
    a publish error after a failure is logged and the command's own error is raised.
    """
    with _io_errors(url):
        wc = WorkingCopy(url, cache_dir)
    with wc.lock():
        with _io_errors(url):
            wc.problems = wc.sync(verify=verify)
            for src in sources:
                wc.add_source(src)
        try:
            yield wc
        except BaseException:
            try:
                with _io_errors(url):
                    wc.publish()
            except Exception as e:  # noqa: BLE001 - the command's own error is the one to report
                log.warning("not published after the failure: %s", e)
            raise
        with _io_errors(url):
            wc.publish()


class RemoteSession:
    """The object-store KGs and sources one command (or one writer) uses: each `--kg URL` opens
    its working copy once (lock, sync), every store opened or written under that URL works on it,
    and what was committed is published when the session ends. `held` collects what the command
    printed once a working copy was opened (`hold_stdout`): a command that loses the publish race
    printed no success summary."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, *, hold_stdout: bool = False):
        self.cache_dir = cache_dir
        self.hold_stdout = hold_stdout
        self.held = io.StringIO()
        self.copies: dict[str, WorkingCopy] = {}
        #: downloaded source folders → their URLs (provenance in every published manifest)
        self.sources: dict[str, str] = {}
        self._stack = contextlib.ExitStack()

    def working_copy(self, url: str, *, verify: bool = False) -> WorkingCopy:
        key = url.rstrip("/")
        if key not in self.copies:
            if self.copies:
                raise ConfigError(f"one object-store KG per command: {next(iter(self.copies))} and {url}")
            if self.hold_stdout:  # entered first, left last: after the publish
                self._stack.enter_context(contextlib.redirect_stdout(self.held))
            wc = self._stack.enter_context(open_working_copy(url, cache_dir=self.cache_dir, verify=verify))
            wc.sources = self.sources
            self.copies[key] = wc
        return self.copies[key]

    def source(self, url: str) -> str:
        """The local download of an ingest source (`fetch_source`), its URL kept for provenance."""
        local = fetch_local_source(url, self.cache_dir)
        self.sources[local] = url.rstrip("/")
        return local


_SESSIONS: list[RemoteSession] = []


@contextlib.contextmanager
def session(cache_dir: str | os.PathLike | None = None, *, hold_stdout: bool = False) -> Iterator[RemoteSession]:
    """Open a `RemoteSession` (or join the one already open: the outer one publishes)."""
    if _SESSIONS:
        yield _SESSIONS[-1]
        return
    s = RemoteSession(cache_dir, hold_stdout=hold_stdout)
    _SESSIONS.append(s)
    try:
        with s._stack:
            yield s
    finally:
        _SESSIONS.remove(s)


def current_session() -> RemoteSession | None:
    return _SESSIONS[-1] if _SESSIONS else None


def resolve_kg(root: str | os.PathLike, *, create: bool = True, verify: bool = False) -> Path:
    """The local folder of a KG: a path as it is; an object-store URL → the working copy of the
    open session (read-only readers outside a session get a synced copy, `open_remote_store`).
    `create=False`: a URL with no store there is an error naming the URL."""
    if not is_url(root):
        return Path(root)
    url = str(root)
    s = current_session()
    if s is None:
        return open_remote_store(url).root
    wc = s.working_copy(url, verify=verify)
    if wc.base is None and not create:
        raise KGStoreError(f"{wc.remote.url} is not a KG store (no manifest.json there); "
                           "create one with `mmkg ingest --kg URL`")
    return wc.path


def open_remote_store(url: str, *, cache_dir: str | os.PathLike | None = None):
    """A read-only `KGStore` of the committed version of `url` (synced into the working copy)."""
    from mmkg.kg_store.store import KGStore
    with _io_errors(url):
        wc = WorkingCopy(url, cache_dir)
        with wc.lock():
            wc.sync()
    return KGStore(wc.path)


__all__ = ["RemoteConflictError", "RemoteSession", "RemoteStore", "WorkingCopy", "current_session",
           "default_cache_dir", "fetch_local_source", "fetch_source", "is_url", "open_remote_store",
           "open_working_copy", "resolve_kg", "session"]
