"""Degree and relation-frequency plots as PNG bytes (matplotlib, rendered on the server)."""
from __future__ import annotations

import io

import numpy as np


def _figure(width: float, height: float):
    # Agg: no display on a server; pyplot's global state is not thread-safe, Figure is.
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def degree_png(degree: np.ndarray) -> bytes:
    """Log-log degree distribution: number of entities with each degree (isolated noted)."""
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    deg = np.asarray(degree)
    counts = np.bincount(deg) if deg.size else np.zeros(1, np.int64)
    d = np.flatnonzero(counts)
    d = d[d > 0]
    ax.scatter(d, counts[d], s=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("degree (triples touching the entity)")
    ax.set_ylabel("entities")
    isolated = int(counts[0]) if counts.size else 0
    ax.set_title(f"Degree distribution ({deg.size:,} entities, {isolated:,} isolated)")
    ax.grid(True, which="major", alpha=0.3)
    return _png(fig)


def relation_tick(key: str, label: str, width: int = 34) -> str:
    """A bar's label: the relation label and a short key (a URI's last segment, not its last
    characters: "starring", not "starring (ogy/starring)"), the key once if both say the same."""
    short = key.strip("<>").rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1] if "://" in key else key
    label = label or ""
    label = label if len(label) <= width else label[:width - 1] + "…"
    return short if not label or label == short else f"{label} ({short})"


def relation_png(freq: list[dict], top: int = 25) -> bytes:
    """Horizontal bars: triples per relation, the `top` most frequent."""
    rows = freq[:top][::-1]
    fig = _figure(8, max(2.5, 0.28 * len(rows) + 1))
    ax = fig.add_subplot()
    ticks = [relation_tick(r["key"], r["label"]) for r in rows]
    repeated = {t for t in ticks if ticks.count(t) > 1}
    for i, r in enumerate(rows):  # two relations with one label (rdf:type, dbo:type): add the key's host
        if ticks[i] in repeated and "://" in r["key"]:
            ticks[i] = f"{ticks[i]} ({r['key'].strip('<>').split('://', 1)[1].split('/', 1)[0]})"
    # numeric positions: string categories would merge bars whose ticks are equal and reorder the rest
    ax.barh(range(len(rows)), [r["count"] for r in rows])
    ax.set_yticks(range(len(rows)), ticks)
    ax.set_xlabel("triples")
    ax.set_title(f"Relation frequency (top {len(rows)} of {len(freq)})")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)
