"""Feedforward family: the perceptron's limits, the MLP's hidden layers, the residual MLP's depth."""
import pytest
import torch
import torch.nn.functional as F

import deepatlas
from deepatlas import catalog
from deepatlas.models.feedforward.perceptron import perceptron_criterion

from conftest import fit_steps

INPUTS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
GATES = {"and": torch.tensor([0, 0, 0, 1]), "or": torch.tensor([0, 1, 1, 1]), "xor": torch.tensor([0, 1, 1, 0])}


def run_perceptron_rule(y: torch.Tensor, epochs: int = 100) -> float:
    """Rosenblatt's rule, one example at a time; returns the final accuracy on the four points."""
    model = deepatlas.create_model("perceptron", in_features=2, n_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(epochs):
        for i in range(4):
            loss = perceptron_criterion(model(INPUTS[i:i + 1]), y[i:i + 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (model.decide(INPUTS) == y).float().mean().item()


@pytest.mark.parametrize("gate", ["and", "or"])
def test_perceptron_fits_linearly_separable_gates_exactly(gate):
    assert run_perceptron_rule(GATES[gate]) == 1.0


def test_perceptron_cannot_fit_xor():
    # no line separates XOR: at best 3 of 4 points, however long it trains
    assert run_perceptron_rule(GATES["xor"], epochs=300) <= 0.75


def test_perceptron_update_is_rosenblatts_rule():
    """One SGD step on the criterion equals w_y += x, w_ŷ -= x on a mistake, nothing when right."""
    model = deepatlas.create_model("perceptron", in_features=2, n_classes=2, init="random")
    x, w0, b0 = torch.tensor([[0.5, -2.0]]), model.linear.weight.detach().clone(), model.linear.bias.detach().clone()
    predicted = model(x).argmax(-1).item()
    y = torch.tensor([1 - predicted])  # force a mistake
    perceptron_criterion(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= p.grad
    expected_w = w0.clone()
    expected_w[y.item()] += x[0]
    expected_w[predicted] -= x[0]
    assert torch.allclose(model.linear.weight, expected_w)
    assert model.linear.bias[y.item()] == b0[y.item()] + 1 and model.linear.bias[predicted] == b0[predicted] - 1
    model.zero_grad()
    perceptron_criterion(model(x), model(x).argmax(-1)).backward()  # correct: no change
    assert model.linear.weight.grad.abs().sum() == 0


def test_perceptron_outputs_decisions_not_probabilities():
    objective = catalog.get("perceptron").objective(deepatlas.create_model("perceptron", init="random"))
    probs = objective.predict(torch.randn(5, 4))
    assert set(probs.flatten().tolist()) <= {0.0, 1.0} and (probs.sum(-1) == 1).all()


def test_mlp_fits_xor():
    torch.manual_seed(0)
    model = deepatlas.create_model("mlp", in_features=2, n_classes=2, width=8, depth=1, activation="tanh",
                                   dropout=0.0, batch_norm=False)
    fit_steps(model, lambda: F.cross_entropy(model(INPUTS), GATES["xor"]), steps=300, lr=0.05)
    assert (model(INPUTS).argmax(-1) == GATES["xor"]).all()


@pytest.mark.parametrize("name", ["mlp", "residual_mlp"])
def test_short_training_beats_majority_class(name, tmp_path):
    """A short run on wine (3 classes) must clearly beat always answering the majority class."""
    result = deepatlas.train(name, data="wine", out=tmp_path / name, overrides={"epochs": "20", "lr": "0.01"})
    majority = 0.40  # the largest wine class is 71 of 178 rows
    assert result["test"]["accuracy"] > majority + 0.4


def test_residual_connections_train_deep_networks(tmp_path):
    """At depth 24 and equal width, the residual MLP reaches a clearly lower training loss than the
    plain MLP in the same number of steps: the skip path keeps gradients alive through depth."""
    from deepatlas.data.tabular import load
    x, y = load("digits").train.tensors
    x, y = x[:512], y[:512]
    losses = {}
    for name, extra in (("mlp", dict(dropout=0.0, batch_norm=False)),
                        ("residual_mlp", dict(dropout=0.0, norm="layer", hidden_factor=1.0))):
        torch.manual_seed(0)
        model = deepatlas.create_model(name, in_features=64, n_classes=10, width=32, depth=24, **extra)
        losses[name] = fit_steps(model, lambda: F.cross_entropy(model(x), y), steps=150, lr=1e-3)[-1]
    assert losses["residual_mlp"] < 0.5 * losses["mlp"], losses
    assert losses["residual_mlp"] < 0.5  # the residual net actually fits; the plain one lags far behind
