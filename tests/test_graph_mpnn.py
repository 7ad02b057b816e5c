"""mpnn (Gilmer et al. 2017): the edge network's per-edge matrices and messages against a hand loop, permutation
equivariance of message passing and invariance of set2set, PyTorch Geometric's NNConv with our weights, set2set
against a per-graph reference, mae_vs_mean, and learning TPSA from the molecules in seconds."""
import networkx as nx
import pytest
import torch

import deepatlas
from deepatlas.errors import DeepAtlasError
from deepatlas.models.graph.mpnn import MPNN, Config, EdgeConditionedMessage, EdgeNetwork, Set2Set
from deepatlas.nn.graph import GraphBatch, collate, single

D, WIDTH = 4, 6


def molecule_like(n: int = 9, p: float = 0.35, seed: int = 0, features: int = 5) -> GraphBatch:
    """A random undirected graph, both ways, with one-hot bond-like features (the same on both directions)."""
    g = nx.gnp_random_graph(n, p, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    ends = torch.tensor(list(g.edges), dtype=torch.long).T
    kinds = torch.nn.functional.one_hot(torch.randint(0, D, (ends.shape[1],), generator=gen), D).float()
    return single(torch.randn(n, features, generator=gen), torch.cat([ends, ends.flip(0)], 1),
                  edge_attr=torch.cat([kinds, kinds]))


def relabelled(g: GraphBatch, perm: torch.Tensor, edge_perm: torch.Tensor) -> GraphBatch:
    """New node k is old node perm[k]; the edges are listed in another order too."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    return g._replace(x=g.x[perm], batch=g.batch[perm], edge_index=inverse[g.edge_index][:, edge_perm],
                      edge_attr=g.edge_attr[edge_perm])


def test_the_edge_network_gives_one_matrix_per_edge_and_the_message_is_the_hand_loop():
    torch.manual_seed(0)
    g = molecule_like(6, 0.5)
    edge_network = EdgeNetwork(D, WIDTH, 16).double()
    e = g.edge_attr.double()
    matrices = edge_network(e, e.shape[0], e)
    assert matrices.shape == (g.edge_index.shape[1], WIDTH, WIDTH)
    direct = edge_network.mlp(e).view(-1, WIDTH, WIDTH)                   # the MLP on every edge, no sharing
    assert torch.allclose(matrices, direct, atol=1e-12)
    h = torch.randn(6, WIDTH, dtype=torch.float64)
    for aggregate in ("sum", "mean"):
        message = EdgeConditionedMessage(WIDTH, aggregate, root=False).double()
        expected = torch.zeros(6, WIDTH, dtype=torch.float64)
        count = torch.zeros(6, dtype=torch.float64)
        for k, (w, v) in enumerate(g.edge_index.T.tolist()):              # m_v = Σ_w A(e_vw) h_w, by hand
            expected[v] += direct[k] @ h[w]
            count[v] += 1
        if aggregate == "mean":
            expected /= count.clamp(min=1)[:, None]
        assert torch.allclose(message(h, g.edge_index, matrices), expected, atol=1e-10)
    rooted = EdgeConditionedMessage(WIDTH, "sum", root=True).double()                   # + W_root h_v + b
    expected = EdgeConditionedMessage(WIDTH, "sum", root=False)(h, g.edge_index, matrices) + rooted.root(h)
    assert torch.allclose(rooted(h, g.edge_index, matrices), expected, atol=1e-10)


def test_message_passing_is_permutation_equivariant_and_set2set_and_the_model_invariant():
    torch.manual_seed(1)
    batch = collate([molecule_like(9, seed=1), molecule_like(12, seed=2), molecule_like(5, 0.6, seed=3)])
    perm = torch.randperm(batch.num_nodes)                                 # atoms shuffled across the batch
    edge_perm = torch.randperm(batch.edge_index.shape[1])
    moved = relabelled(batch, perm, edge_perm)
    model = MPNN(Config(in_features=5, edge_features=D, width=WIDTH, edge_hidden=16)).eval()
    matrices = model.edge_network(batch.edge_attr, batch.edge_index.shape[1], batch.x)
    h = torch.randn(batch.num_nodes, WIDTH)
    layer = model.message(h, batch.edge_index, matrices)
    layer_moved = model.message(h[perm], moved.edge_index, matrices[edge_perm])
    assert torch.allclose(layer_moved, layer[perm], atol=1e-5)
    assert torch.allclose(model.nodes(moved), model.nodes(batch)[perm], atol=1e-5)
    pooled = model.set2set(h, batch.batch, 3)
    assert pooled.shape == (3, 2 * WIDTH)
    assert torch.allclose(model.set2set(h[perm], moved.batch, 3), pooled, atol=1e-5)
    for readout in ("set2set", "set2set+sum"):
        model = MPNN(Config(in_features=5, edge_features=D, width=WIDTH, edge_hidden=16, readout=readout)).eval()
        assert model(batch).shape == (3, 1)
        assert torch.allclose(model(moved), model(batch), atol=1e-5)
        assert torch.allclose(model.embed(moved), model.embed(batch), atol=1e-5)


def test_set2set_equals_a_direct_per_graph_reference():
    torch.manual_seed(2)
    sizes = [4, 7, 1, 5]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    h = torch.randn(len(batch), WIDTH, dtype=torch.float64)
    set2set = Set2Set(WIDTH, steps=3).double()
    lstm = set2set.lstm
    rows = []
    for g in range(4):                                                     # the reference: one graph at a time
        m = h[batch == g]
        q_star = torch.zeros(1, 2 * WIDTH, dtype=torch.float64)
        state = (torch.zeros(1, WIDTH, dtype=torch.float64), torch.zeros(1, WIDTH, dtype=torch.float64))
        for _ in range(3):
            state = lstm(q_star, state)
            a = torch.softmax(m @ state[0][0], 0)                          # attention over this graph's nodes
            q_star = torch.cat([state[0], (a[:, None] * m).sum(0, keepdim=True)], -1)
        rows.append(q_star[0])
    assert torch.allclose(set2set(h, batch, 4), torch.stack(rows), atol=1e-10)


def test_our_message_step_computes_what_pyg_nnconv_computes_with_the_same_weights():
    from torch_geometric import nn as pyg  # the dev extra: equivalence runs in CI, never skipped
    torch.manual_seed(3)
    g = molecule_like(10, 0.4, seed=4)
    edge_network = EdgeNetwork(D, WIDTH, 16)
    message = EdgeConditionedMessage(WIDTH, "sum", root=True)

    class Transposed(torch.nn.Module):   # our A(e)[out, in] as NNConv's Θ(e)[in, out]: x_j Θ = A x_j
        def forward(self, e):
            return edge_network(e, e.shape[0], e).transpose(1, 2).reshape(e.shape[0], -1)

    conv = pyg.NNConv(WIDTH, WIDTH, Transposed(), aggr="add", root_weight=True, bias=True)
    with torch.no_grad():
        conv.lin.weight.copy_(message.root.weight)
        conv.bias.copy_(message.root.bias)
    h = torch.randn(10, WIDTH)
    ours = message(h, g.edge_index, edge_network(g.edge_attr, g.edge_index.shape[1], h))
    assert torch.allclose(ours, conv(h, g.edge_index, g.edge_attr), atol=1e-5)


def test_mpnn_needs_graph_level_data_and_runs_without_edge_features():
    with pytest.raises(DeepAtlasError, match="graph-level"):
        MPNN(Config(level="node"))
    g = molecule_like(8, seed=5)._replace(edge_attr=None)
    model = MPNN(Config(in_features=5, edge_features=0, width=WIDTH, edge_hidden=8))
    assert model(g).shape == (1, 1) and torch.isfinite(model(g)).all()


def test_mpnn_learns_tpsa_in_two_epochs_far_beyond_the_training_mean(tmp_path):
    # two epochs of a small network (width 32, two message steps): seconds
    result = deepatlas.train("mpnn", data="molecules", out=tmp_path / "run",
                             overrides={"epochs": "2", "batch_size": "32", "width": "32", "edge_hidden": "32",
                                        "message_steps": "2", "set2set_steps": "2"})
    test, base = result["test"], result["baseline"]
    assert test["mae_vs_mean"] == pytest.approx(test["mae"] / base["mae"], rel=1e-4)   # the same split's mean
    assert test["mae_vs_mean"] < 0.3, test                                     # the mean: 1
