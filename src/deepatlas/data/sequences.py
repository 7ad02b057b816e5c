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
so every run and every bench sees the same test sequences whatever the run's seed. Series are split in
time (first 60% train, then 20% val, 20% test) and standardized with the training part's mean and std,
kept in the JSON `spec`.
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
from deepatlas.errors import DeepAtlasError

SEED = 4
SIZES = {"train": 50_000, "val": 2_000, "test": 2_000}
EMBEDDED = ["adding-50", "adding-200", "adding-600", "copy-100", "seq-digits", "sine", "future-tagging"]
SINE_WINDOW = 64
MIN_LENGTH, MAX_LENGTH = 2, 1000
"""the lengths T that adding-T and copy-T take: adding-1000's training set is 0.4 GB of float32 (x (50,000, T, 2))"""
TAGGING_LENGTH, TAGGING_VOCAB = 20, 8
COPY_SYMBOLS = 10  # 0 blank, 1..8 digits, 9 delimiter


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


def _series_data(values: np.ndarray, window: int, spec: dict) -> SequenceData:
    n = len(values)
    cut1, cut2 = int(0.6 * n), int(0.8 * n)
    if cut2 - cut1 <= window + 1:
        raise DeepAtlasError(f"{spec['source']}: {n} values are too few for windows of {window} "
                             f"(need more than {5 * (window + 2)}; lower --set window=...)")
    mean, std = float(values[:cut1].mean()), float(values[:cut1].std() or 1.0)
    spec = {**spec, "kind": "series", "window": window, "mean": mean, "std": std}
    z = torch.tensor((values - mean) / std)
    parts = [TensorDataset(*windows(z[a:b], window)) for a, b in ((0, cut1), (cut1, cut2), (cut2, n))]
    return SequenceData(*parts, spec)


def read_series(path: str | Path, column: str | None) -> tuple[np.ndarray, str]:
    """One numeric column of a CSV (header row), in file order; one-line errors for what is wrong."""
    from deepatlas.data.tabular import read_csv
    columns = read_csv(path)
    numeric = [c for c, v in columns.items() if _all_numbers(v)]
    if column is None:
        if len(numeric) != 1:
            raise DeepAtlasError(f"{path}: name the series column with --column (numeric columns: "
                                 f"{', '.join(numeric) or 'none'})")
        column = numeric[0]
    if column not in columns:
        raise DeepAtlasError(f"{path}: no column {column!r}; columns: {', '.join(columns)}")
    values = []
    for line, raw in enumerate(columns[column], start=2):
        try:
            values.append(float(raw))
        except ValueError:
            raise DeepAtlasError(f"{path}:{line}: column {column!r} holds {raw!r}, not a number") from None
        if not math.isfinite(values[-1]):
            raise DeepAtlasError(f"{path}:{line}: column {column!r} holds {raw!r}; fill gaps before training")
    return np.asarray(values), column


def _all_numbers(values: list[str]) -> bool:
    try:
        [float(v) for v in values]
        return bool(values)
    except ValueError:
        return False


def load(source: str, column: str | None = None, window: int = 0) -> SequenceData:
    match = re.fullmatch(r"(adding|copy)-(\d+)", source)
    spec = {"source": source}
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
        return _series_data(sine_series(), window or SINE_WINDOW, {**spec, "column": "value"})
    if Path(source).is_file():
        values, column = read_series(source, column)
        return _series_data(values, window or 32, {**spec, "column": column})
    raise DeepAtlasError(f"unknown dataset {source!r}: not a file, nor one of {', '.join(EMBEDDED)} "
                         f"(adding-T and copy-T take a length T from {MIN_LENGTH} to {MAX_LENGTH:,})")


def load_for(options, target: str | None = None) -> SequenceData:
    return load(options.data, target, options.window)


def _series_spec(spec: dict, what: str) -> None:
    if spec.get("kind") != "series":
        raise DeepAtlasError(f"{what} reads time series (CSV files); this run was trained on {spec['source']}")


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """All windows of a CSV series, standardized like the training data."""
    _series_spec(spec, "eval --data")
    values, _ = read_series(path, spec["column"] if spec["source"] != "sine" else None)
    if len(values) <= spec["window"]:
        raise DeepAtlasError(f"{path}: {len(values)} values, fewer than the window of {spec['window']}")
    return TensorDataset(*windows(torch.tensor((values - spec["mean"]) / spec["std"]), spec["window"]))


@torch.no_grad()
def forecast(model: torch.nn.Module, context: Tensor, steps: int) -> Tensor:
    """Continue (B, T, 1) by `steps` values, each prediction fed back as the next input (one-to-many).
    Models with their own stateful `generate` use it; any many-to-one model works by sliding its window."""
    if hasattr(model, "generate"):
        return model.generate(context, steps)[..., 0]
    out = []
    for _ in range(steps):
        nxt = model(context)[:, None, :]                    # (B, 1, 1)
        out.append(nxt[:, 0, 0])
        context = torch.cat([context[:, 1:], nxt], 1)
    return torch.stack(out, 1)


def predict(objective, spec: dict, text: str, steps: int = 10) -> list[dict]:
    """Forecast the next `steps` values after the last window of a CSV series."""
    _series_spec(spec, "predict")
    values, column = read_series(text, spec["column"] if spec["source"] != "sine" else None)
    if len(values) < spec["window"]:
        raise DeepAtlasError(f"{text}: {len(values)} values, fewer than the window of {spec['window']}")
    context = torch.tensor((values[-spec["window"]:] - spec["mean"]) / spec["std"], dtype=torch.float32)
    future = forecast(objective.model, context[None, :, None], steps)[0] * spec["std"] + spec["mean"]
    return [{"input": f"{text} [{column}]", "predicted": ", ".join(f"{v:.4g}" for v in future.tolist()),
             "values": future.tolist()}]
