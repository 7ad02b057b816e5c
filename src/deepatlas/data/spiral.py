"""Trajectories of a dynamical system: observe the first half of each trajectory, predict the next half.

Embedded datasets: the 2-D spiral of Chen et al.'s demonstration (arXiv:1806.07366, torchdiffeq's ode_demo.py),

    spiral           dy/dt = A y³ (cubed element-wise), the paper's cubic spiral     A = [[-0.1, 2.0], [-2.0, -0.1]]
    spiral-linear    dy/dt = A y, a damped rotation (closed form y(t) = exp(At) y0)

Each trajectory starts at y0 = r (cos φ, sin φ), r uniform in [R_LOW, R_HIGH] = [0.5, 2] (the paper's y0 = [2, 0]
is on that circle's edge) and φ uniform in [0, 2π), and is solved accurately (float64, rtol 1e-9) by our `odeint` at
POINTS = 100 equally spaced times on [0, T_END] = [0, 3], then observed with Gaussian noise of standard deviation
NOISE = 0.02. Splits of 256 / 64 / 64 trajectories, each from its own seed: every run sees the same trajectories. The
first 50 observations are given, the other 50 are to be predicted (errors are measured against the noisy
observations, so NOISE² = 4e-4 is the floor of the mse). The trivial predictor repeats the last observed velocity:
the line through the last two observations (`baseline`). The span is chosen so that neither trivial guess is good:
the half to predict is a fifth of a turn (r = 0.5, cubic) to a turn and a half, long enough for the velocity's line
to leave the spiral, short enough that the spiral's end, the origin, is no good guess either (on the cubic test
split: velocity mse 2.50, the last value held 0.85, the origin 0.50; a longer span, the demo's [0, 25], would let
"predict the origin" pass a bar set against the velocity).

Users' data: `--data trajectories.csv`, a CSV with a header row whose first column names the series, whose second
is the time and whose further columns are the state's components (one or more numbers), one observation a row; a
series' rows may be interleaved with others' but its times must increase. Each series of at least MIN_POINTS
observations is one trajectory: its first half (rounded up) observed, the rest to predict; the series are split
60/20/20 (seed 0). Bad input is one line naming the file and the line. The network works in standardized units
(each component less its training mean, over its training std; times over `time_scale`, the time in which the
state typically moves one std); every metric and prediction is in the file's own units and times.
`predict RUN series.csv` extrapolates each series of the file beyond its last observation (`--steps` points, by
default as many as it has, at its median time step).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError, option
from deepatlas.nn.ode import odeint

A = ((-0.1, 2.0), (-2.0, -0.1))
"""the spiral's matrix (Chen et al.'s true_A)"""
SYSTEMS = {"spiral": "cubic", "spiral-linear": "linear"}
EMBEDDED = list(SYSTEMS)
POINTS, T_END, NOISE, R_LOW, R_HIGH = 100, 3.0, 0.02, 0.5, 2.0
SIZES = {"train": 256, "val": 64, "test": 64}
SEEDS = {"train": 0, "val": 1, "test": 2}  # fixed: every run sees the same trajectories
MIN_POINTS = 4
"""a user's series needs 2 observed points (a velocity) and 2 to predict"""
MAX_STEPS = 100_000


def spiral_field(system: str, y: Tensor) -> Tensor:
    """The true dy/dt (..., 2) at states y (..., 2): A y³ or A y."""
    a = torch.tensor(A, dtype=y.dtype, device=y.device)
    return (y ** 3 if system == "cubic" else y) @ a.T


# ---- the dataset ------------------------------------------------------------------------------------

@dataclass
class TrajectorySet(Dataset):
    """Trajectories of any lengths: each `times[i]` (L_i,) float64, `values[i]` (L_i, D) float32, its first
    `observed[i]` observations given. Batched by `collate`, padded to the longest."""
    times: list[Tensor]
    values: list[Tensor]
    observed: list[int]
    names: list[str]

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, i: int):
        return self.times[i], self.values[i], self.observed[i]

    @staticmethod
    def collate(items) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(t (B, L) float32 times since each series' first observation, y (B, L, D), observed (B,), length (B,));
        padded entries repeat their series' last time and state (the lengths say where each ends)."""
        longest = max(len(t) for t, _, _ in items)
        t = torch.stack([torch.cat([s - s[0], (s[-1] - s[0]).repeat(longest - len(s))]) for s, _, _ in items])
        y = torch.stack([torch.cat([v, v[-1:].expand(longest - len(v), -1)]) for _, v, _ in items])
        observed = torch.tensor([k for _, _, k in items])
        length = torch.tensor([len(s) for s, _, _ in items])
        return t.float(), y, observed, length


class TrajectoryData(Splits):
    @property
    def dims(self) -> dict:
        return {"dims": self.spec["dims"]}


def _standardization(train: TrajectorySet) -> dict:
    """Each component's training mean and std, and the time scale: the training series' median time for the state
    to move one (mean) std, from consecutive observations (the network then sees speeds near 1)."""
    values = torch.cat(train.values).double()
    std = values.std(0).clamp_min(1e-8)
    steps = [(torch.diff(v.double(), dim=0) / std).norm(dim=-1) / torch.diff(t).clamp_min(1e-300)
             for t, v in zip(train.times, train.values)]
    speed = float(torch.cat(steps).median())
    return {"mean": values.mean(0).tolist(), "std": std.tolist(),
            "time_scale": 1.0 / speed if math.isfinite(speed) and speed > 0 else 1.0}


@cache
def simulate(system: str, split: str) -> tuple[Tensor, Tensor]:
    """One split's times (POINTS,) float64 and noisy states (n, POINTS, 2) float32."""
    g = torch.Generator().manual_seed(SEEDS[split] + (100 if system == "linear" else 0))
    n = SIZES[split]
    r = R_LOW + (R_HIGH - R_LOW) * torch.rand(n, generator=g, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    y0 = torch.stack([r * phi.cos(), r * phi.sin()], -1)                                  # (n, 2)
    t = torch.linspace(0, T_END, POINTS, dtype=torch.float64)
    ys = odeint(lambda s, y: spiral_field(system, y), y0, t, rtol=1e-9, atol=1e-10)       # (POINTS, n, 2)
    noisy = ys.transpose(0, 1) + NOISE * torch.randn(n, POINTS, 2, generator=g, dtype=torch.float64)
    return t, noisy.float()


def embedded(name: str) -> TrajectoryData:
    system = SYSTEMS[name]
    parts = {}
    for split in SIZES:
        t, ys = simulate(system, split)
        parts[split] = TrajectorySet([t] * len(ys), list(ys), [POINTS - POINTS // 2] * len(ys),
                                     [f"{name} {split} {i}" for i in range(len(ys))])
    spec = {"source": name, "kind": "embedded", "system": system, "A": [list(r) for r in A], "dims": 2,
            "columns": ["y1", "y2"], "noise": NOISE, **_standardization(parts["train"])}
    return TrajectoryData(parts["train"], parts["val"], parts["test"], spec)


# ---- users' CSV files -----------------------------------------------------------------------------

def read_series(path: str | Path, dims: int | None = None) -> tuple[dict[str, tuple[Tensor, Tensor]], list[str]]:
    """The series of a CSV (series id, time, value...): {id: (times (L,) float64, values (L, D) float32)} in order
    of first appearance, and the value columns' names. `dims`: the number of value columns required (a run's).
    One line naming the file (and the line) for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise DeepAtlasError(f"{path}: no such file (give a CSV with columns series id, time, value...)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [(line, r) for line, r in enumerate(csv.reader(f), start=1) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DeepAtlasError(f"{path}: not a readable CSV file ({err})") from None
    if len(rows) < 2:
        raise DeepAtlasError(f"{path}: needs a header row (series id, time, value...) and rows of observations")
    header = [h.strip() for h in rows[0][1]]
    if len(header) < 3:
        raise DeepAtlasError(f"{path}: {len(header)} columns; trajectories need a series id, a time and at least one "
                             f"value column (header: {', '.join(header)})")
    if dims is not None and len(header) - 2 != dims:
        raise DeepAtlasError(f"{path}: {len(header) - 2} value columns ({', '.join(header[2:])}); this run's "
                             f"trajectories have {dims}")
    found: dict[str, tuple[list[float], list[list[float]], int]] = {}
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DeepAtlasError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        cells = [c.strip() for c in row]
        numbers = []
        for name, cell in zip(header[1:], cells[1:]):
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise DeepAtlasError(f"{path}:{line}: column {name!r} holds {cell!r}, not a finite number")
            numbers.append(value)
        times, values, _ = found.setdefault(cells[0], ([], [], line))
        if times and numbers[0] <= times[-1]:
            raise DeepAtlasError(f"{path}:{line}: series {cells[0]!r} at time {numbers[0]:g} after time "
                                 f"{times[-1]:g}; each series' times must increase")
        times.append(numbers[0])
        values.append(numbers[1:])
    series = {k: (torch.tensor(t, dtype=torch.float64), torch.tensor(v, dtype=torch.float32))
              for k, (t, v, _) in found.items()}
    return series, header[2:]


def _trajectories(series: dict[str, tuple[Tensor, Tensor]], path, least: int = MIN_POINTS) -> TrajectorySet:
    short = [k for k, (t, _) in series.items() if len(t) < least]
    if short:
        n = len(series[short[0]][0])
        raise DeepAtlasError(f"{path}: series {short[0]!r} has {n} observation{'s' if n > 1 else ''}; each needs at "
                             f"least {least} (the first half observed, the rest to predict)")
    times, values = zip(*series.values())
    return TrajectorySet(list(times), list(values), [len(t) - len(t) // 2 for t in times],
                         [f"{path} [{k}]" for k in series])


def users(path: Path) -> TrajectoryData:
    series, columns = read_series(path)
    if len(series) < 3:
        raise DeepAtlasError(f"{path}: {len(series)} series; a 60/20/20 train/val/test split needs at least 3")
    every = _trajectories(series, path)
    parts = [TrajectorySet(*[[items[i] for i in p] for items in (every.times, every.values, every.observed,
                                                                 every.names)])
             for p in split_indices(np.arange(len(every)), str(path), "series")]
    spec = {"source": str(path), "kind": "file", "system": None, "dims": len(columns), "columns": columns,
            **_standardization(parts[0])}
    return TrajectoryData(*parts, spec)


# ---- the data module's functions ------------------------------------------------------------------

def load(source: str) -> TrajectoryData:
    if source in SYSTEMS:
        return embedded(source)
    if Path(source).is_file():
        return users(Path(source))
    raise DeepAtlasError(f"unknown dataset {source!r}: not a file, nor one of {', '.join(EMBEDDED)}")


def load_for(options, target: str | None = None) -> TrajectoryData:
    data = load(options.data)
    data.spec["window"] = options.window  # observations per training window (0: the whole observed part)
    return data


def read_labeled(spec: dict, path: str) -> TrajectorySet:
    """Every series of a CSV as a trajectory to continue (`eval --data`): its first half observed."""
    series, _ = read_series(path, spec["dims"])
    return _trajectories(series, path)


def velocity_baseline(t: Tensor, y: Tensor, observed: Tensor) -> Tensor:
    """The last observed velocity repeated: y_k + (t - t_k)(y_k - y_{k-1}) / (t_k - t_{k-1}) at every time,
    k the last observation: (B, L, D) from t (B, L), y (B, L, D), observed (B,)."""
    rows = torch.arange(len(y), device=y.device)
    last, before = y[rows, observed - 1], y[rows, observed - 2]                       # (B, D)
    t_last, t_before = t[rows, observed - 1], t[rows, observed - 2]                   # (B,)
    velocity = (last - before) / (t_last - t_before)[:, None]                         # (B, D)
    return last[:, None] + (t - t_last[:, None])[..., None] * velocity[:, None]       # (B, L, D)


def future_mask(observed: Tensor, length: Tensor, steps: int) -> Tensor:
    """(B, L) True at the observations to predict: after the observed ones, before the padding."""
    at = torch.arange(steps, device=observed.device)[None]
    return (at >= observed[:, None]) & (at < length[:, None])


def baseline(spec: dict, train, examples: Dataset) -> tuple[str, dict[str, float]]:
    """Repeating the last observed velocity, under the objective's names (mse, velocity_mse, mse_vs_velocity = 1);
    the last observed value held still is named beside it (a stronger trivial predictor on a rotation)."""
    t, y, observed, length = TrajectorySet.collate([examples[i] for i in range(len(examples))])
    future = future_mask(observed, length, y.shape[1])[..., None].expand_as(y)
    velocity = float((velocity_baseline(t, y, observed) - y)[future].square().mean())
    last = y[torch.arange(len(y)), observed - 1][:, None]
    held = float((last - y).expand_as(y)[future].square().mean())
    return (f"repeating the last observed velocity (the last value held still: mse {held:.4g})",
            {"mse": velocity, "velocity_mse": velocity, "mse_vs_velocity": 1.0})


# ---- predictions and plots -------------------------------------------------------------------------

def predict(objective, spec: dict, inputs, *, steps: int | None = None) -> list[dict]:
    """Each series of a CSV (the run's columns) continued beyond its last observation: `steps` states (default: as
    many as it has observations) at its median time step, in its units and times."""
    if not isinstance(inputs, (str, Path)):
        raise DeepAtlasError(f"predict takes a CSV file of trajectories (series id, time, value...), not "
                             f"{type(inputs).__name__}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
        raise DeepAtlasError(f"{option('steps')} {steps}: predict 1 to {MAX_STEPS:,} states")
    series, _ = read_series(inputs, spec["dims"])
    rows = []
    for key, (t, v) in series.items():
        if len(t) < 2:
            raise DeepAtlasError(f"{inputs}: series {key!r} has 1 observation; give at least 2 (a time step)")
        n = steps or len(t)
        future = t[-1] + float(torch.diff(t).median()) * torch.arange(1, n + 1, dtype=torch.float64)
        predicted = objective.extrapolate(t, v, future)                                  # (n, D) float64
        rows.append({"input": f"{inputs} [{key}]", "series": key,
                     "predicted": f"{n} states, t = {float(future[0]):.4g} .. {float(future[-1]):.4g}",
                     "times": future.tolist(), "values": predicted.tolist(), "history_times": t.tolist(),
                     "history": v.double().tolist(), "columns": list(spec["columns"])})
    return rows


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_trajectories(objective, spec: dict, dataset: TrajectorySet, path: Path, n: int = 4) -> None:
    """trajectories.png: the first `n` trajectories of a split, in the plane of their first two components (one
    component: over time): the observations given, the ones to predict, the model's extrapolation and the velocity
    baseline's."""
    plt = _pyplot()
    n = min(n, len(dataset))
    plane = spec["dims"] >= 2
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    for ax, i in zip(axes[0], range(n)):
        t, v, k = dataset[i]
        predicted = objective.extrapolate(t[:k], v[:k], t[k:])                          # (L - k, D)
        line = velocity_baseline((t - t[0])[None].float(), v[None], torch.tensor([k]))[0, k:]
        for times, z, label, style in ((t[:k], v[:k], "observed", {"color": "black", "marker": ".", "ls": ""}),
                                       (t[k:], v[k:], "to predict", {"color": "0.6", "marker": ".", "ls": ""}),
                                       (t[k:], predicted, "neural ODE", {"color": "tab:orange"}),
                                       (t[k:], line, "last velocity", {"color": "tab:blue", "ls": "--"})):
            z = z.double()
            ax.plot(z[:, 0] if plane else times, z[:, 1] if plane else z[:, 0], label=label, ms=3, lw=1.2, **style)
        if plane:  # the velocity's line leaves the picture: keep the trajectory's region in view
            low, high = v.double().min(0).values, v.double().max(0).values
            pad = 0.15 * float((high - low).max())
            ax.set_xlim(float(low[0]) - pad, float(high[0]) + pad)
            ax.set_ylim(float(low[1]) - pad, float(high[1]) + pad)
        ax.set(title=dataset.names[i], xlabel=spec["columns"][0] if plane else "time",
               ylabel=spec["columns"][1] if plane else spec["columns"][0])
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_phase_portrait(objective, spec: dict, dataset: TrajectorySet, path: Path, grid: int = 40) -> bool:
    """phase_portrait.png of a 2-D system: the learned vector field's streamlines, beside the true field's where
    the data knows it (the embedded spirals), over the region the split's trajectories visit. False (nothing
    written) for another number of components."""
    if spec["dims"] != 2:
        return False
    plt = _pyplot()
    states = torch.cat(dataset.values).double()
    low, high = states.min(0).values, states.max(0).values
    pad = 0.1 * (high - low)
    xs = torch.linspace(float(low[0] - pad[0]), float(high[0] + pad[0]), grid, dtype=torch.float64)
    ys = torch.linspace(float(low[1] - pad[1]), float(high[1] + pad[1]), grid, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx, gy], -1).reshape(-1, 2)                                # (grid², 2)
    fields = [("learned", objective.vector_field(points))]
    if spec.get("system"):
        fields.append((f"true: dy/dt = A {'y³' if spec['system'] == 'cubic' else 'y'}", spiral_field(spec["system"],
                                                                                                  points)))
    from matplotlib.colors import Normalize
    speeds = [f.norm(dim=-1).log1p() for _, f in fields]                                  # colour: log(1 + |dy/dt|)
    norm = Normalize(float(min(s.min() for s in speeds)), float(max(s.max() for s in speeds)))
    fig, axes = plt.subplots(1, len(fields), figsize=(5 * len(fields), 4.6), squeeze=False)
    for ax, (title, field), speed in zip(axes[0], fields, speeds):
        u = field.reshape(grid, grid, 2)
        ax.streamplot(xs.numpy(), ys.numpy(), u[..., 0].numpy(), u[..., 1].numpy(), density=1.2, linewidth=0.7,
                      color=speed.reshape(grid, grid).numpy(), cmap="viridis", norm=norm)
        for v in dataset.values[:8]:
            ax.plot(v[:, 0], v[:, 1], color="tab:red", lw=0.6, alpha=0.6)
        ax.set(title=title, xlabel=spec["columns"][0], ylabel=spec["columns"][1],
               xlim=(float(xs[0]), float(xs[-1])), ylim=(float(ys[0]), float(ys[-1])))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_prediction(row: dict, path: Path) -> None:
    """One series continued (a `predict` row): each component over time, the observations as points and the
    prediction as a line from the last of them; beside it, for two components or more, the plane of the first two."""
    plt = _pyplot()
    history, times = torch.tensor(row["history"]), torch.tensor(row["history_times"])
    future = torch.cat([history[-1:], torch.tensor(row["values"])])
    future_times = torch.cat([times[-1:], torch.tensor(row["times"])])
    plane = history.shape[1] >= 2
    fig, axes = plt.subplots(1, 2 if plane else 1, figsize=(11 if plane else 7, 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1]} if plane else None)
    for j, name in enumerate(row["columns"]):
        axes[0][0].plot(times, history[:, j], ".", color=f"C{j % 10}", ms=4, label=f"{name} observed")
        axes[0][0].plot(future_times, future[:, j], "-", color=f"C{j % 10}", lw=1.2, label=f"{name} predicted")
    axes[0][0].set(title=f"{row['input']}: {row['predicted']}", xlabel="time", ylabel="value")
    axes[0][0].legend(fontsize=7, loc="best")
    if plane:
        axes[0][1].plot(history[:, 0], history[:, 1], ".", color="black", ms=4, label="observed")
        axes[0][1].plot(future[:, 0], future[:, 1], "-", color="tab:orange", lw=1.2, label="predicted")
        axes[0][1].set(xlabel=row["columns"][0], ylabel=row["columns"][1])
        axes[0][1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
