"""Ordinary differential equation solvers for continuous-depth models: `odeint` and `odeint_adjoint`.

Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural Ordinary Differential Equations" (arXiv:1806.07366):
a network f(t, y) defines dy/dt, and its output is the solution y(t) at the requested times. `odeint` solves
it with a fixed-step method (Euler, classical RK4) or the adaptive Dormand–Prince 5(4) pair (Dormand & Prince
1980; step-size control and dense output as in Hairer, Nørsett & Wanner, "Solving Ordinary Differential
Equations I", II.4-II.6). Gradients flow through the solver's operations (memory grows with the steps), or,
with `odeint_adjoint`, come from the adjoint system solved backward in time (Chen et al., Algorithm 1),
memory independent of the steps:

    a(t) = dL/dy(t),   da/dt = -a(t)ᵀ ∂f/∂y,   dL/dθ = -∫_{t_N}^{t_0} a(t)ᵀ ∂f/∂θ dt

The state is one tensor of any shape (a batch of trajectories), one step size for all of it; times may
increase or decrease. `Counted` wraps f to count its evaluations (NFE), forward and backward.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

Field = Callable[[Tensor, Tensor], Tensor]
"""f(t, y) -> dy/dt, t a 0-d tensor, y and dy/dt of one shape"""
METHODS = ("euler", "rk4", "dopri5")

# Dormand–Prince 5(4): nodes c, stages a, the 5th-order weights b (also the last stage: first same as last) and
# b - b̂, the difference from embedded 4th-order weights, which estimates the local error. Two b̂ meet the
# 4th-order conditions with these stages; this one (b̂7 = 1/60, torchdiffeq's) rather than Hairer's (b̂7 = 1/40),
# so that the two libraries take the same steps on the same problem.
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = ((),
     (1 / 5,),
     (3 / 40, 9 / 40),
     (44 / 45, -56 / 15, 32 / 9),
     (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
     (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
     (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
B = A[6] + (0.0,)
B_ERROR = (35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
           -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60)
DENSE = (-12715105075 / 11282082432, 0.0, 87487479700 / 32700410799, -10690763975 / 1880347072,
         701980252875 / 199316789632, -1453857185 / 822651844, 69997945 / 29380423)
"""the continuous extension's fifth coefficient row (Hairer's DOPRI5 dense output)"""
SAFETY, SHRINK_AT_MOST, GROW_AT_MOST = 0.9, 0.2, 10.0
"""a new step is h·SAFETY·err^(-1/5), kept within [SHRINK_AT_MOST·h, GROW_AT_MOST·h]"""


class Counted(nn.Module):
    """f with a count of its evaluations (`nfe`); `reset()` returns the count and starts again. The adjoint's
    backward solve evaluates f too (its vector-Jacobian products), so the count after `.backward()` less the
    count after the forward pass is the backward NFE."""

    def __init__(self, f: Field):
        super().__init__()
        self.f = f
        self.nfe = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        return self.f(t, y)

    def reset(self) -> int:
        n, self.nfe = self.nfe, 0
        return n


def rms_norm(x: Tensor) -> Tensor:
    return x.pow(2).mean().sqrt()


def odeint(f: Field, y0: Tensor, t: Tensor, method: str = "dopri5", rtol: float = 1e-7, atol: float = 1e-9,
           step_size: float | None = None, norm: Callable[[Tensor], Tensor] = rms_norm,
           max_steps: int = 100_000) -> Tensor:
    """y(t) for each of the times `t` (T,) from y(t[0]) = y0: (T, *y0.shape). `method`: "euler" or "rk4" take
    steps of `step_size` (each interval between requested times in equal steps no longer than it; None: one step
    per interval); "dopri5" adapts its steps to keep each step's error estimate within atol + rtol·|y| (scaled by
    `norm`, the root mean square over the state), and reads the requested times off its dense output."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {', '.join(METHODS)}")
    t = torch.as_tensor(t, dtype=y0.dtype, device=y0.device)
    if t.dim() != 1 or len(t) < 1:
        raise ValueError("t: a 1-D tensor of times")
    if len(t) > 1 and t[1] < t[0]:  # backward in time: y(s) with s = -t solves dy/ds = -f(-s, y) forward
        return odeint(lambda s, y: -f(-s, y), y0, -t, method, rtol, atol, step_size, norm, max_steps)
    if len(t) > 1 and not bool((t[1:] > t[:-1]).all()):
        raise ValueError("t: times strictly increasing or strictly decreasing")
    if method == "dopri5":
        return _dopri5(f, y0, t, rtol, atol, norm, max_steps)
    step = _euler_step if method == "euler" else _rk4_step
    ys, y = [y0], y0
    for t0, t1 in zip(t[:-1], t[1:]):
        n = 1 if step_size is None else max(1, math.ceil(float(t1 - t0) / step_size - 1e-9))
        h = (t1 - t0) / n
        for i in range(n):
            y = step(f, t0 + i * h, y, h)
        ys.append(y)
    return torch.stack(ys)


def _euler_step(f: Field, t: Tensor, y: Tensor, h: Tensor) -> Tensor:
    return y + h * f(t, y)


def _rk4_step(f: Field, t: Tensor, y: Tensor, h: Tensor) -> Tensor:
    k1 = f(t, y)
    k2 = f(t + h / 2, y + h / 2 * k1)
    k3 = f(t + h / 2, y + h / 2 * k2)
    k4 = f(t + h, y + h * k3)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def _dopri5(f: Field, y0: Tensor, t: Tensor, rtol: float, atol: float, norm, max_steps: int) -> Tensor:
    """Steps of the 5(4) pair from t[0] past t[-1]; each requested time inside a step is read off the step's
    quartic continuous extension (4th-order accurate, no extra evaluations)."""
    ys = [y0]
    k1 = f(t[0], y0)
    h = _initial_step(f, t[0], y0, k1, rtol, atol, norm)
    now, y, nxt, steps = t[0], y0, 1, 0
    while nxt < len(t):
        if steps >= max_steps:
            raise RuntimeError(f"dopri5: more than {max_steps} steps before t={float(t[-1]):g} (stiff, or tolerances "
                               f"too tight); at t={float(now):g} with step {float(h):.3g}")
        steps += 1
        k = [k1]
        for c, a in zip(C[1:], A[1:]):
            k.append(f(now + c * h, y + h * sum(ai * ki for ai, ki in zip(a, k) if ai)))
        y1 = y + h * sum(bi * ki for bi, ki in zip(A[6], k) if bi)   # the 7th stage was at y1: k[6] = f(now+h, y1)
        error = h * sum(e * ki for e, ki in zip(B_ERROR, k) if e)
        ratio = norm(error / (atol + rtol * torch.maximum(y.abs(), y1.abs())))
        accepted = bool(ratio <= 1)
        if accepted:  # the requested times inside [now, now + h] from the dense output
            while nxt < len(t) and t[nxt] <= now + h:
                ys.append(_dense(y, y1, k, h, (t[nxt] - now) / h))
                nxt += 1
            now, y, k1 = now + h, y1, k[6]
        h = h * _step_factor(ratio, accepted)
    return torch.stack(ys)


@torch.no_grad()
def _step_factor(ratio: Tensor, accepted: bool) -> Tensor | float:
    """The next step over this one: SAFETY·err^(-1/5) within its bounds; after an accepted step never less than 1,
    after a rejected one never more. Not differentiated: a gradient through the solver treats the step sizes as
    given (the first one too), the derivative of the steps taken rather than of the controller's choices."""
    if ratio == 0:
        return GROW_AT_MOST
    factor = (SAFETY * ratio ** -0.2).clamp(SHRINK_AT_MOST, GROW_AT_MOST)
    return factor.clamp(min=1.0) if accepted else factor.clamp(max=1.0)


def _dense(y0: Tensor, y1: Tensor, k: Sequence[Tensor], h: Tensor, theta: Tensor) -> Tensor:
    """y(now + θh) by the Dormand–Prince continuous extension (Hairer, II.6)."""
    rise = y1 - y0
    bend = h * k[0] - rise
    r4 = rise - h * k[6] - bend
    r5 = h * sum(d * ki for d, ki in zip(DENSE, k) if d)
    return y0 + theta * (rise + (1 - theta) * (bend + theta * (r4 + (1 - theta) * r5)))


def _initial_step(f: Field, t0: Tensor, y0: Tensor, f0: Tensor, rtol: float, atol: float, norm) -> Tensor:
    """A first step from the size of y and its derivative and one trial evaluation (Hairer, II.4); a constant
    for differentiation, as every later step size is."""
    scale = atol + y0.abs() * rtol
    d0, d1 = norm(y0 / scale), norm(f0 / scale)
    h0 = torch.tensor(1e-6) if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = f(t0 + h0, y0 + h0 * f0)
    d2 = norm((f1 - f0) / scale) / h0
    h1 = torch.maximum(h0 * 1e-3, torch.tensor(1e-6)) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
    return torch.minimum(100 * h0, torch.as_tensor(h1)).to(y0.dtype).detach()


# ---- the adjoint method ------------------------------------------------------------------------------------

def odeint_adjoint(f: Field, y0: Tensor, t: Tensor, params: Sequence[Tensor] | None = None,
                   method: str = "dopri5", rtol: float = 1e-7, atol: float = 1e-9,
                   step_size: float | None = None) -> Tensor:
    """`odeint` whose backward pass solves the adjoint system instead of backpropagating through the steps.
    `params`: the tensors f depends on that need gradients (default: f's parameters when f is a module). The
    forward solve keeps no graph; the backward one runs from t[-1] to t[0], adding each requested time's
    incoming gradient to the adjoint state as it passes it. The times get gradients too where `t` requires them
    (Chen et al.'s Algorithm 2: a scalar adjoint a_t with da_t/dt = -aᵀ∂f/∂t rides along, and enters the error
    norm, as in torchdiffeq)."""
    if params is None:
        params = tuple(p for p in f.parameters() if p.requires_grad) if isinstance(f, nn.Module) else ()
    options = {"method": method, "rtol": rtol, "atol": atol, "step_size": step_size}
    if not torch.is_tensor(t) or t.dtype != y0.dtype or t.device != y0.device:
        t = torch.as_tensor(t).to(dtype=y0.dtype, device=y0.device)
    return _Adjoint.apply(f, options, y0, t, *params)


class _Adjoint(torch.autograd.Function):

    @staticmethod
    def forward(ctx, f, options, y0, t, *params):
        with torch.no_grad():
            ys = odeint(f, y0, t, **options)
        ctx.f, ctx.options = f, options
        ctx.save_for_backward(t, ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        t, ys, *params = ctx.saved_tensors
        f, shape, n = ctx.f, ys.shape[1:], ys[0].numel()
        sizes = [p.numel() for p in params]
        parts = [n, n, *sizes, 1]                      # the state: y, a, a_θ per parameter, a_t

        def augmented(s: Tensor, state: Tensor) -> Tensor:
            """d/dt of [y, a, a_θ, a_t] flattened: f, -aᵀ∂f/∂y, -aᵀ∂f/∂θ, -aᵀ∂f/∂t (one vector-Jacobian product)."""
            y, a = state[:n].view(shape), state[n:2 * n].view(shape)
            with torch.enable_grad():
                s, y = s.detach().requires_grad_(True), y.detach().requires_grad_(True)
                dy = f(s, y)
                da, ds, *dparams = torch.autograd.grad(dy, (y, s, *params), -a, allow_unused=True)
            rest = [torch.zeros(size, dtype=y.dtype, device=y.device) if g is None else g.reshape(-1)
                    for g, size in zip([*dparams, ds], [*sizes, 1])]
            return torch.cat([dy.reshape(-1), da.reshape(-1), *rest])

        def parts_norm(state: Tensor) -> Tensor:  # the largest of the RMS norms of y, a, each a_θ and |a_t|
            return torch.stack([rms_norm(p) for p in torch.split(state, parts) if p.numel()]).max()

        wants_times = ctx.needs_input_grad[3]
        grad_t = torch.zeros_like(t)
        state = torch.cat([ys[-1].reshape(-1), grad_ys[-1].reshape(-1),
                           torch.zeros(sum(sizes) + 1, dtype=ys.dtype, device=ys.device)])
        for i in range(len(t) - 1, 0, -1):
            if wants_times:  # moving t_i moves y(t_i) by f(t_i, y_i): dL/dt_i, and a_t carries it back
                with torch.no_grad():
                    grad_t[i] = (f(t[i], ys[i]) * grad_ys[i]).sum()
                state[-1] -= grad_t[i]
            state = odeint(augmented, state, t[[i, i - 1]], norm=parts_norm, **ctx.options)[1]
            state = torch.cat([ys[i - 1].reshape(-1), state[n:2 * n] + grad_ys[i - 1].reshape(-1), state[2 * n:]])
        grad_t[0] = state[-1]
        grad_y0 = state[n:2 * n].view(shape)
        grad_params = torch.split(state[2 * n:-1], sizes)
        return (None, None, grad_y0, grad_t if wants_times else None,
                *[g.view_as(p) for g, p in zip(grad_params, params)])
