"""The simple recurrent network (Elman network).

J. L. Elman, 1990. "Finding Structure in Time." Cognitive Science 14(2), 179-211.
(Trained by back-propagation through time: D. E. Rumelhart, G. E. Hinton, R. J. Williams, 1986;
P. J. Werbos, 1990.)

A hidden layer that also reads its own previous state, so the same weights process every step of
a sequence of any length and the state h_t summarizes everything seen so far:

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

The error reaching step t - k is multiplied k times by W_hh^T diag(tanh'): it vanishes (or
explodes) geometrically, so dependencies longer than a few dozen steps are out of reach (Bengio,
Simard & Frasconi 1994) — what the LSTM and GRU gates fix. The recurrence is written out below,
with its back-propagation through time, as `RNN_CELL`; `deepatlas.nn.recurrent.Recurrent` stacks
layers of it, reads bidirectionally (Schuster & Paliwal 1997) and puts dropout between layers,
all config fields.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd import Function

from deepatlas.catalog import Bar, Data, Entry, Paper, Probability, Relation, Size, Train, register
from deepatlas.nn.recurrent import Cell, Init, RecurrentNet, grad_w_hh
from deepatlas.tasks.sequence import SequenceObjective


@dataclass
class Config:
    in_features: Size = 2
    """input features per time step (set from the data)"""
    n_outputs: Size = 1
    """outputs: 1 for regression, the number of classes for classification (set from the data)"""
    per_step: bool = False
    """one output per time step (many-to-many) instead of one from the final state (set from the data)"""
    hidden: Size = 128
    """units per layer and direction"""
    layers: Size = 1
    """stacked recurrent layers"""
    bidirectional: bool = False
    """add a second RNN per layer reading the sequence backwards; their states are concatenated"""
    dropout: Probability = 0.0
    """dropout between stacked layers"""
    init: Init = "orthogonal"
    """weights: orthogonal W_hh, Xavier W_ih, zero biases (gradients keep their norm longer), or uniform (torch's)"""


# ---- the cell: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), every step of one layer ----------
# Shapes: T time, D directions (1, or 2 for a bidirectional layer, run together), B batch, H hidden.
# xg_t = W_ih x_t + b_ih + b_hh arrives precomputed for every step (see `deepatlas.nn.recurrent.Cell`).

class ElmanScan(Function):
    """h_t = tanh(xg_t + W_hh h_{t-1}) for t = 1..T, and its back-propagation through time."""

    @staticmethod
    def forward(ctx, xg: Tensor, h0: Tensor, w_hh: Tensor):
        # xg (T, D, B, H) with both biases folded in; h0 (D, B, H); w_hh (D, H, H)
        w_t = w_hh.transpose(1, 2)                                   # (D, H_in, H_out)
        h = torch.empty_like(xg)                                     # (T, D, B, H) every state
        h_prev = h0
        for x_t, h_t in zip(xg.unbind(0), h.unbind(0)):              # per-step views (D, B, H), made once
            # h_t = tanh(xg_t + W_hh h_{t-1}):  (D, B, H) @ (D, H, H) -> (D, B, H)
            h_prev = torch.baddbmm(x_t, h_prev, w_t, out=h_t).tanh_()
        ctx.save_for_backward(h, h0, w_hh)
        return h, h[-1].clone()

    @staticmethod
    def backward(ctx, d_h: Tensor, d_hT: Tensor):
        # d_h (T, D, B, H): dL/dh_t from the layer's outputs; d_hT (D, B, H): from the final state
        h, h0, w_hh = ctx.saved_tensors
        slope = 1 - h * h                                            # tanh' at every step, (T, D, B, H)
        d_pre = torch.empty_like(h)                                  # dL/d(pre-activation) per step
        slope_t, d_pre_t, d_h_t = slope.unbind(0), d_pre.unbind(0), d_h.unbind(0)
        dh = d_h_t[-1] + d_hT
        for t in range(len(slope_t) - 1, -1, -1):
            torch.mul(dh, slope_t[t], out=d_pre_t[t])                # d(pre)_t = dh_t ⊙ (1 - h_t²)
            # dh_{t-1} = d(pre)_t W_hh + the output's own gradient:  (D, B, H) @ (D, H, H) -> (D, B, H)
            dh = torch.bmm(d_pre_t[t], w_hh) if t == 0 else torch.baddbmm(d_h_t[t - 1], d_pre_t[t], w_hh)
        return d_pre, dh, grad_w_hh(d_pre, h, h0)


def scan(xg: Tensor, h0: Tensor, c0: None, w_hh: Tensor, b_hh: None) -> tuple[Tensor, Tensor, None]:
    """The `Cell` interface: every state h (T, D, B, H), the final one (D, B, H), no memory cell."""
    h, h_T = ElmanScan.apply(xg, h0, w_hh)
    return h, h_T, None


RNN_CELL = Cell("rnn", gates=1, scan=scan, torch_op=torch.rnn_tanh)


def build(cfg: Config) -> RecurrentNet:
    return RecurrentNet(RNN_CELL, cfg)


register(Entry(
    name="rnn", title="Elman RNN (simple recurrent network)", family="sequence", year=1990,
    paper=Paper("J. L. Elman", "Finding Structure in Time", "Cognitive Science 14(2), 179-211, 1990"),
    summary="One tanh layer that reads the input and its own previous state at every step: the same "
            "weights for any sequence length, but a memory that fades within tens of steps.",
    when_to_use="Short sequences and short dependencies; a baseline that shows what gating buys; tiny "
                "models and streaming where every multiply counts.",
    when_not="Dependencies longer than a few dozen steps (vanishing gradients: use an LSTM, GRU or TCN); "
             "long sequences that must train fast (TCN, transformer).",
    relations=[
        Relation("builds_on", "mlp", "feeds its hidden state back: an MLP unrolled in time with shared weights"),
    ],
    config=Config, build=build, objective=SequenceObjective, task="sequence",
    train=Train(epochs=5, batch_size=64, lr=1e-3, grad_clip=1.0),
    data=Data("adding-50"),
    bar=Bar("mse", 0.05, "min", 120),
))
