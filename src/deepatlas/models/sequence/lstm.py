"""LSTM: long short-term memory, with the forget gate.

S. Hochreiter, J. Schmidhuber, 1997. "Long Short-Term Memory." Neural Computation 9(8), 1735-1780.
F. A. Gers, J. Schmidhuber, F. Cummins, 2000. "Learning to Forget: Continual Prediction with
LSTM." Neural Computation 12(10), 2451-2471.

A recurrent cell with a separate memory c_t that is updated additively: an input gate i decides
what to write, a forget gate f what to keep (Gers et al.'s addition), an output gate o what to
show. Because c_{t-1} reaches c_t through f ⊙ c_{t-1} rather than through a squashing
nonlinearity, the error flows back over hundreds of steps when f stays near 1 — the "constant
error carousel" that the vanilla RNN lacks.

    i, f, o = σ(W_i,f,o [x_t; h_{t-1}] + b),   g = tanh(W_g [x_t; h_{t-1}] + b_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g,                  h_t = o ⊙ tanh(c_t)

The cell is written out below, with its back-propagation through time, as `LSTM_CELL`;
`deepatlas.nn.recurrent.Recurrent` stacks layers of it, reads bidirectionally (Schuster & Paliwal
1997) and puts dropout between layers, all config fields. The forget gates' initial biases decide
how long the memory lasts before training: 1.0 (Jozefowicz et al. 2015), or the chrono
initialization of Tallec & Ollivier 2018 (arXiv:1804.11188), b_f ~ log U(1, T_max - 1) and
b_i = -b_f, which spreads the time scales up to a horizon T_max.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd import Function

from deepatlas.catalog import Bar, Count, Data, Entry, Paper, Probability, Real, Relation, Size, Train, register
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
    hidden: Size = 64
    """units per layer and direction"""
    layers: Size = 1
    """stacked LSTM layers"""
    bidirectional: bool = False
    """add a second LSTM per layer reading the sequence backwards; their states are concatenated"""
    dropout: Probability = 0.0
    """dropout between stacked layers"""
    init: Init = "uniform"
    """weights: uniform U(-1/√H, 1/√H) (torch's default), or orthogonal W_hh with Xavier W_ih and zero biases"""
    forget_bias: Real = 1.0
    """forget-gate bias at init when chrono is 0 (σ(1) ≈ 0.73 keeps memory longer from the start)"""
    chrono: Count = 200
    """chrono init: forget biases log U(1, chrono - 1), input biases their negative (memory up to chrono steps); 0: off"""


# ---- the cell: gates i, f, g, o, memory c_t, state h_t, every step of one layer -----------------
# Shapes: T time, D directions (1, or 2 for a bidirectional layer, run together), B batch, H hidden.
# xg_t = W_ih x_t + b_ih + b_hh arrives precomputed for every step (see `deepatlas.nn.recurrent.Cell`),
# the four gates' pre-activations stacked in the order i, f, g, o: (D, B, 4H).

class LSTMScan(Function):
    """(i, f, g, o) = xg_t + W_hh h_{t-1};  c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g);  h_t = σ(o) ⊙ tanh(c_t)
    for t = 1..T, and its back-propagation through time."""

    @staticmethod
    def forward(ctx, xg: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor):
        # xg (T, D, B, 4H) with both biases folded in; h0, c0 (D, B, H); w_hh (D, 4H, H)
        T, D, B, G = xg.shape
        H = G // 4
        w_t = w_hh.transpose(1, 2)                                   # (D, H, 4H)
        gates = xg.new_empty(T, D, B, 4, H)                          # activated i, f, g, o (kept for BPTT)
        c, tanh_c, h = (xg.new_empty(T, D, B, H) for _ in range(3))  # c_t, tanh(c_t), h_t
        # per-step views, made once, so that the loop only computes
        x_t, pre_t, if_t = xg.unbind(0), gates.view(T, D, B, G).unbind(0), gates[:, :, :, :2].unbind(0)
        i, f, g, o = (gates[:, :, :, k].unbind(0) for k in range(4))  # each T views (D, B, H)
        c_t, tanh_c_t, h_t = c.unbind(0), tanh_c.unbind(0), h.unbind(0)
        h_prev, c_prev = h0, c0
        for t in range(T):
            # the four pre-activations xg_t + W_hh h_{t-1} in one matmul: (D, B, H) @ (D, H, 4H) -> (D, B, 4H)
            torch.baddbmm(x_t[t], h_prev, w_t, out=pre_t[t])
            if_t[t].sigmoid_()                                       # i, f = σ(.)        (D, B, 2, H)
            g[t].tanh_()                                             # g = tanh(.)        (D, B, H)
            o[t].sigmoid_()                                          # o = σ(.)           (D, B, H)
            c_prev = torch.mul(f[t], c_prev, out=c_t[t]).addcmul_(i[t], g[t])  # c_t = f ⊙ c_{t-1} + i ⊙ g
            h_prev = torch.mul(o[t], torch.tanh(c_prev, out=tanh_c_t[t]), out=h_t[t])  # h_t = o ⊙ tanh(c_t)
        ctx.save_for_backward(gates, c, tanh_c, h, h0, c0, w_hh)
        return h, h[-1].clone(), c[-1].clone()

    @staticmethod
    def backward(ctx, d_h: Tensor, d_hT: Tensor, d_cT: Tensor):
        # d_h (T, D, B, H): dL/dh_t from the layer's outputs; d_hT, d_cT (D, B, H): from the final state
        gates, c, tanh_c, h, h0, c0, w_hh = ctx.saved_tensors
        T, D, B, _, H = gates.shape
        d_gates = torch.empty_like(gates)                            # dL/d(gate pre-activations), (T, D, B, 4, H)
        # per-step views, made once: gates i, f, g, o and their gradients, each T views (D, B, H)
        i_t, f_t, g_t, o_t = (gates[:, :, :, k].unbind(0) for k in range(4))
        d_i_t, d_f_t, d_g_t, d_o_t = (d_gates[:, :, :, k].unbind(0) for k in range(4))
        d_pre_t, c_t, tanh_c_t, d_h_t = d_gates.view(T, D, B, 4 * H).unbind(0), c.unbind(0), tanh_c.unbind(0), d_h.unbind(0)
        dh, dc = d_h_t[-1] + d_hT, d_cT                              # dL/dh_T; dL/dc_T
        for t in range(T - 1, -1, -1):  # the chain rule step by step, on tensors of one step (cache-sized)
            i, f, g, o, tc = i_t[t], f_t[t], g_t[t], o_t[t], tanh_c_t[t]
            c_prev = c_t[t - 1] if t > 0 else c0
            # h_t = o ⊙ tanh(c_t):  dc_t = f_{t+1} ⊙ dc_{t+1} + dh ⊙ o ⊙ (1 - tanh² c_t);
            # d(pre o) = dh ⊙ tanh(c_t) ⊙ o (1 - o)
            dh_o = dh * o
            dc = dh_o + dc if t == T - 1 else torch.addcmul(dh_o, dc, f_t[t + 1])
            dh_o_tc = dh_o.mul_(tc)
            dc.addcmul_(dh_o_tc, tc, value=-1)
            torch.addcmul(dh_o_tc, dh_o_tc, o, value=-1, out=d_o_t[t])
            # c_t = f ⊙ c_{t-1} + i ⊙ g:  d(pre g) = dc i (1 - g²);  d(pre i) = dc g i (1 - i);
            # d(pre f) = dc c_{t-1} f (1 - f)
            dc_i = dc * i
            dc_i_g = dc_i * g
            torch.addcmul(dc_i, dc_i_g, g, value=-1, out=d_g_t[t])
            torch.addcmul(dc_i_g, dc_i_g, i, value=-1, out=d_i_t[t])
            u = torch.mul(dc, c_prev).mul_(f)
            torch.addcmul(u, u, f, value=-1, out=d_f_t[t])
            # h_{t-1} feeds all four gates through W_hh, and the layer's output at t-1:
            # dh_{t-1} = d(pre)_t W_hh + d_h_{t-1}:  (D, B, 4H) @ (D, 4H, H) -> (D, B, H)
            dh = torch.bmm(d_pre_t[t], w_hh) if t == 0 else torch.baddbmm(d_h_t[t - 1], d_pre_t[t], w_hh)
        dc = dc * f_t[0]                                             # dL/dc_0
        d_pre = d_gates.view(T, D, B, 4 * H)
        return d_pre, dh, dc, grad_w_hh(d_pre, h, h0)


def scan(xg: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, b_hh: None) -> tuple[Tensor, Tensor, Tensor]:
    """The `Cell` interface: every state h (T, D, B, H), the final h_T and c_T (D, B, H)."""
    return LSTMScan.apply(xg, h0, c0, w_hh)


# gates in torch's order i, f, g, o: f (block 1) keeps c_{t-1}, i (block 0) writes g
LSTM_CELL = Cell("lstm", gates=4, scan=scan, memory=True, keep_gate=1, write_gate=0, torch_op=torch.lstm)


def build(cfg: Config) -> RecurrentNet:
    return RecurrentNet(LSTM_CELL, cfg)


register(Entry(
    name="lstm", title="LSTM (long short-term memory)", family="sequence", year=1997,
    paper=Paper("S. Hochreiter, J. Schmidhuber (forget gate: F. A. Gers, J. Schmidhuber, F. Cummins, 2000)",
                "Long Short-Term Memory", "Neural Computation 9(8), 1735-1780, 1997"),
    summary="A recurrent cell with a gated, additively updated memory: input, forget and output gates decide "
            "what to write, keep and show, so errors flow back over hundreds of steps.",
    when_to_use="Sequences with long-range dependencies read one step at a time: classification, tagging "
                "(bidirectional), forecasting, streaming with a small state; the robust recurrent default.",
    when_not="Very long sequences that must train fast (TCN or transformer run all steps in parallel); "
             "short, local patterns where a CNN or plain RNN is enough; when a GRU's fewer parameters suffice.",
    relations=[
        Relation("builds_on", "rnn", "a gated cell with a constant error carousel against vanishing gradients"),
    ],
    config=Config, build=build, objective=SequenceObjective, task="sequence",
    train=Train(epochs=2, batch_size=64, lr=1e-2, grad_clip=1.0),
    data=Data("adding-200"),
    bar=Bar("mse", 0.01, "min", 180),
    more_bars=[Bar("accuracy", 0.95, "max", 30,
                   overrides={"data": "future-tagging", "bidirectional": "true", "epochs": "2"})],
    notes="With chrono initialization (T_max = 200) and Adam at 1e-2 the 200-step adding problem opens after "
          "300-600 updates; with a forget bias of 1 instead, the same recipe stays at the trivial MSE of 1/6 "
          "throughout.",
))
