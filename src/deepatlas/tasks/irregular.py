"""irregular: time series sampled at irregular times, each series on its own stamps; interpolate held-out points
inside a series' observed window and extrapolate the points after it (deepatlas.data.irregular).

A batch is (values (B, T, D), union times (T,), observed, interp, extrap masks (B, T, D)) on the union of the
batch's stamps. The network (the latent ODE) gives `elbo(values, times, observed, target, kl_weight)` for training
and `forward(values, times, observed) -> x̂ (B, T, D)` (its posterior-mean reconstruction) for evaluation, and
`forward(..., samples=K)` for K trajectories.

The bar compares it with a GRU that is given the time gaps, trained in the same run for the same epochs on the
same batches (`GRUDelta`, the paper's "RNN Δt" baseline, autoregressive: each point predicted from the
observations before it and the time since the last one). Metrics, in the data's standardized units:
    mse             the network's mean squared error on the held-out points inside the observed window
    extrap_mse      ... on the points after it
    gru_mse, gru_extrap_mse   the same for the GRU
    mse_vs_gru      mse / gru_mse (a ratio of the split's means; below 1: the network interpolates better)
`eval` shows the trivial baseline beside them: linear interpolation between a series' observations.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from deepatlas.tasks import Objective, Task
from deepatlas.tasks.predictions import Prediction

GRU_HIDDEN = 64


class GRUDelta(nn.Module):
    """A GRU over a series' observations with the time gaps as input (Rubanova et al.'s RNN Δt baseline).

    Forward in time over the union stamps: at each stamp t_i every series predicts x(t_i) from its state h and the
    gap t_i - s since its last observation s, x̂_i = head([h, t_i - s]); then where it has an observation,
    h = GRUCell([x_i ⊙ m_i, m_i, t_i - s], h) and s = t_i. Sequential over the stamps, vectorized over series."""

    def __init__(self, features: int, hidden: int = GRU_HIDDEN):
        super().__init__()
        self.cell = nn.GRUCell(2 * features + 1, hidden)
        self.head = nn.Sequential(nn.Linear(hidden + 1, hidden), nn.Tanh(), nn.Linear(hidden, features))
        self.hidden = hidden

    def forward(self, values: Tensor, times: Tensor, observed: Tensor) -> Tensor:
        """values, observed (B, T, D), times (T,) -> predictions (B, T, D), each from the observations before it."""
        b, t = values.shape[:2]
        h = values.new_zeros(b, self.hidden)
        last = values.new_zeros(b, 1)                                         # s: the last observation's time
        seen = observed.amax(-1, keepdim=True) > 0                            # (B, T, 1)
        out = []
        for i in range(t):  # forward over the union of stamps
            gap = times[i] - last                                             # (B, 1)
            out.append(self.head(torch.cat([h, gap], -1)))
            step = self.cell(torch.cat([values[:, i] * observed[:, i], observed[:, i], gap], -1), h)
            h = torch.where(seen[:, i], step, h)
            last = torch.where(seen[:, i], times[i].expand_as(last), last)
        return torch.stack(out, 1)                                            # (B, T, D)


def masked_mse(prediction: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(the mean squared error over the points `mask` marks, their count)."""
    n = mask.sum()
    return ((prediction - values).square() * mask).sum() / n.clamp(min=1), n


class IrregularObjective(Objective):
    """The network's VAE objective plus the GRU baseline's squared error, one loss (disjoint parameters)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.gru = GRUDelta(model.cfg.in_features)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))     # for the KL warm-up

    def forward(self, values: Tensor, times: Tensor, observed: Tensor) -> Tensor:
        return self.model(values, times, observed)

    def kl_weight(self) -> float:
        cfg = self.model.cfg
        warm = min(1.0, float(self.steps) / cfg.kl_warmup) if cfg.kl_warmup else 1.0
        return cfg.kl_weight * warm

    def measure(self, batch) -> dict[str, Tensor]:
        values, times, observed, interp, extrap = batch
        if self.training:  # every known point is a target: the observed ones and the held-out ones
            target = ((observed + interp + extrap) > 0).to(values.dtype)
            points = target.sum((1, 2)).mean().clamp(min=1)
            vae = self.model.elbo(values, times, observed, target, self.kl_weight())
            gru, _ = masked_mse(self.gru(values, times, observed), values, target)
            self.steps += 1
            return {"loss": vae["loss"] / points + gru, "nll": vae["nll"] / points, "kl": vae["kl"],
                    "gru_loss": gru.detach()}
        logs = {}
        for name, guess in (("", self(values, times, observed)), ("gru_", self.gru(values, times, observed))):
            for part, mask in (("mse", interp), ("extrap_mse", extrap)):
                logs[name + part], logs[f"{name}{part}#n"] = masked_mse(guess, values, mask)
        logs["loss"] = logs["mse"]
        logs["loss#n"] = logs["mse#n"]
        return logs

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        """mse_vs_gru: the split's interpolation mse over the GRU's (a ratio of the means)."""
        if "gru_mse" in means:
            means = {**means, "mse_vs_gru": means["mse"] / max(means["gru_mse"], 1e-12)}
        return means

    not_exported = "an ODE-RNN over a batch's own time stamps and an adaptive ODE solve (steps depend on the inputs)"


@dataclass(frozen=True)
class IrregularTask(Task):
    """predict: each series of a CSV decoded at query times (trajectory.png beside when asked); after training:
    predictions.png with a few test series."""

    def after_training(self, objective, spec: dict, splits, run_path: Path) -> None:
        self.module.plot_predictions(objective, spec, splits.test, run_path / "predictions.png")


TASKS = [IrregularTask("irregular", "deepatlas.data.irregular", prediction=Prediction)]
