"""The "gat" entry (Veličković et al. 2018): its attention against a dense masked softmax computed from the same
parameters (each neighbourhood sums to 1, nothing off the graph), permutation equivariance, PyTorch Geometric's
GATConv with our weights copied in (heads concatenated and averaged), the attention plot, and learning."""
import networkx as nx
import pytest
import torch
import torch.nn.functional as F

import deepatlas
from deepatlas.data import graphs
from deepatlas.errors import DeepAtlasError
from deepatlas.models.graph.gat import GAT, Config, GraphAttention, neighbourhoods
from deepatlas.nn.graph import GraphBatch, collate, scatter, single


def random_graph(n: int = 12, p: float = 0.3, features: int = 5, seed: int = 0) -> GraphBatch:
    """An undirected random graph without loops, both ways, and a node (the last) without any edge."""
    g = nx.gnp_random_graph(n - 1, p, seed=seed)
    ends = torch.tensor(list(g.edges), dtype=torch.long).T
    edge_index = torch.cat([ends, ends.flip(0)], 1)
    return single(torch.randn(n, features, generator=torch.Generator().manual_seed(seed)), edge_index)


def permuted(g: GraphBatch, perm: torch.Tensor) -> GraphBatch:
    """The same graph with node i renamed inverse[i]: new node k is old node perm[k]."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    return g._replace(x=g.x[perm], edge_index=inverse[g.edge_index], batch=g.batch[perm])


def dense_attention(layer: GraphAttention, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """(nh, N, N) the attention of row i on column j, written densely from the layer's W, a_dst and a_src: every pair
    scored by LeakyReLU(aᵀ[W h_i ‖ W h_j]), the pairs that are not edges (nor loops) masked to -inf, a softmax per row."""
    n = x.shape[0]
    wh = (x @ layer.linear.weight.T).view(n, layer.heads, layer.c_out).transpose(0, 1)        # (nh, N, hs)
    pair = torch.cat([wh[:, :, None].expand(-1, -1, n, -1), wh[:, None].expand(-1, n, -1, -1)], -1)  # [Wh_i ‖ Wh_j]
    a = torch.cat([layer.att_dst, layer.att_src], -1)                                        # (nh, 2 hs)
    e = F.leaky_relu(torch.einsum("hijc,hc->hij", pair, a), layer.slope)                    # (nh, N, N)
    adjacent = torch.eye(n, dtype=torch.bool)
    adjacent[edge_index[1], edge_index[0]] = True                                            # row i: j -> i, and i
    return torch.softmax(e.masked_fill(~adjacent, -torch.inf), -1)


def test_attention_sums_to_one_over_each_neighbourhood_and_is_zero_off_the_graph():
    torch.manual_seed(0)
    g = random_graph(16, features=6)
    g = g._replace(edge_index=torch.cat([g.edge_index, torch.tensor([[3], [3]])], 1))   # a loop given: kept once
    layer = GraphAttention(6, 4, heads=3, concat=True).double().eval()
    x = g.x.double()
    edge_index = neighbourhoods(g)
    assert edge_index.shape[1] == g.edge_index.shape[1] - 1 + g.num_nodes
    alpha = layer.coefficients(layer.project(x), edge_index)                              # (E, nh)
    sums = scatter(alpha, edge_index[1], g.num_nodes, "sum")
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12)                        # every node, the isolated too
    ours = torch.zeros(3, g.num_nodes, g.num_nodes, dtype=torch.float64)
    ours[:, edge_index[1], edge_index[0]] = alpha.T                                        # off the graph: stays 0
    reference = dense_attention(layer, x, g.edge_index)
    assert torch.allclose(ours, reference, atol=1e-12)
    adjacent = reference.new_zeros(g.num_nodes, g.num_nodes, dtype=torch.bool)
    adjacent[edge_index[1], edge_index[0]] = True
    assert (reference[:, ~adjacent] == 0).all() and (reference[:, adjacent] > 0).all()
    with torch.no_grad():
        layer.bias.normal_()
    wh = (x @ layer.linear.weight.T).view(-1, 3, 4).transpose(0, 1)                       # (nh, N, hs)
    expected = (reference @ wh).transpose(0, 1).flatten(1) + layer.bias                   # heads concatenated
    assert torch.allclose(layer(x, edge_index), expected, atol=1e-12)


def test_hidden_heads_are_concatenated_and_the_last_layers_averaged():
    model = GAT(Config(in_features=5, n_outputs=3, width=4, heads=6, out_heads=2, layers=3)).eval()
    g = random_graph(10)
    assert [c.concat for c in model.convs] == [True, True, False]
    assert model.convs[1].linear.in_features == 24 and model(g).shape == (10, 3) and model.embed(g).shape == (10, 24)
    edge_index, alpha = model.attention(g)
    assert alpha.shape == (edge_index.shape[1], 2) and edge_index.shape[1] == g.edge_index.shape[1] + 10
    graph = GAT(Config(in_features=5, n_outputs=4, level="graph", width=4, heads=2)).eval()
    batch = collate([random_graph(7, seed=1), random_graph(9, seed=2)])
    assert graph(batch).shape == (2, 4) and graph.embed(batch).shape == (2, 8)
    with pytest.raises(DeepAtlasError, match="gat: layers"):
        GAT(Config(layers=0))


def test_attention_dropout_acts_in_training_only():
    torch.manual_seed(4)
    g = random_graph(20, p=0.4)
    model = GAT(Config(in_features=5, n_outputs=3, dropout=0.0, attention_dropout=0.6))
    assert not torch.equal(model(g), model(g))                      # a random subset of each neighbourhood
    model.eval()
    assert torch.equal(model(g), model(g))


def test_the_layer_and_model_are_permutation_equivariant():
    torch.manual_seed(1)
    g = random_graph(20, features=5)
    perm = torch.randperm(g.num_nodes)
    layer = GraphAttention(5, 7, heads=4, concat=True)
    model = GAT(Config(in_features=5, n_outputs=3, width=4, heads=3)).eval()
    for f in (lambda b: layer(b.x, neighbourhoods(b)), model, model.embed):
        assert torch.allclose(f(permuted(g, perm)), f(g)[perm], atol=1e-5)
    pooled = GAT(Config(in_features=5, n_outputs=2, level="graph", width=4, heads=3)).eval()
    assert torch.allclose(pooled(permuted(g, perm)), pooled(g), atol=1e-5)


def test_attention_cannot_tell_regular_graphs_apart():
    """The structure data's promise for attention: equal features everywhere stay equal, whatever the degree."""
    batch = graphs.load("structure").test.everything()
    model = GAT(Config(in_features=1, n_outputs=4, level="graph", readout="mean")).eval()
    out = model(batch)
    assert torch.allclose(out, out[:1].expand_as(out), atol=1e-5)


@pytest.mark.parametrize("concat", [True, False])
def test_our_layer_computes_what_pyg_gatconv_computes_with_the_same_weights(concat):
    from torch_geometric import nn as pyg  # the dev extra: equivalence runs in CI, never skipped
    torch.manual_seed(3)
    g = random_graph(30, p=0.2, features=6)
    ours = GraphAttention(6, 5, heads=4, concat=concat)
    with torch.no_grad():
        ours.bias.normal_()
    theirs = pyg.GATConv(6, 5, heads=4, concat=concat, negative_slope=0.2, dropout=0.0)
    with torch.no_grad():
        theirs.lin.weight.copy_(ours.linear.weight)                  # (nh·hs, C_in) both
        theirs.att_src.copy_(ours.att_src[None])                     # (1, nh, hs)
        theirs.att_dst.copy_(ours.att_dst[None])
        theirs.bias.copy_(ours.bias)
    expected, (edges, alpha) = theirs(g.x, g.edge_index, return_attention_weights=True)
    assert torch.allclose(ours(g.x, neighbourhoods(g)), expected, atol=1e-5)
    mine = torch.zeros(4, g.num_nodes, g.num_nodes)
    mine[:, neighbourhoods(g)[1], neighbourhoods(g)[0]] = ours.coefficients(ours.project(g.x), neighbourhoods(g)).T
    pyg_dense = torch.zeros_like(mine)
    pyg_dense[:, edges[1], edges[0]] = alpha.T
    assert torch.allclose(mine, pyg_dense, atol=1e-6)


def test_gat_learns_a_small_planted_partition_far_beyond_its_features_alone(tmp_path):
    from sklearn.linear_model import LogisticRegression
    result = deepatlas.train("gat", data="sbm-1000", out=tmp_path / "run", overrides={"epochs": "100", "lr": "0.01"})
    data = graphs.load("sbm-1000")
    x, y = data.train.graph.x.numpy(), data.train.graph.y.numpy()
    train, test = data.train.graph.mask.numpy(), data.test.graph.mask.numpy()
    features_alone = LogisticRegression(max_iter=1000).fit(x[train], y[train]).score(x[test], y[test])
    assert result["baseline"]["accuracy"] == pytest.approx(0.2)
    assert result["test"]["accuracy"] >= 0.8 and result["test"]["accuracy"] >= features_alone + 0.25
    assert (tmp_path / "run" / "attention.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "embeddings.png").stat().st_size > 10_000


@pytest.mark.parametrize("target", ["classes", "regression"])
def test_the_attention_plot_draws_one_labelled_nodes_neighbourhood_with_unlabelled_neighbours(tmp_path, target):
    g = random_graph(20, p=0.4)
    if target == "classes":
        y, spec = torch.arange(20) % 3, {"target": "classes", "classes": ["a", "b", "c"], "source": "mine.csv"}
        y[::4] = -1                                                  # unlabelled nodes: grey, never the centre
    else:
        y, spec = torch.randn(20), {"target": "regression", "target_std": 2.0, "target_mean": 1.0, "source": "mine.csv"}
        y[::4] = torch.nan
    model = GAT(Config(in_features=5, n_outputs=3 if target == "classes" else 1, heads=2)).eval()
    with torch.no_grad():
        graphs.plot_attention(model, g._replace(y=y), spec, tmp_path / "attention.png")
    assert (tmp_path / "attention.png").stat().st_size > 10_000
