"""Classification: the objective every classifier trains with, and its metrics; and regression on tables.

The network maps inputs to class scores (B, K); the objective wraps it, so the network stays a
plain nn.Module and the loss can be swapped (cross-entropy for an MLP, the perceptron criterion
for Rosenblatt's perceptron).

A table's numeric target may be regressed instead (data/tabular.py): its labels are then floats, the
target standardized with the training rows' mean and std, and the network has one output (B, 1). The
objective switches on the labels' dtype: its loss is the MSE on the standardized target, and it logs,
in the target's own units, mse and mae; an evaluation adds r2 = 1 - mse / var, var being the evaluated
split's own target variance (the coefficient of determination: 0 for that split's mean, 1 for a perfect model).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.errors import DeepAtlasError, given
from deepatlas.tasks import Objective, Task
from deepatlas.tasks.predictions import TablePredictions


class Classification(Objective):
    """Wraps a scorer `model(x) -> (B, K)`; logs {"loss", "accuracy"}. On float labels (a table's regressed
    target) it wraps `model(x) -> (B, 1)` and logs {"loss", "mse", "mae", "r2"}."""

    metric = "accuracy"

    def __init__(self, model: nn.Module, loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy):
        super().__init__(model)
        self.loss = loss

    def prepare(self, data) -> None:
        """A criterion of its own (the perceptron's) classifies: it cannot train on a regressed target."""
        if data.spec.get("kind") == "regression" and self.loss is not F.cross_entropy:
            raise DeepAtlasError(f"{type(self.model).__name__} trains with its own classification criterion; the "
                                 f"target {data.spec['target']!r} is regressed (try mlp, or "
                                 f"{given('task', 'classification')})")

    def measure(self, batch) -> dict[str, Tensor]:
        x, y = batch
        scores = self.model(x)                      # (B, K)
        if y.is_floating_point():
            logs = regression(scores.reshape(y.shape), y, self.data_spec.get("target_std", 1.0))
            if not self.training:  # the split's target moments, for its r2 (`summarize`)
                logs.update(target_mean=y.mean(), target_square=y.square().mean())
            return logs
        return {"loss": self.loss(scores, y), "accuracy": accuracy(scores, y)}

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        """r2 of a regressed split: 1 - its mse over its own target variance (standardized units both)."""
        if "target_square" not in means:
            return means
        variance = means.pop("target_square") - means.pop("target_mean") ** 2
        return {**means, "r2": 1 - means["loss"] / max(variance, 1e-12)}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities (B, K); for a scorer with no probabilistic reading, a one-hot of its argmax."""
        scores = self.model(x)
        if getattr(self.model, "probabilistic", True):
            return scores.softmax(-1)
        return F.one_hot(scores.argmax(-1), scores.shape[-1]).float()


def accuracy(scores: Tensor, y: Tensor) -> Tensor:
    return (scores.argmax(-1) == y).float().mean()


def regression(prediction: Tensor, y: Tensor, std: float) -> dict[str, Tensor]:
    """Prediction and target (B,) standardized by the training target's mean and `std`. Batch means, so
    that an evaluation's weighted average over batches is the split's: the loss in standardized units,
    mse and mae in the target's units."""
    error = prediction - y
    mse = error.square().mean()
    return {"loss": mse, "mse": mse * std ** 2, "mae": error.abs().mean() * std}


TABLE_OPTIONS = ("task", "missing", "drop", "keep")
"""the data options a table's reader takes (a search hands them on to every run it trains)"""

TASKS = [Task("classification", "deepatlas.data.tabular", prediction=TablePredictions, options=TABLE_OPTIONS),
         Task("image_classification", "deepatlas.data.images", options=("image_size", "crop_pad", "flip", "rotate"))]
