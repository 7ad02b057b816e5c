"""Message passing, written once: what every graph network shares (GCN, GraphSAGE, GAT, GIN, MPNN).

A graph of N nodes is its node features x (N, F) and an edge index (2, E) of node numbers: row 0 holds each
edge's source j, row 1 its target i, and messages flow j -> i (along the edge). An undirected edge is stored
twice, once each way. One layer of message passing (Gilmer et al. 2017, arXiv:1704.01212, eq. 1-2) is

    m_ij = M(h_i, h_j, e_ij)          one message per edge (E, C): computed for all edges at once
    m_i  = AGG_{j in N(i)} m_ij       `scatter`: the messages summed (or averaged, or maxed) at their target
    h_i' = U(h_i, m_i)                one update per node

and everything below is a gather (h[edge_index[0]]) or a scatter (index_add_ / scatter_reduce over
edge_index[1]): there is no Python loop over nodes, edges or graphs. Sums use scatter_add_ (the same kernel
speed as index_add_ on a CPU; index_add_'s ONNX translation keeps one of several rows sent to one node, not their
sum, so an exported network would differ). Each architecture's own rule (its
normalization, attention, aggregator, update) stays in its own file.

Many graphs are trained as one: a mini-batch of G graphs is their disjoint union (`collate`), a graph of
N = sum of their nodes whose edge numbers are offset by the nodes before them, with a `batch` vector (N,)
naming each node's graph. A graph-level network reads it out per graph with `global_pool`.

Shapes: N nodes, E edges, F node features, D edge features, C channels, G graphs, K outputs.
Everything runs on the device and dtype of its inputs.
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

Reduce = Literal["sum", "mean", "max"]


def _expand(index: Tensor, like: Tensor) -> Tensor:
    """index (E,) viewed and broadcast to the shape of like (E, ...), as scatter_reduce_ wants it."""
    return index.view(-1, *([1] * (like.dim() - 1))).expand_as(like)


def count(index: Tensor, dim_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(dim_size,) how many entries of `index` name each slot: a node's incoming edges, a graph's nodes."""
    ones = torch.ones(index.shape[0], dtype=dtype, device=index.device)
    return torch.zeros(dim_size, dtype=dtype, device=index.device).scatter_add_(0, index, ones)


def scatter(src: Tensor, index: Tensor, dim_size: int, reduce: Reduce = "sum") -> Tensor:
    """Rows of src (E, ...) combined into dim_size slots by index (E,): out[i] = reduce of src[e] where index[e] = i.

    sum:  out[i] = Σ_e src[e]                    (scatter_add_)
    mean: out[i] = Σ_e src[e] / |{e: index[e]=i}|
    max:  out[i] = max_e src[e]                  (scatter_reduce_ "amax"; gradients flow to the maximum)
    A slot that no entry names (a node without incoming edges) is 0 under every reduction."""
    out = src.new_zeros((dim_size, *src.shape[1:]))                        # (dim_size, ...)
    if reduce == "sum":
        return out.scatter_add_(0, _expand(index, src), src)
    if reduce == "mean":
        total = out.scatter_add_(0, _expand(index, src), src)
        n = count(index, dim_size, src.dtype).clamp(min=1)                  # empty slots: 0 / 1 = 0
        return total / n.view(-1, *([1] * (src.dim() - 1)))
    if reduce == "max":  # include_self=False: a slot takes only what is scattered into it, an empty one keeps 0
        return out.scatter_reduce_(0, _expand(index, src), src, "amax", include_self=False)
    raise ValueError(f"scatter: reduce must be sum, mean or max, not {reduce!r}")


def edge_softmax(scores: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """Softmax of edge scores (E,) or (E, heads) over each target node's incoming edges:

        α_ij = exp(s_ij - max_k s_ik) / Σ_{k in N(i)} exp(s_ik - max_k s_ik)

    Subtracting each group's own maximum keeps exp from overflowing and does not change the result.
    For every node with incoming edges the α over them sum to 1; edges exist only where the graph has them."""
    peak = scatter(scores.detach(), index, num_nodes, "max")               # (N, ...) each group's maximum
    weights = (scores - peak[index]).exp()                                 # (E, ...) all ≤ 1
    return weights / scatter(weights, index, num_nodes, "sum")[index]      # (E, ...)


def add_self_loops(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None, fill: float = 1.0
                   ) -> tuple[Tensor, Tensor | None]:
    """The edges with one loop i -> i per node appended: Ã = A + I. Returns (edge_index (2, E + N), edge_weight
    (E + N,) with `fill` on the loops, or None when no weights were given)."""
    loops = torch.arange(num_nodes, device=edge_index.device).expand(2, num_nodes)   # (2, N): i -> i
    edge_index = torch.cat([edge_index, loops], 1)
    if edge_weight is None:
        return edge_index, None
    return edge_index, torch.cat([edge_weight, edge_weight.new_full((num_nodes,), fill)])


def symmetric_norm(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None) -> Tensor:
    """(E,) the coefficient of each edge j -> i in D^-½ A D^-½ (Kipf & Welling 2017, eq. 2, with A = Ã when the
    loops were added): a_ij / sqrt(d_i d_j), d_i = Σ_j a_ij the weighted in-degree. A node of degree 0 gets
    coefficient 0 (it is the target of no edge, so no coefficient names it as a target)."""
    weight = edge_weight if edge_weight is not None else torch.ones(edge_index.shape[1], device=edge_index.device)
    degree = scatter(weight, edge_index[1], num_nodes, "sum")              # (N,) d_i
    inv_sqrt = degree.pow(-0.5).masked_fill(degree == 0, 0.0)              # (N,) d_i^-½
    return inv_sqrt[edge_index[0]] * weight * inv_sqrt[edge_index[1]]      # (E,) a_ij d_j^-½ d_i^-½


def global_pool(x: Tensor, batch: Tensor, num_graphs: int, reduce: Reduce = "mean") -> Tensor:
    """Readout: node rows x (N, C) pooled per graph -> (G, C). Invariant to the order of each graph's nodes."""
    return scatter(x, batch, num_graphs, reduce)


class GraphBatch(NamedTuple):
    """One graph, or several as their disjoint union: what a graph network's forward takes.

    A NamedTuple, so that the training loop's `batch[0]` is x and Fabric moves it by `.to(device)`.
    Node-level data (one graph, transductive) carries `y` per node and `mask`, the nodes a split scores;
    graph-level data carries `y` per graph and no mask."""
    x: Tensor
    """(N, F) float node features"""
    edge_index: Tensor
    """(2, E) long: row 0 the source j, row 1 the target i of each edge (messages flow j -> i)"""
    batch: Tensor
    """(N,) long: the graph each node belongs to, 0..G-1"""
    num_graphs: int
    """G"""
    y: Tensor | None = None
    """targets: (N,) per node (node level) or (G,) per graph; long classes or float (standardized) values"""
    mask: Tensor | None = None
    """(N,) bool: the nodes whose targets count (node level: the split's nodes); None: every graph's target"""
    edge_attr: Tensor | None = None
    """(E, D) float edge features (bond types), or None"""
    edge_weight: Tensor | None = None
    """(E,) float edge weights (a user's weighted edge list), or None"""

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> GraphBatch:
        return GraphBatch(*(t.to(device) if isinstance(t, Tensor) else t for t in self))


def single(x: Tensor, edge_index: Tensor, **fields) -> GraphBatch:
    """One graph as a GraphBatch (its batch vector all 0)."""
    return GraphBatch(x, edge_index, torch.zeros(x.shape[0], dtype=torch.long, device=x.device), 1, **fields)


def _cat(parts: list[Tensor | None]) -> Tensor | None:
    return None if parts[0] is None else torch.cat(parts)


def collate(graphs: list[GraphBatch]) -> GraphBatch:
    """Graphs (or batches) as one GraphBatch, their disjoint union: node rows stacked, each one's edge numbers
    offset by the nodes before it, its graph ids by the graphs before it. (The list is walked once by torch.cat;
    the offsets are added to all edges at once.)"""
    if len(graphs) == 1:
        return graphs[0]
    nodes = torch.tensor([g.x.shape[0] for g in graphs])                   # (B,) nodes of each part
    edges = torch.tensor([g.edge_index.shape[1] for g in graphs])          # (B,) edges of each part
    parts = torch.tensor([g.num_graphs for g in graphs])                   # (B,) graphs of each part
    device = graphs[0].x.device
    node_offset = (nodes.cumsum(0) - nodes).to(device)                     # (B,) nodes before each part
    graph_offset = (parts.cumsum(0) - parts).to(device)
    edge_index = torch.cat([g.edge_index for g in graphs], 1) + node_offset.repeat_interleave(edges.to(device))
    batch = torch.cat([g.batch for g in graphs]) + graph_offset.repeat_interleave(nodes.to(device))
    return GraphBatch(torch.cat([g.x for g in graphs]), edge_index, batch, int(parts.sum()),
                      y=_cat([g.y for g in graphs]), mask=_cat([g.mask for g in graphs]),
                      edge_attr=_cat([g.edge_attr for g in graphs]), edge_weight=_cat([g.edge_weight for g in graphs]))
