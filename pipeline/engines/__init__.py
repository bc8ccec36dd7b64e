"""Swappable engines for ingestion (registry `engine`): `local` (pyarrow) and `spark` (mapInArrow)."""
from __future__ import annotations

from typing import Any

from pipeline.engines.base import Engine, engine_registry
from pipeline.engines import local, spark  # noqa: F401  (registration; spark imports pyspark lazily)


def resolve_engine(name: str | Engine, **kwargs: Any) -> Engine:
    """An engine instance from its name; unknown names list the valid ones."""
    if isinstance(name, Engine):
        return name
    try:
        cls = engine_registry.get(name)
    except ValueError as e:
        from kg_store.errors import KGStoreError
        raise KGStoreError(str(e)) from None
    return cls(**kwargs)


__all__ = ["Engine", "engine_registry", "resolve_engine"]
