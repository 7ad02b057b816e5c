"""Irregularly sampled time series: each series observed at its own few time stamps, with held-out points to
interpolate inside its observed window and points after it to extrapolate.

Embedded dataset (generated in memory in under a second, seeded; every run sees the same series):
    irregular       damped oscillators x(t) = A e^{-γt} cos(ωt + φ) + ε, with A ~ U(0.5, 1.5), ω ~ U(1, 2.5),
                    γ ~ U(0, 0.2), φ ~ U(0, 2π), noise ε ~ N(0, NOISE²). The time stamps come from a grid of step
                    GRID on [0, END]; each series draws its own: N_OBS observed stamps in the window [0, OBS_END],
                    N_INTERP further stamps in that window held out (interpolation targets) and N_EXTRAP stamps in
                    (OBS_END, END] (extrapolation targets). Splits of 2000 / 200 / 400 series, each from its own
                    seed. (Rubanova et al. 2019's toy set likewise draws random subsets of 100 stamps of a grid.)

Users' data: a CSV with a header row whose columns are a series id, a time, then one or more values:

    series,time,x[,y...]
    a,0.0,1.2
    a,0.37,0.9
    b,0.1,-0.3

A series' rows may come in any order; an empty value cell is an unobserved value (that point's other values still
count); a bad row, a non-numeric cell, a missing column or a time given twice in one series is one line naming
the file and line. Series with fewer than MIN_POINTS points are left out (with a notice). Each series' times are
shifted to start at 0 and scaled by one factor (the training series' median span maps to OBS_END); each value
column is standardized with the training series' mean and std (the spec keeps both, and `predict` answers in the
file's own units and times). Per series the last fifth of its points are extrapolation targets and a seeded fifth
of the rest (never its first point) interpolation targets; the series are split 60/20/20 (seed 0).

An item is one series, padded to the longest in its set: times (L,), values (L, D), a value mask (L, D) (1: the
value exists), and each point's role (L,): PAD, OBSERVED, INTERP or EXTRAP. `collate` builds a batch on the
union of the batch's time stamps (Rubanova et al.'s batching): every series laid on one shared, sorted time axis
with masks, so that one ODE solve serves the whole batch:

    Batch = (values (B, T, D), times (T,), observed (B, T, D), interp (B, T, D), extrap (B, T, D))

the three masks 1 where the series has a value there in that role. The trivial baseline (`baseline`) is linear
interpolation between a series' observations for the held-out points and its last observation held for the points
after the window.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError, notice

EMBEDDED = ["irregular"]
GRID, OBS_END, END = 0.1, 5.0, 7.5
"""the embedded stamps' grid step, the end of the observed window and of the extrapolated part"""
N_OBS, N_INTERP, N_EXTRAP = 15, 10, 10
NOISE = 0.05
SIZES = {"train": 2000, "val": 200, "test": 400}
SEEDS = {"train": 0, "val": 1, "test": 2}
PAD, OBSERVED, INTERP, EXTRAP = 0, 1, 2, 3
MIN_POINTS = 4
"""a user's series needs this many points (two observed, one to interpolate, one to extrapolate)"""
HELD_OUT = 0.2
"""the share of a user's series' points extrapolated (its last ones), and of the rest interpolated"""
PREDICT_POINTS = 60
"""`predict` decodes each series at this many times from its start to half its span past its end"""


class SeriesSet(Dataset):
    """Series padded to one length L: times (N, L), values (N, L, D), present (N, L, D) and role (N, L)."""

    def __init__(self, times: Tensor, values: Tensor, present: Tensor, role: Tensor, names: list[str] | None = None):
        self.times, self.values, self.present, self.role = times, values, present, role
        self.names = names or [str(i) for i in range(len(times))]

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, i: int):
        return self.times[i], self.values[i], self.present[i], self.role[i]

    @staticmethod
    def collate(items) -> tuple[Tensor, ...]:
        return union_batch(*(torch.stack(parts) for parts in zip(*items)))


def union_batch(times: Tensor, values: Tensor, present: Tensor, role: Tensor) -> tuple[Tensor, ...]:
    """Series on their own stamps (B, L) laid on the sorted union of the stamps of all their points (T,):
    (values (B, T, D), union times (T,), observed, interp, extrap masks (B, T, D)). Padding lands nowhere."""
    real = role != PAD                                                   # (B, L)
    union = torch.unique(times[real])                                    # (T,) sorted
    at = torch.searchsorted(union, times.clamp(min=union[0]))            # (B, L) each point's place on the union
    at = torch.where(real, at, 0)
    b, t, d = times.shape[0], len(union), values.shape[-1]
    rows = torch.arange(b, device=times.device)[:, None].expand_as(at)    # (B, L)
    grid_values = values.new_zeros(b, t, d)
    masks = []
    for kind in (OBSERVED, INTERP, EXTRAP):
        keep = (role == kind)[..., None] & present                       # (B, L, D)
        mask = values.new_zeros(b, t, d)
        mask[rows[real], at[real]] = keep[real].to(values.dtype)         # (B, T, D)
        masks.append(mask)
    grid_values[rows[real], at[real]] = torch.where(present[real], values[real], 0.0)
    return (grid_values, union, *masks)


class IrregularData(Splits):
    @property
    def dims(self) -> dict:
        return {"in_features": int(self.train.values.shape[-1])}


# ---- the embedded set ------------------------------------------------------------------------------------

def oscillators(n: int, seed: int) -> SeriesSet:
    """n damped oscillators, each on its own stamps (see the module docstring)."""
    rng = np.random.default_rng([21, seed])
    grid = np.round(np.arange(0, END + GRID / 2, GRID), 6)
    inside = np.flatnonzero(grid <= OBS_END + 1e-9)
    after = np.flatnonzero(grid > OBS_END + 1e-9)
    pick_in = np.argsort(rng.random((n, len(inside))), 1)[:, :N_OBS + N_INTERP]   # distinct stamps per series
    pick_after = np.argsort(rng.random((n, len(after))), 1)[:, :N_EXTRAP]
    stamps = np.concatenate([inside[pick_in], after[pick_after]], 1)             # (n, L) grid indices
    role = np.array([OBSERVED] * N_OBS + [INTERP] * N_INTERP + [EXTRAP] * N_EXTRAP)
    order = np.argsort(stamps, 1)
    stamps, role = np.take_along_axis(stamps, order, 1), role[order]
    t = grid[stamps]                                                              # (n, L)
    amp, omega = rng.uniform(0.5, 1.5, (n, 1)), rng.uniform(1.0, 2.5, (n, 1))
    gamma, phase = rng.uniform(0.0, 0.2, (n, 1)), rng.uniform(0, 2 * math.pi, (n, 1))
    x = amp * np.exp(-gamma * t) * np.cos(omega * t + phase) + NOISE * rng.standard_normal(t.shape)
    values = torch.tensor(x, dtype=torch.float32)[..., None]
    return SeriesSet(torch.tensor(t, dtype=torch.float32), values, torch.ones_like(values, dtype=torch.bool),
                     torch.tensor(role))


def embedded() -> IrregularData:
    parts = [oscillators(SIZES[s], SEEDS[s]) for s in SIZES]
    spec = {"source": "irregular", "columns": ["x"], "mean": [0.0], "std": [1.0], "time_scale": 1.0,
            "obs_end": OBS_END, "end": END}
    return IrregularData(*parts, spec)


# ---- users' CSV files ------------------------------------------------------------------------------------

def read_csv_series(path: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, int]], list[str]]:
    """{series id: (times (L,), values (L, D) with NaN for an empty cell, the file line of its first row)} in
    order of first appearance, and the value columns' names; one line naming file and line for what is wrong."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as err:
        raise DeepAtlasError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not rows or len(rows[0]) < 3:
        found = ", ".join(rows[0]) if rows else "an empty file"
        raise DeepAtlasError(f"{path}:1: expected a header row of columns series id, time, then one or more values "
                             f"(found: {found})")
    header = [h.strip() for h in rows[0]]
    columns = header[2:]
    found: dict[str, list] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DeepAtlasError(f"{path}:{line}: {len(row)} cells, expected {len(header)} "
                                 f"({', '.join(header)})")
        name, cells = row[0].strip(), [c.strip() for c in row[1:]]
        if not name:
            raise DeepAtlasError(f"{path}:{line}: no series id in column {header[0]!r}")
        numbers = []
        for column, cell in zip(header[1:], cells):
            if cell == "" and column != header[1]:
                numbers.append(math.nan)
                continue
            try:
                number = float(cell)
            except ValueError:
                raise DeepAtlasError(f"{path}:{line}: column {column!r} holds {cell!r}, not a number") from None
            if not math.isfinite(number):
                raise DeepAtlasError(f"{path}:{line}: column {column!r} holds {cell!r}, not a finite number")
            numbers.append(number)
        if all(math.isnan(v) for v in numbers[1:]):
            raise DeepAtlasError(f"{path}:{line}: no value in any of the value columns {', '.join(columns)}")
        found.setdefault(name, []).append((line, numbers))
    if not found:
        raise DeepAtlasError(f"{path}: no data rows under the header")
    series = {}
    for name, points in found.items():
        lines = np.array([p[0] for p in points])
        data = np.array([p[1] for p in points], dtype=np.float64)          # (L, 1 + D)
        order = np.argsort(data[:, 0], kind="stable")
        data, lines = data[order], lines[order]
        twice = np.flatnonzero(np.diff(data[:, 0]) == 0)
        if len(twice):
            raise DeepAtlasError(f"{path}:{lines[twice[0] + 1]}: series {name!r} has time {data[twice[0], 0]:g} "
                                 f"twice (first at line {lines[twice[0]]})")
        series[name] = (data[:, 0], data[:, 1:], int(lines.min()))
    return series, columns


def _pad(series: list[tuple[np.ndarray, np.ndarray, np.ndarray]], names: list[str]) -> SeriesSet:
    """Series (times (L_i,), values (L_i, D) with NaN gaps, roles (L_i,)) padded to the longest."""
    longest, d = max(len(t) for t, _, _ in series), series[0][1].shape[1]
    n = len(series)
    times, values = np.zeros((n, longest)), np.zeros((n, longest, d))
    present, role = np.zeros((n, longest, d), dtype=bool), np.full((n, longest), PAD)
    for i, (t, v, r) in enumerate(series):  # building the padded arrays of a file, not model code
        times[i, :len(t)], values[i, :len(t)] = t, np.nan_to_num(v)
        present[i, :len(t)], role[i, :len(t)] = ~np.isnan(v), r
    return SeriesSet(torch.tensor(times, dtype=torch.float32), torch.tensor(values, dtype=torch.float32),
                     torch.tensor(present), torch.tensor(role), names)


def _roles(length: int, rng: np.random.Generator) -> np.ndarray:
    """A user's series' roles: its last fifth extrapolated, a seeded fifth of the rest (not the first) interpolated."""
    role = np.full(length, OBSERVED)
    n_extrap = max(1, round(HELD_OUT * length))
    role[length - n_extrap:] = EXTRAP
    inner = np.arange(1, length - n_extrap)
    n_interp = min(max(1, round(HELD_OUT * (length - n_extrap))), len(inner) - 1)
    role[rng.choice(inner, n_interp, replace=False)] = INTERP
    return role


def users(path: str | Path) -> IrregularData:
    found, columns = read_csv_series(path)
    short = [k for k, (t, _, _) in found.items() if len(t) < MIN_POINTS]
    if short:
        notice(f"{path}: {len(short)} series with fewer than {MIN_POINTS} points left out ({', '.join(short[:5])}"
               f"{' ...' if len(short) > 5 else ''})")
    names = [k for k in found if k not in short]
    if len(names) < 3:
        raise DeepAtlasError(f"{path}: {len(names)} series of {MIN_POINTS} points or more; a train/val/test split "
                             f"needs at least 3")
    parts = split_indices(np.zeros(len(names)), str(path), "series")
    train = [found[names[i]] for i in parts[0]]
    spans = [t[-1] - t[0] for t, _, _ in train]
    scale = OBS_END / max(float(np.median(spans)), 1e-12)
    observed = np.concatenate([v for _, v, _ in train])
    mean, std = np.nanmean(observed, 0), np.nanstd(observed, 0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    rng = np.random.default_rng(0)
    spec = {"source": str(path), "columns": columns, "mean": mean.tolist(), "std": std.tolist(),
            "time_scale": scale, "obs_end": OBS_END, "end": OBS_END * (1 + HELD_OUT)}
    sets = []
    for idx in parts:
        chosen = [names[i] for i in idx]
        sets.append(_pad([((found[k][0] - found[k][0][0]) * scale, (found[k][1] - mean) / std,
                           _roles(len(found[k][0]), rng)) for k in chosen], chosen))
    return IrregularData(*sets, spec)


def load(source: str) -> IrregularData:
    if source == "irregular":
        return embedded()
    if Path(source).is_file():
        return users(source)
    raise DeepAtlasError(f"unknown dataset {source!r}: not a file, nor one of {', '.join(EMBEDDED)}")


def load_for(options, target: str | None = None) -> IrregularData:
    if target is not None:
        raise DeepAtlasError("irregular series take no --target/--column: the CSV's columns after the series id and "
                             "the time are the values")
    return load(options.data)


def read_labeled(spec: dict, path: str) -> SeriesSet:
    """Every series of a CSV (`eval --data`), with the run's scaling and the same held-out roles."""
    found, columns = read_csv_series(path)
    if len(columns) != len(spec["columns"]):
        raise DeepAtlasError(f"{path}: {len(columns)} value columns, the run was trained on {len(spec['columns'])} "
                             f"({', '.join(spec['columns'])})")
    names = [k for k, (t, _, _) in found.items() if len(t) >= MIN_POINTS]
    if not names:
        raise DeepAtlasError(f"{path}: no series of {MIN_POINTS} points or more")
    mean, std, rng = np.array(spec["mean"]), np.array(spec["std"]), np.random.default_rng(0)
    return _pad([((found[k][0] - found[k][0][0]) * spec["time_scale"], (found[k][1] - mean) / std,
                  _roles(len(found[k][0]), rng)) for k in names], names)


# ---- the trivial baseline ------------------------------------------------------------------------------------

def linear_fill(values: Tensor, times: Tensor, observed: Tensor) -> Tensor:
    """Each series' values at every union time by linear interpolation between its observations (B, T, D); before
    its first observation the first one, after its last the last one held."""
    t = times[None, :, None].expand_as(values)                                        # (B, T, D)
    steps = torch.arange(values.shape[1], device=values.device)[None, :, None].expand_as(values)
    seen = observed > 0
    prev = torch.where(seen, steps, -1).cummax(1).values                             # last observation at or before
    nxt = torch.where(seen, steps, values.shape[1]).flip(1).cummin(1).values.flip(1)  # first at or after
    any_seen = seen.any(1, keepdim=True)
    last = values.shape[1] - 1
    prev_c = torch.where(prev < 0, nxt, prev).clamp(0, last)       # none before: the next one alone
    nxt_c = torch.where(nxt > last, prev, nxt).clamp(0, last)      # none after: the previous one alone
    v0, v1 = values.gather(1, prev_c), values.gather(1, nxt_c)
    t0, t1 = t.gather(1, prev_c), t.gather(1, nxt_c)
    w = torch.where(t1 > t0, (t - t0) / (t1 - t0).clamp(min=1e-12), 0.0).clamp(0, 1)
    return torch.where(any_seen, v0 + w * (v1 - v0), 0.0)


def baseline(spec: dict, train: Dataset | None, examples: SeriesSet) -> tuple[str, dict[str, float]]:
    """Linear interpolation between each series' observations (mse on the held-out points inside the window),
    its last observation held (extrap_mse on the points after it); standardized units, as the objective's."""
    sums = torch.zeros(4, dtype=torch.float64)                  # squared errors and counts, interp then extrap
    for start in range(0, len(examples), 256):                  # in chunks: a file's union of stamps can be long
        chunk = [examples[i] for i in range(start, min(start + 256, len(examples)))]
        values, times, observed, interp, extrap = SeriesSet.collate(chunk)
        error = (linear_fill(values, times, observed) - values).square()
        sums += torch.stack([(error * interp).sum(), interp.sum(), (error * extrap).sum(), extrap.sum()]).double()
    out = {"mse": float(sums[0] / sums[1].clamp(min=1))}
    if sums[3] > 0:
        out["extrap_mse"] = float(sums[2] / sums[3])
    return "linear interpolation between a series' observations (its last one held after the window)", out


# ---- predictions and plots -----------------------------------------------------------------------------------

SAMPLES = 20
"""z0 samples behind `predict`'s std and the plot's band"""


@torch.no_grad()
def _trajectories(model, observed_set: SeriesSet, query: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """The posterior-mean trajectory (B, Q, D) and `samples` sampled ones (S, B, Q, D) of each series at the
    query times (Q,), from its observed points only."""
    device = next(model.parameters()).device
    values, times, observed, _, _ = (x.to(device) for x in SeriesSet.collate(
        [observed_set[i] for i in range(len(observed_set))]))
    mu, sigma = model.encode(values, times, observed)
    query = query.to(device)
    z0 = mu + sigma * torch.randn(samples, *mu.shape, device=device)
    return model.decode(mu, query).cpu(), model.decode(z0, query).cpu()


def predict(objective, spec: dict, inputs) -> list[dict]:
    """Each series of a CSV (series id, time, values, as in training; all its points observed) decoded at
    PREDICT_POINTS times from its first time to half its span past its last: the trajectory from the posterior
    mean z0 in the file's units and times, and its std over SAMPLES draws of z0."""
    if not isinstance(inputs, (str, Path)) or not Path(inputs).is_file():
        raise DeepAtlasError(f"predict takes a CSV of series (series id, time, values...), not {inputs!r}")
    found, columns = read_csv_series(inputs)
    if len(columns) != len(spec["columns"]):
        raise DeepAtlasError(f"{inputs}: {len(columns)} value columns, the run was trained on "
                             f"{len(spec['columns'])} ({', '.join(spec['columns'])})")
    names = list(found)
    mean, std, scale = np.array(spec["mean"]), np.array(spec["std"]), spec["time_scale"]
    observed = _pad([((found[k][0] - found[k][0][0]) * scale, (found[k][1] - mean) / std,
                      np.full(len(found[k][0]), OBSERVED)) for k in names], names)
    spans = torch.tensor([float(found[k][0][-1] - found[k][0][0]) * scale for k in names])
    fraction = torch.linspace(0, 1.5, PREDICT_POINTS)
    query = torch.unique((spans[:, None] * fraction).reshape(-1))            # every series' query times, shared
    mean_path, sampled = _trajectories(objective.model, observed, query, SAMPLES)
    rows = []
    for i, name in enumerate(names):  # one row per series: pick its own query times from the shared ones
        at = torch.searchsorted(query, spans[i] * fraction)
        times = (query[at].double() / scale + found[name][0][0]).tolist()
        value = mean_path[i, at].double() * torch.tensor(std) + torch.tensor(mean)     # (Q, D) file units
        spread = sampled[:, i, at].double().std(0) * torch.tensor(std)
        rows.append({"input": name, "predicted": f"{PREDICT_POINTS} points from t={times[0]:.4g} to t={times[-1]:.4g}"
                     f" (observed until {found[name][0][-1]:.4g})", "times": times, "columns": columns,
                     "values": value.tolist(), "std": spread.tolist()})
    return rows


def plot_predictions(objective, spec: dict, dataset: SeriesSet, path: Path, series: int = 4) -> None:
    """predictions.png: a few series (the test split's first), each with its observations, the held-out truth,
    the trajectory from the posterior mean z0, and the band of ±2 std over SAMPLES draws of z0 (first column)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(series, len(dataset))
    chosen = SeriesSet(*(x[:n] for x in (dataset.times, dataset.values, dataset.present, dataset.role)))
    seen = SeriesSet(chosen.times, chosen.values, chosen.present & (chosen.role == OBSERVED)[..., None],
                     torch.where(chosen.role == OBSERVED, OBSERVED, PAD))
    real = chosen.role != PAD
    query = torch.linspace(0, float(chosen.times[real].max()), 200)
    objective.eval()
    mean_path, sampled = _trajectories(objective.model, seen, query, SAMPLES)
    band = sampled.std(0)                                                    # (B, Q, D)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        t, v, r = chosen.times[i], chosen.values[i, :, 0], chosen.role[i]
        ax.plot(query, mean_path[i, :, 0], color="tab:blue", lw=1.2, label="latent trajectory (z0 = μ)")
        ax.fill_between(query, mean_path[i, :, 0] - 2 * band[i, :, 0], mean_path[i, :, 0] + 2 * band[i, :, 0],
                        color="tab:blue", alpha=0.2, label=f"±2 std over {SAMPLES} z0 samples")
        for role, style in ((OBSERVED, dict(color="black", marker="o", label="observed")),
                            (INTERP, dict(color="tab:green", marker="x", label="held out (interpolate)")),
                            (EXTRAP, dict(color="tab:red", marker="x", label="after the window (extrapolate)"))):
            ax.scatter(t[r == role], v[r == role], s=16, **style)
        ax.axvline(spec["obs_end"], color="0.7", lw=0.8, ls="--")
        ax.set(title=f"series {dataset.names[i]}", xlabel="time (scaled)")
    axes[0][0].set_ylabel(spec["columns"][0] + " (standardized)")
    axes[0][0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
