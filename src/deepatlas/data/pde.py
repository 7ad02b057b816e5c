"""Partial differential equations a physics-informed network solves: the problem and its reference solution.

A physics-informed network trains on no solution data at all, only on the equation, its initial condition and
its boundary conditions; the data here are therefore a *problem* (what `load_for` returns) and the reference
solution it is judged against, on held-out grids:

    burgers-shock   u_t + u u_x - ν u_xx = 0,   x ∈ [-1, 1], t ∈ [0, 1],   ν = 0.01/π
                    u(x, 0) = -sin(πx),   u(t, -1) = u(t, 1) = 0
                    (Raissi, Perdikaris & Karniadakis 2019, sec. 3.1.1; Basdevant et al. 1986): the two halves of
                    the sine run into each other and steepen into a shock at x = 0 from t ≈ 0.3 on, a layer of
                    width ~ν that a network must resolve.
    burgers-smooth  the same with ten times the viscosity, ν = 0.1/π: the front stays a smooth ramp (a problem a
                    few seconds of training solve, for quick checks).

The reference is the exact solution by the Cole–Hopf transform, u = -2ν φ_x / φ with φ solving the heat equation,
evaluated by Gauss–Hermite quadrature (deepatlas.data.burgers.cole_hopf, through `reference`). Splits: "test" is
the paper's grid (256 x-points × 100 t-points, both ends included), "val" a staggered grid (255 × 99 cell centres)
that shares no point with it. The trivial baseline holds the initial condition still, u(x, t) = u0(x), which is
right before the shock forms.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from deepatlas.errors import DeepAtlasError, option

EMBEDDED = ("burgers-shock", "burgers-smooth")
PROBLEMS = {
    "burgers-shock": {"equation": "burgers", "nu": 0.01 / math.pi, "x_low": -1.0, "x_high": 1.0, "t_end": 1.0,
                      "initial": "-sin(pi x)", "boundary": "u(t, x_low) = u(t, x_high) = 0"},
    "burgers-smooth": {"equation": "burgers", "nu": 0.1 / math.pi, "x_low": -1.0, "x_high": 1.0, "t_end": 1.0,
                       "initial": "-sin(pi x)", "boundary": "u(t, x_low) = u(t, x_high) = 0"},
}
GRIDS = {"test": (256, 100), "val": (255, 99)}
"""points in x and in t of each split's grid"""
SLICES = (0.25, 0.5, 0.75)
"""the times of the paper's figure 1 slices"""


def initial(x: Tensor) -> Tensor:
    """u0(x) = -sin(πx)."""
    return -torch.sin(math.pi * x)


def reference(x: Tensor, t: Tensor, nu: float) -> Tensor:
    """The exact solution of the shock problem at the points (x, t) (tensors of one shape, or broadcastable),
    float64: deepatlas.data.burgers's Cole–Hopf quadrature, one call per distinct time (it takes one time)."""
    from deepatlas.data.burgers import cole_hopf
    x, t = torch.broadcast_tensors(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64))
    u = torch.empty_like(x)
    for time in t.unique().tolist():  # the distinct times: 100 on a grid
        at = t == time
        u[at] = cole_hopf(x[at], time, nu)
    return u


@cache
def _grid(name: str, split: str) -> tuple[Tensor, Tensor, Tensor]:
    """(x (Nx,), t (Nt,), u (Nt, Nx)) of a split's grid, float32."""
    p, (nx, nt) = PROBLEMS[name], GRIDS[split]
    x_edges = torch.linspace(p["x_low"], p["x_high"], nx + (split != "test"), dtype=torch.float64)
    t_edges = torch.linspace(0.0, p["t_end"], nt + (split != "test"), dtype=torch.float64)
    # test: both ends included; val: the cell centres of a grid one point larger (no point in common with test)
    centres = lambda edges: (edges[1:] + edges[:-1]) / 2  # noqa: E731
    x, t = (x_edges, t_edges) if split == "test" else (centres(x_edges), centres(t_edges))
    u = reference(x[None, :], t[:, None], p["nu"])                          # (Nt, Nx)
    return x.float(), t.float(), u.float()


@dataclass
class Problem:
    """What `load_for` returns: the PDE's spec (the equation, ν, the domain) and its reference grids by split."""
    spec: dict
    grids: dict = field(default_factory=dict, repr=False)

    @property
    def dims(self) -> dict:
        """The settings a physics-informed network's config takes from the problem."""
        return {k: self.spec[k] for k in ("nu", "x_low", "x_high", "t_end")}

    def grid(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """(x (Nx,), t (Nt,), u (Nt, Nx)): the split's grid and the reference solution on it."""
        if split not in GRIDS:
            raise DeepAtlasError(f"split {split!r}: the {self.spec['data']} problem has {', '.join(GRIDS)}")
        return _grid(self.spec["data"], split)

    def points(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """The split's grid flattened: x, t, u, each (Nt·Nx,), t-major."""
        x, t, u = self.grid(split)
        tt, xx = torch.meshgrid(t, x, indexing="ij")                       # (Nt, Nx) each
        return xx.flatten(), tt.flatten(), u.flatten()

    def initial(self, x: Tensor) -> Tensor:
        return initial(x)

    def reference(self, x: Tensor, t: Tensor) -> Tensor:
        """The exact solution at any points (float32, on x's device)."""
        return reference(x.detach().cpu(), t.detach().cpu(), self.spec["nu"]).float().to(x.device)


def load_for(options, target: str | None = None) -> Problem:
    if target is not None:
        raise DeepAtlasError(f"{option('target')}: a PDE problem has no target column")
    name = options.data
    if name not in PROBLEMS:
        what = "a file" if Path(name).exists() else "unknown"
        raise DeepAtlasError(f"{option('data')} {name}: {what}; physics-informed networks solve the embedded "
                             f"problems {', '.join(EMBEDDED)}")
    return Problem({"data": name, "kind": "pde", **PROBLEMS[name]})


def relative_l2(predicted: Tensor, exact: Tensor) -> float:
    """||u_pred - u||_2 / ||u||_2 (the paper's error measure)."""
    return float((predicted - exact).norm() / exact.norm())


def baseline(spec: dict, problem: Problem | None, split: str = "test") -> tuple[str, dict[str, float]]:
    """The initial condition held still, u(x, t) = u0(x), on the split's grid."""
    problem = problem if isinstance(problem, Problem) else Problem(spec)
    x, _, u = problem.points(split)
    held = problem.initial(x)
    return "u(x, t) = u0(x) for all t", {"rel_l2": relative_l2(held, u), "mse": float((held - u).square().mean())}


# ---- predictions and the figure -----------------------------------------------------------------------------

def read_points(inputs: str) -> tuple[Tensor, Tensor, list[str]]:
    """Points to predict at: a CSV file with columns x and t (a header row), or the text "x,t" of one point."""
    path = Path(inputs)
    if path.is_file():
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows or [c.strip().lower() for c in rows[0][:2]] != ["x", "t"]:
            raise DeepAtlasError(f"{path}: expected a CSV whose header starts with the columns x,t")
        body = [r for r in rows[1:] if any(c.strip() for c in r)]
        where = lambda i: f"{path}: row {i + 2}"  # noqa: E731
    else:
        body, where = [inputs.split(",")], lambda i: f"{inputs!r}"  # noqa: E731
    values = []
    for i, r in enumerate(body):
        try:
            x, t = float(r[0]), float(r[1])
        except (ValueError, IndexError):
            raise DeepAtlasError(f"{where(i)}: give x,t as two numbers (a CSV file with columns x,t, or 'x,t')") \
                from None
        if not (math.isfinite(x) and math.isfinite(t)):
            raise DeepAtlasError(f"{where(i)}: x and t must be finite numbers")
        values.append((x, t))
    if not values:
        raise DeepAtlasError(f"{path}: no points (rows of x,t) to predict at")
    xt = torch.tensor(values, dtype=torch.float32)
    return xt[:, 0], xt[:, 1], [f"x={x:g}, t={t:g}" for x, t in values]


def predict(objective, spec: dict, inputs) -> list[dict]:
    """`deepatlas predict RUN points.csv` (or `RUN 0.5,0.25`): the network's u(x, t) at each point, with the
    exact value beside it; a point outside the trained domain says so."""
    x, t, names = read_points(str(inputs))
    problem = Problem(spec)
    device = next(objective.parameters()).device
    with torch.no_grad():
        u = objective(x.to(device), t.to(device)).cpu()
    exact = problem.reference(x, t.clamp(min=0.0))
    inside = (x >= spec["x_low"]) & (x <= spec["x_high"]) & (t >= 0) & (t <= spec["t_end"])
    return [{"input": n, "predicted": round(float(p), 6), "exact": round(float(e), 6) if ok else None,
             **({} if ok else {"note": "outside the trained domain"})}
            for n, p, e, ok in zip(names, u, exact, inside.tolist())]


def plot_solution(objective, problem: Problem, path: Path, title: str = "") -> Path:
    """The paper's figure 1: the predicted field u(x, t) beside the exact one and the error on the test grid, and
    slices at t = 0.25, 0.5, 0.75 (exact solid, predicted dashed)."""
    from deepatlas.data.draw import _pyplot
    plt = _pyplot()
    x, t, u = problem.grid("test")
    device = next(objective.parameters()).device
    tt, xx = torch.meshgrid(t, x, indexing="ij")
    with torch.no_grad():
        pred = objective(xx.flatten().to(device), tt.flatten().to(device)).cpu().view_as(u)   # (Nt, Nx)
        times = torch.tensor(SLICES)
        xs, ts = x[None, :].expand(len(times), -1), times[:, None].expand(-1, len(x))           # (3, Nx)
        at = objective(xs.flatten().to(device), ts.flatten().to(device)).cpu().view(len(times), -1)
    exact_at = problem.reference(xs, ts)
    fig = plt.figure(figsize=(13, 7))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.1, 1])
    extent = (float(t[0]), float(t[-1]), float(x[0]), float(x[-1]))
    fields = [(u, "exact u(x, t)", "RdBu_r"), (pred, "predicted u(x, t)", "RdBu_r"),
              ((pred - u).abs(), f"|error|  (relative L2 {relative_l2(pred, u):.2e})", "magma")]
    for i, (values, name, cmap) in enumerate(fields):
        ax = fig.add_subplot(grid[0, i])
        shown = ax.imshow(values.T.numpy(), origin="lower", aspect="auto", extent=extent, cmap=cmap)
        fig.colorbar(shown, ax=ax, fraction=0.046)
        ax.set(title=name, xlabel="t", ylabel="x")
    for i, s in enumerate(SLICES):
        ax = fig.add_subplot(grid[1, i])
        ax.plot(x.numpy(), exact_at[i].numpy(), "b-", lw=2, label="exact")
        ax.plot(x.numpy(), at[i].numpy(), "r--", lw=2, label="prediction")
        ax.set(title=f"t = {s:g}", xlabel="x", ylabel="u(x, t)", ylim=(-1.1, 1.1))
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
