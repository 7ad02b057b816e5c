"""Tabular classification data: scikit-learn's embedded sets, and users' CSV files.

Every dataset gets one fixed, stratified 60/20/20 train/val/test split (seed 0, independent of
the run's seed, so every run and every bench sees the same test rows). Numeric columns are
standardized and categorical columns one-hot encoded with statistics fitted on train only; the
fitted `spec` is plain JSON saved in the run's config.json, so `predict` encodes new rows the
same way.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError

MISSING = {"", "na", "nan", "null", "none", "?"}


def _sklearn(loader: str, keep=None):
    def load():
        import sklearn.datasets as ds
        bunch = getattr(ds, loader)()
        x, y = bunch.data.astype(np.float64), bunch.target
        names = [str(n) for n in getattr(bunch, "feature_names", [f"x{i}" for i in range(x.shape[1])])]
        classes = [str(c) for c in getattr(bunch, "target_names", sorted(set(y)))]
        if keep is not None:  # relabel, e.g. setosa-vs-rest
            y, classes = keep(y, classes)
        return x, np.asarray(y), names, classes
    return load


EMBEDDED = {
    "breast_cancer": _sklearn("load_breast_cancer"),
    "wine": _sklearn("load_wine"),
    "iris": _sklearn("load_iris"),
    "iris_setosa": _sklearn("load_iris", keep=lambda y, c: ((y == 0).astype(int), ["other", "setosa"])),
    "digits": _sklearn("load_digits"),  # 8x8 images flattened to 64 features
}


class TabularData(Splits):
    @property
    def in_features(self) -> int:
        return self.train.tensors[0].shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.spec["classes"])

    @property
    def dims(self) -> dict[str, int]:
        return {"in_features": self.in_features, "n_classes": self.n_classes}


# ---- reading CSV --------------------------------------------------------------------------

def read_csv(path: str | Path) -> dict[str, list[str]]:
    """Columns of a CSV file with a header row, as strings; one clear error for a bad file."""
    path = Path(path)
    if path.is_dir():
        raise DeepAtlasError(f"{path}: a folder; expected a CSV file with a header row")
    if not path.is_file():
        raise DeepAtlasError(f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DeepAtlasError(f"{path}: not a readable CSV file ({err})") from None
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise DeepAtlasError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or "" in header:
        raise DeepAtlasError(f"{path}: header has empty or repeated column names")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DeepAtlasError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
    return {name: [r[i].strip() for r in rows[1:]] for i, name in enumerate(header)}


def _check_present(path, name: str, values: list[str]) -> None:
    for line, v in enumerate(values, start=2):
        if v.lower() in MISSING:
            raise DeepAtlasError(f"{path}: line {line}: missing value in column {name!r} "
                                 "(fill or drop such rows first)")


def _is_numeric(values: list[str]) -> bool:
    try:
        return all(math.isfinite(float(v)) for v in values)
    except ValueError:
        return False


def _check_finite(path, name: str, values: list[str]) -> None:
    """A column whose every cell is a number must hold finite ones: `inf` or `1e400` (which overflows to inf)
    is refused with its line, rather than turning the whole column into categories."""
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return  # not a numeric column
    for line, (raw, v) in enumerate(zip(values, numbers), start=2):
        if not math.isfinite(v):
            raise DeepAtlasError(f"{path}: line {line}: column {name!r} holds {raw!r}, not a finite number "
                                 "(a numeric column needs finite values)")


# ---- the spec: fit on train, encode anything ------------------------------------------------

def fit_spec(columns: dict[str, np.ndarray | list], classes: list[str], source: str, target: str) -> dict:
    """Standardization and one-hot vocabularies from the training rows only."""
    features = []
    for name, values in columns.items():
        if isinstance(values, np.ndarray) or _is_numeric(values):
            v = np.asarray(values, dtype=np.float64)
            std = float(v.std())
            features.append({"name": name, "kind": "numeric", "mean": float(v.mean()), "std": std if std > 0 else 1.0})
        else:
            features.append({"name": name, "kind": "categorical", "values": sorted(set(values))})
    return {"source": source, "target": target, "classes": classes, "features": features}


def encode(spec: dict, columns: dict, where: str = "input") -> torch.Tensor:
    """Rows (a dict of columns) -> (N, in_features) float32, exactly as the model was trained."""
    missing = [f["name"] for f in spec["features"] if f["name"] not in columns]
    if missing:
        raise DeepAtlasError(f"{where}: missing column(s) {', '.join(map(repr, missing))}")
    parts = []
    for f in spec["features"]:
        values = columns[f["name"]]
        if f["kind"] == "numeric":
            if not isinstance(values, np.ndarray):
                _check_present(where, f["name"], values)
                _check_finite(where, f["name"], values)
                if not _is_numeric(values):
                    raise DeepAtlasError(f"{where}: column {f['name']!r} must be numeric")
            v = (np.asarray(values, dtype=np.float64) - f["mean"]) / f["std"]
            parts.append(v[:, None])
        else:  # one-hot; a category never seen in training encodes as all zeros
            _check_present(where, f["name"], values)
            index = {c: i for i, c in enumerate(f["values"])}
            onehot = np.zeros((len(values), len(index)))
            rows = [(r, index[v]) for r, v in enumerate(values) if v in index]
            if rows:
                r, c = zip(*rows)
                onehot[list(r), list(c)] = 1.0
            parts.append(onehot)
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()


def encode_target(spec: dict, values, where: str = "input") -> torch.Tensor:
    index = {c: i for i, c in enumerate(spec["classes"])}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise DeepAtlasError(f"{where}: target {spec['target']!r} has label(s) not seen in training: {', '.join(unknown[:5])}")
    return torch.tensor([index[str(v)] for v in values], dtype=torch.long)


# ---- loading a dataset --------------------------------------------------------------------

def _select(columns: dict, idx: np.ndarray) -> dict:
    return {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for k, v in columns.items()}


def load(source: str, target: str | None = None) -> TabularData:
    """An embedded dataset by name, or the user's CSV file with `target` as the label column."""
    if source in EMBEDDED:
        x, y, names, classes = EMBEDDED[source]()
        columns = {n: x[:, i] for i, n in enumerate(names)}
        labels = np.array([classes[i] for i in y])
        target = "target"
    elif source.endswith(".csv") or Path(source).exists():
        columns = read_csv(source)
        if target is None:
            raise DeepAtlasError(f"{source}: say which column is the label with --target COLUMN "
                                 f"(columns: {', '.join(columns)})")
        if target not in columns:
            raise DeepAtlasError(f"{source}: no column {target!r}; columns: {', '.join(columns)}")
        labels = columns.pop(target)
        _check_present(source, target, labels)
        if not columns:
            raise DeepAtlasError(f"{source}: no feature columns besides the target {target!r}")
        for name, values in columns.items():
            _check_present(source, name, values)
            _check_finite(source, name, values)
        labels = np.array(labels)
        classes = sorted(set(labels.tolist()))
        classes = sorted(classes, key=float) if _is_numeric(classes) else classes
        if len(classes) < 2:
            raise DeepAtlasError(f"{source}: target {target!r} has a single class")
    else:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a file, nor one of {', '.join(EMBEDDED)}")

    train, val, test = split_indices(labels, source, "rows")
    spec = fit_spec(_select(columns, train), classes, source, target)
    make = lambda idx: TensorDataset(encode(spec, _select(columns, idx), source),
                                     encode_target(spec, labels[idx], source))
    return TabularData(make(train), make(val), make(test), spec)


def read_inputs(spec: dict, path: str) -> tuple[torch.Tensor, list[str]]:
    """A user's CSV of rows to predict: (x, a name per row)."""
    x = encode(spec, read_csv(path), path)
    return x, [f"{path}:{i}" for i in range(1, len(x) + 1)]


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """A user's CSV with the target column, to evaluate on every row."""
    columns = read_csv(path)
    if spec["target"] not in columns:
        raise DeepAtlasError(f"{path}: needs the target column {spec['target']!r} to evaluate")
    _check_present(path, spec["target"], columns[spec["target"]])
    return TensorDataset(encode(spec, columns, path), encode_target(spec, columns[spec["target"]], path))


def load_for(options, target: str | None = None) -> TabularData:
    return load(options.data, target)
