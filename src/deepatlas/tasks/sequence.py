"""Sequence objectives: regression (adding problem, forecasting) and per-sequence or per-step
classification (sequential digits, copy memory, tagging), chosen by the label's dtype.

The network maps x (B, T, F) to (B, K) (many-to-one) or (B, T, K) (many-to-many, one output per
step). Float labels are regressed with the mean squared error; integer labels are classified
with cross-entropy averaged over every labelled step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SequenceObjective(nn.Module):
    """Logs {"loss", "mse"} for float targets and {"loss", "accuracy"} for class targets."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _measure(self, batch) -> dict[str, Tensor]:
        x, y = batch
        out = self.model(x)
        if y.is_floating_point():
            mse = F.mse_loss(out.reshape(y.shape), y)
            return {"loss": mse, "mse": mse.detach()}
        scores = out.reshape(-1, out.shape[-1])          # (B·T, K) or (B, K)
        labels = y.reshape(-1)
        loss = F.cross_entropy(scores, labels)
        return {"loss": loss, "accuracy": (scores.argmax(-1) == labels).float().mean()}

    def training_step(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        logs = self._measure(batch)
        return logs["loss"], {k: v.detach() for k, v in logs.items()}

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        return self._measure(batch)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.model(x)
