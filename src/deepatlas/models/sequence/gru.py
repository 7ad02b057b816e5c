"""GRU: the gated recurrent unit.

K. Cho, B. van Merriënboer, C. Gulcehre, D. Bahdanau, F. Bougares, H. Schwenk, Y. Bengio, 2014.
"Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation."
arXiv:1406.1078. (Compared with the LSTM in J. Chung et al., 2014, arXiv:1412.3555.)

A lighter gated cell with no separate memory: an update gate z interpolates between the old state
and a candidate n, and a reset gate r decides how much of the old state the candidate may read.
When z stays near 1 the state (and the error) passes through unchanged, which gives the GRU the
LSTM's long memory with three gate blocks instead of four and no output gate.

    r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

(torch's convention, in which z is the fraction kept; the paper writes h_t = z ⊙ h_{t-1} + (1 - z)
⊙ h̃ the same way, and applies r before W_hn, a variant that gives the same model class.) The cell
is written out below, with its back-propagation through time, as `GRU_CELL`;
`deepatlas.nn.recurrent.Recurrent` stacks layers of it, reads bidirectionally (Schuster & Paliwal
1997) and puts dropout between layers, all config fields.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd import Function

from deepatlas.catalog import Bar, Count, Data, Entry, Paper, Probability, Relation, Size, Train, register
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
    """stacked GRU layers"""
    bidirectional: bool = False
    """add a second GRU per layer reading the sequence backwards; their states are concatenated"""
    dropout: Probability = 0.0
    """dropout between stacked layers"""
    init: Init = "uniform"
    """weights: uniform U(-1/√H, 1/√H) (torch's default), or orthogonal W_hh with Xavier W_ih and zero biases"""
    chrono: Count = 0
    """chrono init (Tallec & Ollivier 2018): update-gate biases log U(1, chrono - 1) (memory up to chrono steps); 0: off"""


# ---- the cell: gates r, z, candidate n, state h_t, every step of one layer ------------------------
# Shapes: T time, D directions (1, or 2 for a bidirectional layer, run together), B batch, H hidden.
# xg_t = W_ih x_t + b_ih arrives precomputed for every step (see `deepatlas.nn.recurrent.Cell`), the
# three blocks in the order r, z, n: (D, B, 3H). b_hh stays apart: r multiplies W_hn h_{t-1} + b_hn.

class GRUScan(Function):
    """r, z = σ(xg_{r,z} + W_h{r,z} h_{t-1} + b_h{r,z});  n = tanh(xg_n + r ⊙ (W_hn h_{t-1} + b_hn));
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1} = n + z ⊙ (h_{t-1} - n), for t = 1..T, and its back-propagation through time."""

    @staticmethod
    def forward(ctx, xg: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor):
        # xg (T, D, B, 3H) = W_ih x + b_ih; h0 (D, B, H); w_hh (D, 3H, H); b_hh (D, 3H) stays apart: r gates it
        T, D, B, G = xg.shape
        H = G // 3
        w_t = w_hh.transpose(1, 2)                                   # (D, H, 3H)
        b = b_hh[:, None]                                            # (D, 1, 3H)
        hg = xg.new_empty(T, D, B, 3, H)                             # W_hh h_{t-1} + b_hh (its n part is kept for BPTT)
        rz = xg.new_empty(T, D, B, 2, H)                             # r, z
        n, h = xg.new_empty(T, D, B, H), xg.new_empty(T, D, B, H)
        # per-step views, made once, so that the loop only computes
        x = xg.view(T, D, B, 3, H)
        x_rz, x_n, hg_t, hg_rz, hg_n = x[:, :, :, :2].unbind(0), x[:, :, :, 2].unbind(0), \
            hg.view(T, D, B, G).unbind(0), hg[:, :, :, :2].unbind(0), hg[:, :, :, 2].unbind(0)
        rz_t, r, z = rz.unbind(0), rz[:, :, :, 0].unbind(0), rz[:, :, :, 1].unbind(0)
        n_t, h_t = n.unbind(0), h.unbind(0)
        h_prev = h0
        for t in range(T):
            # W_hh h_{t-1} + b_hh for r, z, n in one matmul: (D, B, H) @ (D, H, 3H) -> (D, B, 3H)
            torch.baddbmm(b, h_prev, w_t, out=hg_t[t])
            torch.add(x_rz[t], hg_rz[t], out=rz_t[t]).sigmoid_()    # r, z = σ(.)                 (D, B, 2, H)
            torch.addcmul(x_n[t], r[t], hg_n[t], out=n_t[t]).tanh_()  # n = tanh(x_n + r ⊙ h_n)    (D, B, H)
            h_prev = torch.sub(h_prev, n_t[t], out=h_t[t]).mul_(z[t]).add_(n_t[t])  # h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
        ctx.save_for_backward(hg, rz, n, h, h0, w_hh)
        return h, h[-1].clone()

    @staticmethod
    def backward(ctx, d_h: Tensor, d_hT: Tensor):
        # d_h (T, D, B, H): dL/dh_t from the layer's outputs; d_hT (D, B, H): from the final state
        hg, rz, n, h, h0, w_hh = ctx.saved_tensors
        T, D, B, _, H = hg.shape
        r, z = rz.unbind(3)                                          # (T, D, B, H)
        # per unit of dh_t: d(pre n) = (1 - z) tanh'(n); d(pre r) = d(pre n) ⊙ h_n σ'(r);
        # d(pre z) = (h_{t-1} - n) σ'(z); and W_hn h + b_hn sees d(pre n) ⊙ r
        n_from_h = (1 - z) * (1 - n * n)
        hg_from_h = torch.stack([n_from_h * hg[:, :, :, 2] * r * (1 - r),
                                 (torch.cat([h0[None], h[:-1]]) - n) * z * (1 - z), n_from_h * r], 3)  # (T, D, B, 3, H)
        d_hg = torch.empty_like(hg)                                  # dL/d(W_hh h_{t-1} + b_hh)
        dhs = torch.empty_like(h)                                    # dL/dh_t
        d_hg_t, d_flat_t, hg_from_h_t = d_hg.unbind(0), d_hg.view(T, D, B, 3 * H).unbind(0), hg_from_h.unbind(0)
        dhs_t, d_h_t, z_t = dhs.unbind(0), d_h.unbind(0), z.unbind(0)
        torch.add(d_h_t[-1], d_hT, out=dhs_t[-1])
        for t in range(T - 1, -1, -1):
            dh = dhs_t[t]
            torch.mul(hg_from_h_t[t], dh.unsqueeze(2), out=d_hg_t[t])  # (D, B, 3, H) * (D, B, 1, H)
            direct = torch.mul(dh, z_t[t]) if t == 0 else torch.addcmul(d_h_t[t - 1], dh, z_t[t])  # z ⊙ h_{t-1} path
            # dh_{t-1} = direct + d(W_hh h_{t-1}) W_hh:  (D, B, 3H) @ (D, 3H, H) -> (D, B, H)
            dh0 = torch.baddbmm(direct, d_flat_t[t], w_hh, out=None if t == 0 else dhs_t[t - 1])
        d_flat = d_hg.view(T, D, B, 3 * H)
        d_w_hh, d_b_hh = grad_w_hh(d_flat, h, h0), d_flat.sum((0, 2))
        torch.mul(dhs, n_from_h, out=d_hg[:, :, :, 2])              # x_n enters outside r's product: d_xg
        return d_flat, dh0, d_w_hh, d_b_hh


def scan(xg: Tensor, h0: Tensor, c0: None, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor, None]:
    """The `Cell` interface: every state h (T, D, B, H), the final one (D, B, H), no memory cell."""
    h, h_T = GRUScan.apply(xg, h0, w_hh, b_hh)
    return h, h_T, None


# gates in torch's order r, z, n: z (block 1) keeps h_{t-1}; b_hh goes to the scan, inside r ⊙ (.)
GRU_CELL = Cell("gru", gates=3, scan=scan, bias_hh_in_scan=True, keep_gate=1, torch_op=torch.gru)


def build(cfg: Config) -> RecurrentNet:
    return RecurrentNet(GRU_CELL, cfg)


register(Entry(
    name="gru", title="GRU (gated recurrent unit)", family="sequence", year=2014,
    paper=Paper("K. Cho, B. van Merriënboer, C. Gulcehre, D. Bahdanau, F. Bougares, H. Schwenk, Y. Bengio",
                "Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation",
                "arXiv:1406.1078"),
    summary="A gated recurrent cell without a separate memory: an update gate blends the old state with a "
            "candidate that a reset gate lets read the past; long memory with fewer parameters than the LSTM.",
    when_to_use="The same sequence problems as the LSTM (long-range dependencies, tagging, forecasting) with "
                "25% fewer recurrent weights; often as good and quicker to train on small data.",
    when_not="Very long sequences that must train fast (TCN or transformer); tasks that need counting or an "
             "unbounded memory, where the LSTM's separate cell does better; purely local patterns (CNN).",
    relations=[
        Relation("variant_of", "lstm", "two gates and no separate cell: fewer parameters, similar memory"),
        Relation("alternative_to", "tcn", "recurrence, unbounded history, sequential steps"),
    ],
    config=Config, build=build, objective=SequenceObjective, task="sequence",
    train=Train(epochs=2, batch_size=64, lr=1e-2, grad_clip=1.0),
    data=Data("adding-200"),
    bar=Bar("mse", 0.01, "min", 180),
))
