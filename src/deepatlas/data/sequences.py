"""Sequence data: the classic synthetic memory tasks, sequential digits, forecasting, users' CSV series.

Every item is (x, y) with x a float sequence (T, F):
    adding-T        (Hochreiter & Schmidhuber 1997; the setting of Bai et al. 2018) x (T, 2): a value
                    U(0, 1) and a marker that is 1 at exactly two steps, one in each half; y (1,) is the
                    sum of the two marked values. Always answering 1 scores MSE 1/6 ≈ 0.167.
    copy-T          (Bai et al. 2018) x (T+20,) symbols one-hot over 10: ten digits from 1..8, T-1 blanks
                    (0), the delimiter 9, ten blanks; y (T+20,) is blank everywhere except the last ten
                    steps, which must repeat the ten digits. Chance cross-entropy: 10·ln 8 / (T+20).
    seq-digits      the 8x8 digit images read row by row: x (8, 8), y one of 10 classes.
    sine            a noisy mixture of three sines; x a window of 64 values, y (1,) the next value.
    future-tagging  x (20,) tokens one-hot over 8; y_t = [x_{t+1} > x_t] (0 at the last step). From the
                    past alone the best possible accuracy is 0.7625; a bidirectional model can reach 1.
    a CSV file      `--data series.csv --column NAME`: windows of one numeric column, next value.
T runs from 2 to 1,000 in adding-T and copy-T. Generated sets draw each split from its own fixed seed,
so every run and every bench sees the same test sequences whatever the run's seed.

Series are split in time (first 60% train, then 20% val, 20% test) and standardized with the training part's
mean and std, kept in the JSON `spec`. In a user's file the split is of the targets: a val or test window reads
its context from the values before it, as a forecaster would. What a user's series gets besides:
    gaps            '', NaN, NA (tabular.MISSING) are interpolated linearly, the ends taking the nearest value
                    (`missing=impute`, with a one-line notice), or their rows dropped (`drop`), or refused (`error`).
    normalize       `window` (the default for a user's file; `global` for the embedded sets): reversible instance
                    normalization (RevIN: T. Kim et al., "Reversible Instance Normalization for Accurate
                    Time-Series Forecasting against Distribution Shift", ICLR 2022). Each input window is
                    normalized by its own mean and std, x̂ = (x - μ_w) / σ_w, and the network's output mapped back,
                    ŷ = f(x̂) σ_w + μ_w, so a series that trends or shifts level beyond the training range shows the
                    network the shapes it learned. RevIN's learnable affine (γ x̂ + β) is left out: it would add
                    weights to every sequence model. `reversible` is the one place this happens: in training,
                    evaluation, `predict` and `forecast` alike; the spec records the choice.
    errors          `mse` is in standardized units (what trains; what the embedded bars quote); `mse_units` and
                    `mae_units` are in the series' own units, `mase` is mae_units over the naive last value's on
                    the same windows (below 1: better than repeating the last value).
    baseline        the naive last value, and the seasonal naive (the value one season back; `season`, or the
                    highest autocorrelation peak of the training part, recorded in the spec).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError, notice, option, setting

SEED = 4
SIZES = {"train": 50_000, "val": 2_000, "test": 2_000}
EMBEDDED = ["adding-50", "adding-200", "adding-600", "copy-100", "seq-digits", "sine", "future-tagging"]
SINE_WINDOW = 64
MIN_LENGTH, MAX_LENGTH = 2, 1000
"""the lengths T that adding-T and copy-T take: adding-1000's training set is 0.4 GB of float32 (x (50,000, T, 2))"""
TAGGING_LENGTH, TAGGING_VOCAB = 20, 8
COPY_SYMBOLS = 10  # 0 blank, 1..8 digits, 9 delimiter
USER_WINDOW = 32
"""the input window of a user's series unless `window` is set"""
EPS = 1e-5
"""RevIN's ε: σ_w = sqrt(var_w + ε), so that a flat window divides by a small number, not by zero"""
MIN_SEASON_ACF = 0.2
"""a weaker autocorrelation peak is no season (the seasonal naive is then left out)"""
MAX_STEPS = 10_000
"""the longest horizon `predict` forecasts (one network call a step)"""
PLOT_STEPS = 500
"""predictions.png forecasts at most this many steps from the split's first window"""


class OneHot(Dataset):
    """Token sequences kept as integers, one-hot encoded per item (10x less memory than floats)."""

    def __init__(self, tokens: Tensor, y: Tensor, vocab: int):
        self.tokens, self.y, self.vocab = tokens, y, vocab

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i):
        return F.one_hot(self.tokens[i].long(), self.vocab).float(), self.y[i]


class SequenceData(Splits):
    @property
    def dims(self) -> dict:
        x, y = self.train[0]
        per_step = y.dim() == 1 and not y.is_floating_point()  # one label per step: many-to-many
        n_outputs = y.numel() if y.is_floating_point() else self.spec["n_classes"]
        return {"in_features": x.shape[-1], "n_outputs": n_outputs, "per_step": per_step}


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([SEED, *key])


def adding(length: int, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    values = rng.random((n, length))
    marks = np.zeros((n, length))
    half = length // 2
    first, second = rng.integers(0, half, n), rng.integers(half, length, n)
    marks[np.arange(n), first] = marks[np.arange(n), second] = 1
    x = np.stack([values, marks], -1)
    y = values[np.arange(n), first] + values[np.arange(n), second]
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y[:, None], dtype=torch.float32)


def copy_memory(delay: int, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    digits = rng.integers(1, 9, (n, 10))
    x = np.zeros((n, delay + 20), dtype=np.int8)
    y = np.zeros((n, delay + 20), dtype=np.int64)
    x[:, :10] = digits
    x[:, delay + 9] = 9  # the delimiter: "now repeat them"
    y[:, -10:] = digits
    return torch.tensor(x), torch.tensor(y)


def future_tagging(n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    tokens = rng.integers(0, TAGGING_VOCAB, (n, TAGGING_LENGTH))
    tags = np.zeros_like(tokens)
    tags[:, :-1] = tokens[:, 1:] > tokens[:, :-1]
    return torch.tensor(tokens, dtype=torch.int8), torch.tensor(tags)


def sine_series(n: int = 20_000, rng: np.random.Generator | None = None) -> np.ndarray:
    t = np.arange(n)
    clean = np.sin(2 * math.pi * t / 50) + 0.5 * np.sin(2 * math.pi * t / 23 + 1) + 0.3 * np.sin(2 * math.pi * t / 97 + 2)
    return clean + 0.1 * (rng or _rng(3)).standard_normal(n)


def windows(series: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """All (window -> next value) pairs of a standardized 1-D series: x (N, window, 1), y (N, 1)."""
    x = series.unfold(0, window, 1)[:-1]
    return x[..., None].float(), series[window:, None].float()


def find_season(values: np.ndarray) -> int:
    """The season of a series: the lag of the highest local peak of the autocorrelation of its linearly detrended
    values, among lags from 2 to a third of its length (two cycles and more); 0 if no peak reaches MIN_SEASON_ACF."""
    n = len(values)
    t = np.arange(n)
    rest = values - np.polyval(np.polyfit(t, values, 1), t)   # a trend would make every lag look alike
    spectrum = np.fft.rfft(rest, 2 * n)                        # zero-padded: the circular product is the linear one
    acf = np.fft.irfft(spectrum * spectrum.conj())[:n]
    if acf[0] <= 0:
        return 0
    acf = acf / acf[0]
    lags = np.arange(2, n // 3)
    peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1])]
    if len(peaks) == 0 or acf[peaks].max() < MIN_SEASON_ACF:
        return 0
    return int(peaks[np.argmax(acf[peaks])])


def _series_data(values: np.ndarray, window: int, spec: dict, normalize: str, season: int,
                 lead_in: bool) -> SequenceData:
    """Windows of the three parts in time. `lead_in`: a val/test window may read its context from the part before
    (a user's series: every value after the training part is a target); the embedded sine keeps each part apart."""
    n = len(values)
    cuts = [0, int(0.6 * n), int(0.8 * n), n]
    starts = [0] + [max(c - window, 0) if lead_in else c for c in cuts[1:3]]
    if min(b - a for a, b in zip(starts, cuts[1:])) <= window:
        raise DeepAtlasError(f"{spec['source']}: {n} values are too few for windows of {window} (each of the train, "
                             f"val and test parts needs more; lower {setting('window', '...')})")
    train = values[:cuts[1]]
    mean, std = float(train.mean()), float(train.std() or 1.0)
    spec = {**spec, "kind": "series", "window": window, "mean": mean, "std": std, "normalize": normalize,
            "season": season or find_season(train)}
    z = torch.tensor((values - mean) / std)
    parts = [TensorDataset(*windows(z[a:b], window)) for a, b in zip(starts, cuts[1:])]
    return SequenceData(*parts, spec)


# ---- users' series: numbers and gaps -------------------------------------------------------------

def read_series(path: str | Path, column: str | None, missing: str = "impute") -> tuple[np.ndarray, str]:
    """One numeric column of a CSV (header row), in file order, its gaps handled as `missing` says; one-line
    errors for what is wrong. A column counts as numeric when every cell is a number or a gap."""
    from deepatlas.data.tabular import numbers, read_csv
    columns = read_csv(path)
    if column is None:
        numeric = [c for c, cells in columns.items()
                   if (v := numbers(cells)) is not None and not np.isnan(v).all()]
        if len(numeric) != 1:
            raise DeepAtlasError(f"{path}: name the series column with {option('column')} (numeric columns: "
                                 f"{', '.join(numeric) or 'none'})")
        column = numeric[0]
    if column not in columns:
        raise DeepAtlasError(f"{path}: no column {column!r}; columns: {', '.join(columns)}")
    cells = columns[column]
    values = numbers(cells)
    if values is None:  # name the first cell that is not a number (the error path may look cell by cell)
        line, raw = next((i, c) for i, c in enumerate(cells, start=2) if numbers([c]) is None)
        raise DeepAtlasError(f"{path}:{line}: column {column!r} holds {raw!r}, not a number")
    infinite = np.flatnonzero(np.isinf(values))
    if len(infinite):
        line = int(infinite[0]) + 2
        raise DeepAtlasError(f"{path}:{line}: column {column!r} holds {cells[line - 2]!r}, not a finite number")
    return fill_gaps(values, str(path), column, missing), column


def fill_gaps(values: np.ndarray, where: str, column: str, missing: str, first_line: int = 2) -> np.ndarray:
    """The series without its gaps (NaN): interpolated linearly between their neighbours, the ends taking the
    nearest value (impute), left out (drop), or refused naming their lines (error). `first_line`: the file line
    of values[0] (2, under a header row); 0 names positions in raw values instead."""
    gap = np.isnan(values)
    count = int(gap.sum())
    if count == 0:
        return values
    if count == len(values):
        raise DeepAtlasError(f"{where}: column {column!r} holds no numbers, only gaps")
    plural = "s" if count > 1 else ""
    gaps, unit = f"{count} gap{plural}", ("line" if first_line else "position") + plural
    if missing == "error":
        lines = np.flatnonzero(gap)[:5] + first_line
        more = f" and {count - len(lines)} more" if count > len(lines) else ""
        raise DeepAtlasError(f"{where}: column {column!r} has {gaps} ({unit} {', '.join(map(str, lines))}{more}); "
                             f"fill them, or {setting('missing', 'impute')} interpolates them and "
                             f"{setting('missing', 'drop')} drops them")
    if missing == "drop":
        notice(f"{where}: {count} row{plural} with a gap in column {column!r} dropped")
        return values[~gap]
    notice(f"{where}: {gaps} in column {column!r} interpolated linearly ({setting('missing', 'drop')} drops "
            f"them, {setting('missing', 'error')} refuses them)")
    at = np.arange(len(values))
    return np.interp(at, at[~gap], values[~gap])  # beyond the first and last numbers: the nearest one


def load(source: str, column: str | None = None, window: int = 0, missing: str = "impute",
         normalize: str = "auto", season: int = 0) -> SequenceData:
    match = re.fullmatch(r"(adding|copy)-(\d+)", source)
    spec = {"source": source}
    users = not match and source not in EMBEDDED and Path(source).is_file()
    if normalize == "window" and (match or source in ("future-tagging", "seq-digits")):
        raise DeepAtlasError(f"{setting('normalize', 'window')}: {source} is not a series (it normalizes the windows "
                             f"of a series you forecast)")
    if match:
        kind, length = match[1], int(match[2])
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            raise DeepAtlasError(f"{source}: {kind}-T takes a length T from {MIN_LENGTH} to {MAX_LENGTH:,} "
                                 f"({SIZES['train']:,} training sequences of T steps each are generated)")
        make = adding if kind == "adding" else copy_memory
        parts = [make(length, SIZES[s], _rng(kind == "copy", length, i)) for i, s in enumerate(SIZES)]
        if kind == "adding":
            return SequenceData(*[TensorDataset(x, y) for x, y in parts], {**spec, "kind": "adding"})
        return SequenceData(*[OneHot(x, y, COPY_SYMBOLS) for x, y in parts],
                            {**spec, "kind": "copy", "n_classes": COPY_SYMBOLS,
                             "chance_loss": 10 * math.log(8) / (length + 20)})
    if source == "future-tagging":
        parts = [future_tagging(SIZES[s] // 2, _rng(2, i)) for i, s in enumerate(SIZES)]
        return SequenceData(*[OneHot(x, y, TAGGING_VOCAB) for x, y in parts],
                            {**spec, "kind": "tagging", "n_classes": 2})
    if source == "seq-digits":
        from sklearn.datasets import load_digits
        bunch = load_digits()
        x, y = torch.tensor(bunch.images / 16.0, dtype=torch.float32), torch.tensor(bunch.target)
        parts = [TensorDataset(x[i], y[i]) for i in split_indices(bunch.target)]
        return SequenceData(*parts, {**spec, "kind": "classes", "n_classes": 10,
                                     "classes": [str(c) for c in range(10)]})
    if source == "sine":
        return _series_data(sine_series(), window or SINE_WINDOW, {**spec, "column": "value"},
                            "global" if normalize == "auto" else normalize, season, lead_in=False)
    if users:
        values, column = read_series(source, column, missing)
        return _series_data(values, window or USER_WINDOW, {**spec, "column": column, "missing": missing},
                            "window" if normalize == "auto" else normalize, season, lead_in=True)
    raise DeepAtlasError(f"unknown dataset {source!r}: not a file, nor one of {', '.join(EMBEDDED)} "
                         f"(adding-T and copy-T take a length T from {MIN_LENGTH} to {MAX_LENGTH:,})")


def load_for(options, target: str | None = None) -> SequenceData:
    return load(options.data, target, options.window, options.missing, options.normalize, options.season)


def _series_spec(spec: dict, what: str) -> None:
    if spec.get("kind") != "series":
        raise DeepAtlasError(f"{what} reads time series (CSV files); this run was trained on {spec['source']}")


def _column(spec: dict) -> str | None:
    """The column to read from a file: the training column of a user's series; for sine, the file's one number column."""
    return spec["column"] if spec["source"] != "sine" else None


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """All windows of a CSV series, standardized like the training data."""
    _series_spec(spec, "eval --data")
    values, _ = read_series(path, _column(spec), spec.get("missing", "impute"))
    if len(values) <= spec["window"]:
        raise DeepAtlasError(f"{path}: {len(values)} values, fewer than the window of {spec['window']}")
    return TensorDataset(*windows(torch.tensor((values - spec["mean"]) / spec["std"]), spec["window"]))


# ---- reversible normalization, forecasting, errors ------------------------------------------------

def window_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """RevIN's instance statistics of windows x (B, T, F): μ_w and σ_w = sqrt(var_w + ε) over time, (B, 1, F) each."""
    mean = x.mean(1, keepdim=True)
    return mean, (x.var(1, keepdim=True, unbiased=False) + EPS).sqrt()


def reversible(model: torch.nn.Module, x: Tensor) -> Tensor:
    """A many-to-one network under RevIN: f((x - μ_w) / σ_w) σ_w + μ_w for windows x (B, T, F) -> (B, F)."""
    mean, std = window_stats(x)
    return model((x - mean) / std) * std[:, 0] + mean[:, 0]


@torch.no_grad()
def forecast(model: torch.nn.Module, context: Tensor, steps: int, normalize: bool = False) -> Tensor:
    """Continue (B, T, 1) by `steps` values, each prediction fed back as the next input (one-to-many).
    Models with their own stateful `generate` use it; any many-to-one model works by sliding its window.
    `normalize`: under RevIN, as in training: each slid window by its own statistics; a `generate` path is
    normalized by the context's and mapped back whole."""
    if hasattr(model, "generate"):
        if not normalize:
            return model.generate(context, steps)[..., 0]
        mean, std = window_stats(context)                   # (B, 1, 1)
        return (model.generate((context - mean) / std, steps) * std + mean)[..., 0]
    out = []
    for _ in range(steps):  # each step needs the one before: the loop is the recursion
        nxt = (reversible(model, context) if normalize else model(context))[:, None, :]   # (B, 1, 1)
        out.append(nxt[:, 0, 0])
        context = torch.cat([context[:, 1:], nxt], 1)
    return torch.stack(out, 1)


def series_errors(predicted: Tensor, y: Tensor, last: Tensor, std: float) -> dict[str, Tensor]:
    """Errors of one-step forecasts of standardized targets y (B, 1): mse (standardized), mse_units and mae_units
    (the series' units: std times), and naive_mae_units, the mae of repeating `last` (x[:, -1]), which `mase`
    divides by."""
    error = predicted.reshape(y.shape) - y
    mse = error.square().mean()
    return {"mse": mse, "mse_units": mse * std ** 2, "mae_units": error.abs().mean() * std,
            "naive_mae_units": (last.reshape(y.shape) - y).abs().mean() * std}


def with_mase(means: dict) -> dict:
    """Means of `series_errors` with mase = mae_units / naive_mae_units in place of the latter (a ratio of the
    split's means, not a mean of batch ratios)."""
    means = {k: float(v) for k, v in means.items()}
    naive = means.pop("naive_mae_units")
    return {**means, "mase": means["mae_units"] / max(naive, 1e-12)}


def _tensors(dataset: Dataset) -> tuple[Tensor | None, Tensor]:
    """(x, y) of a whole dataset; token sequences give their labels only (one-hot inputs of a split are 100s of MB)."""
    return (None, dataset.y) if isinstance(dataset, OneHot) else tuple(dataset.tensors)


def baseline(spec: dict, train: Dataset | None, examples: Dataset) -> tuple[str, dict[str, float]]:
    """The trivial predictor on `examples`, under the objective's metric names. Series: the naive last value (mase 1
    by definition), with the seasonal naive (x_{t-m}, m the spec's season) in the description. Other float targets:
    the training mean; classes: the most frequent training label."""
    x, y = _tensors(examples)
    if spec.get("kind") == "series":
        last, season, window = x[:, -1], spec.get("season", 0), spec["window"]
        description = "naive last value"
        if season and season <= window:
            seasonal = with_mase(series_errors(x[:, -season], y, last, spec["std"]))
            description += (f"; seasonal naive (value {season} steps back): mase {seasonal['mase']:.3f}, "
                            f"mae_units {seasonal['mae_units']:.4g}, mse_units {seasonal['mse_units']:.4g}")
        elif season:
            description += f"; seasonal naive: a season of {season} is longer than the window of {window}"
        return description, with_mase(series_errors(last, y, last, spec["std"]))
    if "chance_loss" in spec:  # copy-T: blank until the delimiter, then any of the 8 digits
        return "blanks, then uniform over the digits", {"loss": spec["chance_loss"]}
    known = _tensors(train)[1] if train is not None and len(train) else y
    if y.is_floating_point():
        mean = known.float().mean(0)
        return "training mean", {"mse": float((y - mean).square().mean())}
    majority = known.reshape(-1).mode().values
    return f"most frequent label ({int(majority)})", {"accuracy": float((y == majority).float().mean())}


# ---- predictions -------------------------------------------------------------------------------

def series_input(spec: dict, inputs) -> tuple[np.ndarray, str]:
    """A series to forecast from: a CSV path (the run's column), or raw numbers (a list, a numpy array, a pandas
    Series); gaps handled as in training. Returns the values and a name for them."""
    missing = spec.get("missing", "impute")
    if isinstance(inputs, (str, Path)):
        values, column = read_series(inputs, _column(spec), missing)
        return values, f"{inputs} [{column}]"
    if hasattr(inputs, "to_numpy"):  # pandas: its missing values (None, pd.NA) as NaN
        inputs = inputs.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        values = np.asarray(inputs, dtype=np.float64)
    except (TypeError, ValueError):
        raise DeepAtlasError(f"predict takes a CSV file or a series of numbers (a list, a numpy array, a pandas "
                             f"Series), not {type(inputs).__name__}") from None
    if values.ndim != 1:
        raise DeepAtlasError(f"predict: a series is one-dimensional; got an array of shape {values.shape}")
    if np.isinf(values).any():
        raise DeepAtlasError(f"predict: the series holds an infinite value at position {int(np.isinf(values).argmax())}")
    name = f"series of {len(values)} values"
    return fill_gaps(values, f"predict: the {name}", spec["column"], missing, first_line=0), name


def encode(spec: dict, raw) -> tuple[Tensor, list[str]]:
    """What the network reads for a series (a CSV file or raw numbers): its last window, standardized as in training,
    x (1, window, 1); with its name. (The objective, not the network, applies RevIN: call the predictor with it.)"""
    _series_spec(spec, "encode")
    values, name = series_input(spec, raw)
    return _last_window(spec, values, name)[None], [name]


def _last_window(spec: dict, values: np.ndarray, name: str) -> Tensor:
    """The last window of a series, standardized as in training: (window, 1)."""
    if len(values) < spec["window"]:
        raise DeepAtlasError(f"{name}: {len(values)} values, fewer than the window of {spec['window']}")
    return torch.tensor((values[-spec["window"]:] - spec["mean"]) / spec["std"], dtype=torch.float32)[:, None]


def predict(objective, spec: dict, inputs, *, steps: int = 10) -> list[dict]:
    """Forecast the next `steps` values (in the series' units) after the last window of a series: a CSV file or raw
    numbers. Rows also hold the input's last values ("history") that a plot draws the forecast after."""
    _series_spec(spec, "predict")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise DeepAtlasError(f"{option('steps')} {steps}: forecast 1 to {MAX_STEPS:,} steps")
    values, name = series_input(spec, inputs)
    context = _last_window(spec, values, name)
    device = next(objective.model.parameters(), context).device
    future = forecast(objective.model, context[None].to(device), steps,
                      spec.get("normalize") == "window")[0].cpu().double() * spec["std"] + spec["mean"]
    return [{"input": name, "predicted": ", ".join(f"{v:.4g}" for v in future.tolist()), "values": future.tolist(),
             "history": values[-max(spec["window"], 4 * steps):].tolist(), "column": spec["column"]}]


def plot_predictions(objective, spec: dict, dataset: Dataset, path: Path) -> None:
    """predictions.png for a series' run: a split (validation) in the series' units against the model's one-step
    forecasts and its forecast fed back from the split's first window, up to PLOT_STEPS steps."""
    if spec.get("kind") != "series":
        return
    x, y = _tensors(dataset)
    device = next(objective.parameters()).device
    with torch.no_grad():
        one_step = objective(x.to(device)).cpu()[:, 0]
    steps = min(len(y), PLOT_STEPS)
    fed_back = forecast(objective.model, x[:1].to(device), steps, spec.get("normalize") == "window")[0].cpu()
    units = lambda z: (z.double() * spec["std"] + spec["mean"]).numpy()  # noqa: E731
    window, t = x.shape[1], np.arange(len(y))
    draw_series(path, f"{spec['column']}: validation part", spec["column"], [
        (np.arange(-window, 0), units(x[0, :, 0]), "first window", {"color": "0.6"}),
        (t, units(y[:, 0]), "truth", {"color": "black"}),
        (t, units(one_step), "one step ahead", {"color": "tab:blue", "alpha": 0.8}),
        (t[:steps], units(fed_back), f"forecast fed back ({steps} steps)", {"color": "tab:orange", "ls": "--"})])


def draw_series(path: Path, title: str, ylabel: str, lines: list[tuple]) -> None:
    """A line chart of (x, y, label, style) lines, steps along x."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    for xs, ys, label, style in lines:
        ax.plot(xs, ys, label=label, lw=1.2, **style)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
