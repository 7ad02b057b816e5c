"""GraphSAGE: inductive node embeddings from sampled neighbourhoods.

W. L. Hamilton, R. Ying, J. Leskovec, 2017. "Inductive Representation Learning on Large Graphs." NeurIPS 2017,
arXiv:1706.02216.

Instead of learning one embedding per node (which cannot embed a node never seen), GraphSAGE learns K functions
that build a node's state from its own features and those of its neighbours: layer k aggregates the states of a
node's neighbours, concatenates the result with the node's own state, applies one linear map and a nonlinearity,
and scales the result to unit length. Because the functions, not the embeddings, are learned, the same weights
embed the nodes of a graph never seen in training (inductive). To train on a large graph in mini-batches, each
layer looks at a FIXED number S_k of neighbours drawn at random (with replacement), so a batch's computation graph
has at most B·Π_k (1 + S_k) nodes however large the graph.

    h^k_N(v) = AGG_k({ h^{k-1}_u : u ∈ N_k(v) })      N_k(v): S_k neighbours of v drawn uniformly     (Alg. 1, l. 4)
    h^k_v    = σ( W^k · [h^{k-1}_v ‖ h^k_N(v)] )                                                      (l. 5)
    h^k_v    = h^k_v / ‖h^k_v‖₂                                                                         (l. 7)
    mean:      AGG = mean_u h_u
    max-pool:  AGG = max_u σ(W_pool h_u + b)          elementwise max after a linear + ReLU per neighbour  (eq. 3)

Mini-batches (Algorithm 2): from the seed nodes B^K, each layer's set is B^{k-1} = B^k ∪ N_k(B^k), going
outwards; then layers k = 1..K are computed, each only for the nodes of B^k. Here the sets are nested prefixes of
one local numbering (B^K is rows 0..B-1, B^k the first n_k rows of B^{k-1}), a node appears once in each set, and
each layer's sampled neighbours are an (n_k, S_k) table of row numbers, so every aggregation is one gather and one
mean (or max) over the S_k axis. `fanouts` = [S_1, ..., S_K] in the paper's order: S_K for the seeds themselves
(the paper's S_1 = 25, S_2 = 10 with K = 2). The sampler reads a CSR view of the edges (targets' row pointer by
bincount and cumsum, sources sorted by target) and draws one random offset for all of a layer's targets at once;
a node without neighbours samples itself.

Evaluation, prediction and inductive inference use ALL neighbours, one layer at a time over the whole graph
(scatter-mean or scatter-max over the edges; an isolated node aggregates itself, as the sampler does): exact,
deterministic, and for 200,000 nodes and 2,000,000 edges well within a second's work per layer. (The paper
samples at test time too; averaging over every neighbour is the sample mean's expectation.) Graph-level data
(a user's TUDataset) trains on whole graphs with all neighbours and a pooled readout (not in the paper).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from deepatlas.catalog import (MAX_SIZE, Bar, Count, Data, Entry, Paper, Probability, Range, Relation, Size, Train,
                               register)
from deepatlas.errors import DeepAtlasError
from deepatlas.nn.graph import GraphBatch, count, global_pool, scatter
from deepatlas.tasks.graph import GraphObjective


@dataclass
class Config:
    in_features: Size = 8
    """node features (set from the data)"""
    n_outputs: Size = 5
    """classes, or 1 for a regressed target (set from the data)"""
    level: Literal["node", "graph"] = "node"
    """node: an output per node; graph: an output per graph, read out from its nodes (set from the data)"""
    edge_features: Count = 0
    """edge features the data has (set from the data; GraphSAGE reads none)"""
    width: Size = 64
    """units of every layer's output h^k (the paper: 256)"""
    fanouts: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [25, 10])
    """S_1..S_K: neighbours drawn per node at each layer, one entry per layer (the paper: 25, 10)"""
    aggregator: Literal["mean", "pool"] = "mean"
    """mean of the neighbours' states, or max-pool: elementwise max after a linear + ReLU on each"""
    dropout: Probability = 0.0
    """dropout on the input of every layer"""
    readout: Literal["mean", "sum", "max"] = "mean"
    """graph level: how a graph's node states are pooled before the head"""


# ---- the sampler: fixed-size neighbourhoods, all targets at once ----------------------------------

class Neighbours(NamedTuple):
    """A CSR view of the edges by target: the sources of node i's incoming edges are col[ptr[i]:ptr[i+1]]."""
    ptr: Tensor
    """(N + 1,) where each node's neighbours start"""
    col: Tensor
    """(E,) the source of each edge, edges sorted by target"""

    @staticmethod
    def of(edge_index: Tensor, num_nodes: int) -> Neighbours:
        order = torch.argsort(edge_index[1], stable=True)                      # (E,) edges grouped by target
        degree = torch.bincount(edge_index[1], minlength=num_nodes)            # (N,)
        ptr = torch.cat([degree.new_zeros(1), degree.cumsum(0)])               # (N + 1,)
        return Neighbours(ptr, edge_index[0][order])

    def sample(self, nodes: Tensor, fanout: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, S) neighbours of each of `nodes` (n,), drawn uniformly WITH replacement; a node without any neighbour
        gets itself S times."""
        start, degree = self.ptr[nodes], self.ptr[nodes + 1] - self.ptr[nodes]           # (n,), (n,)
        if len(self.col) == 0:                                                            # a graph without edges
            return nodes[:, None].expand(-1, fanout).clone()
        draw = torch.rand(len(nodes), fanout, generator=generator, device=nodes.device)  # (n, S) in [0, 1)
        offset = torch.minimum((draw * degree[:, None]).long(), degree[:, None] - 1)     # (n, S) in 0..d_v - 1
        has = degree[:, None] > 0
        picked = self.col[torch.where(has, start[:, None] + offset, 0)]                  # (n, S) u ∈ N(v)
        return torch.where(has, picked, nodes[:, None])                                  # isolated: itself


class Sampled(NamedTuple):
    """A mini-batch's sampled computation graph (Algorithm 2). Rows are local: the seeds B^K are rows 0..B-1, and
    each set B^k is the first n_k rows of B^{k-1}; `x` holds the features of B^0, the largest."""
    x: Tensor
    """(n_0, F) features of every node the batch reaches"""
    neighbours: tuple[Tensor, ...]
    """per layer k = 1..K: (n_k, S_k) the rows (in B^{k-1}) of each of B^k's sampled neighbours"""
    y: Tensor
    """(B,) the seeds' targets"""
    nodes: Tensor
    """(n_0,) each row's node number in the whole graph"""
    mask: Tensor | None = None
    """None: every seed is scored (GraphObjective reads it)"""

    def to(self, device) -> Sampled:
        return Sampled(self.x.to(device), tuple(t.to(device) for t in self.neighbours), self.y.to(device),
                       self.nodes.to(device))


def computation_graph(seeds: Tensor, adjacency: Neighbours, fanouts: list[int], num_nodes: int,
                      generator: torch.Generator | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(nodes (n_0,) the nested sets B^K ⊂ ... ⊂ B^0 as one numbering, the (n_k, S_k) tables of layers 1..K).
    Outwards from the seeds, layer K first: B^{k-1} = B^k followed by the sampled nodes not already in it."""
    local = torch.full((num_nodes,), -1, dtype=torch.long, device=seeds.device)   # node number -> row, -1: none
    nodes = seeds                                                                  # B^K (a repeat: computed twice)
    local[nodes] = torch.arange(len(nodes), device=seeds.device)
    tables = []
    for fanout in reversed(fanouts):                                               # S_K, ..., S_1: K steps
        drawn = adjacency.sample(nodes, fanout, generator)                         # (n_k, S_k) node numbers
        new = drawn[local[drawn] < 0].unique()                                     # not yet in the set
        local[new] = torch.arange(len(nodes), len(nodes) + len(new), device=seeds.device)
        nodes = torch.cat([nodes, new])                                            # B^{k-1}, B^k its prefix
        tables.append(local[drawn])                                                # (n_k, S_k) rows in B^{k-1}
    return nodes, tuple(reversed(tables))                                          # layer 1's table first


class SampledNodes(Dataset):
    """The training nodes as seeds: items are node numbers; `collate` samples a batch's computation graph."""

    def __init__(self, graph: GraphBatch, fanouts: list[int]):
        self.graph, self.fanouts = graph, list(fanouts)
        self.seeds = graph.mask.nonzero().squeeze(1)                               # (n_train,)
        self.adjacency = Neighbours.of(graph.edge_index, graph.num_nodes)

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i: int) -> int:
        return int(self.seeds[i])

    def __getitems__(self, indices: list[int]) -> Tensor:
        """A batch's seeds at once (the DataLoader's batched fetch)."""
        return self.seeds[torch.as_tensor(indices, dtype=torch.long)]

    def collate(self, seeds) -> Sampled:
        seeds = torch.as_tensor(seeds, dtype=torch.long)
        nodes, tables = computation_graph(seeds, self.adjacency, self.fanouts, self.graph.num_nodes)
        return Sampled(self.graph.x[nodes], tables, self.graph.y[seeds], nodes)


# ---- the layer -----------------------------------------------------------------------------------

class SAGELayer(nn.Module):
    """h'_v = normalize(σ(W [h_v ‖ AGG(h_u : u ∈ N(v))])), on a sampled table or on all of a graph's edges."""

    def __init__(self, c_in: int, c_out: int, aggregator: str = "mean", activate: bool = True,
                 normalize: bool = True):
        super().__init__()
        self.aggregator, self.activate, self.normalize = aggregator, activate, normalize
        self.pool = nn.Linear(c_in, c_in) if aggregator == "pool" else None      # W_pool, b (eq. 3)
        self.linear = nn.Linear(2 * c_in, c_out)                                  # W^k over [h_v ‖ h_N(v)]

    def messages(self, h: Tensor) -> Tensor:
        """What each neighbour contributes: its state (mean), or σ(W_pool h_u + b) (max-pool)."""
        return h if self.pool is None else self.pool(h).relu()

    def aggregate(self, h: Tensor, n: int, neighbours: Tensor | None, edge_index: Tensor | None) -> Tensor:
        """(n, C) h_N(v) for the first n rows of h: over a sampled (n, S) table, or over every edge j -> i."""
        reduce = "mean" if self.pool is None else "max"
        m = self.messages(h)                                                      # (rows, C) once per node
        if neighbours is not None:
            drawn = m[neighbours]                                                 # (n, S, C)
            return drawn.mean(1) if reduce == "mean" else drawn.amax(1)
        agg = scatter(m[edge_index[0]], edge_index[1], n, reduce)                 # (n, C) over all neighbours
        isolated = count(edge_index[1], n, h.dtype) == 0                           # (n,) no neighbour
        return torch.where(isolated[:, None], m[:n], agg)                         # itself, as the sampler does

    def forward(self, h: Tensor, edge_index: Tensor | None = None, neighbours: Tensor | None = None) -> Tensor:
        """h (rows, C_in) -> (n, C_out): n = rows on a whole graph (edge_index), n = len(neighbours) on a sample."""
        n = h.shape[0] if neighbours is None else neighbours.shape[0]
        out = self.linear(torch.cat([h[:n], self.aggregate(h, n, neighbours, edge_index)], -1))  # (n, C_out)
        if self.activate:
            out = out.relu()
        return F.normalize(out, dim=-1) if self.normalize else out                # h / ‖h‖₂ (line 7)


# ---- the model -----------------------------------------------------------------------------------

class GraphSAGE(nn.Module):
    """K SAGE layers (ReLU, unit length), then a linear head on z_v = h^K_v (node level) or on the pooled z
    (graph level). Takes a `Sampled` mini-batch (outputs for its seeds) or a whole GraphBatch (every node)."""

    def __init__(self, cfg: Config):
        super().__init__()
        if not cfg.fanouts or cfg.level not in ("node", "graph") or cfg.aggregator not in ("mean", "pool"):
            raise DeepAtlasError("graphsage: fanouts needs one entry per layer, level node or graph, aggregator "
                                 "mean or pool")
        widths = [cfg.in_features] + [cfg.width] * len(cfg.fanouts)
        self.layers = nn.ModuleList(SAGELayer(a, b, cfg.aggregator) for a, b in zip(widths, widths[1:]))
        self.fanouts, self.level, self.readout = list(cfg.fanouts), cfg.level, cfg.readout
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.width, cfg.n_outputs)

    def hidden(self, batch: GraphBatch | Sampled) -> Tensor:
        """z: (B, width) for a sample's seeds, (N, width) for a whole graph's nodes, (G, width) pooled graphs."""
        h = batch.x
        if isinstance(batch, Sampled):
            for layer, table in zip(self.layers, batch.neighbours):
                h = layer(self.dropout(h), neighbours=table)                       # (n_k, width)
            return h
        for layer in self.layers:
            h = layer(self.dropout(h), edge_index=batch.edge_index)                # (N, width) all neighbours
        if self.level == "graph":
            return global_pool(h, batch.batch, batch.num_graphs, self.readout)     # (G, width)
        return h

    def forward(self, batch: GraphBatch | Sampled) -> Tensor:
        return self.head(self.hidden(batch))                                       # (B | N | G, K)

    def embed(self, batch: GraphBatch | Sampled) -> Tensor:
        return self.hidden(batch)


class SAGEObjective(GraphObjective):
    """Node level: trains on the training nodes in mini-batches of sampled computation graphs; evaluates on the
    whole graph with all neighbours."""

    def prepare(self, data) -> Dataset | None:
        if data.spec["level"] != "node":
            return None                       # graphs are already mini-batches of whole (small) graphs
        return SampledNodes(data.train.graph, self.model.fanouts)


register(Entry(
    name="graphsage", title="GraphSAGE (sample and aggregate)", family="graph", year=2017,
    paper=Paper("W. L. Hamilton, R. Ying, J. Leskovec", "Inductive Representation Learning on Large Graphs",
                "arXiv:1706.02216"),
    summary="Learns functions that build a node's state from a fixed-size random sample of its neighbours "
            "(mean or max-pool aggregation, concatenated with its own state, L2-normalized): mini-batches scale to "
            "large graphs, and the same weights embed nodes and graphs never seen in training.",
    when_to_use="Node classification on large graphs that do not fit a full-batch GCN, graphs that grow (new "
                "users, new papers) and must be embedded without retraining, or training on some graphs and "
                "predicting on others (inductive).",
    when_not="Small graphs where a full-batch GCN is simpler and as good; heterophilous graphs; telling graph "
             "structures apart (mean and max aggregation cannot count: use gin); edge features that matter (mpnn).",
    relations=[
        Relation("builds_on", "gcn", "learned aggregators over sampled neighbourhoods, concatenated with the node's "
                 "own state, replace GCN's fixed average"),
        Relation("alternative_to", "gcn", "mini-batches of sampled computation graphs instead of one full batch; "
                 "embeds unseen nodes and graphs"),
    ],
    config=Config, build=GraphSAGE, objective=SAGEObjective, task="graph",
    train=Train(epochs=3, batch_size=512, lr=0.01, schedule="cosine"),
    data=Data("sbm-large"),
    bar=Bar("accuracy", 0.85, "max", 300),
    notes="Measured at one thread on the 2-core CPU shared with other jobs: sbm-large (200,000 nodes, 2.0M edges) "
          "test accuracy 0.936 in 39 s (3 epochs of 235 sampled mini-batches of 512 seeds, fan-outs 25 and 10, "
          "mean aggregator, width 64, AdamW lr 0.01 with a cosine schedule; validation and test over the whole graph "
          "with all neighbours), peak resident memory of the whole `deepatlas bench graphsage` process 1.29 GiB "
          "(/usr/bin/time -v; the 4 GiB bar). The same nodes' features alone: about 0.48 (logistic regression). "
          "benchmarks/graph_vs_pyg.py: sampled mini-batches as fast as PyG's SAGEConv on the same bipartite blocks, "
          "about 7x faster than running every layer over the whole sampled subgraph (NeighborLoader's usage).",
))
