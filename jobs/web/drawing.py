"""Node-link drawings of small subgraphs, laid out with networkx and rendered as inline SVG.

Server-side SVG needs no JavaScript library (the view must work without internet, so no CDN).
An entity's neighbourhood is a star: the entity in the centre, neighbours on a circle. A set
of retrieved triples has no centre: seeded spring layouts (one per connected component, the
components on a grid) keep the picture reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx

WIDTH, HEIGHT, MARGIN = 760, 520, 70


@dataclass
class Drawing:
    """Positions in SVG pixels; the template turns these into <line>, <circle>, <text>."""

    nodes: list[dict]   # id, key, label, x, y, center
    edges: list[dict]   # x1, y1, x2, y2, label, mx, my
    width: int = WIDTH
    height: int = HEIGHT
    hidden: int = 0     # neighbours not drawn (listed below the drawing instead)


def _short(text: str, n: int = 22) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _to_pixels(pos: dict) -> dict:
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (WIDTH - 2 * MARGIN) / ((x1 - x0) or 1)
    sy = (HEIGHT - 2 * MARGIN) / ((y1 - y0) or 1)
    return {n: (MARGIN + (p[0] - x0) * sx if x1 > x0 else WIDTH / 2,
                MARGIN + (p[1] - y0) * sy if y1 > y0 else HEIGHT / 2) for n, p in pos.items()}


def _drawing(g: nx.MultiDiGraph, pos: dict, center: int | None, hidden: int = 0) -> Drawing:
    px = _to_pixels(pos)
    nodes = [{"id": n, "key": d["key"], "label": _short(d["label"]), "title": d["label"],
              "x": round(px[n][0], 1), "y": round(px[n][1], 1), "center": n == center}
             for n, d in g.nodes(data=True)]
    edges = []
    for a, b, d in g.edges(data=True):
        (x1, y1), (x2, y2) = px[a], px[b]
        edges.append({"x1": round(x1, 1), "y1": round(y1, 1), "x2": round(x2, 1), "y2": round(y2, 1),
                      "mx": round((x1 + x2) / 2, 1), "my": round((y1 + y2) / 2, 1),
                      "label": _short(d["label"], 18), "title": d["label"], "score": d.get("score")})
    return Drawing(nodes=nodes, edges=edges, hidden=hidden)


def star(center: dict, groups: list[dict], max_neighbours: int = 36) -> Drawing:
    """The 1-hop neighbourhood of `center` (groups as from `StoreView.neighbours`)."""
    g = nx.MultiDiGraph()
    g.add_node(center["id"], key=center["key"], label=center["label"] or center["key"])
    total = sum(len(gr["neighbours"]) for gr in groups)
    # Round-robin over relations so a hub with 500 "described by" edges still shows its others.
    queues = [[(gr, n) for n in gr["neighbours"]] for gr in groups]
    drawn = 0
    while drawn < min(total, max_neighbours):
        for q in queues:
            if q and drawn < max_neighbours:
                gr, n = q.pop(0)
                g.add_node(n["id"], key=n["key"], label=n["label"])
                a, b = (center["id"], n["id"]) if gr["direction"] == "out" else (n["id"], center["id"])
                g.add_edge(a, b, label=gr["relation_label"])
                drawn += 1
    others = [n for n in g.nodes if n != center["id"]]
    pos = nx.shell_layout(g, nlist=[[center["id"]], others]) if others else {center["id"]: (0.0, 0.0)}
    return _drawing(g, pos, center["id"], hidden=total - drawn)


def triples(rows: list[dict]) -> Drawing:
    """Triples (rows as from `StoreView.triple_rows`, optionally with `score`)."""
    g = nx.MultiDiGraph()
    for r in rows:
        g.add_node(r["head_id"], key=r["head"], label=r["head_label"])
        g.add_node(r["tail_id"], key=r["tail"], label=r["tail_label"])
        g.add_edge(r["head_id"], r["tail_id"], label=r["relation_label"], score=r.get("score"))
    if g.number_of_nodes() == 0:
        return Drawing(nodes=[], edges=[])
    return _drawing(g, _component_grid(nx.Graph(g)), None)


def _component_grid(g: nx.Graph, cell: float = 3.0) -> dict:
    """Spring layout per connected component, components on a grid, biggest first.

    Retrieved triples often form several small components; one spring layout of all of them
    squeezes each pair into a dot, laid out apart they stay legible."""
    comps = sorted(nx.connected_components(g), key=lambda c: (-len(c), min(c)))
    cols = math.ceil(math.sqrt(len(comps)))
    pos = {}
    for i, comp in enumerate(comps):
        sub = g.subgraph(comp)
        local = nx.spring_layout(sub, seed=7) if len(comp) > 1 else {next(iter(comp)): (0.0, 0.0)}
        ox, oy = (i % cols) * cell, (i // cols) * cell
        for n, (x, y) in local.items():
            pos[n] = (ox + float(x), oy + float(y))
    return pos
