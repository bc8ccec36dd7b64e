"""Airflow DAG: the MMKG pipeline, one task per stage, each calling the same CLI as cron and `make demo`.

`mmkg run --only STAGE` reruns nothing that is cached, so a task whose inputs did not change
finishes in seconds and the DAG can run often (new sources are picked up as incremental updates).
The KG directory lock (`--wait`) serialises overlapping DAG runs; exit code 4 (locked) is retried.

Settings (Airflow Variables, with defaults): `mmkg_bin` (path to the `mmkg` executable),
`mmkg_config` (pipeline YAML), `mmkg_kg` (KG directory), `mmkg_data` (data directory),
`mmkg_spark_master` (exported as MMKG_SPARK_MASTER for the Spark ingest).
Copy or symlink this file into the Airflow `dags/` folder.
"""
from __future__ import annotations

from datetime import datetime, timedelta

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
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["mmkg"],
) as dag:
    previous = None
    for stage in STAGES:
        task = BashOperator(
            task_id=stage,
            bash_command=(f"{_var('mmkg_bin')} run --config {_var('mmkg_config')} --kg {_var('mmkg_kg')} "
                          f"--data {_var('mmkg_data')} --only {stage} --wait 1800 --no-progress"),
            env={"MMKG_SPARK_MASTER": _var("mmkg_spark_master")},
            append_env=True,
        )
        if previous is not None:
            previous >> task
        previous = task
