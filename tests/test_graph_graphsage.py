"""GraphSAGE ("graphsage"): the sampler's promises (only neighbours, exactly S each, itself when isolated; the nested
sets of a computation graph), permutation equivariance with full neighbourhoods, PyTorch Geometric's SAGEConv with
the same weights (mean, and max-pool as its projected max), a sampled batch computing what the whole graph
computes where sampling has no choice, learning on a small planted partition, and inference on a graph never seen."""
import networkx as nx
import numpy as np
import pytest
import torch

import deepatlas
from deepatlas.data import graphs
from deepatlas.errors import DeepAtlasError
from deepatlas.models.graph.graphsage import (Config, GraphSAGE, Neighbours, SAGELayer, Sampled, SampledNodes,
                                              computation_graph)
from deepatlas.nn.graph import GraphBatch, single


def random_graph(n: int = 16, p: float = 0.3, features: int = 5, seed: int = 0, isolated: bool = True) -> GraphBatch:
    """An undirected random graph both ways, and (with `isolated`) a last node without any edge."""
    g = nx.gnp_random_graph(n - isolated, p, seed=seed)
    ends = torch.tensor(list(g.edges), dtype=torch.long).T
    edge_index = torch.cat([ends, ends.flip(0)], 1)
    return single(torch.randn(n, features, generator=torch.Generator().manual_seed(seed)), edge_index)


def permuted(g: GraphBatch, perm: torch.Tensor) -> GraphBatch:
    """New node k is old node perm[k]."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    return g._replace(x=g.x[perm], edge_index=inverse[g.edge_index], batch=g.batch[perm])


# ---- the sampler ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fanout", [1, 3, 25])
def test_the_sampler_draws_exactly_s_neighbours_each_and_only_neighbours_or_itself_when_isolated(fanout):
    g = random_graph(40, p=0.1, seed=3)
    edges = set(map(tuple, g.edge_index.T.tolist()))                    # (j, i): j is a neighbour of i
    degree = torch.bincount(g.edge_index[1], minlength=g.num_nodes)
    adjacency = Neighbours.of(g.edge_index, g.num_nodes)
    nodes = torch.arange(g.num_nodes)
    drawn = adjacency.sample(nodes, fanout, torch.Generator().manual_seed(0))
    assert drawn.shape == (g.num_nodes, fanout) and drawn.dtype == torch.long
    for v, row in zip(nodes.tolist(), drawn.tolist()):                  # (checking only: a loop in the test)
        if degree[v] == 0:
            assert row == [v] * fanout
        else:
            assert all((u, v) in edges for u in row)
    assert degree[-1] == 0 and (drawn[-1] == g.num_nodes - 1).all()


def test_the_sampler_draws_with_replacement_uniformly_over_the_neighbours():
    star = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])                  # node 0's in-neighbours 1..4
    drawn = Neighbours.of(star, 5).sample(torch.zeros(1, dtype=torch.long), 40_000, torch.Generator().manual_seed(1))
    share = torch.bincount(drawn[0], minlength=5)[1:].double() / 40_000
    assert torch.allclose(share, torch.full((4,), 0.25, dtype=torch.float64), atol=0.015)
    assert Neighbours.of(star, 5).sample(torch.tensor([2]), 6).tolist() == [[2] * 6]       # 2 receives nothing
    empty = Neighbours.of(torch.zeros(2, 0, dtype=torch.long), 3)
    assert empty.sample(torch.arange(3), 2).tolist() == [[0, 0], [1, 1], [2, 2]]


def test_a_computation_graph_nests_its_sets_and_its_tables_point_to_sampled_neighbours():
    g = random_graph(60, p=0.08, seed=5)
    edges = set(map(tuple, g.edge_index.T.tolist())) | {(v, v) for v in range(g.num_nodes)}
    seeds = torch.tensor([4, 17, 59, 30])                                  # 59: the isolated node
    nodes, tables = computation_graph(seeds, Neighbours.of(g.edge_index, g.num_nodes), [5, 3], g.num_nodes)
    assert torch.equal(nodes[:4], seeds) and len(nodes.unique()) == len(nodes)    # seeds first, each node once
    assert [t.shape[1] for t in tables] == [5, 3]                          # layer 1: S_1 = 5, layer 2 (seeds): S_2 = 3
    assert tables[1].shape[0] == 4 and int(tables[1].max()) < tables[0].shape[0]    # seeds' rows point into B^1
    assert tables[0].shape[0] > 4 and int(tables[0].max()) < len(nodes)              # B^1's rows into B^0
    for table in tables:                                                   # each target row v, sample row u: an edge
        targets = nodes[:table.shape[0]]
        for v, row in zip(targets.tolist(), nodes[table].tolist()):
            assert all((u, v) in edges for u in row)
    batch = SampledNodes(g._replace(y=torch.arange(60), mask=torch.ones(60, dtype=torch.bool)), [5, 3]).collate(seeds)
    assert isinstance(batch, Sampled) and torch.equal(batch.y, seeds) and torch.equal(batch.x, g.x[batch.nodes])


# ---- the layer and the model ----------------------------------------------------------------------

@pytest.mark.parametrize("aggregator", ["mean", "pool"])
def test_the_layer_and_the_model_are_permutation_equivariant_with_full_neighbourhoods(aggregator):
    torch.manual_seed(1)
    g = random_graph(25, features=5)
    perm = torch.randperm(g.num_nodes)
    layer = SAGELayer(5, 7, aggregator)
    model = GraphSAGE(Config(in_features=5, n_outputs=3, width=8, aggregator=aggregator)).eval()
    for f in (lambda b: layer(b.x, b.edge_index), model, model.embed):
        assert torch.allclose(f(permuted(g, perm)), f(g)[perm], atol=1e-5)
    out = layer(g.x, g.edge_index)
    assert torch.allclose(out.norm(dim=-1), torch.ones(g.num_nodes), atol=1e-5)     # unit length (line 7)
    assert (out >= 0).all()                                                        # σ = ReLU before it


@pytest.mark.parametrize("aggregator", ["mean", "pool"])
def test_our_layer_computes_what_pyg_sageconv_computes_with_the_same_weights(aggregator):
    from torch_geometric import nn as pyg  # the dev extra: equivalence runs in CI, never skipped
    torch.manual_seed(3)
    g = random_graph(30, p=0.2, features=6, isolated=False)
    ours = SAGELayer(6, 5, aggregator, activate=False)        # SAGEConv has no σ: compare W[h ‖ agg] + b, normalized
    theirs = pyg.SAGEConv(6, 5, aggr="mean" if aggregator == "mean" else "max", normalize=True,
                          project=aggregator == "pool", root_weight=True)
    with torch.no_grad():
        theirs.lin_r.weight.copy_(ours.linear.weight[:, :6])                # the node's own part of W
        theirs.lin_l.weight.copy_(ours.linear.weight[:, 6:])                # the neighbours' part
        theirs.lin_l.bias.copy_(ours.linear.bias)
        if aggregator == "pool":
            theirs.lin.weight.copy_(ours.pool.weight)                       # W_pool, b: projected, then max
            theirs.lin.bias.copy_(ours.pool.bias)
    assert torch.allclose(ours(g.x, g.edge_index), theirs(g.x, g.edge_index), atol=1e-5)


@pytest.mark.parametrize("aggregator", ["mean", "pool"])
def test_a_sampled_batch_computes_what_the_whole_graph_computes_where_sampling_has_no_choice(aggregator):
    """Each node with one neighbour (a perfect matching) or none: any draw is the full neighbourhood."""
    torch.manual_seed(4)
    ends = torch.tensor([[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]])
    g = single(torch.randn(11, 4), torch.cat([ends, ends.flip(0)], 1), y=torch.zeros(11, dtype=torch.long),
               mask=torch.ones(11, dtype=torch.bool))                      # node 10: isolated
    model = GraphSAGE(Config(in_features=4, n_outputs=3, width=6, fanouts=[4, 2], aggregator=aggregator)).eval()
    seeds = torch.tensor([3, 10, 6, 0])
    batch = SampledNodes(g, model.fanouts).collate(seeds)
    assert torch.allclose(model(batch), model(g)[seeds], atol=1e-6)
    assert model(batch).shape == (4, 3) and model.embed(batch).shape == (4, 6)


@pytest.mark.parametrize("readout", ["mean", "max"])
def test_graph_level_data_trains_on_whole_graphs_and_its_readout_ignores_node_order(readout):
    from deepatlas.models.graph.graphsage import SAGEObjective
    from deepatlas.nn.graph import collate
    torch.manual_seed(6)
    batch = collate([random_graph(9, seed=1), random_graph(13, seed=2), random_graph(6, seed=3)])
    model = GraphSAGE(Config(in_features=5, n_outputs=4, width=8, level="graph", readout=readout)).eval()
    perm = torch.randperm(batch.num_nodes)
    assert model(batch).shape == (3, 4) and torch.allclose(model(permuted(batch, perm)), model(batch), atol=1e-5)
    structure = graphs.load("structure")
    assert SAGEObjective(model).prepare(structure) is None                     # graphs: no neighbour sampling
    nodes = graphs.load("sbm-200")
    sampled = SAGEObjective(GraphSAGE(Config(in_features=8, fanouts=[3, 2]))).prepare(nodes)
    assert isinstance(sampled, SampledNodes) and len(sampled) == int(nodes.train.graph.mask.sum())


def test_bad_configs_are_refused_in_one_line():
    with pytest.raises(DeepAtlasError, match="fanouts"):
        GraphSAGE(Config(fanouts=[]))


# ---- learning, and a graph never seen ------------------------------------------------------------

def test_graphsage_learns_a_small_planted_partition_in_sampled_mini_batches_and_predicts_another_graph(tmp_path):
    from sklearn.linear_model import LogisticRegression
    result = deepatlas.train("graphsage", data="sbm-3000", out=tmp_path / "run",
                             overrides={"epochs": "6", "batch_size": "128"})
    data = graphs.load("sbm-3000")
    x, y = data.train.graph.x.numpy(), data.train.graph.y.numpy()
    train, test = data.train.graph.mask.numpy(), data.test.graph.mask.numpy()
    features_alone = LogisticRegression(max_iter=1000).fit(x[train], y[train]).score(x[test], y[test])
    assert result["test"]["accuracy"] >= 0.8 and result["test"]["accuracy"] > features_alone + 0.25
    # inductive: a planted partition of another seed, never seen, standardized as training standardized its features
    model = deepatlas.load(tmp_path / "run").model.eval()
    x_new, edges_new, y_new = graphs.planted_partition(2_000, 5, seed=1)
    f = data.spec["features"]
    x_new = (x_new - torch.tensor(f["mean"], dtype=torch.float32)) / torch.tensor(f["std"], dtype=torch.float32)
    with torch.no_grad():
        accuracy = (model(single(x_new, edges_new)).argmax(-1) == y_new).float().mean().item()
    assert accuracy >= 0.75                                                   # chance: 0.2
    assert not np.array_equal(edges_new[:, :50].numpy(), data.train.graph.edge_index[:, :50].numpy())
