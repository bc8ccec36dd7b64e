"""The engine interface: what `mmkg.pipeline.ingest` asks of Spark or of the in-process engine.

Only the parts that grow with the number of triples are engine work (parsing, key occurrences,
entity ids, mapping triple keys to ids, dedupe, the entity and triple rows). Everything that is
small — labels, links, literals, image references, rejects, relations — is collected to the
driver and assembled by shared code; both engines follow the same id rules, so their stores are
identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa

from mmkg.kg_store.registry import family
from mmkg.pipeline.engines.plan import Plan

engine_registry = family("engine")

#: the one engine notion of every distributed stage (ingest, embed, retrieve): in-process or Spark
ENGINE_NAMES = ("local", "spark")


def check_engine(name: str, stage: str) -> str:
    """`name` if it is an engine, else a configuration error naming the choices."""
    if name not in ENGINE_NAMES:
        from mmkg.kg_store.errors import ConfigError
        raise ConfigError(f"unknown {stage} engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")
    return name

#: per-source triple accounting (lines, distinct key triples per source)
TRIPLE_STATS = pa.schema([("src", pa.int32()), ("lines", pa.int64()), ("distinct", pa.int64())])


@dataclass
class NewRows:
    """New rows of an id table: a driver-side table (the driver appends it to the old rows and
    writes one file), or part files the engine's executors wrote into the store (appended to the
    old version's parts). Either way ids continue the store's, in row order."""

    num_rows: int
    table: pa.Table | None = None
    #: writes the part files (called once, when the driver publishes the tables); returns them
    write: Callable[[], list[str]] | None = None


@dataclass
class EntityIds:
    """What the driver gets back from entity id assignment: small, never one row per key."""

    lookup: pa.Table      # key, entity_id for the requested lookup keys (labels, literals, images)
    new_same_as: pa.Table  # key, entity_id, link: new aliases
    added: int
    merged_keys: int
    merged_entities: int
    conflicts: int


@dataclass
class TripleResult:
    rows: NewRows
    stats: pa.Table       # TRIPLE_STATS
    distinct: int         # distinct (h, r, t) of this input, after merging entities


class Engine:
    """Base class of the engines (`local`, `spark`).

    Call order: start, parse, small_records, relation_occurrences, assign_entity_ids,
    new_triples, new_entity_rows, close."""

    name = "engine"

    def start(self, plan: Plan) -> None:
        """Acquire what the engine runs on (a Spark session); sized by the plan. No-op by default."""

    def parse(self, plan: Plan) -> None:
        """Read and parse every task of the plan (records stay in the engine)."""
        raise NotImplementedError

    def small_records(self) -> pa.Table:
        """Every record that is not a triple (LOCATED schema), collected to the driver."""
        raise NotImplementedError

    def relation_occurrences(self) -> pa.Table:
        """Relation keys of the triples: `key`, `order` (first occurrence; relations are few).

        order = pos * 4 + slot (0 head, 1 relation, 2 tail), so ids follow the input order.
        """
        raise NotImplementedError

    def assign_entity_ids(self, store, data_occ: pa.Table, links: pa.Table, lookup_keys: pa.Array) -> EntityIds:
        """Entity ids for every key of the triples and of `data_occ` (key, order: keys of the small
        records), merged over `links` (s, o, p) and keeping the ids `store` has; new entities get
        ids after the store's in (order, key) order (`mmkg.pipeline.linking.merge_entities`)."""
        raise NotImplementedError

    def new_triples(self, w, rel_map: pa.Table, plan: Plan) -> TripleResult:
        """Distinct (h, r, t) of the input that the store lacks, ids continuing the store's in
        input order (first line); rel_map: key, relation_id. Per-source `distinct` counts
        distinct (head key, relation key, tail key) before merging."""
        raise NotImplementedError

    def new_entity_rows(self, w, labels: pa.Table, hints: pa.Table, descs: pa.Table, names: list[str],
                        file_src) -> NewRows:
        """Rows of the entities `assign_entity_ids` added (labels etc.: id, text tables)."""
        raise NotImplementedError

    def write_graph(self, w, triple_files: list[Path], num_nodes: int) -> str:
        """The CSR of the new version's triples (all its part files): built out of core in this
        process, memory bounded by MMKG_GRAPH_MEMORY, not by the KG."""
        return w.write_graph_external(triple_files, num_nodes)

    def discard(self) -> None:
        """Remove what the engine wrote into the store for a version that is not committed."""

    def close(self) -> None:
        """Release what the engine created (a Spark session it started)."""
