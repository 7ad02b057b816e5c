"""Sequence objectives: regression (adding problem, forecasting) and per-sequence or per-step
classification (sequential digits, copy memory, tagging), chosen by the label's dtype.

The network maps x (B, T, F) to (B, K) (many-to-one) or (B, T, K) (many-to-many, one output per
step). Float labels are regressed with the mean squared error; integer labels are classified
with cross-entropy averaged over every labelled step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deepatlas.tasks import Objective, Task


class SequenceObjective(Objective):
    """Logs {"loss", "mse"} for float targets and {"loss", "accuracy"} for class targets."""

    def measure(self, batch) -> dict[str, Tensor]:
        x, y = batch
        out = self.model(x)
        if y.is_floating_point():
            mse = F.mse_loss(out.reshape(y.shape), y)
            return {"loss": mse, "mse": mse.detach()}
        scores = out.reshape(-1, out.shape[-1])          # (B·T, K) or (B, K)
        labels = y.reshape(-1)
        loss = F.cross_entropy(scores, labels)
        return {"loss": loss, "accuracy": (scores.argmax(-1) == labels).float().mean()}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.model(x)


TASKS = [Task("sequence", "deepatlas.data.sequences", options=("window",)), Task("tree", "deepatlas.data.trees")]
