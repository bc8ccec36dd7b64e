"""Node-link drawings of small subgraphs, laid out with networkx and rendered as inline SVG.

Server-side SVG needs no JavaScript library (the view must work without internet, so no CDN).
An entity's neighbourhood is a star: the entity in the centre, neighbours on a circle grouped by
relation, with labels written along the rays (node labels outside the circle, relation labels on
the spokes) so that neighbouring labels never overlap however many neighbours are drawn. A set
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
              "x": round(px[n][0], 1), "y": round(px[n][1], 1), "center": n == center,
              "tx": round(px[n][0], 1), "ty": round(px[n][1] + (26 if n == center else 21), 1),
              "anchor": "middle", "rot": 0}
             for n, d in g.nodes(data=True)]
    edges = []
    for a, b, d in g.edges(data=True):
        (x1, y1), (x2, y2) = px[a], px[b]
        edges.append({"x1": round(x1, 1), "y1": round(y1, 1), "x2": round(x2, 1), "y2": round(y2, 1),
                      "mx": round((x1 + x2) / 2, 1), "my": round((y1 + y2) / 2, 1),
                      "label": _short(d["label"], 18), "title": d["label"], "score": d.get("score"), "rot": 0, "dy": -3})
    return Drawing(nodes=nodes, edges=edges, hidden=hidden)


#: the star's canvas and circle (labels of up to 22 characters fit outside the circle)
STAR_SIZE, STAR_RADIUS = 760, 220


def _ray_text(theta: float, radius: float) -> tuple[float, float, float, str]:
    """(x, y, rotation in degrees, anchor) of a label on the ray at angle `theta`, kept upright."""
    cx = cy = STAR_SIZE / 2
    x, y = cx + radius * math.cos(theta), cy + radius * math.sin(theta)
    deg = math.degrees(theta)
    right = math.cos(theta) >= 0
    return round(x, 1), round(y, 1), round(deg if right else deg + 180, 1), "start" if right else "end"


def _star_drawing(g: nx.MultiDiGraph, center: int, order: list[int], hidden: int) -> Drawing:
    c = STAR_SIZE / 2
    nodes = [{"id": center, "key": g.nodes[center]["key"], "label": _short(g.nodes[center]["label"]),
              "title": g.nodes[center]["label"], "x": c, "y": c, "center": True, "tx": c, "ty": c + 28,
              "anchor": "middle", "rot": 0}]
    theta = {n: -math.pi / 2 + 2 * math.pi * i / len(order) for i, n in enumerate(order)}
    pos = {center: (c, c)}
    for n in order:
        d = g.nodes[n]
        x, y = c + STAR_RADIUS * math.cos(theta[n]), c + STAR_RADIUS * math.sin(theta[n])
        pos[n] = (x, y)
        tx, ty, rot, anchor = _ray_text(theta[n], STAR_RADIUS + 14)
        nodes.append({"id": n, "key": d["key"], "label": _short(d["label"]), "title": d["label"],
                      "x": round(x, 1), "y": round(y, 1), "center": False, "tx": tx, "ty": ty, "anchor": anchor,
                      "rot": rot})
    edges, on_spoke = [], {}
    for a, b, d in g.edges(data=True):
        other = b if a == center else a
        if other == center:  # a self-loop has no spoke; the list below the drawing shows it
            continue
        # a second relation to the same neighbour is written under the spoke, a third only in the tooltip
        k = on_spoke[other] = on_spoke.get(other, -1) + 1
        mx, my, rot, _ = _ray_text(theta[other], STAR_RADIUS * 0.55)
        (x1, y1), (x2, y2) = pos[a], pos[b]
        edges.append({"x1": round(x1, 1), "y1": round(y1, 1), "x2": round(x2, 1), "y2": round(y2, 1),
                      "mx": mx, "my": my, "dy": (-3, 9)[k] if k < 2 else 0, "rot": rot,
                      "label": _short(d["label"], 18) if k < 2 else "", "title": d["label"], "score": None})
    return Drawing(nodes=nodes, edges=edges, width=STAR_SIZE, height=STAR_SIZE, hidden=hidden)


def star(center: dict, groups: list[dict], max_neighbours: int = 36) -> Drawing:
    """The 1-hop neighbourhood of `center` (groups as from `StoreView.neighbours`)."""
    g = nx.MultiDiGraph()
    g.add_node(center["id"], key=center["key"], label=center["label"] or center["key"])
    total = sum(len(gr["neighbours"]) for gr in groups)
    # Round-robin over relations so a hub with 500 "described by" edges still shows its others.
    queues = [[(gi, gr, n) for n in gr["neighbours"]] for gi, gr in enumerate(groups)]
    picked = []
    while len(picked) < min(total, max_neighbours):
        for q in queues:
            if q and len(picked) < max_neighbours:
                picked.append(q.pop(0))
    order = []
    for _gi, gr, n in sorted(picked, key=lambda p: p[0]):  # a relation's neighbours side by side
        if n["id"] not in g:
            g.add_node(n["id"], key=n["key"], label=n["label"])
            order.append(n["id"])
        a, b = (center["id"], n["id"]) if gr["direction"] == "out" else (n["id"], center["id"])
        g.add_edge(a, b, label=gr["relation_label"])
    if not order:
        return _drawing(g, {center["id"]: (0.0, 0.0)}, center["id"], hidden=total)
    return _star_drawing(g, center["id"], order, hidden=total - len(picked))


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
