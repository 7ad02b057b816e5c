"""Classification: the objective every classifier trains with, and its metrics.

The network maps inputs to class scores (B, K); the objective wraps it, so the network stays a
plain nn.Module and the loss can be swapped (cross-entropy for an MLP, the perceptron criterion
for Rosenblatt's perceptron).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.tasks import Objective, Task


class Classification(Objective):
    """Wraps a scorer `model(x) -> (B, K)`; logs {"loss", "accuracy"}."""

    metric = "accuracy"

    def __init__(self, model: nn.Module, loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy):
        super().__init__(model)
        self.loss = loss

    def measure(self, batch) -> dict[str, Tensor]:
        x, y = batch
        scores = self.model(x)                      # (B, K)
        return {"loss": self.loss(scores, y), "accuracy": accuracy(scores, y)}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities (B, K); for a scorer with no probabilistic reading, a one-hot of its argmax."""
        scores = self.model(x)
        if getattr(self.model, "probabilistic", True):
            return scores.softmax(-1)
        return F.one_hot(scores.argmax(-1), scores.shape[-1]).float()


def accuracy(scores: Tensor, y: Tensor) -> Tensor:
    return (scores.argmax(-1) == y).float().mean()


TASKS = [Task("classification", "deepatlas.data.tabular"),
         Task("image_classification", "deepatlas.data.images", options=("image_size", "crop_pad", "flip", "rotate"))]
