"""Config files are the saved keyword arguments of a job (PyKEEN K3).

A YAML file has a free-form `metadata` block and a `job` block that is passed straight into the
job's function (`run_pipeline`, `train`, `evaluate`). Errors are one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kg_store.errors import KGStoreError


def read_config(path: str | Path, kind: str = "config") -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, job) of a config YAML."""
    import yaml
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise KGStoreError(f"cannot read {kind} {path}: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("job"), dict) or "metadata" not in doc:
        raise KGStoreError(f"{path}: a {kind} needs a `metadata` block and a `job` mapping")
    return doc["metadata"], doc["job"]
