"""Operator learning: a network maps an input field to an output field on the same periodic grid (data/burgers.py).

A network takes fields (B, N, C_in) on a uniform grid of N points and returns (B, N, C_out) at the same points, for
any N (a neural operator is meant to be discretization-invariant). Its config takes `in_channels` and
`out_channels` from the data. The objective standardizes each input channel with the training part's mean and
std and gives the output back in the data's own units, so the network sees order-1 numbers whatever the file's
units.

Metric (Li et al. 2021, sec. 5): the relative L2 error, the mean over samples of ||pred - true|| / ||true||
(`rel_l2`), which is also the training loss. Where a split also carries its samples on a finer grid (the embedded
sets' validation and test splits, FINE = 512 points), the same weights are scored there too (`rel_l2_512`) and
`resolution_ratio` = rel_l2_512 / rel_l2 says how well the error survives the change of grid (1: not at all hurt).
`eval` shows the task's trivial predictor beside it (data/burgers.py `baseline`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from deepatlas.data.burgers import relative_l2
from deepatlas.tasks import Objective, Task


class OperatorObjective(Objective):
    """Wraps `model(a: (B, N, C_in)) -> (B, N, C_out)`; logs {"loss", "rel_l2", "mse"} and, on a split with finer
    fields, "rel_l2_FINE"."""

    def _scale(self, name: str, like: Tensor) -> Tensor:
        """A per-channel statistic of the training part (0 mean and 1 std where the objective has no data spec)."""
        default = 0.0 if name.endswith("mean") else 1.0
        return torch.as_tensor(self.data_spec.get(name, [default] * like.shape[-1]), dtype=like.dtype,
                               device=like.device)

    def forward(self, a: Tensor) -> Tensor:
        """The predicted output fields (B, N, C_out), in the data's units, of input fields a (B, N, C_in)."""
        standardized = (a - self._scale("a_mean", a)) / self._scale("a_std", a)
        out = self.model(standardized)  # (B, N, C_out) in standardized units
        return out * self._scale("u_std", out) + self._scale("u_mean", out)

    def measure(self, batch) -> dict[str, Tensor]:
        a, u = batch[0], batch[1]
        pred = self(a)
        error = relative_l2(pred, u)  # (B,)
        logs = {"loss": error.mean(), "rel_l2": error.mean().detach(), "mse": (pred - u).square().mean().detach()}
        if len(batch) == 4 and not self.training:  # the same samples on the finer grid, the same weights
            fine = relative_l2(self(batch[2]), batch[3])
            logs[f"rel_l2_{batch[2].shape[1]}"] = fine.mean()
        return logs

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        """resolution_ratio: the error on the finer grid over the error on the training grid (ratio of the means)."""
        fine = [k for k in means if k.startswith("rel_l2_")]
        if fine and means.get("rel_l2", 0) > 0:
            means = {**means, "resolution_ratio": means[fine[0]] / means["rel_l2"]}
        return means


@dataclass(frozen=True)
class OperatorTask(Task):
    """predictions.png after training draws test samples (input, truth, prediction)."""

    def after_training(self, objective, spec: dict, splits, run_path: Path) -> None:
        self.module.plot_predictions(objective, spec, splits.test, run_path / "predictions.png")


TASKS = [OperatorTask("operator", "deepatlas.data.burgers")]
