"""Arrow schemas of the store's tables (DESIGN.md "The KG directory").

Ids are dense int64 assigned by the store; source keys (QID, DBpedia URI, Freebase mid) stay
as `key`. `same_as` holds every *alias* key merged into an entity (the canonical key is
`entities.key`).
"""
import pyarrow as pa

ENTITIES = pa.schema([
    ("id", pa.int64()), ("key", pa.string()), ("label", pa.string()),
    ("description", pa.string()), ("source", pa.string()),
])
RELATIONS = pa.schema([
    ("id", pa.int64()), ("key", pa.string()), ("label", pa.string()),
    ("description", pa.string()), ("source", pa.string()),
])
TRIPLES = pa.schema([
    ("id", pa.int64()), ("h", pa.int64()), ("r", pa.int64()), ("t", pa.int64()),
    ("source", pa.string()),
])
LITERALS = pa.schema([
    ("entity_id", pa.int64()), ("attribute", pa.string()), ("value", pa.string()),
    ("datatype", pa.string()), ("source", pa.string()),
])
SAME_AS = pa.schema([("key", pa.string()), ("entity_id", pa.int64()), ("source", pa.string())])
IMAGES = pa.schema([
    ("id", pa.int64()), ("entity_id", pa.int64()), ("sha256", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()),
    ("blob", pa.string()), ("source_uri", pa.string()), ("source", pa.string()),
])
REJECTS = pa.schema([
    ("stage", pa.string()), ("source", pa.string()), ("location", pa.string()),
    ("reason", pa.string()), ("raw", pa.binary()),
])

TABLES: dict[str, pa.Schema] = {
    "entities": ENTITIES, "relations": RELATIONS, "triples": TRIPLES, "literals": LITERALS,
    "same_as": SAME_AS, "images": IMAGES, "rejects": REJECTS,
}

#: raw bytes kept in a reject row (enough to see the problem, bounded for hostile input)
REJECT_RAW_MAX = 1024


def empty(name: str) -> pa.Table:
    return TABLES[name].empty_table()


def conform(name: str, table: pa.Table) -> pa.Table:
    """Select and cast `table` to the table's schema (missing nullable columns become null)."""
    schema = TABLES[name]
    cols = []
    for field in schema:
        if field.name in table.column_names:
            cols.append(table[field.name].cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=schema)
