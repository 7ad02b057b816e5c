"""Neural ODE: a network that defines a derivative, and an ODE solver that turns it into a continuous-depth model.

R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, 2018. "Neural Ordinary Differential Equations."
NeurIPS 2018, arXiv:1806.07366.

A residual network updates its state h_{t+1} = h_t + f(h_t, θ_t): an Euler step of size 1. A neural ODE takes the
limit and lets a network f give the state's derivative; the output is the state at a later time, computed by a
black-box solver (here our adaptive Dormand–Prince 5(4), `deepatlas.nn.ode`):

    dh(t)/dt = f(h(t), t, θ),     h(t1) = h(t0) + ∫_{t0}^{t1} f(h(t), t, θ) dt = ODESolve(h(t0), f, t0, t1, θ)   (eq. 1)

The solver chooses how many evaluations of f (NFE: the depth) the requested accuracy needs (rtol, atol), and
gradients come either through the solver's operations (memory grows with the steps) or from the adjoint system
solved backward in time, with memory independent of the steps (sec. 2, Algorithm 1):

    a(t) = ∂L/∂h(t),   da/dt = -a(t)ᵀ ∂f/∂h,   dL/dθ = -∫_{t1}^{t0} a(t)ᵀ ∂f/∂θ dt                      (eq. 4, 5)

Two models here, one block (`ODEBlock`, counting its NFE forward and backward):
- `NeuralODE` (the trajectory task, sec. 5's spirals): f is an MLP of the state (tanh or softplus), the flow is
  solved from an observed state through any requested times; it learns the field of a dynamical system from
  observed trajectories and extrapolates them (the data's spiral: dy/dt = A y³, torchdiffeq's demo).
- `ODENet` (the digits form, sec. 3): a small convolutional downsampling (by 4, as the paper's), one ODE block
  integrating a conv dynamics function f(h, t) (GroupNorm-ReLU-conv twice, t as an extra channel, as the paper's
  code) from t = 0 to 1 with dopri5, then pooling and a linear head: the residual blocks of a ResNet replaced by one
  continuous block. Its field is ReLU's by default, as the paper's; `activation=softplus` is smooth, which the
  solver's error estimate assumes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Form, Paper, Positive, Relation, Size, Train, register
from deepatlas.nn.ode import Counted, odeint, odeint_adjoint
from deepatlas.tasks.classification import Classification
from deepatlas.tasks.trajectory import TrajectoryObjective

Method = Literal["dopri5", "rk4", "euler"]


@dataclass
class Config:
    dims: Size = 2
    """state components (set from the data)"""
    hidden: Size = 64
    """units per hidden layer of f"""
    layers: Size = 2
    """hidden layers of f"""
    activation: Literal["tanh", "softplus"] = "tanh"
    """f's nonlinearity: smooth, so the solver's error estimates hold (ReLU kinks force small steps)"""
    time_dependent: bool = False
    """f(t, y) reads t too (false: an autonomous system f(y), as the spirals are)"""
    adjoint: bool = False
    """gradients from the adjoint system solved backward (memory independent of the steps; slower on small
    problems); false: backpropagation through the solver's operations"""
    method: Method = "dopri5"
    """the solver: adaptive Dormand-Prince 5(4), or fixed steps of classical RK4 or Euler"""
    rtol: Positive = 1e-4
    """dopri5: relative tolerance of each step's error estimate"""
    atol: Positive = 1e-5
    """dopri5: absolute tolerance (standardized units)"""
    step_size: Positive = 0.1
    """rk4 and euler: the largest step, in standardized time"""


# ---- the block: a solve of dh/dt = f(t, h), counting f's evaluations -------------------------------------

class ODEBlock(nn.Module):
    """h(t_i) for each time t_i from h(t_0) = y0: odeint (gradients through the solver) or odeint_adjoint.
    After each call `nfe` holds the forward solve's function evaluations; in training, `nfe_backward` is filled in
    when the backward pass has gone through the block (0 through the solver: it replays the recorded operations and
    calls f no more; the adjoint's backward solve calls f once per stage)."""

    def __init__(self, func: nn.Module, method: Method, rtol: float, atol: float, step_size: float, adjoint: bool):
        super().__init__()
        self.func = Counted(func)
        self.method, self.rtol, self.atol, self.step_size, self.adjoint = method, rtol, atol, step_size, adjoint
        self.nfe = torch.zeros(())
        self.nfe_backward = torch.zeros(())

    def forward(self, y0: Tensor, t: Tensor) -> Tensor:
        """(T, *y0.shape): the states at the times t (T,)."""
        counts_backward = self.training and torch.is_grad_enabled()
        if counts_backward and not y0.requires_grad:  # a leaf for the hook below (its gradient goes nowhere)
            y0 = y0.detach().requires_grad_(True)
        start = self.func.nfe
        solve = odeint_adjoint if self.adjoint else odeint
        ys = solve(self.func, y0, t, method=self.method, rtol=self.rtol, atol=self.atol,
                   step_size=self.step_size if self.method != "dopri5" else None)
        self.nfe = torch.tensor(float(self.func.nfe - start), device=y0.device)
        if counts_backward:
            counted, mark = torch.zeros((), device=y0.device), self.func.nfe
            self.nfe_backward = counted

            def backward_done(grad: Tensor) -> None:  # ∂L/∂y0 comes last: the whole backward solve is behind it
                counted.fill_(self.func.nfe - mark)
            y0.register_hook(backward_done)
        return ys

    def counts(self) -> dict[str, Tensor]:
        """NFE to log with a batch. `nfe_backward` is filled in during the loss's backward pass (the fit loop reads a
        step's logs after it)."""
        return {"nfe": self.nfe, "nfe_backward": self.nfe_backward} if self.training else {"nfe": self.nfe}


# ---- trajectories: f is an MLP of the state ---------------------------------------------------------------

class StateField(nn.Module):
    """f(t, y) = MLP(y) (or MLP([y, t])): (B, D) -> (B, D)."""

    def __init__(self, cfg: Config):
        super().__init__()
        act = nn.Tanh if cfg.activation == "tanh" else nn.Softplus
        widths = [cfg.dims + cfg.time_dependent, *[cfg.hidden] * cfg.layers]
        layers = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), act())]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], cfg.dims))
        self.time_dependent = cfg.time_dependent

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        if self.time_dependent:
            y = torch.cat([y, t.expand(*y.shape[:-1], 1)], -1)   # (B, D + 1)
        return self.net(y)                                       # (B, D)


class NeuralODE(nn.Module):
    """The flow of dy/dt = f(t, y): `forward(y0 (B, D), t (B, T)) -> (B, T, D)`, the states at each row's times
    (increasing from 0, each row its own; equal times allowed). The rows' times are solved together on their
    sorted union (one solve, one step size for the batch), each state read off at its own times."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.block = ODEBlock(StateField(cfg), cfg.method, cfg.rtol, cfg.atol, cfg.step_size, cfg.adjoint)

    def forward(self, y0: Tensor, t: Tensor) -> Tensor:
        if t.dim() == 1:
            t = t.expand(len(y0), -1)
        grid, index = torch.unique(t, sorted=True, return_inverse=True)     # (G,), (B, T)
        if grid[0] > 0:  # every row starts at y0's time, 0
            grid, index = torch.cat([grid.new_zeros(1), grid]), index + 1
        ys = self.block(y0, grid)                                           # (G, B, D)
        return ys[index, torch.arange(len(y0), device=y0.device)[:, None]]  # (B, T, D)

    def field(self, y: Tensor, t: float = 0.0) -> Tensor:
        """f(t, y) (N, D) at states y (N, D), not counted as evaluations."""
        return self.block.func.f(torch.tensor(t, dtype=y.dtype, device=y.device), y)

    def counts(self) -> dict[str, Tensor]:
        return self.block.counts()


# ---- the ODE-Net classifier (the image classification form) ------------------------------------------------

@dataclass
class ODENetConfig:
    """The paper's MNIST ODE-Net (sec. 3), scaled to small images."""
    in_channels: Size = 1
    """image channels (set from the data)"""
    n_classes: Size = 10
    """classes (set from the data)"""
    channels: Size = 32
    """feature maps of the downsampling and of the ODE block"""
    t_end: Positive = 1.0
    """the block integrates from t = 0 to this time"""
    activation: Literal["relu", "softplus"] = "relu"
    """the nonlinearity of the block's field: the paper's ReLU, or the smooth softplus (the solver's error estimate
    assumes a smooth field; at ReLU's kinks the gradient through the solver and the adjoint's differ by ~1e-3)"""
    adjoint: bool = False
    """gradients from the adjoint system (the paper's choice; slower here) instead of through the solver"""
    method: Method = "dopri5"
    """the solver of the block"""
    rtol: Positive = 1e-3
    """dopri5: relative tolerance (the paper's MNIST runs: 1e-3)"""
    atol: Positive = 1e-3
    """dopri5: absolute tolerance"""
    step_size: Positive = 0.25
    """rk4 and euler: the largest step"""


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with groups of 4 channels or more (one channel a group would normalize each map on its own, and the
    pooled features before the head would no longer tell images apart)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConcatConv2d(nn.Module):
    """A 3x3 convolution that also sees the time t, as one more input channel (the paper's ConcatConv2d)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in + 1, c_out, 3, padding=1)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        time = t.expand(h.shape[0], 1, *h.shape[2:])                # (B, 1, H, W)
        return self.conv(torch.cat([time, h], 1))                   # (B, C_out, H, W)


class ConvField(nn.Module):
    """f(t, h) = GN(conv_t(σ(GN(conv_t(σ(GN(h))))))): the conv dynamics of the ODE block, (B, C, H, W); σ is ReLU in
    the paper."""

    def __init__(self, channels: int, activation: str = "relu"):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (group_norm(channels) for _ in range(3))
        self.conv1, self.conv2 = ConcatConv2d(channels, channels), ConcatConv2d(channels, channels)
        self.act = nn.ReLU() if activation == "relu" else nn.Softplus()

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        h = self.conv1(t, self.act(self.norm1(h)))
        return self.norm3(self.conv2(t, self.act(self.norm2(h))))


class ODENet(nn.Module):
    """Downsample by 4 (a conv, then two stride-2 convs), one ODE block from t = 0 to t_end, then GN-ReLU, global
    average pooling and a linear head: (B, C_in, H, W) -> (B, K)."""

    def __init__(self, cfg: ODENetConfig):
        super().__init__()
        c = cfg.channels
        self.downsample = nn.Sequential(                                   # the paper's: a conv, then /2 twice
            nn.Conv2d(cfg.in_channels, c, 3, padding=1),
            group_norm(c), nn.ReLU(), nn.Conv2d(c, c, 4, stride=2, padding=1),
            group_norm(c), nn.ReLU(), nn.Conv2d(c, c, 4, stride=2, padding=1))
        self.block = ODEBlock(ConvField(c, cfg.activation), cfg.method, cfg.rtol, cfg.atol, cfg.step_size,
                              cfg.adjoint)
        self.register_buffer("times", torch.tensor([0.0, cfg.t_end]), persistent=False)
        self.head = nn.Sequential(group_norm(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c, cfg.n_classes))

    def forward(self, x: Tensor) -> Tensor:
        h = self.downsample(x)                                      # (B, C, H/4, W/4)
        h = self.block(h, self.times.to(h.dtype))[-1]               # h(t_end), (B, C, H/4, W/4)
        return self.head(h)                                         # (B, K)

    def counts(self) -> dict[str, Tensor]:
        return self.block.counts()


class ODENetClassification(Classification):
    """Cross-entropy and accuracy, with the block's NFE beside them."""

    not_exported = "an adaptive ODE solve (its number of steps depends on the input)"

    def measure(self, batch) -> dict[str, Tensor]:
        return {**super().measure(batch), **self.model.counts()}


register(Entry(
    name="neural_ode", title="Neural ODE (ODE-Net)", family="dynamics", year=2018,
    paper=Paper("R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud", "Neural Ordinary Differential Equations",
                "arXiv:1806.07366"),
    summary="A network gives the derivative dh/dt = f(h, t) and an adaptive ODE solver computes the output h(t1): "
            "continuous depth, evaluations chosen by the requested accuracy, gradients through the solver or by "
            "the adjoint method at constant memory. Learns a dynamical system's field from its trajectories, and "
            "replaces a ResNet's blocks by one ODE block on digits.",
    when_to_use="Trajectories of a continuous-time system, observed at any (irregular) times, to extrapolate or to "
                "learn its vector field; models that must be invertible or evaluated at any time; memory-bound "
                "training of deep residual maps (the adjoint).",
    when_not="Plain classification on a budget (a ResNet is faster at the same accuracy: each ODE block costs "
             "tens of evaluations); stiff or chaotic systems, where adaptive solvers take tiny steps; discrete "
             "event sequences with no underlying flow (an RNN or a transformer).",
    relations=[
        Relation("builds_on", "resnet", "a residual block h + f(h) is an Euler step; the ODE block takes its limit"),
        Relation("alternative_to", "rnn", "a continuous-time state evolved between irregular observations"),
    ],
    config=Config, build=NeuralODE, objective=TrajectoryObjective, task="trajectory",
    train=Train(epochs=200, batch_size=64, lr=1e-2),
    data=Data("spiral", window=10),
    bar=Bar("mse_vs_velocity", 0.1, "min", 120),
    notes="Measured with one thread on the project's CPU, seed 0 (bench). spiral (cubic): test mse 0.0024 = 0.00096x "
          "the last velocity's 2.50 (the last value held: 0.85, the origin: 0.50; the noise floor 0.0004) in 16 s, "
          "4,482 parameters, NFE 62 per extrapolation and 26 per training window of 10 observations; spiral-linear: "
          "0.0009 = 0.00032x in 14 s, NFE 44; adjoint=true on spiral: 0.00096x in 119 s (each interval between "
          "observations is its own backward solve: 7x slower at this size). The bar is loose: three epochs (12 steps) "
          "already give 0.064x. digits, the ODE-Net form: accuracy 0.986 in 38 s with 52,938 parameters and NFE 20 "
          "per forward pass (dopri5 at 1e-3 takes 3 steps); adjoint=true 0.992 in 70 s; activation=softplus 0.994 in "
          "29 s with NFE 14. resnet (resnet20) on the same split and machine: 0.994 in 13 s with 272,186 parameters "
          "and 20 layers: the ODE-Net matches it with a fifth of the parameters, at about twice the time.",
    more_bars=[Bar("accuracy", 0.97, "max", 300, overrides={"data": "digits"})],
    forms=[Form(task="image_classification", config=ODENetConfig, build=ODENet, objective=ODENetClassification,
                train=Train(epochs=30, batch_size=32, lr=3e-3, weight_decay=1e-4), data=Data("digits", image_size=16),
                metric="accuracy", direction="max")],
))
