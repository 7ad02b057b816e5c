"""The multilayer perceptron trained by back-propagation.

D. E. Rumelhart, G. E. Hinton, R. J. Williams, 1986. "Learning representations by
back-propagating errors." Nature 323, 533-536.

Layers of units, each a weighted sum of the layer below passed through a smooth nonlinearity;
hidden layers learn their own features. The error derivative is passed backwards layer by layer
by the chain rule (back-propagation) and every weight moves down its gradient:

    h_l = φ(W_l h_{l-1} + b_l),   ∂E/∂h_{l-1} = W_l^T (φ'(·) ⊙ ∂E/∂h_l),   Δw = -ε ∂E/∂w

Unlike the perceptron, one hidden layer is enough to represent XOR. Dropout and batch norm are
later additions (config fields).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from deepatlas.catalog import Bar, Count, Data, Entry, Paper, Probability, Relation, Size, Train, register
from deepatlas.nn.activations import Activation, activation
from deepatlas.tasks.classification import Classification


@dataclass
class Config:
    in_features: Size = 30
    """input features (set from the data)"""
    n_classes: Size = 2
    """classes (set from the data)"""
    width: Size = 64
    """units per hidden layer"""
    depth: Count = 2
    """hidden layers"""
    activation: Activation = "relu"
    """hidden nonlinearity (the paper used the logistic sigmoid)"""
    dropout: Probability = 0.1
    """dropout after each hidden activation"""
    batch_norm: bool = True
    """batch normalization before each activation (a 2015 addition; it steadies this small-data recipe)"""


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        layers, width_in = [], cfg.in_features
        for _ in range(cfg.depth):
            layers += [nn.Linear(width_in, cfg.width)]
            layers += [nn.BatchNorm1d(cfg.width)] if cfg.batch_norm else []
            layers += [activation(cfg.activation), nn.Dropout(cfg.dropout)]
            width_in = cfg.width
        layers.append(nn.Linear(width_in, cfg.n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, in) -> (B, K) logits


register(Entry(
    name="mlp", title="Multilayer perceptron", family="feedforward", year=1986,
    paper=Paper("D. E. Rumelhart, G. E. Hinton, R. J. Williams", "Learning representations by "
                "back-propagating errors", "Nature 323, 533-536, 1986"),
    summary="Stacked fully connected layers with nonlinearities, trained end to end by back-propagation.",
    when_to_use="Fixed-length feature vectors (tabular data, embeddings) of modest size; a strong, fast "
                "baseline and the head of most larger models.",
    when_not="Images, sequences, sets or graphs, whose structure it ignores (use a CNN, RNN/transformer, "
             "DeepSets or GNN); small tabular data where gradient-boosted trees usually win.",
    relations=[
        Relation("builds_on", "perceptron", "stacks layers of perceptron-like units with smooth activations, trained "
                 "by backpropagation"),
    ],
    config=Config, build=MLP, objective=Classification,
    train=Train(epochs=40, batch_size=32, lr=3e-3, weight_decay=1e-4),
    data=Data("breast_cancer"),
    bar=Bar("accuracy", 0.96, "max", 60),
))
