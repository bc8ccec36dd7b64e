"""Swappable engines for ingestion (registry `engine`): `local` (pyarrow) and `spark` (mapInArrow)."""
from __future__ import annotations

from typing import Any

from mmkg.pipeline.engines.base import ENGINE_NAMES, Engine, check_engine, engine_registry
from mmkg.pipeline.engines import local, spark  # noqa: F401  (registration; spark imports pyspark lazily)


def resolve_engine(name: str | Engine, **kwargs: Any) -> Engine:
    """An engine instance from its name; unknown names list the valid ones."""
    if isinstance(name, Engine):
        return name
    return engine_registry.get(check_engine(name, "ingest"))(**kwargs)


__all__ = ["ENGINE_NAMES", "Engine", "check_engine", "engine_registry", "resolve_engine"]
