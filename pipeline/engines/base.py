"""The engine interface: what `pipeline.ingest` asks of Spark or of the in-process engine.

Only the parts that grow with the number of triples are engine work (parsing, key occurrences,
mapping triple keys to ids, dedupe). Everything that is small — labels, links, literals, image
references, rejects — is collected to the driver and assembled by shared code, which is what
makes the two engines produce identical stores.
"""
from __future__ import annotations

import pyarrow as pa

from kg_store.registry import family
from pipeline.engines.plan import Plan

engine_registry = family("engine")

#: the one engine notion of every distributed stage (ingest, embed, retrieve): in-process or Spark
ENGINE_NAMES = ("local", "spark")


def check_engine(name: str, stage: str) -> str:
    """`name` if it is an engine, else a configuration error naming the choices."""
    if name not in ENGINE_NAMES:
        from kg_store.errors import ConfigError
        raise ConfigError(f"unknown {stage} engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")
    return name

#: per-source triple accounting returned by `final_triples`
TRIPLE_STATS = pa.schema([("src", pa.int32()), ("lines", pa.int64()), ("distinct", pa.int64())])


class Engine:
    """Base class of the engines (`local`, `spark`)."""

    name = "engine"

    def start(self, plan: Plan) -> None:
        """Acquire what the engine runs on (a Spark session); sized by the plan. No-op by default."""

    def parse(self, plan: Plan) -> None:
        """Read and parse every task of the plan (records stay in the engine)."""
        raise NotImplementedError

    def small_records(self) -> pa.Table:
        """Every record that is not a triple (LOCATED schema), collected to the driver."""
        raise NotImplementedError

    def triple_occurrences(self) -> tuple[pa.Table, pa.Table]:
        """(entity keys, relation keys) of the triples: tables `key`, `order` (first occurrence).

        order = pos * 4 + slot (0 head, 1 relation, 2 tail), so ids follow the input order.
        """
        raise NotImplementedError

    def final_triples(self, key_map: pa.Table, rel_map: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Distinct (h, r, t) ids with the `pos` of their first line, sorted by pos; and TRIPLE_STATS.

        key_map: key, entity_id (one row per key); rel_map: key, relation_id. Per-source
        `distinct` counts distinct (head key, relation key, tail key) before merging.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what the engine created (a Spark session it started)."""
