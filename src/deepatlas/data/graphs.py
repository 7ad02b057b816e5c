"""Graph data: embedded graphs (no download) and readers for users' graph files, node-level or graph-level.

A dataset is either one graph whose nodes are classified (node level, transductive: the whole graph is seen in
training, only the training nodes' labels are) or many graphs each classified or regressed (graph level). The
JSON `spec` says which: "level" is "node" or "graph", "target" is "classes" or "regression". A split's `collate`
gives a `deepatlas.nn.graph.GraphBatch`:
    node level   each split is ONE item, the whole graph with that split's `mask` (full-batch training)
    graph level  each split's items are its graphs' numbers in a `Pool` (all graphs stored as one disjoint
                 union); `collate` gathers a batch of them at once, their union with a `batch` vector
A regressed target is standardized with the training part's mean and std ("target_mean", "target_std" in the
spec); the metrics are in its own units ("units").

Embedded datasets:
    karate      Zachary's karate club (networkx; W. W. Zachary 1977): 34 members, 78 friendships, the two
                factions after the split (the "club" attribute: Mr. Hi, Officer). Features: the identity (a
                one-hot of each node), as in Kipf & Welling's demonstration. Edges unweighted (networkx's
                interaction counts are left out). Semi-supervised split: ONE labelled training node per faction,
                node 0 (Mr. Hi himself) and node 33 (the officer, John A.); validation: 8 other nodes (4 of
                each faction, seeded); test: the remaining 24.
    sbm         a planted partition (stochastic block model): 3,000 nodes in 5 classes of 600. Each node has on
                average DEGREE_IN neighbours in its own class and DEGREE_OUT in the others (p_in = DEGREE_IN /
                (n_c - 1), p_out = DEGREE_OUT / (n - n_c)). Features are weak on purpose: x_v = e_{y_v} + ε with
                e_c the c-th unit vector of FEATURES dimensions and ε ~ N(0, NOISE² I): a classifier of the
                features alone gets about 0.48 (logistic regression; chance 0.2), a GCN that averages them over
                the neighbourhood about 0.93. Split: 60/20/20 of the nodes, stratified, seed 0 (the split of
                the "full-supervised" planted-partition studies, e.g. Geom-GCN, Pei et al. 2020).
    sbm-large   the same at 200,000 nodes (about 2,000,000 directed edges, each undirected one stored both ways),
                built in under 1 s; `sbm-N` and `sbm-N-K` give N nodes in K classes.
    structure   graph classification that needs the structure, not the features: 3,000 random d-regular graphs
                (circulant graphs C_n(S) with d // 2 random offsets S, plus n/2 for an odd d) of n = 12..24
                nodes (even, drawn independently of the class), every node's feature the constant 1; the class
                is the degree d in {2, 3, 4, 5}, balanced. Split: 60/20/20 of the graphs, stratified, seed 0.
                Why sum aggregation separates the classes and mean or max cannot (Xu et al. 2019,
                arXiv:1810.00826, section 5, Figure 3): with equal features c at every node of a d-regular graph, the
                sum of a node's neighbours is d·c, which tells d; their mean and their max are c for every d;
                GCN's weights D̃^-½ÃD̃^-½ sum to (d+1)/(d+1) = 1 over each row, so it too gives c; a GAT's
                attention sums to 1. By induction every layer of a mean, max, GCN or attention network keeps all
                nodes equal and independent of d, so any readout (mean, max, or a sum, which sees only n, drawn
                independently of d) gives every class the same output: accuracy at most 1/4 (the largest class
                share). One sum layer (GIN) already maps d to distinct values: accuracy up to 1.
    molecules   real molecules, atoms as nodes and bonds as edges, from `deepatlas.data.molecules` (RDKit):
                molecules (= molecules-tpsa), molecules-logp, molecules-chembl, regressed.

Users' files (one line naming the file and the line for a bad id, a missing node, a ragged row):
    an edge list    `--data edges.csv`, a CSV with the header `source,target[,weight]`, and beside it
                    `nodes.csv` with `id`, feature columns (numbers) and `label` (an empty label: an unlabelled
                    node, predicted but never scored); or `--data FOLDER` holding `edges.csv` and `nodes.csv`.
                    Edges are undirected (stored both ways, a repeated pair once). No feature column: identity
                    features (up to IDENTITY_MAX nodes). Labelled nodes are split 60/20/20, stratified, seed 0.
    a TUDataset     `--data FOLDER` holding NAME_A.txt (edges `i, j`, node numbers from 1, as listed: TUDataset
                    lists both ways), NAME_graph_indicator.txt (each node's graph, from 1, nodes in graph
                    order), NAME_graph_labels.txt (a class per graph; or NAME_graph_attributes.txt, a value per
                    graph, regressed), optional NAME_node_labels.txt (one-hot encoded), NAME_node_attributes.txt,
                    NAME_edge_labels.txt (one-hot), NAME_edge_attributes.txt (edge features). Graph level:
                    graphs split 60/20/20, stratified, seed 0.
    GraphML / GML   any file networkx reads (.graphml, .gml): node classification on that graph, its node
                    attribute `label` the class, its numeric node attributes the features (identity if none),
                    an edge attribute `weight` the edge weights.
A folder holding both an edge list and a TUDataset is ambiguous: give the edges file or rename one.
Numeric labels with a non-integer or more than MAX_CLASSES distinct values are regressed (`task=` decides).

`predict` gives a node's class and probabilities (`--node ID`, several comma-separated, or `--nodes FILE` of ids;
without them every unlabelled node) on the run's own graph or another graph file; for a graph-level run, each
graph's class or value in a GraphML/GML file, a TUDataset folder (or a SMILES file for a molecules run). The
user's node ids are kept in the rows. After training, `plot_predictions` draws the learned node (or graph)
embeddings, the network's last hidden layer projected to 2-D by PCA and coloured by class, to embeddings.png; a
network with `attention(batch)` (gat) also gets attention.png, one node's neighbourhood weighted by its attention.

A graph network takes a GraphBatch and returns (N, K) node outputs or (G, K) graph outputs; its config gets
`in_features`, `n_outputs`, `level` and `edge_features` from `dims`, and its `embed(batch)` gives the last hidden
layer (node rows or graph rows) for the embeddings plot.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepatlas.data import Splits, read_lines, split_indices
from deepatlas.data.graph_files import TU, Raw, kind_of, node_numbers, read_graph, read_graphml, read_tu
from deepatlas.data.tabular import MAX_CLASSES, numbers
from deepatlas.errors import DeepAtlasError, given, option
from deepatlas.nn.graph import GraphBatch, collate, single

SEED = 7
DEGREE_IN, DEGREE_OUT = 7.0, 3.0
"""sbm: a node's expected neighbours inside its class and outside it (average degree 10, 70% inside)"""
FEATURES, NOISE = 8, 1.0
"""sbm: node features: the class's unit vector among FEATURES dimensions plus N(0, NOISE²) noise in each"""
SBM = {"sbm": (3_000, 5), "sbm-large": (200_000, 5)}
"""name -> (nodes, classes); `sbm-N` and `sbm-N-K` name others"""
MAX_SBM_NODES = 5_000_000
STRUCTURE_GRAPHS, STRUCTURE_DEGREES, STRUCTURE_NODES = 3_000, (2, 3, 4, 5), (12, 24)
"""structure: graphs, the degrees (one class each), the range of their (even) node counts"""
KARATE_TRAIN, KARATE_VAL = (0, 33), 8
IDENTITY_MAX = 4_096
"""a user's graph without feature columns gets identity features (N × N) up to this many nodes"""
PLOT_POINTS = 5_000
"""embeddings.png draws at most this many nodes (or graphs), drawn at random"""


def _molecule_sets() -> list[str]:
    """The molecule sets of `deepatlas.data.molecules` (RDKit featurization), or the hook's name alone when that
    module is not there."""
    try:
        from deepatlas.data import molecules
    except ImportError:
        return ["molecules"]
    return list(molecules.EMBEDDED)


EMBEDDED = ["karate", "sbm", "sbm-large", "structure", *_molecule_sets()]


# ---- datasets ------------------------------------------------------------------------------------

class NodeSplit(Dataset):
    """A split of one graph's nodes: one item, the whole graph with the split's mask (full-batch training)."""
    collate = staticmethod(collate)

    def __init__(self, graph: GraphBatch):
        self.graph = graph

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> GraphBatch:
        return self.graph

    def targets(self) -> Tensor:
        """The targets this split scores."""
        return self.graph.y[self.graph.mask]


@dataclass
class Pool:
    """Many graphs stored as one disjoint union: graph g's node rows are node_ptr[g]:node_ptr[g+1] and its edges
    edge_ptr[g]:edge_ptr[g+1], numbered from 0 within the graph (a graph is a slice, with no renumbering)."""
    x: Tensor
    """(N, F) all graphs' node features"""
    edge_index: Tensor
    """(2, E) each edge's ends, numbered within its graph"""
    node_ptr: Tensor
    """(G + 1,) where each graph's nodes start"""
    edge_ptr: Tensor
    """(G + 1,) where each graph's edges start"""
    y: Tensor
    """(G,) a class or a standardized value per graph"""
    edge_attr: Tensor | None = None
    """(E, D) edge features"""

    def gather(self, graphs: Tensor) -> GraphBatch:
        """Graphs number `graphs` (G,) as one batch, their disjoint union, gathered all at once: each graph's node
        rows and edges are a range of the pool's, its edges offset by the batch's nodes before it."""
        nodes = self.node_ptr[graphs + 1] - self.node_ptr[graphs]                  # (G,) nodes of each graph
        edges = self.edge_ptr[graphs + 1] - self.edge_ptr[graphs]                  # (G,) edges of each graph
        batch = torch.arange(len(graphs)).repeat_interleave(nodes)                 # (N,) each node's graph
        edge_graph = torch.arange(len(graphs)).repeat_interleave(edges)            # (E,) each edge's graph
        before = nodes.cumsum(0) - nodes                                           # (G,) batch nodes before each
        rows = self.node_ptr[graphs][batch] + torch.arange(len(batch)) - before[batch]           # (N,) pool rows
        at = self.edge_ptr[graphs][edge_graph] + torch.arange(len(edge_graph)) - (edges.cumsum(0) - edges)[edge_graph]
        return GraphBatch(self.x[rows], self.edge_index[:, at] + before[edge_graph], batch, len(graphs),
                          y=self.y[graphs], edge_attr=None if self.edge_attr is None else self.edge_attr[at])


def pool_of(graphs: list[dict], y: Tensor) -> Pool:
    """A Pool from one dict {"x", "edge_index"[, "edge_attr"]} per graph (torch.cat walks the list once)."""
    nodes = torch.tensor([len(g["x"]) for g in graphs])
    edges = torch.tensor([g["edge_index"].shape[1] for g in graphs])
    zero = torch.zeros(1, dtype=torch.long)
    return Pool(torch.cat([g["x"] for g in graphs]).float(), torch.cat([g["edge_index"] for g in graphs], 1).long(),
                torch.cat([zero, nodes.cumsum(0)]), torch.cat([zero, edges.cumsum(0)]), y,
                torch.cat([g["edge_attr"] for g in graphs]).float() if "edge_attr" in graphs[0] else None)


class GraphSet(Dataset):
    """Some graphs of a Pool (a split). Its items are graph numbers in the pool; `collate` gathers a batch of them
    at once as one GraphBatch (no Python loop over the graphs). `graph(i)` is item i as a GraphBatch."""

    def __init__(self, pool: Pool, indices):
        self.pool, self.indices = pool, torch.as_tensor(np.asarray(indices), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return int(self.indices[i])

    def collate(self, numbers: list[int]) -> GraphBatch:
        return self.pool.gather(torch.tensor(numbers, dtype=torch.long))

    def graph(self, i: int) -> GraphBatch:
        return self.pool.gather(self.indices[i:i + 1])

    def targets(self) -> Tensor:
        return self.pool.y[self.indices]

    def everything(self) -> GraphBatch:
        """The whole split as one batch."""
        return self.pool.gather(self.indices)


class GraphData(Splits):
    @property
    def dims(self) -> dict:
        first = self.train.graph if isinstance(self.train, NodeSplit) else self.train.graph(0)
        return {"in_features": first.x.shape[1], "n_outputs": len(self.spec.get("classes", [])) or 1,
                "level": self.spec["level"], "edge_features": 0 if first.edge_attr is None else first.edge_attr.shape[1]}


# ---- the embedded graphs -------------------------------------------------------------------------

def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([SEED, *key])


def karate() -> tuple[Tensor, Tensor, np.ndarray, list[str]]:
    """Zachary's karate club: (edge_index (2, 156) both ways, y (34,), ids, the factions)."""
    import networkx as nx
    g = nx.karate_club_graph()
    clubs = ["Mr. Hi", "Officer"]
    club = np.array(list(nx.get_node_attributes(g, "club").values()))   # networkx's own order: nodes 0..33
    y = (club == clubs[1]).astype(np.int64)
    ends = np.array(g.edges, dtype=np.int64).T                                           # (2, 78) once each
    return _both_ways(ends, 34)[0], torch.from_numpy(y), np.arange(34).astype(str), clubs


def _both_ways(ends: np.ndarray, n: int, weight: np.ndarray | None = None) -> tuple[Tensor, Tensor | None]:
    """Undirected edges given once or more -> (edge_index (2, E) with each one both ways, a repeated pair once and
    a loop once; its (E,) weights, the first given for a pair, or None without `weight`)."""
    pairs = np.concatenate([ends, ends[::-1]], 1)                          # (2, 2m) both ways
    _, first = np.unique(pairs[0] * n + pairs[1], return_index=True)       # a pair (and a loop's copy) once
    first = np.sort(first)
    edge_index = torch.from_numpy(np.ascontiguousarray(pairs[:, first]))
    if weight is None:
        return edge_index, None
    return edge_index, torch.from_numpy(np.concatenate([weight, weight])[first]).float()


def planted_partition(nodes: int, classes: int, degree_in: float = DEGREE_IN, degree_out: float = DEGREE_OUT,
                      noise: float = NOISE, features: int = FEATURES, seed: int = 0
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """A stochastic block model with `classes` equal blocks, built without an N × N matrix: for each pair of
    blocks (a, b) the number of edges is drawn from Binomial(pairs(a, b), p_ab) and that many endpoint pairs are
    drawn uniformly in the two blocks (a loop or a repeated pair, rare at these densities, is dropped). Node ids
    are shuffled, so a node's number says nothing of its class. Returns x (N, features), edge_index (2, E) both
    ways, y (N,)."""
    rng = _rng(nodes, classes, seed)
    sizes = np.full(classes, nodes // classes)
    sizes[: nodes % classes] += 1
    start = np.cumsum(sizes) - sizes                                       # (K,) first node of each block
    a, b = np.triu_indices(classes)                                        # (P,) block pairs, a ≤ b
    inside = a == b
    pairs = np.where(inside, sizes[a] * (sizes[a] - 1) // 2, sizes[a] * sizes[b])
    p = np.where(inside, degree_in / np.maximum(sizes[a] - 1, 1), degree_out / max(nodes - sizes.min(), 1))
    m = rng.binomial(pairs, np.minimum(p, 1.0))                            # (P,) edges of each block pair
    pa, pb = np.repeat(a, m), np.repeat(b, m)                              # (M,) the blocks of each edge
    i = start[pa] + (rng.random(len(pa)) * sizes[pa]).astype(np.int64)    # (M,) an end in block a
    j = start[pb] + (rng.random(len(pb)) * sizes[pb]).astype(np.int64)    # (M,) an end in block b
    keep = i != j
    relabel = rng.permutation(nodes)                                       # block order -> shuffled node ids
    y = np.empty(nodes, dtype=np.int64)
    y[relabel] = np.repeat(np.arange(classes), sizes)
    edge_index, _ = _both_ways(relabel[np.stack([i[keep], j[keep]])], nodes)
    x = np.eye(classes, features)[y] + noise * rng.standard_normal((nodes, features))
    return torch.tensor(x, dtype=torch.float32), edge_index, torch.from_numpy(y)


def regular_graphs(count: int = STRUCTURE_GRAPHS, degrees=STRUCTURE_DEGREES, node_range=STRUCTURE_NODES,
                   seed: int = 0) -> tuple[Pool, np.ndarray]:
    """`count` circulant d-regular graphs, all built at once (see the module's docstring): graph g of n nodes and
    degree d joins i and i + s (mod n) for each of its d // 2 offsets s, distinct and drawn from 1..n/2 - 1, and,
    when d is odd, i and i + n/2. Returns the Pool (constant features, y the class = the index of d) and the
    degrees."""
    rng = _rng(count, seed)
    y = rng.permutation(np.arange(count) % len(degrees))                     # (G,) balanced classes
    d = np.asarray(degrees)[y]
    n = rng.choice(np.arange(node_range[0], node_range[1] + 1, 2), count)    # (G,) even sizes, whatever the class
    if ((d // 2) > n // 2 - 1).any():
        raise ValueError("regular_graphs: a degree too high for the smallest graphs")
    slots = node_range[1] // 2 - 1
    keys = rng.random((count, slots))
    keys[np.arange(slots)[None] >= (n // 2 - 1)[:, None]] = np.inf         # offsets past n/2 - 1 never drawn
    offsets = np.argsort(keys, 1) + 1                                       # (G, slots) a random order of 1..n/2-1
    g, col = np.nonzero(np.arange(slots)[None] < (d // 2)[:, None])        # the first d // 2 of each graph
    s = offsets[g, col]
    odd = np.flatnonzero(d % 2)
    g, s = np.concatenate([g, odd]), np.concatenate([s, n[odd] // 2])       # the diameter n/2 for odd degrees
    per = np.where(s == n[g] // 2, n[g] // 2, n[g])                         # edges each (graph, offset) adds
    order = np.argsort(g, kind="stable")
    g, s, per = g[order], s[order], per[order]                              # grouped by graph
    eg = np.repeat(g, per)                                                  # (m,) each undirected edge's graph
    i = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)         # 0..per-1 within each group
    j = (i + np.repeat(s, per)) % n[eg]
    ends = np.stack([np.concatenate([i, j]), np.concatenate([j, i])])       # both ways
    eg = np.concatenate([eg, eg])
    by_graph = np.argsort(eg, kind="stable")
    zero = torch.zeros(1, dtype=torch.long)
    node_ptr = torch.cat([zero, torch.from_numpy(np.cumsum(n))])
    edge_ptr = torch.cat([zero, torch.from_numpy(np.cumsum(np.bincount(eg, minlength=count)))])
    pool = Pool(torch.ones(int(n.sum()), 1), torch.from_numpy(ends[:, by_graph]), node_ptr, edge_ptr,
                torch.from_numpy(y))
    return pool, d


def _one_hot(values: np.ndarray, known: list) -> np.ndarray:
    """(n,) values -> (n, len(known)) one-hot; a value not known is all zeros."""
    known_arr = np.asarray(known)
    return (values[:, None] == known_arr[None]).astype(np.float32)


def tu_pool(tu: TU, spec: dict, y: Tensor) -> Pool:
    """A TUDataset's graphs encoded as the spec says: node features one-hot node labels then attributes (a
    constant 1 where it has neither), edge features one-hot edge labels then attributes."""
    n = int(tu.node_ptr[-1])
    node, edge = spec["node_features"], spec["edge_features"]
    parts = []
    if node["labels"]:
        parts.append(_one_hot(_need(tu.node_labels, tu, "node_labels"), node["labels"]))
    if node["attributes"]:
        parts.append(_need_width(tu.node_attributes, node["attributes"], tu, "node_attributes"))
    x = np.concatenate(parts, 1) if parts else np.ones((n, 1))
    eparts = []
    if edge["labels"]:
        eparts.append(_one_hot(_need(tu.edge_labels, tu, "edge_labels"), edge["labels"]))
    if edge["attributes"]:
        eparts.append(_need_width(tu.edge_attributes, edge["attributes"], tu, "edge_attributes"))
    edge_ptr = np.concatenate([[0], np.cumsum(np.bincount(tu.edge_graph, minlength=len(tu.node_ptr) - 1))])
    local = tu.edges - tu.node_ptr[tu.edge_graph]                          # numbered within each graph
    return Pool(torch.tensor(x, dtype=torch.float32), torch.from_numpy(local), torch.from_numpy(tu.node_ptr),
                torch.from_numpy(edge_ptr), y,
                torch.tensor(np.concatenate(eparts, 1), dtype=torch.float32) if eparts else None)


def _need(values, tu: TU, part: str):
    if values is None:
        raise DeepAtlasError(f"{tu.name}: the run was trained with {tu.name}_{part}.txt; this folder has none")
    return values


def _need_width(values, width: int, tu: TU, part: str):
    values = _need(values, tu, part)
    if values.shape[1] != width:
        raise DeepAtlasError(f"{tu.name}_{part}.txt: {values.shape[1]} values a line; the run was trained on {width}")
    return values


# ---- targets, features, splits -------------------------------------------------------------------

def _target_kind(values: np.ndarray, task: str, where: str) -> str:
    """"classes" or "regression" for labels (text), as tables decide (task=auto) or as `task` says."""
    nums = numbers(values)
    if task == "regression":
        if nums is None:
            raise DeepAtlasError(f"{where}: {given('task', 'regression')} needs numeric labels")
        return "regression"
    if task == "classification" or nums is None:
        return "classes"
    many = not np.array_equal(nums, np.round(nums)) or len(np.unique(nums)) > MAX_CLASSES
    return "regression" if many else "classes"


def _classes(labels: np.ndarray) -> list[str]:
    found = sorted(set(labels.tolist()))
    return sorted(found, key=float) if numbers(np.array(found)) is not None else found


def _targets(spec: dict, labels: np.ndarray, train: np.ndarray) -> Tensor:
    """Labels (text, "" for none) -> y: class numbers (-1: none), or values standardized with the training part's
    mean and std (NaN: none). Fits the spec's classes and majority, or mean and std, on `train` (indices)."""
    known = labels != ""
    if spec["target"] == "regression":
        values = np.full(len(labels), np.nan)
        values[known] = numbers(labels[known])
        spec.setdefault("target_mean", float(values[train].mean()))
        spec.setdefault("target_std", float(values[train].std()) or 1.0)
        return torch.tensor((values - spec["target_mean"]) / spec["target_std"], dtype=torch.float32)
    spec.setdefault("classes", _classes(labels[known]))
    classes = np.array(spec["classes"], dtype=str)
    order = np.argsort(classes)
    index = order[np.searchsorted(classes, labels, sorter=order).clip(max=len(classes) - 1)]
    unknown = known & (classes[index] != labels)
    y = np.where(known, index, -1)
    if unknown.any():
        raise DeepAtlasError(f"{spec['source']}: label {str(labels[unknown][0])!r} was not a class in training "
                             f"({', '.join(spec['classes'])})")
    counts = np.bincount(y[train], minlength=len(classes))
    spec.setdefault("majority", spec["classes"][int(counts.argmax())])
    return torch.from_numpy(y)


def _standardize(spec: dict, features: np.ndarray, names: list[str], train: np.ndarray) -> Tensor:
    """Feature columns standardized with the training part's mean and std (kept in the spec)."""
    if "features" not in spec:
        std = features[train].std(0)
        spec["features"] = {"kind": "columns", "names": names, "mean": features[train].mean(0).tolist(),
                            "std": np.where(std > 0, std, 1.0).tolist()}
    f = spec["features"]
    return torch.tensor((features - np.array(f["mean"])) / np.array(f["std"]), dtype=torch.float32)


def _node_features(spec: dict, raw: Raw, train: np.ndarray) -> Tensor:
    """A user's graph's features as training made them: standardized columns, or identity."""
    f = spec.get("features")
    if f is None and raw.features is None:
        if len(raw.ids) > IDENTITY_MAX:
            raise DeepAtlasError(f"{raw.where}: {len(raw.ids):,} nodes and no feature column: identity features "
                                 f"are for graphs of up to {IDENTITY_MAX:,} nodes; give nodes feature columns")
        spec["features"] = {"kind": "identity", "nodes": len(raw.ids)}
        f = spec["features"]
    if f is not None and f["kind"] == "identity":
        if len(raw.ids) != f["nodes"] or raw.where != spec["source_file"]:
            raise DeepAtlasError(f"{raw.where}: this run's features are the node identities of its own graph "
                                 f"({spec['source_file']}): it predicts that graph's nodes only")
        return torch.eye(f["nodes"])
    if f is None:
        return _standardize(spec, raw.features, raw.names, train)
    missing = [c for c in f["names"] if c not in raw.names]
    if missing:
        raise DeepAtlasError(f"{raw.where}: missing feature column(s) {', '.join(missing)}, which the run was "
                             f"trained on")
    return _standardize(spec, raw.features[:, [raw.names.index(c) for c in f["names"]]], f["names"], train)


def _masks(n: int, parts) -> list[Tensor]:
    masks = []
    for idx in parts:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(np.asarray(idx), dtype=torch.long)] = True
        masks.append(mask)
    return masks


def _node_data(x: Tensor, edge_index: Tensor, y: Tensor, parts, spec: dict, weight: Tensor | None = None) -> GraphData:
    """One graph's three node splits."""
    graph = single(x, edge_index, y=y, edge_weight=weight)
    splits = [NodeSplit(graph._replace(mask=m)) for m in _masks(len(x), parts)]
    return GraphData(*splits, {**spec, "level": "node"})


# ---- loading -------------------------------------------------------------------------------------

def _sbm_size(name: str) -> tuple[int, int] | None:
    if name in SBM:
        return SBM[name]
    match = re.fullmatch(r"sbm-(\d+)(?:-(\d+))?", name)
    if not match:
        return None
    nodes, classes = int(match[1]), int(match[2] or 5)
    if not 2 <= classes <= 100 or not classes * 10 <= nodes <= MAX_SBM_NODES:
        raise DeepAtlasError(f"{name}: sbm-N-K takes 2 to 100 classes K and 10·K to {MAX_SBM_NODES:,} nodes N")
    return nodes, classes


def _embedded_nodes(name: str) -> GraphData:
    if name == "karate":
        edge_index, y, _, clubs = karate()
        rest = np.setdiff1d(np.arange(34), KARATE_TRAIN)
        rng = _rng(34)
        val = np.concatenate([rng.choice(rest[y[rest].numpy() == c], KARATE_VAL // 2, replace=False) for c in (0, 1)])
        spec = {"source": name, "target": "classes", "classes": clubs, "majority": clubs[0],
                "features": {"kind": "identity", "nodes": 34}, "source_file": name}
        return _node_data(torch.eye(34), edge_index, y, [np.array(KARATE_TRAIN), val, np.setdiff1d(rest, val)], spec)
    nodes, classes = _sbm_size(name)
    x, edge_index, y = planted_partition(nodes, classes)
    parts = split_indices(y.numpy(), name, "nodes")
    spec = {"source": name, "target": "classes", "classes": [f"class {c}" for c in range(classes)],
            "majority": "class 0"}
    x = _standardize(spec, x.double().numpy(), [f"f{i}" for i in range(x.shape[1])], parts[0])
    return _node_data(x, edge_index, y, parts, spec)


def feature_table(name: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """A planted partition's node features alone, as a table (x, y, feature names, classes) for the table
    classifiers (data/tabular.py's "sbm-features"): the stratified split of seed 0 that both take gives its rows
    the same train/val/test parts as the graph's nodes, so the mlp and the gcn are measured on the same nodes."""
    nodes, classes = _sbm_size(name)
    x, _, y = planted_partition(nodes, classes)
    return x.double().numpy(), y.numpy(), [f"f{i}" for i in range(x.shape[1])], [f"class {c}" for c in range(classes)]


def _structure() -> GraphData:
    pool, _ = regular_graphs()
    classes = [f"{d}-regular" for d in STRUCTURE_DEGREES]
    parts = split_indices(pool.y.numpy(), "structure", "graphs")
    spec = {"source": "structure", "level": "graph", "target": "classes", "classes": classes,
            "majority": classes[int(np.bincount(pool.y.numpy()[parts[0]]).argmax())],
            "node_features": {"kind": "constant"}}
    return GraphData(*[GraphSet(pool, p) for p in parts], spec)


def _molecules(name: str) -> GraphData:
    """The hook to `deepatlas.data.molecules` (RDKit featurization): its `load(name)` gives the graphs, the target
    in its units and the fixed split."""
    try:
        from deepatlas.data import molecules
    except ImportError:
        raise DeepAtlasError(f"{name}: the molecule sets need deepatlas.data.molecules, which is not there yet") from None
    mols = molecules.load(name)
    train = mols.split["train"]
    y = mols.y.double().numpy()
    spec = {"source": name, "level": "graph", "target": "regression", "units": mols.units, "target_name": mols.target,
            "target_mean": float(y[train].mean()), "target_std": float(y[train].std()) or 1.0,
            "node_features": {"kind": "molecules", "columns": mols.atom_features}, "bond_features": mols.bond_features}
    pool = pool_of(mols.graphs, torch.tensor((y - spec["target_mean"]) / spec["target_std"], dtype=torch.float32))
    return GraphData(*[GraphSet(pool, mols.split[p]) for p in ("train", "val", "test")], spec)


def _users_nodes(path: Path, task: str) -> GraphData:
    raw = read_graph(path)
    kind = _target_kind(raw.labels[raw.labels != ""], task, raw.where)
    labelled = np.flatnonzero(raw.labels != "")
    if len(labelled) == 0:
        raise DeepAtlasError(f"{raw.where}: no node has a label: nothing to learn from")
    parts = [labelled[p] for p in split_indices(raw.labels[labelled], raw.where, "labelled nodes")]
    spec = {"source": str(path), "source_file": raw.where, "target": kind}
    y = _targets(spec, raw.labels, parts[0])
    if kind == "classes" and len(spec["classes"]) < 2:
        raise DeepAtlasError(f"{raw.where}: every labelled node has the label {spec['classes'][0]!r}: one class")
    x = _node_features(spec, raw, parts[0])
    edge_index, weight = _edges(raw)
    spec["weighted"] = weight is not None
    return _node_data(x, edge_index, y, parts, spec, weight)


def _edges(raw: Raw) -> tuple[Tensor, Tensor | None]:
    return _both_ways(raw.edges, len(raw.ids), raw.weight)


def _users_graphs(path: Path, task: str) -> GraphData:
    tu = read_tu(path)
    where = f"{path}/{tu.name}_graph_{'attributes' if tu.regression else 'labels'}.txt"
    labels = tu.targets if not tu.regression else tu.targets.astype(str)
    kind = "regression" if tu.regression else _target_kind(labels, task, where)
    parts = split_indices(labels, str(path), "graphs")
    spec = {"source": str(path), "level": "graph", "target": kind,
            "node_features": {"kind": "tudataset", "labels": _known(tu.node_labels),
                              "attributes": 0 if tu.node_attributes is None else tu.node_attributes.shape[1]},
            "edge_features": {"labels": _known(tu.edge_labels),
                              "attributes": 0 if tu.edge_attributes is None else tu.edge_attributes.shape[1]}}
    y = _targets(spec, labels, parts[0])
    pool = tu_pool(tu, spec, y)
    return GraphData(*[GraphSet(pool, p) for p in parts], spec)


def _known(values: np.ndarray | None) -> list[int]:
    return [] if values is None else np.unique(values).tolist()


def load(source: str, task: str = "auto") -> GraphData:
    """An embedded dataset by name, or a user's graph file or folder (see the module's docstring)."""
    path = Path(source)
    if not path.exists():
        if source == "karate" or _sbm_size(source) is not None:
            return _embedded_nodes(source)
        if source == "structure":
            return _structure()
        if source in _molecule_sets():
            return _molecules(source)
        raise DeepAtlasError(f"unknown dataset {source!r}: not a file or folder, nor one of {', '.join(EMBEDDED)} "
                             f"(sbm-N and sbm-N-K name other planted partitions)")
    if kind_of(path) == "tudataset":
        return _users_graphs(path, task)
    return _users_nodes(path, task)


def load_for(options, target: str | None = None) -> GraphData:
    return load(options.data, options.task)


def read_labeled(spec: dict, path: str) -> Dataset:
    """A labelled graph file to evaluate on: every labelled node of a graph (node level), or every graph of a
    TUDataset folder (graph level), encoded as the run's training data was."""
    if spec["level"] == "graph":
        tu = read_tu(Path(path))
        labels = tu.targets if not tu.regression else tu.targets.astype(str)
        pool = tu_pool(tu, _check_tu_spec(spec, path), _targets(dict(spec), labels, np.arange(len(labels))))
        return GraphSet(pool, np.arange(len(labels)))
    graph, _ = _graph_for(spec, Path(path))
    return NodeSplit(graph._replace(mask=_labelled(graph.y)))


def _labelled(y: Tensor) -> Tensor:
    """(N,) bool: the nodes with a target (a class ≥ 0, a value that is not NaN)."""
    return y >= 0 if y.dtype == torch.long else ~y.isnan()


def _check_tu_spec(spec: dict, path) -> dict:
    if spec["node_features"]["kind"] != "tudataset":
        raise DeepAtlasError(f"{path}: this run was trained on {spec['source']}, not on a TUDataset")
    return spec


def _graph_for(spec: dict, path: Path) -> tuple[GraphBatch, np.ndarray]:
    """A node-level run's graph from a file (its own, or another with the same feature columns), encoded as in
    training, with its labels where it has them; and its node ids."""
    if spec["source"] == str(path) and not path.exists():  # an embedded graph: its node numbers are its ids
        graph = _embedded_nodes(spec["source"]).train.graph._replace(mask=None)
        return graph, np.arange(graph.num_nodes).astype(str)
    raw = read_graph(path)
    x = _node_features(spec, raw, np.arange(len(raw.ids)))
    y = _targets(dict(spec), raw.labels, np.flatnonzero(raw.labels != ""))
    edge_index, weight = _edges(raw)
    return single(x, edge_index, y=y, edge_weight=weight if spec.get("weighted") else None), raw.ids


# ---- predictions -----------------------------------------------------------------------------------

def _wanted(node: str | None, nodes: str | None) -> list[str] | None:
    """The node ids asked for: `node` (comma-separated) and the first column of the file `nodes` (a header `id`
    skipped)."""
    if node is None and nodes is None:
        return None
    wanted = [n.strip() for n in (node or "").split(",") if n.strip()]
    if nodes is not None:
        path = Path(nodes)
        if not path.is_file():
            raise DeepAtlasError(f"{option('nodes')} {nodes}: no such file")
        cells = [line.split(",")[0].strip() for line in read_lines(path) if line.strip()]
        wanted += cells[1:] if cells[:1] == ["id"] else cells
    if not wanted:
        raise DeepAtlasError(f"{option('node')}/{option('nodes')}: no node id given")
    return wanted


def _rows(spec: dict, out: Tensor, names: list[str]) -> list[dict]:
    """Prediction rows: a class and its probabilities, or a value in the target's units."""
    if spec["target"] == "regression":
        values = out.reshape(-1).double() * spec["target_std"] + spec["target_mean"]
        return [{"input": n, "predicted": v} for n, v in zip(names, values.tolist())]
    probs = out.softmax(-1)
    classes = spec["classes"]
    return [{"input": n, "predicted": classes[int(p.argmax())], "probabilities": dict(zip(classes, p.tolist()))}
            for n, p in zip(names, probs)]


@torch.no_grad()
def predict(objective, spec: dict, inputs, *, node: str | None = None, nodes: str | None = None) -> list[dict]:
    """Node level: the class (or value) of the nodes asked for (`node`, `nodes`; default: the unlabelled ones) in
    `inputs`, a graph file (the run's own graph when it is the run's source). Graph level: of each graph in
    `inputs` (a GraphML/GML file, a TUDataset folder, a SMILES file for a molecules run)."""
    device = next(objective.parameters()).device
    path = Path(str(inputs))
    if spec["level"] == "graph":
        if node is not None or nodes is not None:
            raise DeepAtlasError(f"{option('node')}: this run classifies whole graphs; give graph files")
        batch, names = _graphs_to_predict(spec, path)
        return _rows(spec, objective(batch.to(device)).cpu(), names)
    graph, ids = _graph_for(spec, path)
    wanted = _wanted(node, nodes)
    if wanted is None:
        at = np.flatnonzero(~_labelled(graph.y).numpy())
        if len(at) == 0:
            raise DeepAtlasError(f"{path}: every node has a label; name nodes to predict with {option('node')} ID "
                                 f"or {option('nodes')} FILE")
    else:
        at = _asked(ids, wanted, path)
    out = objective(graph.to(device)).cpu()[torch.as_tensor(at)]
    return _rows(spec, out, [str(ids[i]) for i in at])


def _asked(ids: np.ndarray, wanted: list[str], path: Path) -> np.ndarray:
    """The node numbers of the ids asked for; one line for an id the graph does not have."""
    asked = np.array(wanted, dtype=str)
    at, found = node_numbers(ids, asked)
    if not found.all():
        raise DeepAtlasError(f"{option('node')} {asked[~found][0]}: no such node in {path}")
    return at


def _graphs_to_predict(spec: dict, path: Path) -> tuple[GraphBatch, list[str]]:
    """The graphs of a file or folder, encoded as the run's training graphs, as one batch; a name each."""
    kind = spec["node_features"]["kind"]
    if kind == "molecules":
        from deepatlas.data import molecules
        smiles, names, lines = molecules.read_smiles(path)
        graphs = molecules.featurize(smiles, str(path), lines)
        pool = pool_of(graphs, torch.zeros(len(graphs)))
        return GraphSet(pool, np.arange(len(graphs))).everything(), names
    if path.is_dir():
        tu = read_tu(path, targets=False)
        pool = tu_pool(tu, _check_tu_spec(spec, path), torch.zeros(len(tu.node_ptr) - 1))
        return GraphSet(pool, np.arange(len(tu.node_ptr) - 1)).everything(), \
            [f"{tu.name} graph {g}" for g in range(1, len(tu.node_ptr))]
    if kind_of(path) != "graphml":
        raise DeepAtlasError(f"{path}: a graph-level run predicts GraphML/GML files or TUDataset folders")
    raw = read_graphml(path)
    n = len(raw.ids)
    if kind == "constant":
        x = torch.ones(n, 1)
    else:  # a TUDataset's encoding: node label one-hot, then the numeric attributes in the file's order
        f = spec["node_features"]
        parts = []
        if f["labels"]:
            values = numbers(raw.labels)
            if values is None or np.isnan(values).any():
                raise DeepAtlasError(f"{path}: every node needs an integer `label` (the TUDataset's node label)")
            parts.append(_one_hot(values, f["labels"]))
        if f["attributes"]:
            if raw.features is None or raw.features.shape[1] != f["attributes"]:
                raise DeepAtlasError(f"{path}: nodes need {f['attributes']} numeric attributes, as in training")
            parts.append(raw.features)
        x = torch.tensor(np.concatenate(parts, 1) if parts else np.ones((n, 1)), dtype=torch.float32)
    return single(x, _both_ways(raw.edges, n)[0]), [path.name]


# ---- the trivial baseline and the embeddings plot ------------------------------------------------

def baseline(spec: dict, train: Dataset | None, examples: Dataset) -> tuple[str, dict[str, float]]:
    """The training part's majority class (accuracy), or its mean target (mse, mae, rmse in the target's units)."""
    y = examples.targets()
    if spec["target"] == "regression":  # standardized with the training part: its mean is 0
        std = spec["target_std"]
        mse = float(y.double().square().mean())
        return "mean of the training targets", {"mse": mse * std ** 2, "mae": float(y.double().abs().mean()) * std,
                                                "rmse": math.sqrt(mse) * std}
    majority = spec["classes"].index(spec["majority"])
    return f"majority class {spec['majority']!r}", {"accuracy": float((y == majority).double().mean())}


@torch.no_grad()
def plot_predictions(objective, spec: dict, dataset: Dataset, path: Path) -> None:
    """embeddings.png: the network's last hidden layer (`model.embed`) for every labelled node of the graph (node
    level) or the graphs of `dataset` (graph level: the validation split), projected to 2-D by PCA, coloured by
    the true class (or value)."""
    from sklearn.decomposition import PCA

    from deepatlas.data.draw import PALETTE, _pyplot
    model = objective.model
    if not hasattr(model, "embed"):
        return
    device = next(objective.parameters()).device
    if spec["level"] == "node":
        batch, what = dataset.graph, "labelled nodes"
        keep = _labelled(batch.y)
    else:
        batch, what = dataset.everything(), "validation graphs"
        keep = torch.ones(batch.num_graphs, dtype=torch.bool)
    was = model.training
    model.eval()
    h = model.embed(batch.to(device)).cpu().double().numpy()
    if spec["level"] == "node" and hasattr(model, "attention"):   # an attention network (gat): attention.png beside
        plot_attention(model, batch.to(device), spec, path.with_name("attention.png"))
    model.train(was)
    chosen = np.flatnonzero(keep.numpy())
    if len(chosen) > PLOT_POINTS:
        chosen = np.sort(np.random.default_rng(0).choice(chosen, PLOT_POINTS, replace=False))
    if len(chosen) < 3:
        return
    xy = PCA(2, random_state=0).fit_transform(h[chosen]) if h.shape[1] >= 2 else np.c_[h[chosen], np.zeros(len(chosen))]
    y = batch.y[torch.as_tensor(chosen)].numpy()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    if spec["target"] == "regression":
        points = ax.scatter(xy[:, 0], xy[:, 1], c=y * spec["target_std"] + spec["target_mean"], s=10, cmap="viridis")
        fig.colorbar(points, ax=ax, label=spec.get("target_name", "target"))
    else:
        for c, name in enumerate(spec["classes"]):
            at = y == c
            ax.scatter(xy[at, 0], xy[at, 1], s=12 if len(chosen) < 500 else 4, color=PALETTE[c % len(PALETTE)],
                       label=name, alpha=0.8)
        ax.legend(fontsize=8, markerscale=2, loc="best")
    ax.set(title=f"{type(model).__name__} on {Path(spec['source']).name}: {what}, last hidden layer (PCA)",
           xlabel="PC 1", ylabel="PC 2")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


ATTENTION_NEIGHBOURS = 16
"""attention.png draws the labelled node with the most neighbours up to this many"""


def plot_attention(model, batch: GraphBatch, spec: dict, path: Path) -> None:
    """attention.png: one labelled node (the one with the most neighbours, up to ATTENTION_NEIGHBOURS) in the
    middle, its neighbours around it coloured by their class (or value), each edge j -> i drawn as wide and as
    bright as the last layer's attention α_ij (the mean of its heads); `model.attention(batch)` gives the edges
    (loops included) and α (E, heads)."""
    from matplotlib.collections import LineCollection

    from deepatlas.data.draw import PALETTE, _pyplot
    edge_index, alpha = model.attention(batch)
    edge_index, alpha = edge_index.cpu(), alpha.float().mean(1).cpu()          # (2, E), (E,) mean of heads
    y = batch.y.cpu()
    loop = edge_index[0] == edge_index[1]
    degree = torch.bincount(edge_index[1][~loop], minlength=batch.num_nodes)  # (N,) neighbours, loop aside
    fits = _labelled(y) & (degree > 0) & (degree <= ATTENTION_NEIGHBOURS)
    if not fits.any():
        return
    node = int(torch.where(fits, degree, -1).argmax())
    into = (edge_index[1] == node) & ~loop
    near, weight = edge_index[0][into], alpha[into]                           # (d,) neighbours j, their α_ij
    order = torch.argsort(y[near], stable=True)                               # neighbours of a class side by side
    near, weight = near[order], weight[order]
    own = float(alpha[(edge_index[1] == node) & loop].sum())                  # α_ii
    angle = 2 * np.pi * np.arange(len(near)) / len(near)
    xy = np.c_[np.cos(angle), np.sin(angle)]                                  # (d, 2) neighbours on a circle
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    lines = LineCollection(np.stack([np.zeros_like(xy), xy], 1), array=weight.numpy(), cmap="viridis",
                           linewidths=1 + 9 * weight.numpy() / float(weight.max()), zorder=1)
    lines.set_clim(0, float(weight.max()))
    ax.add_collection(lines)
    fig.colorbar(lines, ax=ax, label="attention α_ij (last layer, mean of heads)")
    if spec["target"] == "regression":
        ax.scatter(xy[:, 0], xy[:, 1], c=y[near].numpy(), cmap="coolwarm", s=140, zorder=2, edgecolors="k")
        ax.scatter([0], [0], c="k", s=260, zorder=2)
        told, share = f"value {float(y[node]) * spec['target_std'] + spec['target_mean']:.3g}", ""
    else:
        colours = np.array([PALETTE[c % len(PALETTE)] for c in range(len(spec["classes"]))] + ["lightgray"])  # -1
        ax.scatter(xy[:, 0], xy[:, 1], c=colours[y[near].numpy()], s=140, zorder=2, edgecolors="k")
        ax.scatter([0], [0], c=colours[int(y[node])], s=260, zorder=2, edgecolors="k", linewidths=2)
        told = spec["classes"][int(y[node])]
        share = f"{float(weight[y[near] == y[node]].sum()):.0%} on neighbours of its class, "
    ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal", xticks=[], yticks=[])
    ax.set_title(f"{type(model).__name__} on {Path(spec['source']).name}: node {node} ({told}) and its {len(near)} "
                 f"neighbours\nits attention in the last layer: {share}{own:.2f} on itself", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
