"""Sequence objectives: regression (adding problem, forecasting) and per-sequence or per-step
classification (sequential digits, copy memory, tagging), chosen by the label's dtype.

The network maps x (B, T, F) to (B, K) (many-to-one) or (B, T, K) (many-to-many, one output per
step). Float labels are regressed with the mean squared error; integer labels are classified
with cross-entropy averaged over every labelled step.

A series (the data spec's kind "series") is also evaluated in its own units: mse_units, mae_units and mase
(mae over the naive last value's, a ratio of the split's means made in `summarize`); `mse`, standardized, is
still what trains and what the embedded bars quote. Where the spec says normalize "window" (a user's series), the network runs under reversible
instance normalization (RevIN, `deepatlas.data.sequences.reversible`) in training, evaluation and prediction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deepatlas.data.sequences import reversible, series_errors, with_mase
from deepatlas.tasks import Objective, Task
from deepatlas.tasks.predictions import Forecasts


class SequenceObjective(Objective):
    """Logs {"loss", "mse"} for float targets (and the series' errors in units, for a series) and
    {"loss", "accuracy"} for class targets."""

    def forward(self, x: Tensor) -> Tensor:
        """The network's output; under RevIN where the series' windows are normalized one by one."""
        return reversible(self.model, x) if self.data_spec.get("normalize") == "window" else self.model(x)

    def measure(self, batch) -> dict[str, Tensor]:
        x, y = batch
        out = self(x)
        if y.is_floating_point():
            mse = F.mse_loss(out.reshape(y.shape), y)
            if self.data_spec.get("kind") != "series" or self.training:  # units in evaluation only: short train logs
                return {"loss": mse, "mse": mse.detach()}
            units = series_errors(out.detach(), y, x[:, -1], self.data_spec["std"])
            return {**units, "loss": mse, "mse": mse.detach()}
        scores = out.reshape(-1, out.shape[-1])          # (B·T, K) or (B, K)
        labels = y.reshape(-1)
        loss = F.cross_entropy(scores, labels)
        return {"loss": loss, "accuracy": (scores.argmax(-1) == labels).float().mean()}

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        """A series' mase: the split's mean error over its naive last value's (not a mean of batch ratios)."""
        return with_mase(means) if "naive_mae_units" in means else means

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self(x)


TASKS = [Task("sequence", "deepatlas.data.sequences", prediction=Forecasts,
              options=("window", "missing", "normalize", "season")),
         Task("tree", "deepatlas.data.trees")]
