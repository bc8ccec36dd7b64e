"""Entity merging over links: canonical key priority, input-order ids, stable existing ids."""
from __future__ import annotations

import pyarrow as pa

from mmkg.pipeline.linking import key_rank, merge_entities

DB = "http://dbpedia.org/resource/Andy_Griffith"


def occ(*keys: str) -> pa.Table:
    return pa.table({"key": list(keys), "order": list(range(0, 4 * len(keys), 4))})


def links(*pairs: tuple[str, str]) -> pa.Table:
    return pa.table({"s": [a for a, _ in pairs], "o": [b for _, b in pairs], "p": ["test"] * len(pairs)})


def no_existing() -> pa.Table:
    return pa.table({"key": pa.array([], pa.string()), "entity_id": pa.array([], pa.int64())})


def as_dict(t: pa.Table) -> dict:
    return dict(zip(t["key"].to_pylist(), t["entity_id"].to_pylist()))


def test_key_priority():
    assert [key_rank(k) for k in ("Q42", DB, "/m/0abc", "http://yago-knowledge.org/resource/X")] == [0, 1, 2, 3]


def test_component_becomes_one_entity_with_the_best_key():
    # DBpedia URI (data) ~ mid (link only) ~ QID (link only): one entity, canonical QID
    m = merge_entities(occ("x", DB), links(("/m/01", DB), ("/m/01", "Q7")), no_existing())
    assert m.new_entities["key"].to_pylist() == ["x", "Q7"]
    ids = as_dict(m.key_map)
    assert ids[DB] == ids["/m/01"] == ids["Q7"] == 1
    assert sorted(m.new_same_as["key"].to_pylist()) == ["/m/01", DB]
    assert m.merged_keys == 0          # only one key of the component had data


def test_two_data_keys_merge_and_ids_follow_first_occurrence():
    m = merge_entities(occ("Q7", "a", DB), links(("/m/01", DB), ("/m/01", "Q7")), no_existing())
    assert m.new_entities["key"].to_pylist() == ["Q7", "a"]
    assert (m.merged_keys, m.merged_entities) == (1, 1)
    assert as_dict(m.key_map)[DB] == 0


def test_link_only_components_create_nothing():
    m = merge_entities(occ("a"), links(("/m/9", "Q9")), no_existing())
    assert m.new_entities["key"].to_pylist() == ["a"] and m.new_same_as.num_rows == 0


def test_existing_ids_are_kept_and_new_aliases_point_to_them():
    existing = pa.table({"key": ["Q7", "b"], "entity_id": pa.array([0, 1], pa.int64())})
    m = merge_entities(occ("c", DB, "b"), links(("/m/01", DB), ("/m/01", "Q7")), existing)
    ids = as_dict(m.key_map)
    assert ids[DB] == 0 and ids["b"] == 1 and ids["c"] == 2
    assert m.new_entities["key"].to_pylist() == ["c"]
    assert sorted(m.new_same_as["key"].to_pylist()) == ["/m/01", DB]


def test_component_touching_two_existing_entities_is_not_merged_silently():
    existing = pa.table({"key": ["Q1", "Q2"], "entity_id": pa.array([0, 1], pa.int64())})
    m = merge_entities(occ("/m/x"), links(("/m/x", "Q1"), ("/m/x", "Q2")), existing)
    assert m.conflicts == 1 and as_dict(m.key_map)["/m/x"] == 0
