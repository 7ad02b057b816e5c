"""`deepatlas map`: the catalog's relation graph, drawn.

Each family is a lane (a row, in the catalog's family order) and each distinct year a column: the years run left to
right in order but the gaps between them are not to scale, so the crowded decade after 2012 stays as readable as the
sparse one before. Entries of one family and one year stack in their cell. Every relation of a card is an edge from
that card to the entry it names, coloured and dashed by kind, with its reason as the edge's tooltip. `map NAME` marks
NAME and its neighbours (either direction) and fades the rest.

One layout, four writers: SVG (written here: each entry a link with a tooltip, so the atlas can embed it), PNG
(matplotlib), DOT (for graphviz users) and JSON. Cards are read statically (`catalog.cards()`): no torch is imported.
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deepatlas import catalog
from deepatlas.errors import DeepAtlasError

KINDS = {  # kind: (colour, dash pattern in px, legend); Okabe-Ito colours, told apart by dash too
    "builds_on": ("#0072B2", "", "builds on: extends its idea"),
    "variant_of": ("#CC79A7", "7 4", "variant of: the same, changed in one respect"),
    "uses": ("#009E73", "2 3", "uses: as a block or a backbone"),
    "alternative_to": ("#D55E00", "9 3 2 3", "alternative to: same job, other trade-off"),
}
FAMILY_FILL = ("#EAF2FB", "#FBF1E6")  # lanes alternate between two pale backgrounds

COLUMN = 136  # px between year columns; wider than a node, so neighbouring columns never overlap
NODE_W, NODE_H = 124, 22
SLOT = 32  # px between entries stacked in one cell
PAD = 10  # px above and below a lane's entries
LEFT, TOP = 118, 34  # room for the lane names and the year axis
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
CHAR_W = 6.4  # px per character of an 11 px label, measured on DejaVu Sans (the widest of the fonts above)

FORMATS = ("svg", "png", "dot", "json")


@dataclass
class Node:
    name: str
    title: str
    family: str
    year: int
    x: float
    y: float
    role: str = ""
    """with a selected entry: "selected", "neighbour" or "faded"; else empty"""


@dataclass
class Edge:
    source: str
    target: str
    kind: str
    reason: str


@dataclass
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    lanes: list[tuple[str, float, float]]
    """(family, top, bottom) in px"""
    years: list[tuple[int, float]]
    """(year, x of its column's centre) in px"""
    width: float
    height: float
    selected: str | None = None
    by_name: dict[str, Node] = field(init=False)

    def __post_init__(self):
        self.by_name = {n.name: n for n in self.nodes}

    def to_json(self) -> dict:
        """`map --json`'s contract: {nodes: [{name, family, year, ...}], edges: [{source, target, kind, reason}]}."""
        nodes = [{"name": n.name, "family": n.family, "year": n.year, "title": n.title, "x": n.x, "y": n.y,
                  **({"role": n.role} if n.role else {})} for n in self.nodes]
        return {"nodes": nodes, "edges": [{"source": e.source, "target": e.target, "kind": e.kind, "reason": e.reason}
                                          for e in self.edges]}


def neighbours(name: str, edges: list[Edge]) -> set[str]:
    """The entries `name` has an edge to or from."""
    return {e.target for e in edges if e.source == name} | {e.source for e in edges if e.target == name}


def graph(name: str | None = None, around: bool = False) -> Graph:
    """The laid-out relation graph, NAME's neighbourhood marked; `around`: only NAME and its neighbours."""
    cards = list(catalog.cards())
    known = {c.name for c in cards}
    edges = [Edge(c.name, r.entry, r.kind, r.why) for c in cards for r in c.relations if r.entry in known]
    near = set()
    if name is not None:
        catalog.card(name)  # an unknown name is one line, with suggestions
        near = neighbours(name, edges)
        if around:
            cards = [c for c in cards if c.name == name or c.name in near]
            edges = [e for e in edges if {e.source, e.target} <= near | {name}]
    columns = {year: LEFT + i * COLUMN + COLUMN / 2 for i, year in enumerate(sorted({c.year for c in cards}))}
    nodes, lanes, top = [], [], TOP
    for family in [f for f in catalog.FAMILIES if any(c.family == f for c in cards)]:
        cells: dict[int, list] = {}
        for c in cards:
            if c.family == family:
                cells.setdefault(c.year, []).append(c)
        depth = max(len(cell) for cell in cells.values())
        for year, cell in cells.items():
            first = top + PAD + (depth - len(cell)) * SLOT / 2 + SLOT / 2  # a shorter stack is centred in the lane
            for k, c in enumerate(cell):
                role = "" if name is None else "selected" if c.name == name else "neighbour" if c.name in near \
                    else "faded"
                nodes.append(Node(c.name, c.title, family, c.year, columns[year], first + k * SLOT, role))
        lanes.append((family, top, top + depth * SLOT + 2 * PAD))
        top = lanes[-1][2]
    width = max(LEFT + len(columns) * COLUMN + 8, 720)  # the legend's width at least
    return Graph(nodes, edges, lanes, list(columns.items()), width, top + 70, name)


# ---- geometry shared by the SVG and PNG writers --------------------------------------------------------------

def _on_border(cx: float, cy: float, dx: float, dy: float, gap: float = 0.0) -> tuple[float, float]:
    """Where the ray from a node's centre in direction (dx, dy) leaves its box, `gap` px further out."""
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    scale = min(NODE_W / 2 / abs(ux) if ux else math.inf, NODE_H / 2 / abs(uy) if uy else math.inf)
    return cx + ux * (scale + gap), cy + uy * (scale + gap)


def curve(a: Node, b: Node) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """Start, control and end points of the quadratic curve from a to b. It bows to the left of its direction, so
    a -> b and b -> a never lie on one another, and a long edge along a lane arcs clear of the entries between."""
    dx, dy = b.x - a.x, b.y - a.y
    length = math.hypot(dx, dy) or 1.0
    bend = max(0.18 * length, 16.0)
    cx, cy = (a.x + b.x) / 2 + dy / length * bend, (a.y + b.y) / 2 - dx / length * bend
    return _on_border(a.x, a.y, cx - a.x, cy - a.y), (cx, cy), _on_border(b.x, b.y, cx - b.x, cy - b.y, gap=2.0)


def _shown(graph: Graph, edge: Edge) -> bool:
    """Whether an edge is drawn at full strength: every edge without a selection, else those touching it."""
    return graph.selected is None or graph.selected in (edge.source, edge.target)


def label_size(name: str) -> float:
    """The font size (px) that fits `name` inside a node: 11, or smaller for a long name."""
    return min(11.0, 11.0 * (NODE_W - 10) / (len(name) * CHAR_W))


# ---- writers --------------------------------------------------------------------------------------------------

def paper_url(card: catalog.Card) -> str:
    """A link to the card's paper: its arXiv page, else its DOI, else a search for its title."""
    arxiv = re.search(r"arXiv:(\d{4}\.\d{4,5})", card.paper.ref)
    if arxiv:
        return f"https://arxiv.org/abs/{arxiv.group(1)}"
    doi = re.search(r"doi:(10\.\S+?)[,;]?(\s|$)", card.paper.ref)
    if doi:
        return f"https://doi.org/{doi.group(1)}"
    return "https://scholar.google.com/scholar?q=" + re.sub(r"\W+", "+", card.paper.title).strip("+")


def svg(graph: Graph, href: Callable[[str], str] | None = None) -> str:
    """The graph as one `<svg>` element: each entry a link (`href(name)`, default its paper) whose tooltip is its
    title and year; each edge's tooltip its kind and reason; a legend of the edge kinds below."""
    if href is None:
        papers = {c.name: paper_url(c) for c in catalog.cards()}
        href = papers.__getitem__
    esc = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="deepatlas-map" width="{graph.width:.0f}" '
           f'height="{graph.height:.0f}" viewBox="0 0 {graph.width:.0f} {graph.height:.0f}" font-family="{FONT}" '
           f'font-size="11">',
           "<title>deepatlas: how the entries relate (lanes: families; columns: years)</title>", "<defs>"]
    for kind, (colour, _, _) in KINDS.items():  # one arrowhead per colour
        out.append(f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
                   f'markerHeight="8" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
                   f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>')
    out.append("</defs>")
    for i, (family, top, bottom) in enumerate(graph.lanes):
        out.append(f'<rect x="0" y="{top:.1f}" width="{graph.width:.0f}" height="{bottom - top:.1f}" '
                   f'fill="{FAMILY_FILL[i % 2]}"/>')
        out.append(f'<text x="10" y="{(top + bottom) / 2 + 4:.1f}" font-weight="bold" fill="#333">{esc(family)}</text>')
    for year, x in graph.years:
        out.append(f'<text x="{x:.1f}" y="{TOP - 12}" text-anchor="middle" fill="#555">{year}</text>')
    for edge in graph.edges:
        (x0, y0), (cx, cy), (x1, y1) = curve(graph.by_name[edge.source], graph.by_name[edge.target])
        colour, dash, _ = KINDS[edge.kind]
        d = f"M{x0:.1f},{y0:.1f} Q{cx:.1f},{cy:.1f} {x1:.1f},{y1:.1f}"
        strong = _shown(graph, edge)
        width = 2.2 if strong and graph.selected else 1.4
        out.append(f'<g class="edge {edge.kind}" opacity="{1 if strong else 0.12}"><title>{esc(edge.source)} '
                   f'{edge.kind.replace("_", " ")} {esc(edge.target)}: {esc(edge.reason)}</title>'
                   f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="{width}"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + f' marker-end="url(#arrow-{edge.kind})"/>'
                   f'<path d="{d}" fill="none" stroke="transparent" stroke-width="8"/></g>')  # an easier hover
    for n in graph.nodes:
        selected = n.role == "selected"
        out.append(f'<a href="{esc(href(n.name))}" class="node" data-name="{esc(n.name)}">'
                   f'<g opacity="{0.25 if n.role == "faded" else 1}"><title>{esc(n.title)} ({n.year})</title>'
                   f'<rect x="{n.x - NODE_W / 2:.1f}" y="{n.y - NODE_H / 2:.1f}" width="{NODE_W}" height="{NODE_H}" '
                   f'rx="5" fill="{"#FFE9A8" if selected else "#FFFFFF"}" stroke="{"#000" if selected else "#667"}" '
                   f'stroke-width="{2.5 if selected else 1}"/>'
                   f'<text x="{n.x:.1f}" y="{n.y + 4:.1f}" text-anchor="middle" font-size="{label_size(n.name):.1f}"'
                   + (' font-weight="bold"' if selected else "") + f' fill="#111">{esc(n.name)}</text></g></a>')
    y = graph.height - 44
    out.append(f'<text x="10" y="{y - 8}" fill="#555">years in order, gaps not to scale; click an entry; '
               f'hover an edge for its reason</text>')
    for i, (kind, (colour, dash, legend)) in enumerate(KINDS.items()):
        x = 10 + (i % 2) * 360
        row = y + 8 + (i // 2) * 18
        out.append(f'<line x1="{x}" y1="{row}" x2="{x + 40}" y2="{row}" stroke="{colour}" stroke-width="2"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + f' marker-end="url(#arrow-{kind})"/>'
                   f'<text x="{x + 50}" y="{row + 4}" fill="#333">{esc(legend)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def dot(graph: Graph) -> str:
    """The graph in graphviz's DOT language: one cluster per family, edges coloured and styled by kind."""
    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    styles = {"builds_on": "solid", "variant_of": "dashed", "uses": "dotted", "alternative_to": "bold"}
    lines = ["digraph deepatlas {", "  // edge kinds: " + "; ".join(f"{k} {KINDS[k][0]} {styles[k]}" for k in KINDS),
             "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];']
    for family, _, _ in graph.lanes:
        lines.append(f"  subgraph {q('cluster_' + family)} {{")
        lines.append(f"    label={q(family)};")
        for n in (n for n in graph.nodes if n.family == family):
            look = {"selected": ", penwidth=3, fillcolor=\"#FFE9A8\"",
                    "faded": ", color=gray80, fontcolor=gray60"}.get(n.role, "")
            label = q(n.name)[:-1] + f'\\n{n.year}"'  # DOT's own \n: a line break in the box
            lines.append(f"    {q(n.name)} [label={label}, tooltip={q(f'{n.title} ({n.year})')}{look}];")
        lines.append("  }")
    for e in graph.edges:
        colour = KINDS[e.kind][0] if _shown(graph, e) else "gray85"
        lines.append(f"  {q(e.source)} -> {q(e.target)} [color={q(colour)}, style={styles[e.kind]}, "
                     f"tooltip={q(e.kind.replace('_', ' ') + ': ' + e.reason)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def png(graph: Graph, path: Path) -> None:
    """The same picture as the SVG, drawn by matplotlib (Agg), 1 px of the layout a pixel of the image."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
    from matplotlib.path import Path as Curve

    fig = plt.figure(figsize=(graph.width / 100, graph.height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, graph.width)
    ax.set_ylim(graph.height, 0)  # y grows downwards, as in the SVG
    ax.axis("off")
    px = 0.72  # points per pixel at 100 dpi
    for i, (family, top, bottom) in enumerate(graph.lanes):
        ax.add_patch(Rectangle((0, top), graph.width, bottom - top, color=FAMILY_FILL[i % 2], zorder=0))
        ax.text(10, (top + bottom) / 2, family, va="center", fontsize=11 * px, fontweight="bold", color="#333")
    for year, x in graph.years:
        ax.text(x, TOP - 16, str(year), ha="center", va="center", fontsize=11 * px, color="#555")

    def arrow(points, kind: str, alpha: float, width: float, **style):
        colour, dash, _ = KINDS[kind]
        codes = [Curve.MOVETO] + [Curve.CURVE3] * (len(points) - 1) if len(points) == 3 else None
        line = (0, tuple(float(v) for v in dash.split())) if dash else "solid"
        ax.add_patch(FancyArrowPatch(path=Curve(points, codes), arrowstyle="-|>", mutation_scale=10, color=colour,
                                     linewidth=width * px, linestyle=line, alpha=alpha, **style))

    for edge in graph.edges:
        strong = _shown(graph, edge)
        arrow(curve(graph.by_name[edge.source], graph.by_name[edge.target]), edge.kind, 1 if strong else 0.12,
              2.2 if strong and graph.selected else 1.4, zorder=1)
    for n in graph.nodes:
        selected, alpha = n.role == "selected", 0.25 if n.role == "faded" else 1
        ax.add_patch(FancyBboxPatch((n.x - NODE_W / 2, n.y - NODE_H / 2), NODE_W, NODE_H, boxstyle="round,pad=0,"
                                    "rounding_size=5", facecolor="#FFE9A8" if selected else "white",
                                    edgecolor="black" if selected else "#667", linewidth=(2.5 if selected else 1) * px,
                                    alpha=alpha, zorder=2))
        ax.text(n.x, n.y, n.name, ha="center", va="center", fontsize=label_size(n.name) * px, alpha=alpha,
                fontweight="bold" if selected else "normal", color="#111", zorder=3)
    y = graph.height - 44
    ax.text(10, y - 12, "years in order, gaps not to scale", fontsize=11 * px, color="#555", va="center")
    for i, (kind, (_, _, legend)) in enumerate(KINDS.items()):
        x, row = 10 + (i % 2) * 360, y + 8 + (i // 2) * 18
        arrow([(x, row), (x + 40, row)], kind, 1, 2)
        ax.text(x + 50, row, legend, fontsize=11 * px, color="#333", va="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def choose(out: Path | None, fmt: str | None) -> tuple[Path, str]:
    """The file and format `map` writes: --format, else the --out file's suffix, else svg; the file, map.FORMAT."""
    if fmt is None and out is not None:
        fmt = out.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise DeepAtlasError(f"--out {out}: name a .svg, .png, .dot or .json file, or give --format")
    fmt = fmt or "svg"
    return out or Path(f"map.{fmt}"), fmt


def write(path: Path, fmt: str, name: str | None = None) -> Graph:
    """Draw the map (NAME's neighbourhood marked) into `path` in format `fmt`."""
    if fmt not in FORMATS:
        raise DeepAtlasError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    found = graph(name)
    if fmt == "png":
        png(found, path)
        return found
    text = {"svg": svg, "dot": dot, "json": lambda g: json.dumps(g.to_json(), indent=2) + "\n"}[fmt](found)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return found
