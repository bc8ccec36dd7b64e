"""Cross-KG entity merging: union-find over sameAs / Freebase→Wikidata links, canonical keys.

Links are few (tens of thousands) next to the keys (up to millions), so only keys that occur in
a link go through the Python union-find in the driver; every other key is its own entity and is
handled with Arrow. Canonical key of a merged entity: an existing store entity's key (ids are
stable), else the best by priority Wikidata QID > DBpedia URI > Freebase mid > other, ties by
first occurrence in the input, then by the key itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_QID = re.compile(r"^Q\d+$")
NO_ORDER = np.iinfo(np.int64).max


def key_rank(key: str) -> int:
    if _QID.match(key):
        return 0
    if "dbpedia.org/resource/" in key:
        return 1
    if key.startswith(("/m/", "/g/")):
        return 2
    return 3


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k in list(self.parent):
            out.setdefault(self.find(k), []).append(k)
        return out


@dataclass
class Merged:
    """Result of `merge_entities`."""

    key_map: pa.Table      # key, entity_id for every data key and every linked alias of an entity
    new_entities: pa.Table  # id, key, order (first occurrence) of the entities this run adds
    new_same_as: pa.Table  # key, entity_id, link (kind of link that merged it) — new aliases only
    merged_keys: int       # data keys folded into another key's entity
    merged_entities: int   # entities made of two or more data keys
    conflicts: int         # components that touch two existing entities (left unmerged)


@dataclass
class Components:
    """Link components resolved in the driver (`resolve_links`); only keys that occur in a link.

    `map_rows` / `alias_rows` name either an existing id (int) or the canonical key of a new
    component entity (str), to be replaced by that entity's id once new ids are assigned."""

    linked: pa.Array                           # every key of any link
    new: list[tuple[str, int]]                 # (canonical key, order) of new component entities
    map_rows: list[tuple[str, int | str]]      # key → id or canonical key
    alias_rows: list[tuple[str, int | str, str]]  # new same_as rows: key, id or canonical key, link kind
    merged_keys: int
    merged_entities: int
    conflicts: int

    def resolved(self, new_ids: dict[str, int]) -> tuple[pa.Table, pa.Table]:
        """(key_map rows, same_as rows) with canonical keys replaced by `new_ids[canonical]`."""
        def rid(e):
            return e if isinstance(e, int) else new_ids[e]
        key_map = pa.table({"key": pa.array([k for k, _ in self.map_rows], pa.string()),
                            "entity_id": pa.array([rid(e) for _, e in self.map_rows], pa.int64())})
        same_as = pa.table({"key": pa.array([k for k, _, _ in self.alias_rows], pa.string()),
                            "entity_id": pa.array([rid(e) for _, e, _ in self.alias_rows], pa.int64()),
                            "link": pa.array([s for _, _, s in self.alias_rows], pa.string())})
        return key_map, same_as


def link_union(links: pa.Table) -> tuple[UnionFind, dict[str, str]]:
    uf = UnionFind()
    link_kind: dict[str, str] = {}
    for a, b, kind in zip(links["s"].to_pylist(), links["o"].to_pylist(), links["p"].to_pylist()):
        uf.union(a, b)
        link_kind.setdefault(a, kind)
        link_kind.setdefault(b, kind)
    return uf, link_kind


def linked_keys(links: pa.Table) -> pa.Array:
    """Every key that takes part in a link (the keys `resolve_links` needs first orders/ids for)."""
    if not links.num_rows:
        return pa.array([], pa.string())
    return pc.unique(pa.chunked_array(links["s"].chunks + links["o"].chunks, pa.string()))


def resolve_links(links: pa.Table, first: dict[str, int], ex_lookup: dict[str, int]) -> Components:
    """One entity per link component that has data or already exists.

    first: first order of the linked keys that occur in the data; ex_lookup: store ids of the
    linked keys the store already has (canonical or alias). Small: runs in the driver."""
    uf, link_kind = link_union(links)
    comp_rows, alias_rows, map_rows, conflicts, merged, merged_entities = [], [], [], 0, 0, 0
    for members in uf.groups().values():
        data = [k for k in members if k in first]
        olds = sorted({ex_lookup[k] for k in members if k in ex_lookup})
        if not data and not olds:
            continue
        merged += max(0, len(data) - 1)
        merged_entities += len(data) > 1
        if olds:
            conflicts += len(olds) > 1
            eid: int | str = olds[0]
            canonical = None
        else:
            canonical = min(members, key=lambda k: (key_rank(k), first.get(k, NO_ORDER), k))
            eid = canonical  # resolved to an id once new entities are ordered
            comp_rows.append((canonical, min(first[k] for k in data)))
        for k in members:
            if k in ex_lookup:
                if k in first:
                    map_rows.append((k, ex_lookup[k]))
                continue
            map_rows.append((k, eid))
            if k != canonical:
                alias_rows.append((k, eid, link_kind.get(k, "link")))
    return Components(linked=pa.array(list(uf.parent), pa.string()), new=comp_rows, map_rows=map_rows,
                      alias_rows=alias_rows, merged_keys=merged, merged_entities=merged_entities,
                      conflicts=conflicts)


#: the order new entities take their ids in: first occurrence, ties by key (both engines)
NEW_ID_ORDER = ["order", "key"]


def merge_entities(occ: pa.Table, links: pa.Table, existing_keys: pa.Table) -> Merged:
    """Assign entity ids (in-process; the Spark engine runs the same steps as Spark jobs).

    occ: key, order — distinct data keys with their first occurrence.
    links: s, o, p — link records (p = link kind).
    existing_keys: key, entity_id — canonical keys and aliases already in the store.
    """
    n_existing = int(pc.max(existing_keys["entity_id"]).as_py() + 1) if existing_keys.num_rows else 0
    linked = linked_keys(links)
    in_links = pc.is_in(occ["key"], value_set=linked) if len(linked) else pa.array([False] * occ.num_rows, pa.bool_())
    existing_arr = existing_keys["key"].combine_chunks() if existing_keys.num_rows else pa.array([], pa.string())

    # keys in no link: existing ones keep their id, the others become new entities
    single = occ.filter(pc.invert(in_links))
    single_existing = pc.index_in(single["key"], value_set=existing_arr)
    is_new = pc.is_null(single_existing)
    old_single = pa.table({"key": single["key"].filter(pc.invert(is_new)),
                           "entity_id": pc.take(existing_keys["entity_id"], single_existing.filter(pc.invert(is_new)))})
    new_single = single.filter(is_new)

    # linked keys: one component = one entity (if any member has data or already exists)
    occ_linked = occ.filter(in_links)
    first = dict(zip(occ_linked["key"].to_pylist(), occ_linked["order"].to_pylist()))
    ex_hit = existing_keys.filter(pc.is_in(existing_keys["key"], value_set=linked)) if len(linked) \
        else existing_keys.slice(0, 0)
    comps = resolve_links(links, first, dict(zip(ex_hit["key"].to_pylist(), ex_hit["entity_id"].to_pylist())))

    # order new entities by first occurrence: ids follow the input order
    new = pa.concat_tables([
        pa.table({"key": new_single["key"], "order": new_single["order"]}),
        pa.table({"key": pa.array([c for c, _ in comps.new], pa.string()),
                  "order": pa.array([o for _, o in comps.new], pa.int64())}),
    ]).sort_by([(c, "ascending") for c in NEW_ID_ORDER])
    new = new.append_column("id", pa.array(np.arange(n_existing, n_existing + new.num_rows, dtype=np.int64)))
    comp_id: dict[str, int] = {}
    if comps.new:
        ck = pa.array([c for c, _ in comps.new], pa.string())
        comp_id = dict(zip(ck.to_pylist(), pc.take(new["id"], pc.index_in(ck, value_set=new["key"])).to_pylist()))
    linked_map, same_as = comps.resolved(comp_id)
    single_ids = pc.take(new["id"], pc.index_in(new_single["key"], value_set=new["key"]))
    key_map = pa.concat_tables([
        pa.table({"key": new_single["key"], "entity_id": single_ids}),
        old_single.cast(pa.schema([("key", pa.string()), ("entity_id", pa.int64())])),
        linked_map,
    ])
    return Merged(key_map=key_map, new_entities=new.select(["id", "key", "order"]), new_same_as=same_as,
                  merged_keys=comps.merged_keys, merged_entities=comps.merged_entities, conflicts=comps.conflicts)
