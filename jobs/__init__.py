"""Jobs: the `mmkg` CLI, spark-submit entry points, the stage DAG, run reports."""
