"""Issue 32: configs and arguments handed over by someone else. YAML aliases (a 900-byte "billion
laughs" config) are refused before they expand, `--set` mistakes are one line with exit 2, and a
relative `--kg` with a colon is a folder, never a URI. Real CLI (`mmkg.jobs.cli.main`; a child process
where memory is measured)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.helpers import mmkg
from tests.reliability.hostile_fixtures import run_cli

#: 8 levels of 9 aliases: 43 million strings once expanded (json.dumps of the stage config);
#: the bomb sits in a disabled stage and the run is a --dry-run: it was expanded all the same
LAUGHS = """metadata: {{title: laughs}}
job:
  kg: {kg}
  ingest: {{sources: ["tsv:{tsv}"]}}
  train:
    enabled: false
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: [*g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


def _one_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    cfg = tmp_path / "laughs.yaml"
    (tmp_path / "in.tsv").write_text("head\trelation\ttail\nQ1\tP1\tQ2\n")
    cfg.write_text(LAUGHS.format(kg=tmp_path / "kg", tsv=tmp_path / "in.tsv"))
    assert len(cfg.read_bytes()) < 1000
    run = mmkg("run", "--config", cfg, "--dry-run", "--no-progress", timeout=120)
    assert run.max_rss_kib < 300_000, run.max_rss_kib
    assert run.rc == 2, run
    _one_line(run.stderr)
    assert "aliases" in run.stderr
    assert not (tmp_path / "kg").exists()  # refused before anything was created


@pytest.mark.parametrize("override, says", [
    ("seed=[1, 2", "not valid YAML"),          # malformed YAML value: was a traceback
    ("model_kwargs.use_kg.deep=1", "not a mapping"),  # nesting under a scalar: was a traceback
    ("seed=*x", "aliases"),
    ("=1", "key=value"),
])
def test_set_mistakes_are_one_line_exit_2(tmp_path, capsys, override, says):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("metadata: {title: t}\njob: {kg: x, model_kwargs: {use_kg: true}}\n")
    code, out, err = run_cli(capsys, "train", "--config", cfg, "--set", override)
    assert code == 2, (out, err)
    _one_line(err)
    assert says in err


def test_a_relative_kg_with_a_colon_is_a_folder(tmp_path):
    """`--kg snap-12:00` (a timestamped folder) was read by pyarrow as a URI of scheme `snap-12`."""
    (tmp_path / "in.tsv").write_text("head\trelation\ttail\nQ1\tP1\tQ2\nQ2\tP1\tQ3\n")
    run = mmkg("ingest", "--kg", "snap-12:00", "--source", "tsv:in.tsv", "--engine", "local", cwd=tmp_path)
    assert run.rc == 0, run
    run = mmkg("stats", "--kg", "snap-12:00", "--json", cwd=tmp_path)
    assert run.rc == 0 and '"triples": 2' in run.stdout, run
    assert Path(tmp_path / "snap-12:00" / "manifest.json").is_file()
