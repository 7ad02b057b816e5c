"""gin (Xu et al. 2019): the sum tells apart graphs that the mean and the max cannot, with the same weights;
permutation equivariance of its layer and invariance of its readout; its layer against PyTorch Geometric's GINConv
(ε fixed and learned); its scoring is one linear map of the concatenated per-layer readouts; it learns regular
graphs' degrees where a mean aggregator stays at chance."""
import copy

import networkx as nx
import pytest
import torch

import deepatlas
from deepatlas.data import graphs
from deepatlas.models.graph.gin import GIN, Config, GINLayer
from deepatlas.nn.graph import GraphBatch, collate, single


def from_networkx(g: nx.Graph, features: torch.Tensor | None = None) -> GraphBatch:
    ends = torch.tensor(list(g.edges), dtype=torch.long).T
    x = torch.ones(g.number_of_nodes(), 1) if features is None else features
    return single(x, torch.cat([ends, ends.flip(0)], 1))


def random_graph(n: int = 12, p: float = 0.3, features: int = 5, seed: int = 0) -> GraphBatch:
    """A random undirected graph, both ways, its last node without any edge."""
    g = nx.gnp_random_graph(n - 1, p, seed=seed)
    g.add_node(n - 1)
    return from_networkx(g, torch.randn(n, features, generator=torch.Generator().manual_seed(seed)))


def permuted(g: GraphBatch, perm: torch.Tensor) -> GraphBatch:
    """The same graph(s) with new node k = old node perm[k]."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    return g._replace(x=g.x[perm], edge_index=inverse[g.edge_index], batch=g.batch[perm])


def with_random_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Running statistics and affine weights drawn at random, so that eval-mode batch norm is not the identity."""
    torch.manual_seed(5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return model.eval()


# ---- the defining property: the sum counts neighbours ---------------------------------------------

def test_sum_tells_apart_a_cycle_and_a_bipartite_graph_that_mean_and_max_see_as_one():
    """C_6 (2-regular) and K_{3,3} (3-regular), six nodes each, every feature 1: a node's neighbour sum is 2 or 3,
    its neighbour mean and max are 1 in both, so with the SAME weights mean and max give the two graphs the same
    embedding and the same scores, and the sum does not."""
    pair = collate([from_networkx(nx.cycle_graph(6)), from_networkx(nx.complete_bipartite_graph(3, 3))])
    torch.manual_seed(0)
    model = with_random_batch_norm(GIN(Config(in_features=1, n_outputs=2, width=16, layers=3)))
    out = {}
    for aggregate in ("sum", "mean", "max"):
        for conv in model.convs:
            conv.aggregate = aggregate
        with torch.no_grad():
            out[aggregate] = model.embed(pair), model(pair)
    embedding, scores = out["sum"]
    assert (embedding[0] - embedding[1]).abs().max() > 1e-2 and (scores[0] - scores[1]).abs().max() > 1e-3
    for aggregate in ("mean", "max"):
        embedding, scores = out[aggregate]
        assert torch.allclose(embedding[0], embedding[1], atol=1e-6) and torch.allclose(scores[0], scores[1], atol=1e-6)
    built = GIN(Config(in_features=1, n_outputs=2, width=16, layers=3, aggregate="mean"))   # the config field
    built.load_state_dict(model.state_dict())
    assert torch.allclose(built.eval().embed(pair), out["mean"][0])


def test_one_node_with_more_equal_neighbours_is_told_apart_only_by_the_sum():
    """The paper's Figure 3 (a): node 0 with two neighbours in state c, or with three; its new state."""
    star2, star3 = from_networkx(nx.star_graph(2)), from_networkx(nx.star_graph(3))
    torch.manual_seed(1)
    layer = with_random_batch_norm(GINLayer(1, 8))
    for aggregate, differ in (("sum", True), ("mean", False), ("max", False)):
        layer.aggregate = aggregate
        with torch.no_grad():
            a, b = layer(star2.x, star2.edge_index)[0], layer(star3.x, star3.edge_index)[0]
        assert (not torch.allclose(a, b, atol=1e-4)) == differ, aggregate


# ---- permutations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("learn_eps", [False, True])
def test_the_layer_and_the_node_model_are_permutation_equivariant(learn_eps):
    torch.manual_seed(2)
    g = random_graph(20, features=5)
    perm = torch.randperm(g.num_nodes)
    layer = with_random_batch_norm(GINLayer(5, 8, eps=0.2, learn_eps=learn_eps))
    model = with_random_batch_norm(GIN(Config(in_features=5, n_outputs=3, width=8, level="node")))
    for f in (lambda b: layer(b.x, b.edge_index), model, model.embed):
        assert torch.allclose(f(permuted(g, perm)), f(g)[perm], atol=1e-5)
    layer.train()                                    # batch statistics: a permutation leaves them as they were
    assert torch.allclose(layer(permuted(g, perm).x, permuted(g, perm).edge_index), layer(g.x, g.edge_index)[perm],
                          atol=1e-5)


@pytest.mark.parametrize("readout", ["sum", "mean", "max"])
def test_the_graph_readout_is_invariant_to_the_order_of_every_graphs_nodes(readout):
    torch.manual_seed(3)
    batch = collate([random_graph(9, seed=1), random_graph(13, seed=2), random_graph(6, seed=3)])
    model = with_random_batch_norm(GIN(Config(in_features=5, n_outputs=4, width=8, readout=readout)))
    moved = permuted(batch, torch.randperm(batch.num_nodes))          # nodes shuffled across the whole batch
    assert model(batch).shape == (3, 4) and model.embed(batch).shape == (3, 5 + 4 * 8)
    assert torch.allclose(model(moved), model(batch), atol=1e-5)
    assert torch.allclose(model.embed(moved), model.embed(batch), atol=1e-5)


def test_the_summed_heads_are_one_linear_layer_on_the_concatenated_readouts():
    """Eq. 4.2's h_G = [h_G^(0) ‖ ... ‖ h_G^(K)] scored by one linear map: its weight is the heads' side by side."""
    torch.manual_seed(4)
    batch = collate([random_graph(8, seed=6), random_graph(11, seed=7)])
    model = with_random_batch_norm(GIN(Config(in_features=5, n_outputs=3, width=8, layers=2)))
    weight = torch.cat([h.weight for h in model.heads], 1)               # (K, F + 2 · width)
    bias = sum(h.bias for h in model.heads)
    assert torch.allclose(model(batch), model.embed(batch) @ weight.T + bias, atol=1e-5)
    sums = torch.stack([batch.x[batch.batch == g].sum(0) for g in range(2)])     # h_G^(0): the input's sum
    assert torch.allclose(model.embed(batch)[:, :5], sums, atol=1e-5)


# ---- against PyTorch Geometric -----------------------------------------------------------------------

@pytest.mark.parametrize("learn_eps", [False, True])
def test_our_layer_computes_what_pyg_ginconv_computes_with_our_mlp(learn_eps):
    from torch_geometric import nn as pyg  # the dev extra: equivalence runs in CI, never skipped
    torch.manual_seed(6)
    g = random_graph(30, p=0.2, features=6)
    eps = 0.37 if learn_eps else 0.0                                      # GIN-ε starting off zero, or GIN-0
    ours = with_random_batch_norm(GINLayer(6, 10, eps=eps, learn_eps=learn_eps))
    theirs = pyg.GINConv(copy.deepcopy(ours.mlp), eps=eps, train_eps=learn_eps).eval()
    theirs.nn.load_state_dict(ours.mlp.state_dict())                     # GINConv re-initializes the MLP it gets
    assert isinstance(ours.eps, torch.nn.Parameter) == learn_eps == isinstance(theirs.eps, torch.nn.Parameter)
    assert torch.allclose(ours(g.x, g.edge_index), theirs(g.x, g.edge_index), atol=1e-5)
    ours.train(), theirs.train()                                          # batch statistics, both
    a, b = ours(g.x, g.edge_index), theirs(g.x, g.edge_index)
    assert torch.allclose(a, b, atol=1e-5)
    if learn_eps:                                                         # the same gradient reaches ε
        (a * torch.linspace(-1, 1, 10)).sum().backward()
        (b * torch.linspace(-1, 1, 10)).sum().backward()
        assert torch.allclose(ours.eps.grad, theirs.eps.grad, atol=1e-4)


# ---- learning ----------------------------------------------------------------------------------------

def fit(model: GIN, train, test, epochs: int = 40) -> float:
    """A few epochs of Adam over mini-batches of regular graphs; the held-out accuracy."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    order = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for chunk in train.indices[torch.randperm(len(train.indices), generator=order)].split(32):
            batch = train.pool.gather(chunk)
            loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    batch = test.everything()
    with torch.no_grad():
        return (model(batch).argmax(-1) == batch.y).float().mean().item()


def test_gin_learns_the_degree_of_small_regular_graphs_where_a_mean_aggregator_stays_at_chance():
    pool, _ = graphs.regular_graphs(count=240)
    train, test = graphs.GraphSet(pool, range(160)), graphs.GraphSet(pool, range(160, 240))
    accuracy = {}
    for aggregate in ("sum", "mean"):
        torch.manual_seed(0)
        accuracy[aggregate] = fit(GIN(Config(width=16, layers=2, aggregate=aggregate, dropout=0.0)), train, test)
    assert accuracy["sum"] >= 0.9 and accuracy["mean"] <= 0.45, accuracy     # chance: about 0.25


def test_gin_trains_on_structure_through_the_api_and_runs_at_node_level(tmp_path):
    result = deepatlas.train("gin", data="structure", out=tmp_path / "run", overrides={"epochs": "2"})
    assert result["test"]["accuracy"] >= 0.85 > result["baseline"]["accuracy"]
    assert (tmp_path / "run" / "embeddings.png").exists()
    model = deepatlas.load(tmp_path / "run").model
    assert isinstance(model, GIN) and model.level == "graph" and len(model.heads) == 1 + len(model.convs)
    assert deepatlas.evaluate(tmp_path / "run")["accuracy"] == pytest.approx(result["test"]["accuracy"])
    node = deepatlas.train("gin", data="karate", out=tmp_path / "karate", overrides={"epochs": "60"})
    assert node["test"]["accuracy"] > node["baseline"]["accuracy"]


def test_a_steps_budget_draws_whole_graphs_batched_as_the_set_batches_them(tmp_path):
    """`steps` draws a random subset of the training graphs once; the subset keeps the graph set's collate."""
    result = deepatlas.train("gin", data="structure", out=tmp_path / "run",
                             overrides={"epochs": "2", "steps": "40", "batch_size": "32"})
    assert result["status"] == "completed" and result["test"]["accuracy"] > result["baseline"]["accuracy"]
