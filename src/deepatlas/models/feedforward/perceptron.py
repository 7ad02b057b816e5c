"""The perceptron.

F. Rosenblatt, 1958. "The Perceptron: A Probabilistic Model for Information Storage and
Organization in the Brain." Psychological Review 65(6), 386-408.

A single layer of weights followed by a hard threshold: the unit answers with the class whose
weighted sum is largest (for two classes, the sign of w·x + b). It learns by the perceptron
rule: when an example is misclassified, add it to the weights of its true class and subtract it
from the weights of the wrongly chosen one; correct answers change nothing.

    ŷ = argmax_k (W x + b)_k          on a mistake:  w_y += η x,  w_ŷ -= η x

Here the rule is written as plain SGD (batch size 1, no momentum) on the perceptron criterion
L = s_ŷ - s_y (zero when correct), whose gradient is exactly that update. The perceptron
convergence theorem guarantees it fits any linearly separable data; XOR is not, so it cannot
fit XOR (Minsky & Papert, 1969).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Relation, Size, Train, register
from deepatlas.tasks.classification import Classification


@dataclass
class Config:
    in_features: Size = 4
    """input features (set from the data)"""
    n_classes: Size = 2
    """classes (set from the data)"""
    init: Literal["zeros", "random"] = "zeros"
    """Rosenblatt's weights start at zero; random is N(0, 0.01)"""


class Perceptron(nn.Module):
    probabilistic = False  # a threshold unit: its outputs are decisions, not probabilities

    def __init__(self, cfg: Config):
        super().__init__()
        self.linear = nn.Linear(cfg.in_features, cfg.n_classes)
        if cfg.init == "zeros":
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        else:
            nn.init.normal_(self.linear.weight, std=0.01)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)  # (B, in) -> (B, K) scores; the decision is their argmax

    def decide(self, x: Tensor) -> Tensor:
        """The step output: the chosen class index per example (B,)."""
        return self.forward(x).argmax(-1)


def perceptron_criterion(scores: Tensor, y: Tensor) -> Tensor:
    """s_ŷ - s_y on mistakes, 0 on correct answers; its gradient is the perceptron rule."""
    predicted = scores.argmax(-1)                                   # (B,)
    margin = scores.gather(1, predicted[:, None]) - scores.gather(1, y[:, None])  # (B, 1)
    return (margin.squeeze(1) * (predicted != y)).mean()


register(Entry(
    name="perceptron", title="Perceptron", family="feedforward", year=1958,
    paper=Paper("F. Rosenblatt", "The Perceptron: A Probabilistic Model for Information Storage and "
                "Organization in the Brain", "Psychological Review 65(6), 1958"),
    summary="One layer of weights and a hard threshold, trained by the error-correcting perceptron rule.",
    when_to_use="Linearly separable data, teaching, a baseline that shows whether a problem needs hidden layers.",
    when_not="Anything not linearly separable (XOR, most real data); when you need probabilities (use logistic "
             "regression or an MLP).",
    offers=["interpretability"],  # one weight per feature and class
    relations=[
        Relation("alternative_to", "mlp", "one linear threshold unit: separates only linearly separable classes, with "
                 "no hidden layer"),
    ],
    config=Config, build=Perceptron,
    objective=lambda model: Classification(model, loss=perceptron_criterion),
    train=Train(epochs=10, batch_size=1, optimizer="sgd", lr=1.0, schedule="constant", patience=3),
    data=Data("iris_setosa"),
    bar=Bar("accuracy", 1.0, "max", 10),
))
