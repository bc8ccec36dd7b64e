"""Airflow DAG: the MMKG pipeline, one task per stage, each calling the same CLI as cron and `make demo`.

`mmkg run --only STAGE` reruns nothing that is cached, so a task whose inputs did not change
finishes in seconds and the DAG can run often (new sources are picked up as incremental updates).
The KG directory lock (`--wait`) serialises overlapping DAG runs. Only exit code 4 (locked) is worth
another try, so each task retries that itself (`retry_locked`) and Airflow retries nothing: a
configuration error (2), rejected records (3) or a failed stage (1) fails the task at once. A last
task collects what no kept version references (`mmkg gc --keep 3`).

Settings (Airflow Variables, with defaults): `mmkg_bin` (path to the `mmkg` executable),
`mmkg_config` (pipeline YAML), `mmkg_kg` (KG directory), `mmkg_data` (data directory),
`mmkg_spark_master` (exported as MMKG_SPARK_MASTER for the Spark ingest).
Copy or symlink this file into the Airflow `dags/` folder.
"""
from __future__ import annotations

from datetime import datetime

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

STAGES = ["ingest", "sparql", "embed", "index", "retrieve"]
DEFAULTS = {
    "mmkg_bin": "/opt/mmkg/.venv/bin/mmkg",
    "mmkg_config": "/opt/mmkg/configs/pipeline.yaml",
    "mmkg_kg": "/data/mmkg/kg",
    "mmkg_data": "/data/mmkg/sources",
    "mmkg_spark_master": "local[*]",
}


#: tries of a task whose KG directory stays locked (exit 4), and the pause between them
LOCKED_TRIES, LOCKED_PAUSE_S = 3, 600


def retry_locked(command: str) -> str:
    """`command`, run again after a pause while it exits 4 (locked); any other exit code is final."""
    return (f"for try in $(seq {LOCKED_TRIES}); do {command}; rc=$?; "
            f"if [ $rc -ne 4 ]; then exit $rc; fi; if [ $try -lt {LOCKED_TRIES} ]; then sleep {LOCKED_PAUSE_S}; fi; "
            "done; exit 4")  # no pause after the last try


def _var(name: str) -> str:
    # Jinja, so Variables are read when a task runs, not every time the scheduler parses this file.
    return "{{ var.value.get('%s', '%s') }}" % (name, DEFAULTS[name])


with DAG(
    dag_id="mmkg_pipeline",
    description="MMKG ingest → sparql → embed → index → retrieve (incremental; cached stages are no-ops)",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},  # only a lock is worth another try: retry_locked
    tags=["mmkg"],
) as dag:
    previous = None
    for stage in STAGES:
        task = BashOperator(
            task_id=stage,
            bash_command=retry_locked(f"{_var('mmkg_bin')} run --config {_var('mmkg_config')} --kg {_var('mmkg_kg')} "
                                      f"--data {_var('mmkg_data')} --only {stage} --wait 1800 --no-progress"),
            env={"MMKG_SPARK_MASTER": _var("mmkg_spark_master")},
            append_env=True,
        )
        if previous is not None:
            previous >> task
        previous = task
    gc = BashOperator(task_id="gc", bash_command=retry_locked(
        f"{_var('mmkg_bin')} gc --kg {_var('mmkg_kg')} --keep 3 --wait 1800"))
    previous >> gc
