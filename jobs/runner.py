"""`mmkg run`: the stage DAG ingest → embed → index → retrieve (→ train → evaluate), cached and resumable.

The pipeline YAML has a `metadata` block and a `job` block; the job block is passed straight
into `run_pipeline(**job)` (PyKEEN K3), and each stage block straight into that stage's functions
(`jobs/stages.py`). For each selected stage, in order, the runner:

1. computes the stage's config hash (execution-only keys such as the Spark master excluded) and
   its input fingerprint (source sha256s, table/vector/index/dataset sha256s);
2. looks for the last `dag:<stage>` record in the manifest with that config hash
   (`mmkg.kg_store.manifest.last_stage`): same inputs and outputs still committed → `cached`, nothing run;
3. otherwise runs the stage (which is itself incremental) and records `dag:<stage>` with the
   config, inputs, outputs (and their sha256), counts and seconds.

A change therefore reruns only the stages downstream of it: ingest bumps the KG version, which
changes embed's fingerprint, whose vectors change index's, and so on. Stages whose inputs did not
change stay cached even when an upstream stage ran.

One run per KG directory at a time: `<kg>/.run.lock` (fcntl; dropped by the OS if the run dies).
A second run waits `--wait` seconds, then exits 4 with a message naming the holder. Stages still
take the store's own commit lock (`<kg>/.lock`) for each transaction, as always.
Each run writes `<kg>/runs/<stamp>-<id>.json` (jobs/report.py) and logs to `<kg>/logs/<stamp>-<id>.log`.
After every stage that changed the store, the manifest is snapshotted to
`<kg>/versions/v<NNNNNN>.json` (every store commit does), so an older KG version stays readable
(`open_version`) and restorable (`mmkg rollback`) until `mmkg gc`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import ConfigError
from mmkg.kg_store.lock import RunLock  # O_NOFOLLOW, never truncated (kg_store/lock.py)
from mmkg.kg_store.manifest import MANIFEST, last_stage, read_manifest
from mmkg.jobs.report import RunReport, StageReport
from mmkg.jobs.stages import EXECUTION_KEYS, STAGE_ORDER, STAGES, Context, ingest_pending, stage_config_hash

log = logging.getLogger(__name__)

#: encoder-dependent stages: the encoder name is part of their cache key
ENCODER_STAGES = ("embed", "index", "retrieve")
DEFAULT_ENCODER = "minilm"


# ---- config ------------------------------------------------------------------------------------
def load_pipeline_config(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, job) of a pipeline YAML; errors are one line."""
    from mmkg.jobs.config import read_config
    metadata, job = read_config(path, kind="pipeline config")
    unknown = set(job) - {"kg", "data", "encoder", "spark", *STAGE_ORDER}
    if unknown:
        raise ConfigError(f"{path}: unknown job keys {', '.join(sorted(unknown))} "
                           f"(expected kg, data, encoder, spark, {', '.join(STAGE_ORDER)})")
    return metadata, job


def _enabled(block: Any) -> bool:
    return isinstance(block, dict) and block.get("enabled", True) is not False


def _registry_names(family: str) -> set[str]:
    from mmkg.kg_store.registry import ALL, normalize
    import mmkg.jobs.plugins  # noqa: F401  (registers every family)
    return {normalize(n) for n in ALL[family].names()}


#: option values checked before anything runs (a wrong name fails in one line, --dry-run included)
_NAMED_VALUES = {("index", "kind"): lambda: _registry_names("index"),
                 ("retrieve", "retriever"): lambda: _registry_names("retriever")}


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a stage function's annotation (unions, containers by their origin)."""
    import types
    import typing
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:
        hint = origin
    if hint in (list, tuple, typing.Sequence):
        return isinstance(value, (list, tuple))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(hint, type) or isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def validate_block(name: str, block: dict[str, Any]) -> None:
    """A stage block takes exactly the keyword arguments of its stage function (read from its
    signature, not listed again) plus `enabled`; values of the default's type; registry names known."""
    import inspect
    from mmkg.kg_store.registry import normalize
    import typing
    fn = STAGES[name].run
    params = dict(list(inspect.signature(fn).parameters.items())[1:])  # after ctx
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: keys are still checked
        hints = {}
    for key, value in block.items():
        if key == "enabled":
            if not isinstance(value, bool):
                raise ConfigError(f"stage {name}: enabled must be true or false, got {value!r}")
            continue
        if key not in params:
            raise ConfigError(f"stage {name}: unknown option {key!r}; valid options: {', '.join(sorted(params))}")
        hint = hints.get(key)
        if hint is not None and not _type_ok(value, hint):
            raise ConfigError(f"stage {name}: option {key!r} must be {_type_name(hint)}, got {value!r}")
        names = _NAMED_VALUES.get((name, key))
        if names is not None and isinstance(value, str) and normalize(value) not in names():
            raise ConfigError(f"stage {name}: unknown {key} {value!r}; choose one of: {', '.join(sorted(names()))}")
        if key == "engine":
            from mmkg.pipeline.engines.base import check_engine
            check_engine(value, name)


def _stage_kwargs(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "enabled"}


def _hashed_config(name: str, block: dict[str, Any], encoder: str) -> dict[str, Any]:
    cfg = {k: v for k, v in _stage_kwargs(block).items() if k not in EXECUTION_KEYS}
    if name in ENCODER_STAGES:
        cfg["encoder"] = encoder
    return cfg


def _normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


# ---- cache decisions ---------------------------------------------------------------------------
def _outputs_intact(kg: Path, record: dict[str, Any]) -> bool:
    manifest_files = read_manifest(kg)["files"]
    for rel, sha in (record.get("outputs") or {}).items():
        if sha == "dir":
            if not (kg / rel / "_SUCCESS").exists():
                return False
        elif manifest_files.get(rel, {}).get("sha256") != sha:
            return False
    return True


def cache_decision(name: str, ctx: Context, block: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    """(cached?, why, fingerprint) for one stage, against the last matching `dag:` record."""
    stage = STAGES[name]
    kwargs = _stage_kwargs(block)
    fp = _normal(stage.fingerprint(ctx, **kwargs))
    if name == "ingest":
        new, changed = ingest_pending(ctx, fp)
        if not new and not changed:
            return True, f"all {len(fp)} sources already ingested (unchanged sha256)", fp
        parts = [f"{len(new)} new source(s)"] if new else []
        parts += [f"{len(changed)} changed source(s)"] if changed else []
        return False, " + ".join(parts), fp
    chash = stage_config_hash(_hashed_config(name, block, ctx.encoder))
    manifest = read_manifest(ctx.kg)
    record = last_stage(manifest, f"dag:{name}", config_hash=chash)
    if record is None:
        other = last_stage(manifest, f"dag:{name}")
        return False, "config changed" if other else "never ran", fp
    if record.get("input_hashes") != fp:
        changed = sorted(k for k in set(fp) | set(record.get("input_hashes", {}))
                         if fp.get(k) != record.get("input_hashes", {}).get(k))
        return False, f"inputs changed: {', '.join(changed)}", fp
    if not _outputs_intact(ctx.kg, record):
        return False, "outputs missing or modified", fp
    return True, "config and inputs unchanged", fp


def _record(ctx: Context, name: str, block: dict[str, Any], fp: dict[str, Any], result: dict[str, Any],
            seconds: float, run_id: str) -> None:
    stage = STAGES[name]
    with KGStore.writer(ctx.kg, wait=60, create=False) as w:
        committed = w.store
        outputs = {rel: committed.file_sha(rel) for rel in stage.outputs(ctx, **_stage_kwargs(block))
                   if committed.has_file(rel)}
        for d in (result.get("outputs") or {}).values():
            outputs[str(Path(d).resolve().relative_to(ctx.kg.resolve()))] = "dir"
        w.record_stage(f"dag:{name}", config=_hashed_config(name, block, ctx.encoder), inputs=fp, outputs=outputs,
                       counts=result.get("counts", {}), seconds=round(seconds, 3), run_id=run_id)
        w.commit()


# ---- spark -------------------------------------------------------------------------------------
#: where the master comes from when the `spark` block names none: this variable, then spark-submit
MASTER_ENV = "MMKG_SPARK_MASTER"


class SparkScope:
    """One SparkSession for every Spark stage of a run, started only when a Spark stage must run.

    The stages reuse the active session (ingest, embed and retrieve all look for one first), so
    the master URL and executor settings of the `spark` block (or of spark-submit, when the block
    leaves master null) apply to all of them. A session this run started is stopped at the end;
    one that was already active (a notebook, a test fixture) is left alone (img2dataset I4).
    """

    def __init__(self, spark: dict[str, Any] | None):
        self.block = dict(spark or {})
        self.session: Any = None
        self.owned = False

    def ensure(self) -> None:
        if self.session is not None:
            return
        from pyspark.sql import SparkSession
        from mmkg.pipeline.engines.spark import get_or_create_session
        active = SparkSession.getActiveSession()
        if active is not None:
            self.session = active
            return
        master = self.block.get("master") or os.environ.get(MASTER_ENV)  # None: spark-submit decides
        conf = {str(k): str(v) for k, v in (self.block.get("conf") or {}).items()}
        self.session = get_or_create_session(master=master, app_name=self.block.get("app_name", "mmkg-run"),
                                             shuffle_partitions=int(self.block.get("shuffle_partitions", 2)),
                                             conf=conf)
        self.owned = True
        log.info("spark session %s on %s", self.session.sparkContext.applicationId, self.session.sparkContext.master)

    def close(self) -> None:
        if self.session is not None and self.owned:
            self.session.stop()
        self.session, self.owned = None, False


def _uses_spark(block: dict[str, Any]) -> bool:
    return block.get("engine") == "spark"


# ---- logging -----------------------------------------------------------------------------------
class _RunLog:
    """Log INFO and up to `<kg>/logs/<stem>.log` for the run, without making stderr chattier."""

    def __init__(self, path: Path):
        self.path = path
        self.handler: logging.Handler | None = None
        self._saved: list[tuple[logging.Handler, int]] = []
        self._root_level = logging.WARNING

    def __enter__(self) -> "_RunLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        root = logging.getLogger()
        self._root_level = root.level
        for h in root.handlers:
            if h.level == logging.NOTSET:
                self._saved.append((h, h.level))
                h.setLevel(self._root_level or logging.WARNING)
        self.handler = logging.FileHandler(self.path)
        self.handler.setLevel(logging.INFO)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(self.handler)
        root.setLevel(min(self._root_level or logging.WARNING, logging.INFO))
        return self

    def __exit__(self, *exc: Any) -> None:
        root = logging.getLogger()
        if self.handler is not None:
            root.removeHandler(self.handler)
            self.handler.close()
        root.setLevel(self._root_level)
        for h, level in self._saved:
            h.setLevel(level)


# ---- the run -----------------------------------------------------------------------------------
def select_stages(configured: list[str], from_stage: str | None, only: str | None) -> list[str]:
    for name in (from_stage, only):
        if name is not None and name not in STAGE_ORDER:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGE_ORDER)}")
    if from_stage and only:
        raise ConfigError("give --from or --only, not both")
    if only:
        return [only]
    if from_stage:
        return [s for s in configured if STAGE_ORDER.index(s) >= STAGE_ORDER.index(from_stage)]
    return configured


def _strings(value: Any) -> list[str]:
    """Every string inside a config block (nested lists and mappings included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _strings(v)]
    return []


def run_pipeline(*, kg: str | Path, data: str | Path | None = None, encoder: str = DEFAULT_ENCODER,
                 spark: dict[str, Any] | None = None, ingest: dict[str, Any] | None = None,
                 sparql: dict[str, Any] | None = None, embed: dict[str, Any] | None = None,
                 index: dict[str, Any] | None = None, retrieve: dict[str, Any] | None = None,
                 train: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None,
                 from_stage: str | None = None, only: str | None = None, force: bool = False,
                 dry_run: bool = False, wait: float = 0.0, progress: bool = True,
                 config_path: str | Path | None = None, echo: Any = None) -> RunReport:
    """Run the configured stages that are not cached; returns the run report (also written to disk)."""
    args = dict(locals())
    from mmkg.kg_store import remote
    if remote.is_url(kg):  # the stages work on the store's working copy, published once at the end
        if remote.current_session() is None:
            with remote.session():
                return run_pipeline(**args)
        kg = remote.resolve_kg(kg)
    kg = Path(os.path.abspath(kg))  # `snap-12:00` is a folder, never a URI to pyarrow
    blocks = {"ingest": ingest, "sparql": sparql, "embed": embed, "index": index, "retrieve": retrieve, "train": train,
              "evaluate": evaluate}
    for name, block in blocks.items():
        if block is not None and not isinstance(block, dict):
            raise ConfigError(f"stage {name}: expected a mapping of keyword arguments, got {type(block).__name__}")
        if block is not None:
            validate_block(name, block)
    if embed is not None and "kinds" not in embed:  # embed only the vector kinds the stages use
        from mmkg.jobs.stages import embed_kinds
        blocks["embed"] = {**embed, "kinds": embed_kinds(retrieve)}
    configured = [n for n in STAGE_ORDER if _enabled(blocks[n])]
    selected = select_stages(configured, from_stage, only)
    if only and only not in configured:
        raise ConfigError(f"stage {only!r} is not configured (or enabled: false) in the pipeline config")
    ctx = Context(kg=kg, data=Path(data).resolve() if data else None, encoder=encoder, progress=progress)
    for name in selected:  # `{data}` with no data directory: refused before the KG is touched
        for text in _strings(blocks[name]):
            ctx.expand(text)
    report = RunReport(kg=str(kg), config_path=str(config_path) if config_path else None,
                       config_hash=stage_config_hash({"encoder": encoder, **{k: v for k, v in blocks.items() if v}}),
                       dry_run=dry_run, selection={"from": from_stage, "only": only, "force": force})
    for name in STAGE_ORDER:
        s = report.stage(name)
        if name not in selected:
            s.status, s.reason = "skipped", "not configured" if name not in configured else "not selected"
    kg.mkdir(parents=True, exist_ok=True)
    t_run = time.perf_counter()
    with RunLock(kg, wait=wait):
        report.kg_version_before = read_manifest(kg)["kg_version"] if (kg / MANIFEST).exists() else None
        log_path = kg / "logs" / f"{report.stem}.log"
        report.log_file = str(log_path)
        with _RunLog(log_path):
            log.info("run %s: stages %s (from=%s only=%s force=%s dry_run=%s)", report.run_id, selected,
                     from_stage, only, force, dry_run)
            try:
                scope = SparkScope(spark)
                try:
                    _run_stages(ctx, blocks, selected, report, force=force, dry_run=dry_run, echo=echo,
                                spark=scope)
                finally:
                    scope.close()
                report.status = "ok"
            except BaseException as e:
                report.status, report.error = "failed", str(e) or type(e).__name__
                # the traceback goes to the run's log file (INFO); stderr gets the CLI's one line
                log.info("run %s failed", report.run_id, exc_info=True)
                raise
            finally:
                report.seconds = round(time.perf_counter() - t_run, 3)
                report.finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                report.kg_version_after = read_manifest(kg)["kg_version"] if (kg / MANIFEST).exists() else None
                report.report_path = str(report.write(kg))
    return report


def _run_stages(ctx: Context, blocks: dict[str, Any], selected: list[str], report: RunReport, *, force: bool,
                dry_run: bool, echo: Any, spark: SparkScope) -> None:
    upstream_changes = False
    for name in selected:
        block = blocks[name]
        s: StageReport = report.stage(name)
        s.config_hash = stage_config_hash(_hashed_config(name, block, ctx.encoder))
        if dry_run and upstream_changes:
            s.status, s.reason = "planned", "after upstream changes"
            continue
        if dry_run and name != "ingest" and not (ctx.kg / MANIFEST).exists():
            s.status, s.reason = "planned", "no store yet"
            continue
        cached, why, fp = cache_decision(name, ctx, block)
        if cached and not force:
            s.status, s.reason = "cached", why
            log.info("stage %s: cached (%s)", name, why)
            continue
        reason = "forced (--force)" if cached else why
        if dry_run:
            s.status, s.reason = "planned", reason
            upstream_changes = True
            continue
        if echo:
            echo(f"== {name}: {reason}")
        log.info("stage %s: running (%s)", name, reason)
        if _uses_spark(block):
            spark.ensure()
        t0 = time.perf_counter()
        s.status, s.reason = "failed", reason
        try:
            result = STAGES[name].run(ctx, **_stage_kwargs(block))
        finally:
            s.seconds = round(time.perf_counter() - t0, 3)
        s.status = "ran"
        s.counts, s.note = result.get("counts", {}), result.get("note", "")
        s.rejects, s.cache_hits = int(result.get("rejects", 0)), int(result.get("cache_hits", 0))
        s.outputs = result.get("outputs") or result.get("decisions")
        _record(ctx, name, block, fp, result, s.seconds, report.run_id)  # its commit snapshots the version
        log.info("stage %s: done in %.1fs %s", name, s.seconds, s.counts)


def run_from_config(path: str | Path, **overrides: Any) -> RunReport:
    """`run_pipeline(**job)` of a pipeline YAML; `overrides` (kg, data, from_stage, ...) win."""
    _, job = load_pipeline_config(path)
    return run_pipeline(**{**job, **{k: v for k, v in overrides.items() if v is not None}}, config_path=path)


__all__ = ["run_pipeline", "run_from_config", "load_pipeline_config", "cache_decision", "RunLock"]
