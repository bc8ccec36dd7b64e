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


def merge_entities(occ: pa.Table, links: pa.Table, existing_keys: pa.Table) -> Merged:
    """Assign entity ids.

    occ: key, order — distinct data keys with their first occurrence.
    links: s, o, p — link records (p = link kind).
    existing_keys: key, entity_id — canonical keys and aliases already in the store.
    """
    n_existing = int(pc.max(existing_keys["entity_id"]).as_py() + 1) if existing_keys.num_rows else 0
    uf = UnionFind()
    link_kind: dict[str, str] = {}
    for a, b, kind in zip(links["s"].to_pylist(), links["o"].to_pylist(), links["p"].to_pylist()):
        uf.union(a, b)
        link_kind.setdefault(a, kind)
        link_kind.setdefault(b, kind)
    linked = pa.array(list(uf.parent), pa.string())
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
    first = dict(zip(occ.filter(in_links)["key"].to_pylist(), occ.filter(in_links)["order"].to_pylist()))
    # only linked keys need the existing-id lookup in Python
    ex_hit = existing_keys.filter(pc.is_in(existing_keys["key"], value_set=linked)) if len(linked) \
        else existing_keys.slice(0, 0)
    ex_lookup = dict(zip(ex_hit["key"].to_pylist(), ex_hit["entity_id"].to_pylist()))
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

    # order new entities by first occurrence: ids follow the input order
    new = pa.concat_tables([
        pa.table({"key": new_single["key"], "order": new_single["order"]}),
        pa.table({"key": pa.array([c for c, _ in comp_rows], pa.string()),
                  "order": pa.array([o for _, o in comp_rows], pa.int64())}),
    ]).sort_by("order")
    new = new.append_column("id", pa.array(np.arange(n_existing, n_existing + new.num_rows, dtype=np.int64)))
    comp_id: dict[str, int] = {}
    if comp_rows:
        ck = pa.array([c for c, _ in comp_rows], pa.string())
        comp_id = dict(zip(ck.to_pylist(), pc.take(new["id"], pc.index_in(ck, value_set=new["key"])).to_pylist()))

    def resolve(e):
        return e if isinstance(e, int) else comp_id[e]

    single_ids = pc.take(new["id"], pc.index_in(new_single["key"], value_set=new["key"]))
    key_map = pa.concat_tables([
        pa.table({"key": new_single["key"], "entity_id": single_ids}),
        old_single.cast(pa.schema([("key", pa.string()), ("entity_id", pa.int64())])),
        pa.table({"key": pa.array([k for k, _ in map_rows], pa.string()),
                  "entity_id": pa.array([resolve(e) for _, e in map_rows], pa.int64())}),
    ])
    same_as = pa.table({"key": pa.array([k for k, _, _ in alias_rows], pa.string()),
                        "entity_id": pa.array([resolve(e) for _, e, _ in alias_rows], pa.int64()),
                        "link": pa.array([s for _, _, s in alias_rows], pa.string())})
    return Merged(key_map=key_map, new_entities=new.select(["id", "key", "order"]), new_same_as=same_as,
                  merged_keys=merged, merged_entities=merged_entities, conflicts=conflicts)
