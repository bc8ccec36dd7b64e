"""Run reports of `mmkg run`: one JSON file per run plus a short human summary.

`<kg>/runs/<UTC timestamp>-<run id>.json` holds, per stage: status (`ran`, `cached`, `skipped`,
`planned`, `failed`), why, seconds, counts, rejects, cache hits and outputs; plus the KG version
before/after, the config hash and the log file. Written atomically at the end of the run (and
on failure), so a report on disk is always complete (img2dataset I3: failures are data too).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmkg.kg_store import atomic

STATUSES = ("ran", "cached", "skipped", "planned", "failed")


@dataclass
class StageReport:
    name: str
    status: str = "planned"
    reason: str = ""
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    rejects: int = 0
    cache_hits: int = 0
    outputs: Any = None
    note: str = ""
    config_hash: str = ""


@dataclass
class RunReport:
    kg: str
    config_path: str | None
    config_hash: str
    dry_run: bool = False
    selection: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    finished: str | None = None
    seconds: float = 0.0
    status: str = "running"
    error: str | None = None
    kg_version_before: int | None = None
    kg_version_after: int | None = None
    log_file: str | None = None
    report_path: str | None = None
    stages: list[StageReport] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return f"{self.started.replace(':', '').replace('-', '')}-{self.run_id}"

    def stage(self, name: str) -> StageReport:
        for s in self.stages:
            if s.name == name:
                return s
        s = StageReport(name)
        self.stages.append(s)
        return s

    @property
    def all_cached(self) -> bool:
        return all(s.status in ("cached", "skipped") for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["all_cached"] = self.all_cached
        return d

    def write(self, kg: str | Path) -> Path:
        path = Path(kg) / "runs" / f"{self.stem}.json"
        atomic.write_json(path, self.to_dict())
        return path


def human_summary(report: RunReport, report_path: Path | None = None) -> str:
    """A few lines for the terminal: one per stage, then the verdict and where things are."""
    lines = [f"mmkg run {report.run_id} on {report.kg}" + (" (dry run: nothing executed)" if report.dry_run else "")]
    for s in report.stages:
        detail = s.note or s.reason
        took = f"{s.seconds:7.1f} s" if s.status in ("ran", "failed") else " " * 9
        rejected = f"  ({s.rejects:,} rejected)" if s.rejects else ""
        lines.append(f"  {s.name:<9} {s.status:<8} {took}  {detail}{rejected}")
    total = sum(s.rejects for s in report.stages)
    if total:
        lines.append(f"rejects: {total:,} input records rejected; reasons in the stores' `rejects` table "
                     "(`mmkg sql --kg KG \"SELECT stage, reason, count(*) FROM rejects GROUP BY ALL\"`) "
                     "and in rejects.json beside query shards")
    if report.status == "failed":
        lines.append(f"FAILED: {report.error}")
    elif report.dry_run:
        todo = [s.name for s in report.stages if s.status == "planned"]
        lines.append("plan: " + (f"would run {', '.join(todo)}" if todo else "nothing to do (all stages cached)"))
    elif report.all_cached:
        lines.append(f"nothing changed: all stages cached ({report.seconds:.1f} s)")
    else:
        lines.append(f"done in {report.seconds:.1f} s; kg_version {report.kg_version_before} → {report.kg_version_after}")
    if report_path is not None:
        lines.append(f"report: {report_path}")
    if report.log_file:
        lines.append(f"log:    {report.log_file}")
    return "\n".join(lines)
