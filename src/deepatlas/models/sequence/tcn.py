"""TCN: the temporal convolutional network.

S. Bai, J. Z. Kolter, V. Koltun, 2018. "An Empirical Evaluation of Generic Convolutional and
Recurrent Networks for Sequence Modeling." arXiv:1803.01271.

A stack of 1-D convolutions that are causal (the output at step t sees inputs at t and before,
never after: the sequence is padded on the left only) and dilated (level i skips 2^i - 1 steps
between its kernel taps), so the history a step sees grows exponentially with depth while the
cost grows linearly. Each level is a residual block of two weight-normalized causal convolutions,
each followed by ReLU and dropout, added to the block's input (through a 1x1 convolution when the
channel count changes). All time steps are computed in parallel, unlike an RNN's recurrence.

    causal dilated conv:  (F *_d x)_t = sum_{i=0}^{k-1} f(i) · x_{t - d·i},   d = 2^level
    weight norm:          w = g · v / ||v||   (per output channel)
    residual block:       o = ReLU(x + F(x)),  F = [conv -> ReLU -> dropout] x 2
    receptive field:      r = 1 + 2 (k - 1) (2^L - 1)   (L levels, 2 convolutions of kernel k each)

Inputs more than r - 1 steps back cannot influence step t: choose k and L so that r covers the
dependencies of the task (the model warns when a sequence is longer than r).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Annotated

import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Probability, Range, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.sequence import SequenceObjective


@dataclass
class Config:
    in_features: Size = 2
    """input features per time step (set from the data)"""
    n_outputs: Size = 1
    """outputs: 1 for regression, the number of classes for classification (set from the data)"""
    per_step: bool = False
    """one output per time step (many-to-many) instead of one from the last step (set from the data)"""
    channels: Size = 32
    """hidden channels of every level"""
    levels: Annotated[int, Range(1, 24)] = 6
    """residual blocks; level i has dilation 2^i"""
    kernel_size: Size = 4
    """taps of every causal convolution (receptive field 1 + 2·(k-1)·(2^levels - 1) = 379 by default)"""
    dropout: Probability = 0.0
    """dropout after each convolution's ReLU"""


class CausalConv1d(nn.Module):
    """A dilated 1-D convolution padded on the left only, with weight normalization (Salimans &
    Kingma 2016): the direction v and the length g of each output channel's filter are learned apart."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int):
        super().__init__()
        init = nn.Conv1d(c_in, c_out, kernel_size)  # PyTorch's default initialization for v and the bias
        self.v = nn.Parameter(init.weight.detach().clone())                       # (C_out, C_in, k)
        self.g = nn.Parameter(self.v.detach().norm(dim=(1, 2), keepdim=True))     # (C_out, 1, 1): w = v at init
        self.bias = nn.Parameter(init.bias.detach().clone())                      # (C_out,)
        self.dilation = dilation
        self.left_pad = (kernel_size - 1) * dilation  # the k taps span (k-1)·d past steps

    @property
    def weight(self) -> Tensor:
        return self.g * self.v / self.v.norm(dim=(1, 2), keepdim=True)          # w = g · v / ||v||

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (self.left_pad, 0))             # (B, C_in, (k-1)·d + T): zeros before the start only
        return F.conv1d(x, self.weight, self.bias, dilation=self.dilation)  # (B, C_out, T)


class TemporalBlock(nn.Module):
    """o = ReLU(x + F(x)) with F = [causal conv -> ReLU -> dropout] twice, both at dilation d."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.residual = nn.Sequential(
            CausalConv1d(c_in, c_out, kernel_size, dilation), nn.ReLU(), nn.Dropout(dropout),
            CausalConv1d(c_out, c_out, kernel_size, dilation), nn.ReLU(), nn.Dropout(dropout))
        # a 1x1 convolution matches the channels of the skip path where they differ
        self.shortcut = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return (self.residual(x) + self.shortcut(x)).relu()  # (B, C_out, T)


class TCN(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        if min(cfg.channels, cfg.levels, cfg.kernel_size) < 1 or not 0 <= cfg.dropout < 1:
            raise DeepAtlasError("tcn: channels, levels and kernel_size must be at least 1 and dropout in [0, 1)")
        self.in_features, self.per_step = cfg.in_features, cfg.per_step
        blocks, c = [], cfg.in_features
        for level in range(cfg.levels):
            blocks.append(TemporalBlock(c, cfg.channels, cfg.kernel_size, 2 ** level, cfg.dropout))
            c = cfg.channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, cfg.n_outputs)
        self._warned = False

    @property
    def receptive_field(self) -> int:
        """How many input steps (the current one included) the output at one step can see:
        1 + sum over every convolution of (k-1)·d = 1 + 2 (k-1) (2^L - 1)."""
        convs = [m for m in self.modules() if isinstance(m, CausalConv1d)]
        return 1 + sum(c.left_pad for c in convs)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            raise DeepAtlasError(f"tcn: expected inputs (batch, time, {self.in_features}), got {tuple(x.shape)}")
        if x.shape[1] > self.receptive_field and not self._warned:
            self._warned = True
            warnings.warn(f"tcn: sequences of {x.shape[1]} steps are longer than the receptive field of "
                          f"{self.receptive_field}; each output sees only the last {self.receptive_field} "
                          "inputs (raise levels or kernel_size)", stacklevel=2)
        h = self.blocks(x.transpose(1, 2))       # (B, T, F) -> (B, F, T) -> (B, C, T)
        if self.per_step:
            return self.head(h.transpose(1, 2))  # (B, T, C) -> (B, T, K): an output at every step
        return self.head(h[:, :, -1])            # (B, C) at the last step -> (B, K)


register(Entry(
    name="tcn", title="TCN (temporal convolutional network)", family="sequence", year=2018,
    paper=Paper("S. Bai, J. Z. Kolter, V. Koltun", "An Empirical Evaluation of Generic Convolutional and "
                "Recurrent Networks for Sequence Modeling", "arXiv:1803.01271"),
    summary="Causal, dilated 1-D convolutions in weight-normalized residual blocks: dilation doubling per "
            "level gives an exponentially long, exactly known receptive field, and all steps run in parallel.",
    when_to_use="Sequence classification, tagging and forecasting where dependencies span a bounded, known "
                "horizon; long sequences that make RNNs slow to train; when a stable gradient path matters.",
    when_not="Dependencies longer than any affordable receptive field, or of unbounded length; streaming "
             "one step at a time with tiny memory (an RNN's state is smaller than the TCN's input history); "
             "when every output must see the whole sequence in both directions (bidirectional RNN, transformer).",
    relations=[
        Relation("builds_on", "wavenet", "WaveNet's dilated causal convolutions with residual blocks, for any "
                 "sequence task"),
        Relation("alternative_to", "lstm", "convolutions instead of recurrence: parallel over time, a bounded "
                 "receptive field"),
    ],
    config=Config, build=TCN, objective=SequenceObjective, task="sequence",
    # k=4 over 6 levels (r = 379) left the adding problem's initial plateau in every seed tried; k=8 over
    # 4 levels (r = 211, just over T = 200) and k=6 over 5 levels sometimes stayed on it for 1500+ steps
    train=Train(epochs=2, batch_size=32, lr=2e-3, grad_clip=1.0),
    data=Data("adding-200"),
    bar=Bar("mse", 0.005, "min", 180),
    more_bars=[Bar("loss", 0.0173, "min", 180, overrides={"data": "copy-100", "epochs": "1"})],
))
