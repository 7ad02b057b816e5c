"""Objectives and metrics shared by several architectures.

An objective wraps a network (its `.model`, a plain nn.Module) and gives the loop
`training_step(batch) -> (loss, logs)` and `validation_step(batch) -> logs`. Most measure a batch
the same way in both; they subclass `Objective` and write only `measure`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset


class Objective(nn.Module):
    """`measure(batch) -> {"loss": ..., metric: ...}` (batch means) is all a subclass writes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(*inputs)

    def measure(self, batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def prepare(self, data) -> Dataset | None:
        """Called once before training with the data's `Splits`. An objective that needs statistics of
        the training data (unigram counts, co-occurrence counts) computes them here into buffers, which
        are saved with the weights; it may return the Dataset to train on instead of `data.train`."""
        return None

    def training_step(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        logs = self.measure(batch)
        return logs["loss"], {k: v.detach() for k, v in logs.items()}

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        return self.measure(batch)
