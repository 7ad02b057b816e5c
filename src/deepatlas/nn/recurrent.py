"""Recurrent layers: the Elman RNN, the LSTM and the GRU, stacked and bidirectional.

J. L. Elman, 1990. "Finding Structure in Time." Cognitive Science 14(2), 179-211.
S. Hochreiter, J. Schmidhuber, 1997. "Long Short-Term Memory." Neural Computation 9(8), 1735-1780;
with the forget gate of F. A. Gers, J. Schmidhuber, F. Cummins, 2000. "Learning to Forget: Continual
Prediction with LSTM." Neural Computation 12(10), 2451-2471.
K. Cho et al., 2014. "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
Machine Translation." arXiv:1406.1078.
M. Schuster, K. K. Paliwal, 1997. "Bidirectional Recurrent Neural Networks." IEEE Transactions on
Signal Processing 45(11), 2673-2681.

The cells (σ the logistic sigmoid, ⊙ the elementwise product; x_t the input, h_{t-1} the state):

    rnn:   h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

    lstm:  i, f, g, o = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh       (4 gate pre-activations)
           i, f, o = σ(i), σ(f), σ(o);  g = tanh(g)                  (input, forget, output gate; candidate)
           c_t = f ⊙ c_{t-1} + i ⊙ g                                 (the cell: an additive memory)
           h_t = o ⊙ tanh(c_t)

    gru:   r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)             (reset gate)
           z = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)             (update gate: how much of h_{t-1} to keep)
           n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))    (candidate)
           h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

The LSTM's cell c_t is carried forward by f ⊙ c_{t-1}, a product with a gate near 1 rather than a
squashing nonlinearity, so the error can flow back over hundreds of steps where the Elman RNN's
gradient shrinks (or explodes) by W_hh tanh' at every step. A bidirectional layer runs a second
recurrence from the end of the sequence to its start and concatenates the two states, so the
output at t sees the whole input; layers stack, with dropout between them.

Parameters use torch.nn.RNN/LSTM/GRU's names and layout (weight_ih_l{k}[_reverse] (G*H, F),
weight_hh_l{k}[_reverse] (G*H, H), bias_ih_l{k}..., bias_hh_l{k}..., gates in the order i, f, g, o
and r, z, n), so a state_dict loads into either one.

Speed: a layer's input projections W_ih x_t + b for all steps and both directions are one matmul;
the loop then does one batched matmul of (forward, backward) states with W_hh per step, writing
into preallocated buffers. Back-propagation through time is written out (`_LSTMScan.backward` and
friends) instead of recorded op by op, which keeps the backward loop as tight as the forward one.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function

from deepatlas.errors import DeepAtlasError

Cell = Literal["rnn", "lstm", "gru"]
Init = Literal["uniform", "orthogonal"]
GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # gate blocks stacked in W_ih, W_hh (rows G*H)


# ---- the recurrences: one layer, all directions at once ----------------------------------------
# Shapes inside: T time, D directions, B batch, H hidden. `xg` holds the input projections
# W_ih x_t + b in the loop's order: direction 1 (backward) is stored time-reversed, so step t of
# the loop advances both directions together.

class _RNNScan(Function):
    """Elman: h_t = tanh(xg_t + W_hh h_{t-1})."""

    @staticmethod
    def forward(ctx, xg: Tensor, h0: Tensor, w_hh: Tensor):
        # xg (T, D, B, H) with both biases folded in; h0 (D, B, H); w_hh (D, H, H)
        w_t = w_hh.transpose(1, 2)                                   # (D, H_in, H_out)
        h = torch.empty_like(xg)                                     # (T, D, B, H) every state
        h_prev = h0
        for x_t, h_t in zip(xg.unbind(0), h.unbind(0)):              # per-step views, made once
            h_prev = torch.baddbmm(x_t, h_prev, w_t, out=h_t).tanh_()
        ctx.save_for_backward(h, h0, w_hh)
        return h, h[-1].clone()

    @staticmethod
    def backward(ctx, d_h: Tensor, d_hT: Tensor):
        h, h0, w_hh = ctx.saved_tensors
        slope = 1 - h * h                                            # tanh' at every step, (T, D, B, H)
        d_pre = torch.empty_like(h)                                  # dL/d(pre-activation) per step
        slope_t, d_pre_t, d_h_t = slope.unbind(0), d_pre.unbind(0), d_h.unbind(0)
        dh = d_h_t[-1] + d_hT
        for t in range(len(slope_t) - 1, -1, -1):
            torch.mul(dh, slope_t[t], out=d_pre_t[t])
            dh = torch.bmm(d_pre_t[t], w_hh) if t == 0 else torch.baddbmm(d_h_t[t - 1], d_pre_t[t], w_hh)
        return d_pre, dh, _sum_outer(d_pre, h, h0)


class _LSTMScan(Function):
    """LSTM: (i, f, g, o) = xg_t + W_hh h_{t-1};  c_t = σ(f) c_{t-1} + σ(i) tanh(g);  h_t = σ(o) tanh(c_t)."""

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
            torch.baddbmm(x_t[t], h_prev, w_t, out=pre_t[t])        # one matmul for all four gates
            if_t[t].sigmoid_()                                       # i, f = σ(.)
            g[t].tanh_()                                             # g = tanh(.)
            o[t].sigmoid_()                                          # o = σ(.)
            c_prev = torch.mul(f[t], c_prev, out=c_t[t]).addcmul_(i[t], g[t])  # c_t = f ⊙ c_{t-1} + i ⊙ g
            h_prev = torch.mul(o[t], torch.tanh(c_prev, out=tanh_c_t[t]), out=h_t[t])  # h_t = o ⊙ tanh(c_t)
        ctx.save_for_backward(gates, c, tanh_c, h, h0, c0, w_hh)
        return h, h[-1].clone(), c[-1].clone()

    @staticmethod
    def backward(ctx, d_h: Tensor, d_hT: Tensor, d_cT: Tensor):
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
            # h_{t-1} feeds all four gates through W_hh, and the layer's output at t-1
            dh = torch.bmm(d_pre_t[t], w_hh) if t == 0 else torch.baddbmm(d_h_t[t - 1], d_pre_t[t], w_hh)
        dc = dc * f_t[0]                                             # dL/dc_0
        d_pre = d_gates.view(T, D, B, 4 * H)
        return d_pre, dh, dc, _sum_outer(d_pre, h, h0)


class _GRUScan(Function):
    """GRU: r, z = σ(xg_rz + W_h{r,z} h + b_h{r,z});  n = tanh(xg_n + r ⊙ (W_hn h + b_hn));  h' = n + z ⊙ (h - n)."""

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
            torch.baddbmm(b, h_prev, w_t, out=hg_t[t])              # one matmul for r, z, n
            torch.add(x_rz[t], hg_rz[t], out=rz_t[t]).sigmoid_()    # r, z = σ(.)
            torch.addcmul(x_n[t], r[t], hg_n[t], out=n_t[t]).tanh_()  # n = tanh(x_n + r ⊙ h_n)
            h_prev = torch.sub(h_prev, n_t[t], out=h_t[t]).mul_(z[t]).add_(n_t[t])  # h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
        ctx.save_for_backward(hg, rz, n, h, h0, w_hh)
        return h, h[-1].clone()

    @staticmethod
    def backward(ctx, d_h: Tensor, d_hT: Tensor):
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
            torch.mul(hg_from_h_t[t], dh.unsqueeze(2), out=d_hg_t[t])
            direct = torch.mul(dh, z_t[t]) if t == 0 else torch.addcmul(d_h_t[t - 1], dh, z_t[t])  # z ⊙ h_{t-1} path
            dh0 = torch.baddbmm(direct, d_flat_t[t], w_hh, out=None if t == 0 else dhs_t[t - 1])
        d_flat = d_hg.view(T, D, B, 3 * H)
        d_w_hh, d_b_hh = _sum_outer(d_flat, h, h0), d_flat.sum((0, 2))
        torch.mul(dhs, n_from_h, out=d_hg[:, :, :, 2])              # x_n enters outside r's product: d_xg
        return d_flat, dh0, d_w_hh, d_b_hh


def _sum_outer(d_pre: Tensor, h: Tensor, h0: Tensor) -> Tensor:
    """dL/dW_hh = sum over t and b of d_pre_t^T h_{t-1}: (T, D, B, G), (T, D, B, H), (D, B, H) -> (D, G, H)."""
    T, D, B, G = d_pre.shape
    d_flat = d_pre[1:].transpose(0, 1).reshape(D, (T - 1) * B, G)   # (D, (T-1) B, G); a view when D = 1
    h_flat = h[:-1].transpose(0, 1).reshape(D, (T - 1) * B, h.shape[-1])  # h_{t-1} for t >= 1 (T = 1: empty)
    return torch.baddbmm(torch.bmm(d_pre[0].transpose(1, 2), h0), d_flat.transpose(1, 2), h_flat)


# ---- the layer stack ---------------------------------------------------------------------------

class Recurrent(nn.Module):
    """Stacked (bidirectional) RNN / LSTM / GRU layers, batch first.

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
        if cell not in GATES:
            raise DeepAtlasError(f"unknown recurrent cell {cell!r}; one of {', '.join(GATES)}")
        if num_layers < 1 or hidden_size < 1 or not 0 <= dropout < 1:
            raise DeepAtlasError("recurrent layers need num_layers >= 1, hidden_size >= 1, 0 <= dropout < 1")
        self.cell, self.input_size, self.hidden_size = cell, input_size, hidden_size
        self.num_layers, self.bidirectional, self.dropout = num_layers, bidirectional, dropout
        self.directions = 2 if bidirectional else 1
        self.init, self.forget_bias, self.chrono = init, forget_bias, chrono
        gh = GATES[cell] * hidden_size
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
        H, n_gates = self.hidden_size, GATES[self.cell]
        for name, p in self.named_parameters():
            if self.init == "uniform":
                nn.init.uniform_(p, -1 / math.sqrt(H), 1 / math.sqrt(H))
            elif name.startswith("bias"):
                nn.init.zeros_(p)
            else:  # one orthogonal / Xavier block per gate: each gate sees a well-conditioned map
                init = nn.init.orthogonal_ if name.startswith("weight_hh") else nn.init.xavier_uniform_
                for block in p.chunk(n_gates, 0):
                    init(block)
        if self.cell == "rnn":
            return
        keep = slice(H, 2 * H)  # the gate block that keeps the old state: LSTM f (i, f, g, o), GRU z (r, z, n)
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
                if self.chrono > 0 and self.cell == "lstm":  # input gate opens when the forget gate closes
                    b_ih[:H], b_hh[:H] = -b, 0

    def _layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Layer k's parameters stacked over directions: W_ih (D, GH, F), W_hh (D, GH, H), b_ih, b_hh (D, GH)."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        params = [[getattr(self, f"{n}_l{k}{sfx}") for sfx in self._suffixes()] for n in names]
        return tuple(torch.stack(p) if len(p) > 1 else p[0][None] for p in params)

    def forward(self, x: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise DeepAtlasError(f"recurrent layer expects input (B, T, {self.input_size}); got {tuple(x.shape)}")
        B, T, _ = x.shape
        D, H, L = self.directions, self.hidden_size, self.num_layers
        h0, c0 = self._initial_state(state, x)                      # (L * D, B, H) each (c0 None but LSTM)
        layer_in = x.transpose(0, 1)                                 # (T, B, F): time-major inside
        h_n, c_n = [], []
        for k in range(L):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
            bias = b_ih if self.cell == "gru" else b_ih + b_hh       # the GRU's b_hn sits inside r ⊙ (.)
            # every step's input projection, both directions, in one matmul: (T*B, F) @ (F, D*GH); W^T made
            # row-major so that its gradient is x^T @ dxg, which BLAS does ~6x faster than dxg^T @ x when F is small
            xg = torch.addmm(bias.flatten(), layer_in.reshape(T * B, -1), w_ih.flatten(0, 1).t().contiguous())
            xg = xg.view(T, B, D, -1).transpose(1, 2)               # (T, D, B, GH)
            if D == 2:  # the backward direction reads the sequence from its end
                xg = torch.stack([xg[:, 0], xg[:, 1].flip(0)], 1)
            sl, dt = slice(k * D, (k + 1) * D), xg.dtype
            with torch.autocast(x.device.type, enabled=False):  # under autocast: the whole loop in xg's dtype
                if self.cell == "lstm":
                    h, hT, cT = _LSTMScan.apply(xg, h0[sl].to(dt), c0[sl].to(dt), w_hh.to(dt))
                    c_n.append(cT)
                elif self.cell == "gru":
                    h, hT = _GRUScan.apply(xg, h0[sl].to(dt), w_hh.to(dt), b_hh.to(dt))
                else:
                    h, hT = _RNNScan.apply(xg, h0[sl].to(dt), w_hh.to(dt))
            h_n.append(hT)                                           # (D, B, H)
            if D == 2:  # (T, D, B, H) in loop order -> (T, B, 2H) in time order
                layer_in = torch.cat([h[:, 0], h[:, 1].flip(0)], -1)
            else:
                layer_in = h.view(T, B, H)
            if k < L - 1 and self.dropout > 0:
                layer_in = F.dropout(layer_in, self.dropout, self.training)
        out = layer_in.transpose(0, 1)                               # (B, T, D * H)
        h_n = torch.cat(h_n)                                         # (L * D, B, H)
        return out, ((h_n, torch.cat(c_n)) if self.cell == "lstm" else h_n)

    def _initial_state(self, state, x: Tensor) -> tuple[Tensor, Tensor | None]:
        shape = (self.num_layers * self.directions, x.shape[0], self.hidden_size)
        if state is None:
            zeros = x.new_zeros(shape)
            return zeros, zeros if self.cell == "lstm" else None
        if (self.cell == "lstm") != isinstance(state, tuple):
            raise DeepAtlasError("recurrent state: a tuple (h, c) for the LSTM, a tensor h for rnn and gru")
        h0, c0 = state if self.cell == "lstm" else (state, None)
        for s in (h0, c0) if self.cell == "lstm" else (h0,):
            if tuple(s.shape) != shape:
                raise DeepAtlasError(f"recurrent state must be {shape} (layers * directions, B, H); got {tuple(s.shape)}")
        return h0, c0

    def extra_repr(self) -> str:
        return (f"{self.cell}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
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
