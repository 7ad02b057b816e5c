"""Residual MLP: the tabular ResNet.

K. He, X. Zhang, S. Ren, J. Sun, 2015. "Deep Residual Learning for Image Recognition."
arXiv:1512.03385. Y. Gorishniy, I. Rubachev, V. Khrulkov, A. Babenko, 2021. "Revisiting Deep
Learning Models for Tabular Data." arXiv:2106.11959.

Each block learns a residual F(x) that is added to its input, so the identity is the default
and gradients reach early layers through the skip path at any depth. Gorishniy et al.'s
tabular form is pre-norm: normalize, expand, nonlinearity, project back, add.

    x_{l+1} = x_l + Dropout(Linear(Dropout(ReLU(Linear(Norm(x_l))))))
    ŷ = Linear(ReLU(Norm(x_L)))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from deepatlas.catalog import Bar, Count, Data, Entry, Paper, Positive, Probability, Relation, Size, Train, register
from deepatlas.nn.activations import Activation, activation
from deepatlas.tasks.classification import Classification


@dataclass
class Config:
    in_features: Size = 64
    """input features (set from the data)"""
    n_classes: Size = 10
    """classes (set from the data)"""
    width: Size = 256
    """width d of the residual stream"""
    depth: Count = 3
    """residual blocks"""
    hidden_factor: Positive = 2.0
    """each block expands to hidden_factor * d units"""
    norm: Literal["batch", "layer"] = "batch"
    """pre-normalization inside each block"""
    activation: Activation = "relu"
    """nonlinearity inside each block"""
    dropout: Probability = 0.2
    """dropout on the hidden units"""
    residual_dropout: Probability = 0.0
    """dropout on each block's output before the addition"""


def _norm(kind: str, width: int) -> nn.Module:
    return nn.BatchNorm1d(width) if kind == "batch" else nn.LayerNorm(width)


class ResidualBlock(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        hidden = int(cfg.hidden_factor * cfg.width)
        self.residual = nn.Sequential(
            _norm(cfg.norm, cfg.width), nn.Linear(cfg.width, hidden), activation(cfg.activation),
            nn.Dropout(cfg.dropout), nn.Linear(hidden, cfg.width), nn.Dropout(cfg.residual_dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)  # (B, d): the skip path carries x unchanged


class ResidualMLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.embed = nn.Linear(cfg.in_features, cfg.width)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg) for _ in range(cfg.depth)])
        self.head = nn.Sequential(_norm(cfg.norm, cfg.width), activation(cfg.activation),
                                  nn.Linear(cfg.width, cfg.n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.embed(x)))  # (B, in) -> (B, d) -> (B, K)


register(Entry(
    name="residual_mlp", title="Residual MLP (tabular ResNet)", family="feedforward", year=2021,
    paper=Paper("Y. Gorishniy, I. Rubachev, V. Khrulkov, A. Babenko (after K. He et al., arXiv:1512.03385)",
                "Revisiting Deep Learning Models for Tabular Data", "arXiv:2106.11959"),
    summary="An MLP of pre-norm residual blocks: each block adds a learned correction to its input, so "
            "depth no longer hurts optimization.",
    when_to_use="Tabular or feature-vector data when a plain MLP underfits and you want depth; a strong "
                "deep-learning baseline for tabular benchmarks.",
    when_not="Tiny datasets where a shallow MLP or trees suffice; structured inputs (images, sequences, graphs).",
    relations=[
        Relation("variant_of", "mlp", "the same dense layers with residual connections and normalization, so depth "
                 "trains"),
        Relation("builds_on", "resnet", "takes ResNet's identity shortcut to vectors"),
    ],
    config=Config, build=ResidualMLP, objective=Classification,
    train=Train(epochs=40, batch_size=64, lr=2e-3, weight_decay=1e-4),
    data=Data("digits"),
    bar=Bar("accuracy", 0.97, "max", 90),
))
