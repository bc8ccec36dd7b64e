"""SQL over the committed tables through DuckDB (issue 30): `mmkg sql`, and notebooks.

`connect(store)` returns an in-memory DuckDB connection with one view per table over the committed
Parquet parts of the current version (a table may be several part files), plus labels joined in:

* `entities(id, key, label, description, source)`, `relations(…)` as stored;
* `triples(id, h, r, t, source, head_key, head_label, relation_key, relation_label, tail_key, tail_label)`;
* `literals(entity_id, entity_key, entity_label, attribute, value, datatype, source)`;
* `images(id, entity_id, entity_key, entity_label, sha256, width, height, format, blob, source_uri, source)`;
* `same_as(key, entity_id, entity_key, entity_label, source)`; `rejects(stage, source, location, reason, raw)`.

Bounded like SPARQL: once the views exist the connection may read only the committed part files
(`allowed_paths`) and nothing else (`enable_external_access=false`, then the configuration is
locked, so a query cannot undo it: no other file, no network, no extension, no COPY TO); DuckDB's
own `memory_limit` and `threads`; a timeout that interrupts the query; a row cap.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import pyarrow as pa

from mmkg.kg_store import schema
from mmkg.kg_store.errors import ConfigError, KGStoreError
from mmkg.kg_store.store import KGStore

SQL_TIMEOUT = 30.0
SQL_MAX_ROWS = 100_000
SQL_MEMORY = "1GB"
SQL_THREADS = 2

_DUCK_TYPES = {pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.string(): "VARCHAR", pa.binary(): "BLOB"}

#: the label-joining views, over the raw `_<table>` views
_JOINED = {
    "triples": """SELECT t.id, t.h, t.r, t.t, t.source,
        h.key AS head_key, h.label AS head_label, r.key AS relation_key, r.label AS relation_label,
        e.key AS tail_key, e.label AS tail_label
      FROM _triples t LEFT JOIN _entities h ON h.id = t.h LEFT JOIN _relations r ON r.id = t.r
      LEFT JOIN _entities e ON e.id = t.t""",
    "literals": """SELECT l.entity_id, e.key AS entity_key, e.label AS entity_label, l.attribute, l.value,
        l.datatype, l.source FROM _literals l LEFT JOIN _entities e ON e.id = l.entity_id""",
    "images": """SELECT i.id, i.entity_id, e.key AS entity_key, e.label AS entity_label, i.sha256, i.width,
        i.height, i.format, i.blob, i.source_uri, i.source FROM _images i LEFT JOIN _entities e ON e.id = i.entity_id""",
    "same_as": """SELECT s.key, s.entity_id, e.key AS entity_key, e.label AS entity_label, s.source
      FROM _same_as s LEFT JOIN _entities e ON e.id = s.entity_id""",
}
VIEWS = ("entities", "relations", "triples", "literals", "images", "same_as", "rejects")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _empty_select(name: str) -> str:
    cols = ", ".join(f"CAST(NULL AS {_DUCK_TYPES[f.type]}) AS {f.name}" for f in schema.TABLES[name])
    return f"SELECT {cols} WHERE false"


def connect(store: KGStore, *, memory_limit: str = SQL_MEMORY, threads: int = SQL_THREADS):
    """A locked-down DuckDB connection with the views over `store`'s committed tables."""
    import duckdb
    con = duckdb.connect(":memory:", config={"memory_limit": memory_limit, "threads": threads,
                                             "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    allowed = []
    for name in VIEWS:
        paths = [str(p.resolve()) for p in store.table_files(name)]  # size-checked, inside the store
        allowed += paths
        cols = ", ".join(f.name for f in schema.TABLES[name])
        body = (f"SELECT {cols} FROM read_parquet([{', '.join(map(_quote, paths))}], union_by_name = true)"
                if paths else _empty_select(name))
        con.execute(f"CREATE VIEW _{name} AS {body}")
    for name in VIEWS:
        con.execute(f"CREATE VIEW {name} AS {_JOINED.get(name, f'SELECT * FROM _{name}')}")
    con.execute(f"SET allowed_paths = [{', '.join(map(_quote, allowed))}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


@dataclass
class SqlAnswer:
    table: pa.Table
    more: bool


def run_sql(store: KGStore, query: str, *, timeout: float | None = SQL_TIMEOUT, max_rows: int = SQL_MAX_ROWS,
            memory_limit: str = SQL_MEMORY, threads: int = SQL_THREADS) -> SqlAnswer:
    """At most `max_rows` rows of `query` (`more` says whether more follow), within `timeout`.

    Rows are pulled in Arrow batches and the result stops at the cap; a query that runs past the
    timeout is interrupted (DuckDB checks for interrupts inside operators). Errors are one line."""
    import duckdb
    if not query.strip():
        raise ConfigError("give a SQL query")
    con = connect(store, memory_limit=memory_limit, threads=threads)
    timer = threading.Timer(timeout, con.interrupt) if timeout else None
    if timer:
        timer.start()
    try:
        rel = con.sql(query)  # a relation, streamed in batches; None for a statement without rows
        if rel is None:
            return SqlAnswer(pa.table({}), False)
        reader = rel.to_arrow_reader(min(max_rows + 1, 65_536))
        batches, n = [], 0
        for batch in reader:
            batches.append(batch)
            n += batch.num_rows
            if n > max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise KGStoreError(f"SQL query stopped after its {timeout:g} s timeout (--timeout); narrow it "
                           "(LIMIT, WHERE) or raise the timeout") from None
    except duckdb.OutOfMemoryException:
        raise KGStoreError(f"SQL query stopped: it needed more than its memory limit {memory_limit} (--memory); "
                           "narrow it") from None
    except duckdb.Error as e:
        raise KGStoreError(f"SQL error: {' '.join(str(e).split())[:300]}") from None
    finally:
        if timer:
            timer.cancel()
        con.close()
    return SqlAnswer(table.slice(0, max_rows), n > max_rows)


__all__ = ["SQL_MAX_ROWS", "SQL_TIMEOUT", "SqlAnswer", "VIEWS", "connect", "run_sql"]
