"""Bounded SPARQL queries over the persistent store (`sparql_store`): time, rows and memory.

Each query runs in a forked child that opens the database read-only, evaluates it, and writes one
JSON answer to a pipe. Oxigraph evaluates in native code that no Python signal can interrupt, so
the parent enforces the bounds from outside: after `timeout` seconds the child is killed; the
child's address space is capped (`RLIMIT_AS`, its size at the fork plus `memory`), so a query whose
intermediate results outgrow the budget fails an allocation and dies instead of swapping the
machine; `max_rows` caps the page and CONSTRUCT/DESCRIBE graphs; the answer's size is capped too.
Each case is one line. No pickle: the child's answer is SPARQL-JSON terms.

The parent never opens the database itself (a forked RocksDB handle is not safe), so forking from
a threaded server is fine; the child touches only pyoxigraph and the pipe, then `os._exit`s.
"""
from __future__ import annotations

import faulthandler
import json
import os
import re
import resource
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmkg.kg_store.errors import ConfigError, KGStoreError

#: query-time bounds (CLI: --timeout, --max-rows, --memory)
SPARQL_TIMEOUT = 30.0
SPARQL_MAX_ROWS = 100_000
SPARQL_MEMORY = 2 << 30
#: the child's answer may not be larger than this (a page of huge literals)
MAX_ANSWER_BYTES = 512 << 20

_XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
_LANG_STRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"

# ---- refusing what would leave the machine (issue 17), without parsing the query twice ----------------
#: strings, IRIs and comments, removed before looking for keywords
_OPAQUE = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""' r"|'''(?:[^'\\]|\\.|'(?!''))*'''"
                     r'|"(?:[^"\\\n]|\\.)*"' r"|'(?:[^'\\\n]|\\.)*'"
                     r'|<[^<>"{}|^`\\\x00-\x20]*>' r"|#[^\n]*")
_KEYWORD = re.compile(r"(?<![\w?$:\-.])(SERVICE|FROM)(?![\w:\-])", re.IGNORECASE)


def refuse_outbound(query: str, *, allow_service: bool = False) -> None:
    """Refuse SERVICE (unless allowed) and FROM / FROM NAMED: Oxigraph would call any URL a SERVICE
    names, sending KG data there; FROM would pick graphs the KG does not have. One line each."""
    for m in _KEYWORD.finditer(_OPAQUE.sub(" ", query)):
        word = m.group(1).upper()
        if word == "SERVICE" and not allow_service:
            raise KGStoreError("SPARQL SERVICE refused: federated queries send KG data to another server; "
                               "pass --allow-service to permit them (with --timeout)")
        if word == "FROM":
            raise KGStoreError("SPARQL FROM / FROM NAMED refused: it would fetch and parse a document; "
                               "the KG is the default graph, so leave the clause out")


def check_syntax(query: str, prefixes: dict[str, str]) -> None:
    """Parse `query` (against an empty in-memory store) so a typo fails before any store is built.

    pyoxigraph has no parse-only call: this evaluates over nothing, which is instant, except that an
    allowed SERVICE would be called here, in-process and without the timeout; such a query is left
    to the bounded evaluation."""
    import pyoxigraph as ox
    if any(m.group(1).upper() == "SERVICE" for m in _KEYWORD.finditer(_OPAQUE.sub(" ", query))):
        return
    try:
        ox.Store().query(query, prefixes=prefixes)
    except SyntaxError as e:
        raise KGStoreError(f"SPARQL error: {' '.join(str(e).split())[:300]}") from None


# ---- answers ------------------------------------------------------------------------------------------
@dataclass
class Answer:
    """One page of a query's answer, as SPARQL-JSON terms; `total` only when the rows ran out."""

    type: str
    vars: list[str] = field(default_factory=list)
    rows: list[list[dict[str, str] | None]] = field(default_factory=list)
    offset: int = 0
    more: bool = False
    total: int | None = None
    ask: bool | None = None
    ntriples: list[str] = field(default_factory=list)

    def sparql_json(self) -> dict[str, Any]:
        """The SPARQL 1.1 Query Results JSON document of a SELECT/ASK answer."""
        if self.type == "ASK":
            return {"head": {}, "boolean": bool(self.ask)}
        return {"head": {"vars": self.vars},
                "results": {"bindings": [{v: t for v, t in zip(self.vars, row) if t is not None}
                                         for row in self.rows]}}


def term_json(term: Any) -> dict[str, str]:
    """A pyoxigraph term as a SPARQL-JSON term."""
    import pyoxigraph as ox
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    if isinstance(term, ox.Literal):
        out = {"type": "literal", "value": term.value}
        if term.language:
            out["xml:lang"] = term.language
        elif term.datatype.value != _XSD_STRING:
            out["datatype"] = term.datatype.value
        return out
    return {"type": "literal", "value": str(term)}  # an RDF-star triple term: shown, not typed


def term_text(term: dict[str, str] | None) -> str | None:
    """What `mmkg sparql` prints for a term: its IRI or lexical form."""
    return None if term is None else term["value"]


# ---- the child ------------------------------------------------------------------------------------------
def _evaluate(path: str, query: str, prefixes: dict[str, str], offset: int, limit: int,
              max_rows: int, memory: int) -> dict[str, Any]:
    import pyoxigraph as ox
    db = ox.Store.read_only(path)
    if memory:
        # the budget starts after the open: RocksDB reserves ~0.7 GB of address space (thread stacks,
        # malloc arenas) it barely touches; what grows past that is the evaluation's own data
        vm = _vm_size()
        resource.setrlimit(resource.RLIMIT_AS, (vm + memory, vm + memory))
    try:
        result = db.query(query, prefixes=prefixes)
    except SyntaxError as e:
        return {"error": f"SPARQL error: {' '.join(str(e).split())[:300]}"}
    if isinstance(result, ox.QueryBoolean):
        return {"type": "ASK", "ask": bool(result)}
    if isinstance(result, ox.QueryTriples):
        lines = []
        for t in result:
            if len(lines) >= max_rows:
                return {"error": f"CONSTRUCT/DESCRIBE made more than {max_rows:,} triples > the cap (--max-rows)"}
            lines.append(f"{t.subject} {t.predicate} {t.object} .")
        return {"type": "CONSTRUCT", "ntriples": lines}
    names = [v.value for v in result.variables]
    rows, seen, more = [], 0, False
    for sol in result:
        seen += 1
        if seen > offset + limit:
            more = True
            break
        if seen > offset:
            rows.append([None if sol[i] is None else term_json(sol[i]) for i in range(len(names))])
    return {"type": "SELECT", "vars": names, "rows": rows, "more": more, "total": None if more else seen}


def _child(fd: int, memory: int, args: tuple) -> None:
    """Runs in the forked child: never returns."""
    code = 0
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)  # a failed allocation makes Rust print before it aborts; the parent says why
        faulthandler.disable()  # (it may write to a copy of stderr, e.g. under pytest)
        try:
            answer = _evaluate(*args, memory)
        except OSError as e:  # an unreachable allowed SERVICE, an unreadable database
            answer = {"error": f"SPARQL error: {' '.join(str(e).split())[:300]}"}
        except MemoryError:
            os._exit(99)
        data = json.dumps(answer).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:  # noqa: BLE001 - the child must never return into the parent's code
        code = 98
    finally:
        os._exit(code)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _stopped(reason: str) -> KGStoreError:
    return KGStoreError(f"SPARQL query stopped: {reason}; narrow it (LIMIT, more specific patterns) "
                        "or raise the bound")


def run_query(db_path: str | Path, query: str, *, prefixes: dict[str, str], offset: int = 0, limit: int = 100,
              timeout: float | None = SPARQL_TIMEOUT, max_rows: int = SPARQL_MAX_ROWS,
              memory: int | None = SPARQL_MEMORY, allow_service: bool = False) -> Answer:
    """Rows `offset … offset+limit` of `query` over the database at `db_path`, within the bounds.

    Only `offset + limit + 1` solutions are pulled from the evaluation (the one more says whether
    more follow); `offset + limit` may not exceed `max_rows` (a usage error, as before)."""
    if offset + limit > max_rows:
        raise ConfigError(f"--offset + --limit = {offset + limit} exceeds the row cap {max_rows} (--max-rows)")
    refuse_outbound(query, allow_service=allow_service)
    import pyoxigraph  # noqa: F401  (imported before the fork, so every child starts with it)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(w, memory or 0, (str(db_path), query, prefixes, offset, limit, max_rows))
    os.close(w)
    chunks, size, deadline = [], 0, time.monotonic() + timeout if timeout else None
    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([r], [], [], wait)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise _stopped(f"it ran past its {timeout:g} s timeout (--timeout)")
            data = os.read(r, 1 << 20)
            if not data:
                break
            size += len(data)
            if size > MAX_ANSWER_BYTES:
                os.kill(pid, signal.SIGKILL)
                raise _stopped(f"its answer passed {MAX_ANSWER_BYTES >> 20} MiB")
            chunks.append(data)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        if code in (99, -signal.SIGABRT, -signal.SIGSEGV, -signal.SIGKILL):
            raise _stopped(f"its intermediate results needed more than its memory budget of "
                           f"{(memory or 0) >> 20:,} MiB (--memory)")
        raise KGStoreError(f"SPARQL query failed (evaluator exit status {code})")
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        raise KGStoreError(answer["error"])
    return Answer(answer["type"], vars=answer.get("vars", []), rows=answer.get("rows", []), offset=offset,
                  more=answer.get("more", False), total=answer.get("total"), ask=answer.get("ask"),
                  ntriples=answer.get("ntriples", []))


def sparql_page(store, query: str, *, offset: int = 0, limit: int = 100, timeout: float | None = SPARQL_TIMEOUT,
                max_rows: int = SPARQL_MAX_ROWS, memory: int | None = SPARQL_MEMORY,
                allow_service: bool = False) -> Answer:
    """`run_query` over the committed SPARQL store of `store` (which must exist: `ensure_sparql_store`)."""
    from mmkg.kg_store.sparql_store import current_meta
    if offset + limit > max_rows:
        raise ConfigError(f"--offset + --limit = {offset + limit} exceeds the row cap {max_rows} (--max-rows)")
    refuse_outbound(query, allow_service=allow_service)
    meta = current_meta(store)
    if meta is None:
        raise KGStoreError(f"{store.root} has no current SPARQL store; build it with `mmkg sparql` or `mmkg run`")
    return run_query(store.root / meta["path"], query, prefixes=meta["prefixes"], offset=offset, limit=limit,
                     timeout=timeout, max_rows=max_rows, memory=memory, allow_service=allow_service)


__all__ = ["Answer", "SPARQL_MAX_ROWS", "SPARQL_MEMORY", "SPARQL_TIMEOUT", "refuse_outbound", "run_query",
           "sparql_page", "term_json", "term_text"]
