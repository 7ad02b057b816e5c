"""Users' graph files, read into arrays: an edge list with its node table, GraphML/GML, a TUDataset folder.

What each holds is said in deepatlas.data.graphs (which encodes these arrays as a run's features and targets).
Every problem is one DeepAtlasError line naming the file and, where the file has lines, the line: a bad or
repeated id, an edge to a node that is not there, a ragged row, a cell that is not a number. The fast paths read
whole columns at once (numpy's loadtxt, a binary search of all ids); only the error path walks lines to name one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepatlas.data import read_lines
from deepatlas.data.tabular import numbers, read_csv
from deepatlas.errors import DeepAtlasError

@dataclass
class Raw:
    """A graph file as read: nodes by id, edges by node number, labels and features as text or numbers."""
    ids: np.ndarray
    """(N,) str: the user's node ids"""
    edges: np.ndarray
    """(2, m) node numbers, undirected, as given"""
    labels: np.ndarray
    """(N,) str: a node's label, "" for an unlabelled node"""
    features: np.ndarray | None
    """(N, F) float64, or None (no feature column)"""
    names: list[str]
    """the feature columns"""
    where: str
    weight: np.ndarray | None = None


def _edge_list(path: Path) -> Raw:
    """An edge list CSV (source,target[,weight]) and the nodes.csv beside it."""
    nodes_path = path.parent / "nodes.csv"
    if not nodes_path.is_file():
        raise DeepAtlasError(f"{path}: an edge list needs its node table {nodes_path} (columns id, features..., "
                             f"label)")
    edges = read_csv(path)
    if not {"source", "target"} <= set(edges) or set(edges) - {"source", "target", "weight"}:
        raise DeepAtlasError(f"{path}: an edge list has the columns source,target[,weight]; found "
                             f"{','.join(edges)}")
    nodes = read_csv(nodes_path)
    if "id" not in nodes:
        raise DeepAtlasError(f"{nodes_path}: needs an id column (and label, features); found {','.join(nodes)}")
    ids = np.array(nodes.pop("id"), dtype=str)
    _check_ids(ids, nodes_path, first_line=2)
    labels = np.array(nodes.pop("label", [""] * len(ids)), dtype=str)
    names = list(nodes)
    features = np.stack([_numbers(nodes[c], nodes_path, c) for c in names], 1) if names else None
    ends = np.stack([_ends(ids, edges[end], path, end, nodes_path) for end in ("source", "target")])
    weight = _numbers(edges["weight"], path, "weight") if "weight" in edges else None
    if weight is not None and (weight < 0).any():
        line = int(np.argmax(weight < 0)) + 2
        raise DeepAtlasError(f"{path}: line {line}: weight {edges['weight'][line - 2]!r} is negative")
    return Raw(ids, ends, labels, features, names, str(path), weight)


def _check_ids(ids: np.ndarray, where, first_line: int) -> None:
    """Refuse an empty or repeated node id, naming its line."""
    empty = np.flatnonzero(ids == "")
    if len(empty):
        raise DeepAtlasError(f"{where}: line {empty[0] + first_line}: a node without an id")
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        second = order[repeated + 1].min()                                  # the earliest repeat in the file
        first = np.flatnonzero(ids == ids[second])[0]
        raise DeepAtlasError(f"{where}: line {second + first_line}: node id {str(ids[second])!r} repeated (first on "
                             f"line {first + first_line})")


def node_numbers(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the node number of each `wanted` id, whether it is one of `ids`): one binary search in the sorted ids."""
    order = np.argsort(ids)
    at = np.searchsorted(ids[order], wanted).clip(max=len(ids) - 1)
    return order[at], ids[order][at] == wanted


def _ends(ids: np.ndarray, cells: list[str], where: Path, column: str, table: Path) -> np.ndarray:
    """An edge list's column of node ids as node numbers; the first unknown id refused, naming its line."""
    wanted = np.array(cells, dtype=str)
    at, found = node_numbers(ids, wanted)
    if not found.all():
        line = int(np.argmin(found)) + 2
        raise DeepAtlasError(f"{where}: line {line}: {column} {str(wanted[line - 2])!r} is not a node of {table}")
    return at


def _numbers(cells: list[str], where, column: str) -> np.ndarray:
    """A column of numbers; the first empty, non-numeric or infinite cell refused, naming its line."""
    values = numbers(cells)
    if values is None or not np.isfinite(values).all():
        line = next(i for i, c in enumerate(cells, start=2) if not _finite(c))
        raise DeepAtlasError(f"{where}: line {line}: column {column!r} holds {cells[line - 2]!r}, not a number")
    return values


def _finite(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def read_graphml(path: Path) -> Raw:
    """A GraphML or GML file: its nodes (ids as text), node attribute `label`, numeric node attributes as
    features, edge attribute `weight`. (networkx holds the graph as Python objects; reading them out is its
    iteration.)"""
    import networkx as nx
    try:
        g = nx.read_graphml(path) if path.suffix.lower() == ".graphml" else nx.read_gml(path, label="id")
    except Exception as err:  # networkx's and the XML parser's own errors: one line, with the position they give
        raise DeepAtlasError(f"{path}: not a graph networkx can read ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None
    if g.number_of_nodes() == 0:
        raise DeepAtlasError(f"{path}: a graph without nodes")
    nodes = list(g.nodes)
    ids = np.array([str(v) for v in nodes], dtype=str)
    _check_ids(ids, path, first_line=1)
    data = dict(g.nodes(data=True))
    attrs = list(dict.fromkeys(k for v in nodes for k in data[v] if k != "label"))
    columns = {k: [data[v].get(k) for v in nodes] for k in attrs}
    names = [k for k, cells in columns.items() if any(_is_number(c) for c in cells)]
    for k in names:
        lacking = [v for v, c in zip(nodes, columns[k]) if not _is_number(c)]
        if lacking:
            raise DeepAtlasError(f"{path}: node {str(lacking[0])!r} has no number for the attribute {k!r} that "
                                 f"other nodes have (every node needs each feature)")
    labels = np.array(["" if data[v].get("label") is None else str(data[v]["label"]) for v in nodes], dtype=str)
    features = np.array([columns[k] for k in names], dtype=np.float64).T if names else None
    weighted = bool(nx.get_edge_attributes(g, "weight"))
    adjacency = nx.to_scipy_sparse_array(g, nodelist=nodes, weight="weight" if weighted else None, format="coo")
    ends = np.stack([adjacency.row, adjacency.col]).astype(np.int64)        # (2, m); a weight missing: 1
    return Raw(ids, ends, labels, features, names, str(path), adjacency.data.astype(np.float64) if weighted else None)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


GRAPH_FILES = (".graphml", ".gml")


def kind_of(path: Path) -> str:
    """What a user's path holds: "edgelist", "graphml" or "tudataset"; one line when it is none or ambiguous."""
    if path.is_dir():
        tu = _tu_name(path, required=False)
        edges = (path / "edges.csv").is_file()
        if tu and edges:
            raise DeepAtlasError(f"{path}: holds both an edge list (edges.csv) and a TUDataset ({tu}_A.txt): "
                                 f"give the edges file itself, or move one out")
        if tu:
            return "tudataset"
        if edges:
            return "edgelist"
        raise DeepAtlasError(f"{path}: no graph here: a folder holds edges.csv and nodes.csv, or a TUDataset "
                             f"(NAME_A.txt, NAME_graph_indicator.txt, NAME_graph_labels.txt)")
    if not path.is_file():
        raise DeepAtlasError(f"{path}: no such file or folder")
    if path.suffix.lower() in GRAPH_FILES:
        return "graphml"
    if path.suffix.lower() == ".csv":
        header = next(iter(read_lines(path)), "")
        if [h.strip() for h in header.split(",")][:1] == ["id"]:
            raise DeepAtlasError(f"{path}: a node table; give the edge list (source,target[,weight]) with "
                                 f"nodes.csv beside it, or the folder holding both")
        return "edgelist"
    raise DeepAtlasError(f"{path}: not a graph file: give an edge list .csv (with nodes.csv beside it), a "
                         f".graphml or .gml file, or a folder (edges.csv and nodes.csv, or a TUDataset)")


def read_graph(path: Path) -> Raw:
    """One graph of a user's edge list or GraphML/GML file (a folder: its edges.csv)."""
    kind = kind_of(path)
    if kind == "tudataset":
        raise DeepAtlasError(f"{path}: a TUDataset (many graphs), not one graph to classify the nodes of")
    if kind == "graphml":
        return read_graphml(path)
    return _edge_list(path / "edges.csv" if path.is_dir() else path)


# ---- TUDataset folders ---------------------------------------------------------------------------

def _tu_name(folder: Path, required: bool = True) -> str | None:
    found = sorted(p.name[:-len("_A.txt")] for p in folder.glob("*_A.txt"))
    if len(found) > 1:
        raise DeepAtlasError(f"{folder}: holds several TUDatasets ({', '.join(found)}): one a folder")
    if not found and required:
        raise DeepAtlasError(f"{folder}: no NAME_A.txt: not a TUDataset folder")
    return found[0] if found else None


def _table(path: Path, width: int | None = None, dtype=np.float64) -> np.ndarray:
    """A TUDataset text file: one row per line, comma-separated numbers, (lines, width). Read by numpy at once;
    where that fails, the first bad line is found and named."""
    lines = read_lines(path)
    rows = [line for line in lines if line.strip()]
    if not rows:
        raise DeepAtlasError(f"{path}: empty")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=dtype, ndmin=2, encoding="utf-8-sig")
        if width is not None and table.shape[1] != width:
            raise ValueError
        if not np.isfinite(table).all():
            raise ValueError
        return table
    except ValueError:
        pass
    expected = width or len(rows[0].split(","))
    for number, line in enumerate(lines, start=1):  # the error path only: find the line to name
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != expected:
            raise DeepAtlasError(f"{path}: line {number} has {len(cells)} values, expected {expected}")
        bad = next((c for c in cells if not _finite(c) or (dtype is np.int64 and float(c) != int(float(c)))), None)
        if bad is not None:
            kind = "an integer" if dtype is np.int64 else "a number"
            raise DeepAtlasError(f"{path}: line {number}: {bad!r} is not {kind}")
    raise DeepAtlasError(f"{path}: not a table of numbers")


@dataclass
class TU:
    """A TUDataset as read: all graphs' nodes and edges, numbered from 0, grouped by graph."""
    name: str
    node_ptr: np.ndarray
    edges: np.ndarray
    """(2, E) global node numbers, grouped by graph"""
    edge_graph: np.ndarray
    node_labels: np.ndarray | None
    node_attributes: np.ndarray | None
    edge_labels: np.ndarray | None
    edge_attributes: np.ndarray | None
    targets: np.ndarray | None
    """(G,) the graph labels (as text) or attributes (numbers), None where the folder has neither"""
    regression: bool


def read_tu(folder: Path, targets: bool = True) -> TU:
    name = _tu_name(folder)
    file = lambda part: folder / f"{name}_{part}.txt"  # noqa: E731
    for part in ("A", "graph_indicator"):
        if not file(part).is_file():
            raise DeepAtlasError(f"{folder}: a TUDataset needs {file(part).name}")
    indicator = _table(file("graph_indicator"), 1, np.int64)[:, 0]
    n = len(indicator)
    steps = np.diff(indicator)
    if indicator[0] != 1 or (steps < 0).any() or (steps > 1).any():
        bad = 1 if indicator[0] != 1 else int(np.flatnonzero((steps < 0) | (steps > 1))[0]) + 2
        raise DeepAtlasError(f"{file('graph_indicator')}: line {bad}: graph {indicator[bad - 1]}; the nodes must "
                             f"come graph after graph, graphs numbered 1, 2, ...")
    count = int(indicator[-1])
    node_ptr = np.concatenate([[0], np.cumsum(np.bincount(indicator - 1, minlength=count))])
    edges = _table(file("A"), 2, np.int64).T - 1                           # (2, E) from 0
    outside = (edges < 0) | (edges >= n)
    if outside.any():
        k = int(np.flatnonzero(outside.any(0))[0])
        raise DeepAtlasError(f"{file('A')}: line {k + 1}: node {edges[outside[:, k], k][0] + 1} is not a node "
                             f"(there are {n}, numbered from 1 in {file('graph_indicator').name})")
    graph_of = indicator - 1
    across = np.flatnonzero(graph_of[edges[0]] != graph_of[edges[1]])
    if len(across):
        raise DeepAtlasError(f"{file('A')}: line {across[0] + 1}: an edge between graphs "
                             f"{graph_of[edges[0, across[0]]] + 1} and {graph_of[edges[1, across[0]]] + 1}")
    order = np.argsort(graph_of[edges[0]], kind="stable")

    def optional(part: str, dtype=np.float64, rows: int = n) -> np.ndarray | None:
        if not file(part).is_file():
            return None
        table = _table(file(part), None, dtype)
        if len(table) != rows:
            raise DeepAtlasError(f"{file(part)}: {len(table)} lines, expected {rows} (one per "
                                 f"{'node' if rows == n else 'edge' if rows == edges.shape[1] else 'graph'})")
        return table

    node_labels, edge_labels = optional("node_labels", np.int64), optional("edge_labels", np.int64, edges.shape[1])
    edge_attributes = optional("edge_attributes", rows=edges.shape[1])
    labels = optional("graph_labels", np.int64, count) if targets else None
    values = optional("graph_attributes", rows=count) if targets and labels is None else None
    if targets and labels is None and values is None:
        raise DeepAtlasError(f"{folder}: a TUDataset to train on needs {file('graph_labels').name} (a class per "
                             f"graph) or {file('graph_attributes').name} (a value per graph)")
    target = labels[:, 0].astype(str) if labels is not None else values[:, 0] if values is not None else None
    return TU(name, node_ptr, edges[:, order], graph_of[edges[0, order]],
              None if node_labels is None else node_labels[:, 0], optional("node_attributes"),
              None if edge_labels is None else edge_labels[order, 0],
              None if edge_attributes is None else edge_attributes[order], target, labels is None and values is not None)
