"""Every pin of every optional extra in pyproject.toml exists on the package index pip installs from.

`pip install -e '.[gpu]'` is the one GPU install step, and it broke on a pin of a version that was
never released (`faiss-gpu-cu12==1.15.1`: that package stops at 1.14.1.post1). These tests ask the
index pip is configured with (`pip config list`: index-url, extra-index-url, env vars included;
PyPI by default) through the simple repository API — what pip itself reads — whether each pinned
version has a non-yanked file, and on Linux a file this interpreter can install. No dependency
is resolved beyond the pinned package (the extras replace or add single packages).

When no configured index answers (an offline machine), the registry tests skip and say so; CI
has PyPI access. The file:// test below runs everywhere and checks the same function.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import (InvalidSdistFilename, InvalidWheelFilename, canonicalize_name, parse_sdist_filename,
                             parse_wheel_filename)
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple"
TIMEOUT_S = 20


class IndexUnreachable(Exception):
    """The index did not answer (network, DNS, timeout, 5xx)."""


def extra_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[tuple[str, Requirement]]:
    """(extra, requirement) for every requirement of every optional extra."""
    data = tomllib.loads(pyproject.read_text())
    return [(extra, Requirement(req)) for extra, reqs in data["project"].get("optional-dependencies", {}).items()
            for req in reqs]


def pip_indexes() -> list[str]:
    """The simple-API index URLs pip would use here: index-url (PyPI unless set) + extra-index-urls."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                         timeout=60).stdout
    main: str | None = None
    extra: list[str] = []
    for line in out.splitlines():  # e.g. global.extra-index-url='file:///a file:///b', :env:.index-url='…'
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if key.endswith(".extra-index-url"):
            extra += value.split()
        elif key.endswith(".index-url"):
            main = value
    return [main or PYPI] + [u for u in extra if u != (main or PYPI)]


class _Links(HTMLParser):
    """Anchors of a PEP 503 project page: (file name, yanked)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[tuple[str, bool]] = []
        self._yanked: bool | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._yanked = "data-yanked" in dict(attrs)

    def handle_data(self, data):
        if self._yanked is not None and data.strip():
            self.files.append((data.strip(), self._yanked))
            self._yanked = None

    def handle_endtag(self, tag):
        if tag == "a":
            self._yanked = None


def project_files(index_url: str, name: str) -> list[dict] | None:
    """[{filename, yanked}] of a project on a simple index; None when the index has no such project.

    Raises IndexUnreachable when the index does not answer.
    """
    url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    if url.startswith("file://"):
        page = Path(urllib.request.url2pathname(url[len("file://"):]))
        page = page / "index.html" if (page / "index.html").exists() else page
        if not page.is_file():
            return None
        body, ctype = page.read_bytes(), "text/html"
    else:
        req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                body, ctype = resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise IndexUnreachable(f"{url}: HTTP {e.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise IndexUnreachable(f"{url}: {getattr(e, 'reason', e)}") from None
    if "json" in ctype:
        return [{"filename": f["filename"], "yanked": bool(f.get("yanked"))} for f in json.loads(body)["files"]]
    links = _Links()
    links.feed(body.decode("utf-8", "replace"))
    return [{"filename": f, "yanked": y} for f, y in links.files]


def _file_version(filename: str) -> tuple[Version, bool] | None:
    """(version, installable by this interpreter) of a wheel or sdist file name."""
    try:
        if filename.endswith(".whl"):
            _, version, _, tags = parse_wheel_filename(filename)
            return version, bool(tags & set(sys_tags()))
        return parse_sdist_filename(filename)[1], True
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


@dataclass
class PinCheck:
    """What the index said about each requirement (as 'extra: requirement')."""

    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)       # with the reason
    unknown: list[str] = field(default_factory=list)       # some index did not answer and none had it


def check_requirements(reqs: list[tuple[str, Requirement]], indexes: list[str]) -> PinCheck:
    """Does some configured index hold a version of each requirement (a pinned version: that one),
    with a non-yanked file, and on Linux a file this interpreter installs?"""
    result = PinCheck()
    for extra, req in reqs:
        label = f"{extra}: {req}"
        seen: list[Version] = []
        installable = False
        unreachable: list[str] = []
        for index in indexes:
            try:
                files = project_files(index, req.name)
            except IndexUnreachable as e:
                unreachable.append(str(e))
                continue
            for f in files or []:
                parsed = None if f["yanked"] else _file_version(f["filename"])
                if parsed and req.specifier.contains(parsed[0], prereleases=True):
                    seen.append(parsed[0])
                    installable |= parsed[1]
        if seen and (installable or not sys.platform.startswith("linux")):
            result.ok.append(label)
        elif unreachable:
            result.unknown.append(f"{label} ({'; '.join(unreachable)})")
        elif seen:
            result.missing.append(f"{label}: no file of {max(seen)} installs on this interpreter "
                                  f"({next(iter(sys_tags()))})")
        else:
            result.missing.append(f"{label}: no such release on {', '.join(indexes)}")
    return result


def _skip_if_unknown(result: PinCheck) -> None:
    if result.unknown:
        pytest.skip("package index unreachable, pins not checked: " + "; ".join(result.unknown))


# ---- tests ---------------------------------------------------------------------------------------
def test_every_extra_requirement_is_pinned_and_the_gpu_extra_replaces_faiss_cpu():
    reqs = extra_requirements()
    assert reqs, "pyproject.toml has optional extras (gpu at least)"
    for extra, req in reqs:
        assert [s.operator for s in req.specifier] == ["=="], f"{extra}: {req} should pin one version"
    gpu = {req.name for extra, req in reqs if extra == "gpu"}
    assert "faiss-gpu" in gpu  # the package DESIGN.md names; faiss-cpu is uninstalled first (README)


def test_every_pin_of_every_extra_exists_on_the_package_index():
    result = check_requirements(extra_requirements(), pip_indexes())
    _skip_if_unknown(result)
    assert not result.missing, "pins that `pip install -e '.[extra]'` cannot satisfy: " + "; ".join(result.missing)
    assert len(result.ok) == len(extra_requirements())


def test_the_check_fails_on_the_old_gpu_pin():
    old, new = Requirement("faiss-gpu-cu12==1.15.1"), Requirement("faiss-gpu==1.15.1")
    result = check_requirements([("gpu", old), ("gpu", new)], pip_indexes())
    _skip_if_unknown(result)
    assert result.ok == ["gpu: faiss-gpu==1.15.1"]
    assert len(result.missing) == 1 and result.missing[0].startswith("gpu: faiss-gpu-cu12==1.15.1: no such release")


def test_the_check_reads_a_file_index_and_ignores_yanked_files(tmp_path):
    """The same function over a PEP 503 file:// index: no network, never skipped."""
    page = tmp_path / "simple" / "faiss-gpu-cu12"
    page.mkdir(parents=True)
    wheel = "faiss_gpu_cu12-{}-cp310-abi3-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    page.joinpath("index.html").write_text(
        "<html><body>"
        f'<a href="../../files/{wheel.format("1.14.1.post1")}">{wheel.format("1.14.1.post1")}</a>'
        f'<a href="../../files/{wheel.format("1.15.0")}" data-yanked="">{wheel.format("1.15.0")}</a>'
        "</body></html>")
    index = (tmp_path / "simple").as_uri()
    result = check_requirements([("gpu", Requirement("faiss-gpu-cu12==1.15.1")),
                                 ("gpu", Requirement("faiss-gpu-cu12==1.15.0")),
                                 ("gpu", Requirement("faiss-gpu-cu12==1.14.1.post1")),
                                 ("gpu", Requirement("faiss-gpu==1.15.1"))], [index])
    assert result.unknown == []
    assert [m.split(":")[1].strip() for m in result.missing] == ["faiss-gpu-cu12==1.15.1", "faiss-gpu-cu12==1.15.0",
                                                                 "faiss-gpu==1.15.1"]
    if sys.platform.startswith("linux") and platform.machine() == "x86_64":  # the wheel's platform
        assert result.ok == ["gpu: faiss-gpu-cu12==1.14.1.post1"]
