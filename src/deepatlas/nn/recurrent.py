"""The recurrent layer driver: stacked, bidirectional, batch-first layers of any recurrent cell.

M. Schuster, K. K. Paliwal, 1997. "Bidirectional Recurrent Neural Networks." IEEE Transactions on
Signal Processing 45(11), 2673-2681.

A cell is the recurrence h_t = cell(x_t, h_{t-1}) of one architecture, and its equations live in
that architecture's file: the Elman update in `models/sequence/rnn.py` (`RNN_CELL`), the LSTM's
i, f, g, o gates in `lstm.py` (`LSTM_CELL`), the GRU's r, z, n gates in `gru.py` (`GRU_CELL`).
Each file writes its cell as a `scan` over all steps of one layer, with the back-propagation
through time written out (`LSTMScan.backward` and friends) instead of recorded op by op, which
keeps the backward loop as tight as the forward one. This module holds what they share: the
`Cell` description, the gradient of W_hh, and `Recurrent`, which stacks layers with dropout
between them and runs a second recurrence per layer from the end of the sequence to its start
(bidirectional: the output at t then sees the whole input), and `RecurrentNet`, a read-out on top.

Parameters use torch.nn.RNN/LSTM/GRU's names and layout (weight_ih_l{k}[_reverse] (G*H, F),
weight_hh_l{k}[_reverse] (G*H, H), bias_ih_l{k}..., bias_hh_l{k}...; gates in the order i, f, g, o
and r, z, n), so a state_dict loads into either one.

Speed: a layer's input projections W_ih x_t + b for all steps and both directions are one matmul;
the cell's loop then does one batched matmul of (forward, backward) states with W_hh per step,
writing into preallocated buffers.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.errors import DeepAtlasError

Init = Literal["uniform", "orthogonal"]


@dataclass(frozen=True)
class Cell:
    """A recurrent cell as the driver sees it; its equations are its `scan`, in its architecture's file.

    Inside a scan: T time, D directions, B batch, H hidden, G gate blocks. `xg` (T, D, B, G*H) holds the
    input projections W_ih x_t + b for every step in the loop's order: direction 1 (backward) is stored
    time-reversed, so step t of the loop advances both directions together.
    """
    name: str
    """the cell's name in reprs and errors (rnn, lstm, gru)"""
    gates: int
    """gate blocks G stacked in W_ih and W_hh, whose rows are G*H"""
    scan: Callable[..., tuple[Tensor, Tensor, Tensor | None]]
    """one layer, every step and direction: (xg (T, D, B, G*H), h0 (D, B, H), c0 (D, B, H) or None,
    w_hh (D, G*H, H), b_hh (D, G*H)) -> (h (T, D, B, H), h_T (D, B, H), c_T (D, B, H) or None)"""
    memory: bool = False
    """the state is (h, c), a hidden state and a memory cell (the LSTM), instead of h alone"""
    bias_hh_in_scan: bool = False
    """b_hh goes to the scan (the GRU's r ⊙ (W_hn h + b_hn)) instead of being folded into xg with b_ih"""
    keep_gate: int | None = None
    """the gate block that keeps the old state (LSTM f, GRU z): `forget_bias` and `chrono` set its bias"""
    write_gate: int | None = None
    """the gate block that writes the input (LSTM i): `chrono` sets its bias to minus the keep gate's"""
    torch_op: Callable | None = None
    """torch's own operator for the same equations on the same parameters (torch.rnn_tanh, torch.lstm, torch.gru,
    what nn.RNN, nn.LSTM and nn.GRU call): what an ONNX export runs, because tracing cannot follow a scan's
    writes into preallocated buffers"""


def grad_w_hh(d_pre: Tensor, h: Tensor, h0: Tensor) -> Tensor:
    """dL/dW_hh = sum over t and b of d_pre_t^T h_{t-1}, for a scan's backward:
    d_pre (T, D, B, G), h (T, D, B, H), h0 (D, B, H) -> (D, G, H)."""
    T, D, B, G = d_pre.shape
    d_flat = d_pre[1:].transpose(0, 1).reshape(D, (T - 1) * B, G)   # (D, (T-1) B, G); a view when D = 1
    h_flat = h[:-1].transpose(0, 1).reshape(D, (T - 1) * B, h.shape[-1])  # h_{t-1} for t >= 1 (T = 1: empty)
    return torch.baddbmm(torch.bmm(d_pre[0].transpose(1, 2), h0), d_flat.transpose(1, 2), h_flat)


# ---- the layer stack ---------------------------------------------------------------------------

class Recurrent(nn.Module):
    """Stacked (bidirectional) layers of a recurrent `cell` (RNN_CELL, LSTM_CELL, GRU_CELL...), batch first.

    forward(x (B, T, F), state=None) -> (outputs (B, T, H * D), state), where state is h, or (h, c)
    for the LSTM, each (layers * D, B, H) — the layout of torch.nn.RNN/LSTM/GRU(batch_first=True).
    Dropout (training only) is applied to every layer's output but the last.

    Initialization: "uniform" draws every parameter from U(-1/√H, 1/√H) (torch's default);
    "orthogonal" uses orthogonal W_hh blocks (Saxe et al. 2013), Xavier W_ih blocks and zero biases.
    `forget_bias` then sets the LSTM forget gate's bias (1.0 per Jozefowicz et al. 2015), or the GRU
    update gate's (z keeps h_{t-1}). `chrono` = T_max > 0 instead draws those biases as
    log U(1, T_max - 1), and the LSTM input gate's as its negative (Tallec & Ollivier 2018,
    arXiv:1804.11188): memory time scales spread up to T_max steps.
    """

    def __init__(self, cell: Cell, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, *, init: Init = "uniform",
                 forget_bias: float | None = None, chrono: int = 0):
        super().__init__()
        if not isinstance(cell, Cell):
            raise DeepAtlasError(f"unknown recurrent cell {cell!r}: pass a Cell, such as RNN_CELL, LSTM_CELL or "
                                 "GRU_CELL from deepatlas.models.sequence.rnn, .lstm or .gru")
        if num_layers < 1 or hidden_size < 1 or not 0 <= dropout < 1:
            raise DeepAtlasError("recurrent layers need num_layers >= 1, hidden_size >= 1, 0 <= dropout < 1")
        self.cell, self.input_size, self.hidden_size = cell, input_size, hidden_size
        self.num_layers, self.bidirectional, self.dropout = num_layers, bidirectional, dropout
        self.directions = 2 if bidirectional else 1
        self.init, self.forget_bias, self.chrono = init, forget_bias, chrono
        gh = cell.gates * hidden_size
        for k in range(num_layers):
            width_in = input_size if k == 0 else hidden_size * self.directions
            for sfx in self._suffixes():
                self.register_parameter(f"weight_ih_l{k}{sfx}", nn.Parameter(torch.empty(gh, width_in)))
                self.register_parameter(f"weight_hh_l{k}{sfx}", nn.Parameter(torch.empty(gh, hidden_size)))
                self.register_parameter(f"bias_ih_l{k}{sfx}", nn.Parameter(torch.empty(gh)))
                self.register_parameter(f"bias_hh_l{k}{sfx}", nn.Parameter(torch.empty(gh)))
        self.reset_parameters()

    def _suffixes(self) -> list[str]:
        return ["", "_reverse"][:self.directions]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        H, n_gates, cell = self.hidden_size, self.cell.gates, self.cell
        for name, p in self.named_parameters():
            if self.init == "uniform":
                nn.init.uniform_(p, -1 / math.sqrt(H), 1 / math.sqrt(H))
            elif name.startswith("bias"):
                nn.init.zeros_(p)
            else:  # one orthogonal / Xavier block per gate: each gate sees a well-conditioned map
                init = nn.init.orthogonal_ if name.startswith("weight_hh") else nn.init.xavier_uniform_
                for block in p.chunk(n_gates, 0):
                    init(block)
        if cell.keep_gate is None:
            return
        keep = slice(cell.keep_gate * H, (cell.keep_gate + 1) * H)  # the block keeping the old state: LSTM f, GRU z
        for k in range(self.num_layers):
            for sfx in self._suffixes():
                b_ih, b_hh = getattr(self, f"bias_ih_l{k}{sfx}"), getattr(self, f"bias_hh_l{k}{sfx}")
                if self.chrono > 0:
                    b = torch.log(torch.empty(H).uniform_(1, max(self.chrono - 1, 1 + 1e-6)))
                elif self.forget_bias is not None:
                    b = torch.full((H,), float(self.forget_bias))
                else:
                    continue
                b_ih[keep], b_hh[keep] = b, 0
                if self.chrono > 0 and cell.write_gate is not None:  # the LSTM's input gate opens when f closes
                    write = slice(cell.write_gate * H, (cell.write_gate + 1) * H)
                    b_ih[write], b_hh[write] = -b, 0

    def _layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Layer k's parameters stacked over directions: W_ih (D, GH, F), W_hh (D, GH, H), b_ih, b_hh (D, GH)."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        params = [[getattr(self, f"{n}_l{k}{sfx}") for sfx in self._suffixes()] for n in names]
        return tuple(torch.stack(p) if len(p) > 1 else p[0][None] for p in params)

    def forward(self, x: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise DeepAtlasError(f"recurrent layer expects input (B, T, {self.input_size}); got {tuple(x.shape)}")
        if torch.onnx.is_in_onnx_export() and self.cell.torch_op is not None:
            return self._torch_op(x, state)
        B, T, _ = x.shape
        D, H, L = self.directions, self.hidden_size, self.num_layers
        h0, c0 = self._initial_state(state, x)                      # (L * D, B, H) each (c0 None but LSTM)
        cell = self.cell
        layer_in = x.transpose(0, 1)                                 # (T, B, F): time-major inside
        h_n, c_n = [], []
        for k in range(L):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
            bias = b_ih if cell.bias_hh_in_scan else b_ih + b_hh    # the GRU's b_hn sits inside r ⊙ (.)
            # every step's input projection, both directions, in one matmul: (T*B, F) @ (F, D*GH); W^T made
            # row-major so that its gradient is x^T @ dxg, which BLAS does ~6x faster than dxg^T @ x when F is small
            xg = torch.addmm(bias.flatten(), layer_in.reshape(T * B, -1), w_ih.flatten(0, 1).t().contiguous())
            xg = xg.view(T, B, D, -1).transpose(1, 2)               # (T, D, B, GH)
            if D == 2:  # the backward direction reads the sequence from its end
                xg = torch.stack([xg[:, 0], xg[:, 1].flip(0)], 1)
            sl, dt = slice(k * D, (k + 1) * D), xg.dtype
            with torch.autocast(x.device.type, enabled=False):  # under autocast: the whole loop in xg's dtype
                # the cell's equations, every step of both directions: h (T, D, B, H), h_T and c_T (D, B, H)
                h, hT, cT = cell.scan(xg, h0[sl].to(dt), c0[sl].to(dt) if cell.memory else None, w_hh.to(dt),
                                      b_hh.to(dt) if cell.bias_hh_in_scan else None)
            h_n.append(hT)                                           # (D, B, H)
            if cell.memory:
                c_n.append(cT)
            if D == 2:  # (T, D, B, H) in loop order -> (T, B, 2H) in time order
                layer_in = torch.cat([h[:, 0], h[:, 1].flip(0)], -1)
            else:
                layer_in = h.view(T, B, H)
            if k < L - 1 and self.dropout > 0:
                layer_in = F.dropout(layer_in, self.dropout, self.training)
        out = layer_in.transpose(0, 1)                               # (B, T, D * H)
        h_n = torch.cat(h_n)                                         # (L * D, B, H)
        return out, ((h_n, torch.cat(c_n)) if cell.memory else h_n)

    def _torch_op(self, x: Tensor, state):
        """The same stack run by torch's operator on these weights (ONNX translates it as its RNN, LSTM or GRU)."""
        h0, c0 = self._initial_state(state, x)
        weights = [getattr(self, f"{name}_l{k}{sfx}") for k in range(self.num_layers) for sfx in self._suffixes()
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]  # torch's flat order
        out, *final = self.cell.torch_op(x, [h0, c0] if self.cell.memory else h0, weights, True, self.num_layers,
                                         self.dropout, self.training, self.bidirectional, True)  # batch first
        return out, (tuple(final) if self.cell.memory else final[0])

    def _initial_state(self, state, x: Tensor) -> tuple[Tensor, Tensor | None]:
        shape = (self.num_layers * self.directions, x.shape[0], self.hidden_size)
        if state is None:
            zeros = x.new_zeros(shape)
            return zeros, zeros if self.cell.memory else None
        if self.cell.memory != isinstance(state, tuple):
            raise DeepAtlasError("recurrent state: a tuple (h, c) for the LSTM, a tensor h for rnn and gru")
        h0, c0 = state if self.cell.memory else (state, None)
        for s in (h0, c0) if self.cell.memory else (h0,):
            if tuple(s.shape) != shape:
                raise DeepAtlasError(f"recurrent state must be {shape} (layers * directions, B, H); got {tuple(s.shape)}")
        return h0, c0

    def extra_repr(self) -> str:
        return (f"{self.cell.name}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, dropout={self.dropout}")


class RecurrentNet(nn.Module):
    """A `Recurrent` stack with a linear read-out, for the rnn, lstm and gru entries.

    many-to-one  (per_step=False): forward(x (B, T, F)) -> (B, K), read from the last layer's final
                 state: h_T, and for a bidirectional stack also the backward direction's final state
                 (the one that has read the whole sequence from the end), concatenated.
    many-to-many (per_step=True):  forward(x) -> (B, T, K), the head applied at every step.
    one-to-many: generate(x, steps) -> (B, steps, K) feeds each prediction back as the next input,
                 carrying the recurrent state (autoregressive forecasting; needs K = F, unidirectional).
    """

    def __init__(self, cell: Cell, cfg):
        super().__init__()
        self.rnn = Recurrent(cell, cfg.in_features, cfg.hidden, cfg.layers, cfg.bidirectional, cfg.dropout,
                             init=cfg.init, forget_bias=getattr(cfg, "forget_bias", None),
                             chrono=getattr(cfg, "chrono", 0))
        self.per_step = cfg.per_step
        self.head = nn.Linear(cfg.hidden * self.rnn.directions, cfg.n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        out, state = self.rnn(x)                                     # (B, T, D * H)
        if self.per_step:
            return self.head(out)                                    # (B, T, K)
        return self.head(self.final_state(state))                   # (B, K)

    def final_state(self, state) -> Tensor:
        """The last layer's final h of each direction, concatenated: (B, D * H)."""
        h = state[0] if isinstance(state, tuple) else state          # (layers * D, B, H)
        D = self.rnn.directions
        return h[-D:].transpose(0, 1).reshape(h.shape[1], -1)        # forward h_T | backward h_1

    @torch.no_grad()
    def generate(self, x: Tensor, steps: int) -> Tensor:
        """Continue x (B, T, F) by `steps` predictions, each fed back as the next step's input."""
        if self.rnn.bidirectional:
            raise DeepAtlasError("generate runs forward in time; a bidirectional model would need the future")
        if self.head.out_features != self.rnn.input_size:
            raise DeepAtlasError(f"generate feeds outputs back as inputs: needs n_outputs = in_features "
                                 f"({self.head.out_features} != {self.rnn.input_size})")
        if steps < 1:
            raise DeepAtlasError(f"generate: steps must be at least 1, got {steps}")
        out, state = self.rnn(x)                                     # read the context once
        preds = [self.head(out[:, -1])]                              # (B, K): the next value
        for _ in range(steps - 1):
            out, state = self.rnn(preds[-1][:, None], state)         # (B, 1, H): one more step on it
            preds.append(self.head(out[:, -1]))
        return torch.stack(preds, 1)                                 # (B, steps, K)
