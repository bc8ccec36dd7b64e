"""`mmkg run` mechanics: config loading, plan (--dry-run), stage selection, lock, exit codes, reports,
the Spark entry point on local[2], and the deploy files. Tiny real inputs (see test_run_fixtures)."""
from __future__ import annotations

import inspect
import json
import py_compile
from pathlib import Path

import pytest
import yaml

from tests.jobs.test_run_fixtures import make_sources, pipeline_job, write_config

REPO = Path(__file__).resolve().parents[2]


def _cli(argv):
    from mmkg.jobs.cli import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_shipped_pipeline_config_fits_the_stages():
    """configs/pipeline.yaml: every stage block binds to its stage function (PyKEEN K3 check)."""
    from mmkg.jobs.runner import load_pipeline_config, run_pipeline
    from mmkg.jobs.stages import STAGES
    meta, job = load_pipeline_config(REPO / "configs" / "pipeline.yaml")
    inspect.signature(run_pipeline).bind(**job)
    for name, stage in STAGES.items():
        block = {k: v for k, v in (job.get(name) or {}).items() if k != "enabled"}
        inspect.signature(stage.run).bind(None, **block)
    assert job["encoder"] == "minilm" and job["index"]["kind"] == "auto" and job["retrieve"]["top_N"] == 10
    assert job["train"]["enabled"] is False and job["evaluate"]["enabled"] is False


def test_bad_configs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"metadata": {}, "job": {"kg": str(tmp_path / "kg"), "embedd": {}}}))
    assert _cli(["run", "--config", str(bad)]) == 2  # configuration mistakes exit 2 (the README's table)
    ok = write_config(tmp_path / "ok.yaml", {"kg": str(tmp_path / "kg"), "ingest": {"sources": []}})
    assert _cli(["run", "--config", str(ok), "--only", "retrieve"]) == 2  # not configured
    assert _cli(["run", "--config", str(ok), "--only", "nope"]) == 2       # usage error
    # the config file itself: missing, not a config, {data} with no data directory (exit 1 before)
    assert _cli(["run", "--config", str(tmp_path / "absent.yaml")]) == 2
    no_job = tmp_path / "nojob.yaml"
    no_job.write_text(yaml.safe_dump({"metadata": {}, "stages": []}))
    assert _cli(["run", "--config", str(no_job)]) == 2
    needs_data = write_config(tmp_path / "data.yaml", {"kg": str(tmp_path / "kg2"),
                                                       "ingest": {"sources": ["markg:{data}/markg/MarKG"]}})
    assert _cli(["run", "--config", str(needs_data)]) == 2
    assert not (tmp_path / "kg2").exists()  # refused before anything is created


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("stage, block, says", [
    ("embed", {"batch_sise": 64}, "stage embed: unknown option 'batch_sise'"),
    ("index", {"kind": "autoo"}, "stage index: unknown kind 'autoo'"),
    ("retrieve", {"top_N": "ten"}, "stage retrieve: option 'top_N' must be int"),
    ("retrieve", {"retriever": "bm25"}, "stage retrieve: unknown retriever 'bm25'"),
    ("ingest", {"engine": "sparc"}, "unknown ingest engine 'sparc'"),
])
def test_a_bad_stage_block_is_one_line_before_anything_runs(tmp_path, stage, block, says, dry_run):
    """An unknown key or a bad value in any stage block: one line naming the stage and key, exit 2,
    no traceback, nothing created — with --dry-run as without (issue 26)."""
    import subprocess
    import sys
    kg = tmp_path / "kg"
    cfg = write_config(tmp_path / "c.yaml", {"kg": str(kg), "ingest": {"sources": []}, stage: block}
                       if stage != "ingest" else {"kg": str(kg), "ingest": {"sources": [], **block}})
    argv = [sys.executable, "-m", "mmkg.jobs.cli", "run", "--config", str(cfg), *(["--dry-run"] if dry_run else [])]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip() and "swigfaiss" not in x and "faiss.loader" not in x]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert not kg.exists()


def test_an_unknown_model_in_set_is_one_line(tmp_path):
    import subprocess
    import sys
    argv = [sys.executable, "-m", "mmkg.jobs.cli", "train", "--config", str(REPO / "configs/mrmkg/mars_tiny-t5.yaml"),
            "--set", "model=nosuch", "--set", f"kg={tmp_path / 'kg'}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    lines = [x for x in out.stderr.splitlines() if x.strip() and "swigfaiss" not in x and "faiss.loader" not in x]
    assert out.returncode == 2 and len(lines) == 1 and "nosuch" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def small(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    src = make_sources(data_dir, tmp / "src")
    return {"tmp": tmp, "src": src, "data": data_dir}


def test_dry_run_plans_and_changes_nothing(small, capsys):
    tmp = small["tmp"]
    kg = tmp / "dry-kg"
    cfg = write_config(tmp / "dry.yaml", pipeline_job(small["data"], kg, [f"markg:{small['src']['base']}"]))
    assert _cli(["run", "--config", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would run ingest, embed, index, retrieve" in out
    assert not (kg / "manifest.json").exists()
    reports = list((kg / "runs").glob("*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["dry_run"] is True


def test_lock_held_exits_4(small):
    from mmkg.jobs.runner import RunLock
    kg = small["tmp"] / "locked-kg"
    cfg = write_config(small["tmp"] / "lock.yaml", pipeline_job(small["data"], kg, [f"markg:{small['src']['base']}"]))
    kg.mkdir()
    with RunLock(kg):
        assert _cli(["run", "--config", str(cfg), "--wait", "0.3"]) == 4
    assert not (kg / "manifest.json").exists()


def test_only_ingest_on_spark_local2_equals_local(small, spark):
    """The cluster entry point (Spark ingest, master from config) on local[2]; same store as local."""
    from mmkg.jobs.runner import run_pipeline
    from mmkg.kg_store import open_store
    sources = [f"markg:{small['src']['base']}", f"tsv:{small['src']['extra']}"]
    stores = {}
    for engine in ("spark", "local"):
        job = pipeline_job(small["data"], small["tmp"] / f"{engine}-kg", sources, engine=engine)
        job["ingest"]["master"] = "local[2]"
        report = run_pipeline(**job, only="ingest", progress=False)
        assert [s.status for s in report.stages if s.name != "ingest"] == ["skipped"] * (len(report.stages) - 1)
        stores[engine] = open_store(job["kg"])
        # a rerun is cached whatever the engine: engine/master are not part of the cache key
        job["ingest"]["engine"] = "local" if engine == "spark" else "spark"
        assert run_pipeline(**job, only="ingest", progress=False).stages[0].status == "cached"
    for t in ("entities", "relations", "triples"):
        assert stores["spark"].table(t).equals(stores["local"].table(t)), t


def test_deploy_files(tmp_path):
    dag = REPO / "deploy" / "airflow" / "mmkg_dag.py"
    py_compile.compile(str(dag), doraise=True)
    try:
        import airflow  # noqa: F401
    except ImportError:
        pass
    else:  # where Airflow is installed the DAG must import cleanly
        import importlib.util
        spec = importlib.util.spec_from_file_location("mmkg_dag", dag)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    cron = (REPO / "deploy" / "cron" / "mmkg.cron").read_text()
    assert "mmkg run --config" in cron and "--wait" in cron and "--data $MMKG_DATA" in cron
    # Airflow retries nothing; a task tries again only while the KG stays locked (exit 4)
    import subprocess
    source = dag.read_text()
    assert '"retries": 0' in source and 'task_id="gc"' in source
    import ast
    tree = ast.parse(source)  # the helper alone: Airflow need not be installed here
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "retry_locked"]
    ns: dict = {"LOCKED_TRIES": 3, "LOCKED_PAUSE_S": 0}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(dag), "exec"), ns)
    for first_rc, calls in ((4, 3), (2, 1), (1, 1), (0, 1)):
        counter = tmp_path / "calls"
        counter.write_text("")
        cmd = f"echo x >> {counter}; (exit {first_rc})"
        rc = subprocess.run(["bash", "-c", ns["retry_locked"](cmd)]).returncode
        assert rc == first_rc and len(counter.read_text().split()) == calls, (first_rc, calls)
    assert "spark-submit" in (REPO / "deploy" / "spark-submit.md").read_text()


def test_rejects_are_in_the_console_summary(tmp_path, capsys):
    """A run whose input has bad records says how many were rejected, per stage and in total."""
    tsv = tmp_path / "t.tsv"
    tsv.write_text("Q1\tP31\tQ5\nnot a triple\nQ2\tP31\tQ5\n")
    cfg = write_config(tmp_path / "c.yaml", {"kg": str(tmp_path / "kg"), "ingest": {"sources": [f"tsv:{tsv}"]}})
    assert _cli(["run", "--config", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(1 rejected)" in out and "rejects: 1 input records rejected" in out


def test_demo_sources_compose_with_others(data_dir, tmp_path):
    """`sources: [demo, "tsv:extra.tsv"]` keeps every demo input and adds the extra one."""
    from mmkg.jobs.stages import Context, ingest_sources
    from mmkg.pipeline.demo_sources import demo_sources
    extra = tmp_path / "extra.tsv"
    extra.write_text("Q1\tP31\tQ5\n")
    ctx = Context(kg=tmp_path / "kg", data=data_dir, encoder="minilm", progress=False)
    demo = ingest_sources(ctx, "demo")
    both = ingest_sources(ctx, ["demo", f"tsv:{extra}"])
    assert len(demo) == len(demo_sources(data_dir)) >= 10
    assert both == demo + [f"tsv:{extra.resolve()}"]


def test_mmkg_ingest_snapshots_its_version(tmp_path):
    """Every writing command keeps its version's manifest under versions/, as `mmkg run` does."""
    tsv = tmp_path / "t.tsv"
    tsv.write_text("Q1\tP31\tQ5\n")
    kg = tmp_path / "kg"
    assert _cli(["ingest", "--kg", str(kg), "--source", f"tsv:{tsv}", "--engine", "local"]) == 0
    snaps = sorted(p.name for p in (kg / "versions").glob("v*.json"))
    assert snaps == [f"v{json.loads((kg / 'manifest.json').read_text())['kg_version']:06d}.json"]
