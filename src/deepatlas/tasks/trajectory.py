"""Trajectories: observe the first half of each trajectory of a dynamical system, predict the next half
(data/spiral.py: the embedded spirals and users' CSV files of series id, time, value...).

The network is a flow: `model(y0, t)` maps initial states y0 (B, D) and times t (B, T) since them (each row
increasing from 0) to the states (B, T, D) at those times, all in standardized units; `model.field(y)` is its
vector field dy/dt (N, D) at states y (N, D) where it has one. The objective standardizes (each component by its
training mean and std, times by the data's `time_scale`) and gives predictions back in the data's own units.

Training fits the observed part: windows of `window` consecutive observations (a data option; 0: the whole
observed part from its first observation), each solved from its first observation (torchdiffeq's demo fits such
short windows: a long horizon from one noisy start is a much harder optimization). Evaluation continues each
trajectory from its last observation over the times to predict, and logs
    mse               the extrapolation's mean squared error over the next half, in the data's units
    velocity_mse      the same for repeating the last observed velocity (the line through the last two observations)
    mse_vs_velocity   their ratio (of the split's means): the bar's metric
    loss              the extrapolation's mse in standardized units
and whatever the network counts per batch (`model.counts()`: a neural ODE's function evaluations, `nfe`, and while
training `nfe_backward`). After training, trajectories.png draws test trajectories with both extrapolations and
phase_portrait.png the learned field's streamlines beside the true one (2-D states).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from deepatlas.data.spiral import (future_mask, plot_phase_portrait, plot_prediction, plot_trajectories,
                                   velocity_baseline)
from deepatlas.tasks import Objective, Task, first_batch
from deepatlas.tasks.predictions import Prediction


class TrajectoryObjective(Objective):
    """Wraps a flow `model(y0 (B, D), t (B, T)) -> (B, T, D)` in standardized units; see the module docstring."""

    not_exported = "an adaptive ODE solve (its steps depend on the inputs)"

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor, float]:
        spec = self.data_spec
        dims = like.shape[-1]
        mean = torch.as_tensor(spec.get("mean", [0.0] * dims), dtype=like.dtype, device=like.device)
        std = torch.as_tensor(spec.get("std", [1.0] * dims), dtype=like.dtype, device=like.device)
        return mean, std, float(spec.get("time_scale", 1.0))

    def flow(self, y0: Tensor, t: Tensor) -> Tensor:
        """States (B, T, D) in data units at times t (B, T) (data units, each row from 0) after y0 (B, D)."""
        mean, std, scale = self._stats(y0)
        return self.model((y0 - mean) / std, t / scale) * std + mean

    def measure(self, batch) -> dict[str, Tensor]:
        t, y, observed, length = batch                              # (B, L), (B, L, D), (B,), (B,)
        mean, std, scale = self._stats(y)
        z, s = (y - mean) / std, t / scale                          # standardized states and times
        rows = torch.arange(len(y), device=y.device)
        if self.training:  # fit a window of the observed part, from its first observation
            window = int(self.data_spec.get("window", 0)) or int(observed.max())
            size = observed.clamp(max=window)                                           # (B,) points per window
            first = (torch.rand(len(y), device=y.device) * (observed - size + 1)).long()  # (B,) random starts
            at = (first[:, None] + torch.arange(window, device=y.device)).clamp(max=(observed - 1)[:, None])
            times = s[rows[:, None], at] - s[rows, first][:, None]                       # (B, W) from 0
            target = z[rows[:, None], at]                                                # (B, W, D)
            pred = self.model(z[rows, first], times)
            inside = (torch.arange(window, device=y.device)[None] < size[:, None])[..., None].expand_as(target)
            loss = (pred - target)[inside].square().mean()
            return {"loss": loss, **self._counts()}
        start = observed - 1                                        # continue from the last observation
        steps = y.shape[1]
        ahead = (s - s[rows, start][:, None]).clamp(min=0)          # (B, L) times since it, 0 up to it
        pred = self.model(z[rows, start], ahead) * std + mean       # (B, L, D) data units
        future = future_mask(observed, length, steps)[..., None].expand_as(y)
        count = future.sum()
        error = (pred - y)[future].square()
        velocity = (velocity_baseline(t, y, observed) - y)[future].square()
        return {"loss": (error / (std ** 2).expand_as(y)[future]).mean(), "mse": error.mean(),
                "velocity_mse": velocity.mean(), **self._counts(),
                **{f"{k}#n": count for k in ("loss", "mse", "velocity_mse")}}

    def export_inputs(self, data, n: int) -> dict[str, Tensor]:
        """The network's inputs for n test trajectories: their last observed states and the times ahead of them,
        standardized."""
        t, y, observed, _ = first_batch(data.test, n)
        mean, std, scale = self._stats(y)
        rows = torch.arange(len(y))
        return {"y0": (y[rows, observed - 1] - mean) / std,
                "t": (t - t[rows, observed - 1][:, None]).clamp(min=0) / scale}

    def infer(self, y0: Tensor, t: Tensor) -> Tensor:
        return self.model(y0, t)

    def _counts(self) -> dict[str, Tensor]:
        counts = getattr(self.model, "counts", None)
        return counts() if counts is not None else {}

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        """mse_vs_velocity: the split's extrapolation mse over the velocity baseline's (a ratio of the means)."""
        if "velocity_mse" in means:
            means = {**means, "mse_vs_velocity": means["mse"] / max(means["velocity_mse"], 1e-30)}
        return means

    @torch.no_grad()
    def extrapolate(self, times: Tensor, values: Tensor, future: Tensor) -> Tensor:
        """One series continued: states (n, D) float64 at `future` times (n,) after its observations (times (k,),
        values (k, D)), in its units, from its last observation."""
        device = next(self.parameters()).device
        start = values[-1:].to(device=device, dtype=torch.float32)                     # (1, D)
        ahead = torch.cat([times.new_zeros(1), future - times[-1]]).to(device=device, dtype=torch.float32)
        return self.flow(start, ahead[None])[0, 1:].double().cpu()

    @torch.no_grad()
    def vector_field(self, points: Tensor) -> Tensor:
        """The learned dy/dt (N, D) at states `points` (N, D), in data units per unit of time."""
        device = next(self.parameters()).device
        mean, std, scale = self._stats(points.to(device=device, dtype=torch.float32))
        z = (points.to(device=device, dtype=torch.float32) - mean) / std
        return (self.model.field(z) * std / scale).double().cpu()


@dataclass
class TrajectoryPredictions(Prediction):
    """Each series continued: rows hold "times", "values" (the predicted states), "history_times", "history" and
    "columns". Saved one row per predicted state (series, time, each component); plotted after the history."""

    def csv_rows(self) -> list[list]:
        columns = self.rows[0]["columns"] if self.rows else []
        return [["series", "time", *columns],
                *[[r["series"], t, *v] for r in self.rows for t, v in zip(r["times"], r["values"])]]

    def plot(self, path: Path) -> list[Path]:
        """One PNG per series (numbered when several): its components over time, and its first two in a plane."""
        from deepatlas.data.draw import numbered
        written = [numbered(Path(path), i, len(self.rows)) for i in range(len(self.rows))]
        for row, out in zip(self.rows, written):
            plot_prediction(row, out)
        return written


@dataclass(frozen=True)
class TrajectoryTask(Task):
    """trajectories.png and phase_portrait.png after training (test trajectories)."""

    def after_training(self, objective, spec: dict, splits, run_path: Path) -> None:
        plot_trajectories(objective, spec, splits.test, run_path / "trajectories.png")
        plot_phase_portrait(objective, spec, splits.test, run_path / "phase_portrait.png")


TASKS = [TrajectoryTask("trajectory", "deepatlas.data.spiral", prediction=TrajectoryPredictions, options=("window",))]
