"""Tabular data: scikit-learn's embedded sets, and users' CSV files, for classification or regression.

Every dataset gets one fixed 60/20/20 train/val/test split (seed 0, independent of the run's seed, so every
run and every bench sees the same test rows; stratified by class where each class has 5 rows or more). All
statistics are fitted on the training rows only, and the fitted `spec` is plain JSON saved in the run's
config.json, so `predict` and `eval --data` encode new rows exactly as training did.

Columns of a user's file are read as text; each gets a kind from its cells (gaps aside):
    numeric      every cell a finite number: standardized with the training rows' mean and std
    date         every cell an ISO date YYYY-MM-DD, optionally with a time hh:mm[:ss[.fff]]: days since
                 1970-01-01 (fractional with a time), then standardized like a number
    categorical  anything else: one-hot over the training rows' values (a value never seen: all zeros); but
                 numbers with a few text cells (under 10%: typos, gaps marked another way) are refused, naming one
Left out, with a one-line notice: pandas' index (a first column with an empty header), an integer column that
counts the rows (0, 1, 2... or 1, 2, 3... in file order, in a file of more than 20 rows), an identifier-like or
free-text column (neither numbers nor dates, with more than 20 distinct values covering more than half of its
rows), a column with no value at all. `drop=a,b` leaves out more; `keep=a,b` makes exactly these the features,
identifier-like or not.

Gaps are empty cells and the markers in `MISSING` (NA, nan, null, ?...). `missing=` says what to do:
    impute (default)  a numeric or date column: the training rows' median, plus a 0/1 "was missing" indicator
                      column when the file has gaps there; a categorical column: a "missing" level of its own
    drop              rows with a gap are left out (refused when too few remain)
    error             the file is refused, naming every column with gaps, with counts
Rows whose target is a gap are left out (under `error`, refused). What was left out or imputed, with counts, is
printed once as a line on stderr when the data has loaded. The spec keeps the policy and the medians: new rows
with gaps are imputed as the training rows were (or refused, under `drop` and `error`).

The target. With task=auto, a numeric target is regressed when it holds a non-integer value or more than
`MAX_CLASSES` distinct values; otherwise (a few integers, or text) its values are classes. task=classification
or task=regression decides (regression needs numbers). A regression target is standardized with the training
rows' mean and std: the spec says "kind": "regression", "target_mean", "target_std"; the model has one output
(dims' n_classes is 1) and y is float (N,) in standardized units; predictions are converted back to the
target's units. A classification spec says "kind": "classification", "classes" and "majority" (the training
rows' most frequent class, the trivial baseline).

New rows reach a trained model through `encode(spec, raw)`: a CSV path, a dict of one row, a list of them, or
a pandas DataFrame; `predict` and `baseline` give a run's predictions and its task's trivial predictor.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from deepatlas.data import MIN_SPLIT, Splits, images, split_indices
from deepatlas.errors import DeepAtlasError, given, notice, setting

MISSING = {"", "na", "n/a", "n.a.", "#n/a", "nan", "null", "none", "nil", "?", "-", "<na>", "nat"}
"""cells that mean "no value" (compared lower-case)"""
MOSTLY_NUMBERS = 0.9
"""a column whose cells are numbers but for a few text ones (a typo, a private gap marker) is refused, naming one"""
MAX_CLASSES = 20
"""a numeric target of whole numbers with more distinct values than this is regressed (task=auto)"""
ID_DISTINCT, ID_SHARE = 20, 0.5
"""a text column with more distinct values than ID_DISTINCT, covering more than ID_SHARE of its rows, names
things (an identifier, a name, free text) rather than sorting them into categories: it is left out"""
DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")
SECONDS_PER_DAY = 86_400.0


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


def _flat_images(x: torch.Tensor, y: np.ndarray, classes: list[str]):
    """An embedded image set as a table of pixels, so the table classifiers take a place on its leaderboard."""
    x = x.flatten(1).double().numpy()
    return x, np.asarray(y), [f"pixel{i}" for i in range(x.shape[1])], classes


def _graph_features(name: str):
    """A graph's node features alone as a table, split as the graph's nodes are: an mlp beside a gcn, same nodes."""
    from deepatlas.data import graphs
    return graphs.feature_table(name)


EMBEDDED = {
    "breast_cancer": _sklearn("load_breast_cancer"),
    "wine": _sklearn("load_wine"),
    "iris": _sklearn("load_iris"),
    "iris_setosa": _sklearn("load_iris", keep=lambda y, c: ((y == 0).astype(int), ["other", "setosa"])),
    "digits": _sklearn("load_digits"),  # 8x8 images flattened to 64 features
    "rotated-digits": lambda: _flat_images(*images.rotated_digits(12)),  # the image task's set, 12x12 flattened
    "sbm-features": lambda: _graph_features("sbm"),
}


class TabularData(Splits):
    @property
    def in_features(self) -> int:
        return self.train.tensors[0].shape[1]

    @property
    def n_classes(self) -> int:
        """Classes, or 1 for a regression: the model's one output is the standardized target."""
        return 1 if is_regression(self.spec) else len(self.spec["classes"])

    @property
    def dims(self) -> dict[str, int]:
        return {"in_features": self.in_features, "n_classes": self.n_classes}


def is_regression(spec: dict) -> bool:
    return spec.get("kind") == "regression"


# ---- reading CSV --------------------------------------------------------------------------

def read_csv(path: str | Path, notes: list[str] | None = None) -> dict[str, list[str]]:
    """Columns of a CSV file with a header row, as strings; one clear error for a bad file. A first column with an
    empty header is the index pandas writes: it is left out, with a notice (appended to `notes`, else printed)."""
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
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DeepAtlasError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
    first = 1 if len(header) > 1 and header[0] == "" else 0  # pandas' index: DataFrame.to_csv without index=False
    _check_header(path, header[first:], first)
    if first:
        (notes.append if notes is not None else notice)(
            f"{path}: the first column has no name: pandas' index, left out")
    return {name: [r[i].strip() for r in rows[1:]] for i, name in enumerate(header) if i >= first}


def _check_header(path, names: list[str], offset: int) -> None:
    empty = [str(i + 1 + offset) for i, n in enumerate(names) if n == ""]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if empty or repeated:
        detail = "; ".join([f"column {', '.join(empty)} has no name"] * bool(empty)
                           + [f"{', '.join(map(repr, repeated))} repeated"] * bool(repeated))
        raise DeepAtlasError(f"{path}: header has empty or repeated column names ({detail}): give every column "
                             "a name of its own in the first line")


@dataclass
class Table:
    """Rows as columns of cells: text (a str array) from files and raw inputs, float arrays for embedded sets;
    and each row's place in its source, for messages."""
    columns: dict[str, np.ndarray]
    where: str
    """the file, or "input" for raw rows"""
    lines: np.ndarray
    """(N,) each row's line in the file (or its number among raw rows)"""
    unit: str = "line"

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, idx: np.ndarray) -> Table:
        return Table({k: v[idx] for k, v in self.columns.items()}, self.where, self.lines[idx], self.unit)

    def at(self, i: int) -> str:
        return f"{self.where}: {self.unit} {self.lines[i]}"


def _text(cells) -> np.ndarray:
    """Cells of any type as a str array: None and NaN become the empty cell (a gap)."""
    return np.array(["" if c is None or (isinstance(c, float) and math.isnan(c)) else str(c).strip() for c in cells],
                    dtype=str)


def table(raw, where: str | None = None, notes: list[str] | None = None) -> tuple[Table, list[str]]:
    """Raw rows as a Table, with a name per row: a CSV path, a dict of one row {column: value} (or of columns
    {column: [values]}), a list of such one-row dicts, or a pandas DataFrame (or one row of it, a Series).
    A file's notice (pandas' index left out) goes to `notes`, else is printed."""
    if isinstance(raw, (str, Path)):
        columns = read_csv(raw, notes)
        n = len(next(iter(columns.values())))
        return (Table({k: np.array(v, dtype=str) for k, v in columns.items()}, str(raw), np.arange(2, n + 2)),
                [f"{raw}:{i}" for i in range(1, n + 1)])
    names = None
    if hasattr(raw, "to_dict"):  # pandas, duck-typed: the package does not need it
        if hasattr(raw, "columns"):
            names = [str(i) for i in raw.index]
            raw = raw.to_dict(orient="list")
        else:
            raw = raw.to_dict()
    if isinstance(raw, dict):
        if all(isinstance(v, (list, tuple, np.ndarray)) for v in raw.values()) and raw:
            columns = {str(k): _text(v) for k, v in raw.items()}
            if len({len(v) for v in columns.values()}) > 1:
                raise DeepAtlasError(f"{where or 'input'}: columns of different lengths")
        else:
            raw = [raw]
    if isinstance(raw, (list, tuple)):
        if not raw or not all(isinstance(r, dict) for r in raw):
            raise DeepAtlasError(f"{where or 'input'}: a list of rows must hold dicts {{column: value}}, one a row")
        keys = list(dict.fromkeys(str(k) for r in raw for k in r))
        columns = {k: _text(r.get(k) for r in raw) for k in keys}  # a key a row lacks is a gap in that row
    elif not isinstance(raw, dict):
        raise DeepAtlasError(f"cannot encode {type(raw).__name__} as table rows: give a CSV path, a dict of one row "
                             "{column: value}, a list of such dicts or a pandas DataFrame")
    n = len(next(iter(columns.values()))) if columns else 0
    return Table(columns, where or "input", np.arange(1, n + 1), "row"), names or [f"row {i}" for i in range(1, n + 1)]


# ---- cells ----------------------------------------------------------------------------------

def _gaps(values: np.ndarray) -> np.ndarray:
    """(N,) bool: cells without a value (embedded sets' numbers have none)."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.isin(np.char.lower(values), list(MISSING))


def _numbers(values: np.ndarray, gaps: np.ndarray) -> np.ndarray | None:
    """The cells as float64 (gaps NaN), or None when a present cell is not a number."""
    if values.dtype.kind == "f":
        return values
    out = np.full(len(values), np.nan)
    try:
        out[~gaps] = values[~gaps].astype(np.float64)
    except ValueError:
        return None
    return out


def numbers(cells) -> np.ndarray | None:
    """Text cells as float64, NaN at a gap; None when a present cell is not a number (a series' column too)."""
    values = np.asarray(cells, dtype=str)
    return _numbers(values, _gaps(values))


def _days(values: np.ndarray, gaps: np.ndarray) -> np.ndarray | None:
    """ISO dates (and date-times) as days since 1970-01-01 (gaps NaN), or None when a present cell is not one."""
    present = values[~gaps]
    if values.dtype.kind == "f" or not len(present) or not all(DATE.fullmatch(v) for v in np.unique(present)):
        return None
    out = np.full(len(values), np.nan)
    out[~gaps] = present.astype("datetime64[s]").astype(np.int64) / SECONDS_PER_DAY
    return out


def _check_finite(t: Table, name: str, numbers: np.ndarray, gaps: np.ndarray) -> None:
    """`inf` or `1e400` (which overflows to inf) in a numeric column is refused with its line, rather than
    turning the whole column into categories."""
    bad = np.flatnonzero(~gaps & ~np.isfinite(numbers))
    if len(bad):
        raise DeepAtlasError(f"{t.at(bad[0])}: column {name!r} holds {str(t.columns[name][bad[0]])!r}, not a finite "
                             "number (a numeric column needs finite values)")


def _gaps_error(t: Table, gaps: dict[str, np.ndarray], why: str) -> DeepAtlasError:
    """Every column with gaps, its count and first line, in one line."""
    detail = ", ".join(f"{name!r} {int(g.sum())} (first: {t.unit} {t.lines[np.argmax(g)]})"
                       for name, g in gaps.items() if g.any())
    return DeepAtlasError(f"{t.where}: gaps in {detail}; {why}")


# ---- which columns are features --------------------------------------------------------------

def _names(value) -> list[str]:
    """`drop=`/`keep=`: comma-separated column names (or a list of them)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [n.strip() for n in items if n.strip()]


def _features(t: Table, target: str, drop, keep, notes: list[str]) -> dict[str, str]:
    """Each feature column's kind (numeric, date, categorical), in the file's order; the user's `drop` and `keep`
    applied, and the columns that describe nothing left out with a notice."""
    dropped, keep = _names(drop), [n for n in _names(keep) if n != target]
    for name, chosen in (("drop", dropped), ("keep", keep)):
        unknown = [n for n in chosen if n not in t.columns and n != target]
        if unknown:
            raise DeepAtlasError(f"{t.where}: {setting(name, ','.join(unknown))}: no such column; columns: "
                                 f"{', '.join(t.columns)}")
    if target in dropped:
        raise DeepAtlasError(f"{t.where}: {setting('drop', target)}: {target!r} is the target")
    both = [n for n in dropped if n in keep]
    if both:
        raise DeepAtlasError(f"{t.where}: {', '.join(map(repr, both))} both dropped and kept")
    kinds, left_out = {}, []
    for name, values in t.columns.items():
        if name in dropped or (keep and name not in keep):
            continue
        gaps = _gaps(values)
        numbers = _numbers(values, gaps)
        if gaps.all():
            left_out.append(f"{name} (no values)")
        elif numbers is not None:
            _check_finite(t, name, numbers, gaps)
            counter = (len(t) > ID_DISTINCT and not gaps.any() and numbers[0] in (0, 1)
                       and np.array_equal(numbers, numbers[0] + np.arange(len(t))))
            if counter and not keep:
                left_out.append(f"{name} (counts the rows)")
            else:
                kinds[name] = "numeric"
        elif _days(values, gaps) is not None:
            kinds[name] = "date"
        else:
            _refuse_stray_text(t, name, values, gaps)
            distinct, present = len(np.unique(values[~gaps])), int((~gaps).sum())
            if distinct > ID_DISTINCT and distinct > ID_SHARE * present and not keep:
                left_out.append(f"{name} (identifier-like or free text: {distinct} distinct values in {present} rows)")
            else:
                kinds[name] = "categorical"
    if left_out:
        notes.append(f"{t.where}: left out {', '.join(left_out)} ({setting('keep', 'COLUMNS')} chooses the features)")
    if not kinds:
        raise DeepAtlasError(f"{t.where}: no feature columns besides the target {target!r}")
    return kinds


def _refuse_stray_text(t: Table, name: str, values: np.ndarray, gaps: np.ndarray) -> None:
    """A column of numbers but for a few text cells is numeric with typos or gaps marked its own way: it is refused,
    naming the first such cell, rather than read as categories (each number a category of its own)."""
    cells, counts = np.unique(values[~gaps], return_counts=True)
    text = ~np.array([_is_number(c) for c in cells.tolist()], dtype=bool)
    if counts[~text].sum() < MOSTLY_NUMBERS * counts.sum():
        return
    first = np.flatnonzero(~gaps & np.isin(values, cells[text]))[0]
    raise DeepAtlasError(f"{t.at(first)}: column {name!r} holds {str(values[first])!r} among numbers "
                         f"({int(counts[text].sum())} such cells): leave a gap empty (or NA), or "
                         f"{setting('drop', name)}")


# ---- the spec: fit on train, encode anything ------------------------------------------------

def _values(kind: str, values: np.ndarray, gaps: np.ndarray) -> np.ndarray | None:
    return _days(values, gaps) if kind == "date" else _numbers(values, gaps)


def fit_features(t: Table, kinds: dict[str, str], train: np.ndarray) -> list[dict]:
    """Per feature column, from the training rows `train` only: a number's median (what fills its gaps) and the
    mean and std that standardize it once filled, a category's values. A column with gaps anywhere in `t` gets
    its missing indicator (numbers) or "missing" level (categories)."""
    features = []
    for name, kind in kinds.items():
        gaps = _gaps(t.columns[name])
        if kind == "categorical":
            feature = {"name": name, "kind": kind, "values": sorted(set(t.columns[name][train][~gaps[train]].tolist()))}
            features.append({**feature, "missing_level": True} if gaps.any() else feature)
            continue
        v = _values(kind, t.columns[name], gaps)
        present = v[train][~gaps[train]]
        fill = float(np.median(present if len(present) else v[~gaps]))  # no training value: the other rows'
        v = np.where(gaps, fill, v)[train]
        std = float(v.std())
        feature = {"name": name, "kind": kind, "mean": float(v.mean()), "std": std if std > 0 else 1.0, "fill": fill}
        features.append({**feature, "indicator": True} if gaps.any() else feature)
    return features


def encode_table(spec: dict, t: Table) -> torch.Tensor:
    """Rows -> (N, in_features) float32, exactly as the model was trained: gaps filled (or refused) as the spec
    says, numbers standardized, categories one-hot."""
    missing = [f["name"] for f in spec["features"] if f["name"] not in t.columns]
    if missing:
        raise DeepAtlasError(f"{t.where}: missing column(s) {', '.join(map(repr, missing))}")
    gaps = {f["name"]: _gaps(t.columns[f["name"]]) for f in spec["features"]}
    policy = spec.get("missing", "error")  # a run from before gaps were handled refused them
    if policy != "impute" and any(g.any() for g in gaps.values()):
        raise _gaps_error(t, gaps, f"the run was trained with {setting('missing', policy)}: fill them first")
    parts = []
    for f in spec["features"]:
        values, g = t.columns[f["name"]], gaps[f["name"]]
        if f["kind"] == "categorical":
            parts.append(_one_hot(f, values, g))
            continue
        v = _values(f["kind"], values, g)
        if v is None:
            _refuse_cell(t, f, values, g)
        _check_finite(t, f["name"], v, g)
        if g.any():  # (embedded sets never get here: their standardized values stay bit for bit as they were)
            v = np.where(g, f["fill"], v)
        parts.append(((v - f["mean"]) / f["std"])[:, None])
        if f.get("indicator"):
            parts.append(g[:, None].astype(np.float64))
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()


def _one_hot(f: dict, values: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """(N, categories [+ 1 for the "missing" level]); a category never seen in training is all zeros."""
    known = np.array(f["values"], dtype=str)  # sorted at fit time
    at = np.searchsorted(known, values).clip(max=max(len(known) - 1, 0))
    codes = np.where((known[at] == values) if len(known) else False, at, -1)
    width = len(known) + bool(f.get("missing_level"))
    codes[gaps] = len(known) if f.get("missing_level") else -1
    onehot = np.zeros((len(values), width + 1))
    onehot[np.arange(len(values)), codes] = 1.0  # code -1 lands in the spare last column, cut off here
    return onehot[:, :width]


def _refuse_cell(t: Table, f: dict, values: np.ndarray, gaps: np.ndarray):
    """The first cell of a numeric or date feature that is neither (found cell by cell: this is the error path)."""
    bad = next(i for i in np.flatnonzero(~gaps) if _values(f["kind"], values[i:i + 1], gaps[i:i + 1]) is None)
    kind = "an ISO date (YYYY-MM-DD)" if f["kind"] == "date" else "a number"
    raise DeepAtlasError(f"{t.at(bad)}: column {f['name']!r} holds {str(values[bad])!r}, not {kind}")


def encode_target(spec: dict, values: np.ndarray, t: Table | None = None) -> torch.Tensor:
    """Classes -> (N,) long indices; a regression target -> (N,) float32 standardized with the training mean and std."""
    where = t.where if t is not None else "input"
    values = np.asarray(values)
    if is_regression(spec):
        numbers = _numbers(values.astype(str), np.zeros(len(values), bool))
        if numbers is None or not np.isfinite(numbers).all():
            bad = next(i for i, v in enumerate(values.tolist()) if not _is_number(v))
            place = t.at(bad) if t is not None else f"{where}: row {bad + 1}"
            raise DeepAtlasError(f"{place}: target {spec['target']!r} holds {str(values[bad])!r}, not a finite number")
        return torch.from_numpy((numbers - spec["target_mean"]) / spec["target_std"]).float()
    index = {c: i for i, c in enumerate(spec["classes"])}
    unknown = sorted({str(v) for v in values.tolist()} - set(index))
    if unknown:
        raise DeepAtlasError(f"{where}: target {spec['target']!r} has label(s) not seen in training: "
                             f"{', '.join(unknown[:5])}")
    return torch.tensor([index[str(v)] for v in values.tolist()], dtype=torch.long)


def _is_number(v) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return False


def encode(spec: dict, raw, where: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """Raw rows -> ((N, in_features) float32, a name per row), encoded as the run's training rows were: `raw` is a
    CSV path, a dict of one row {column: value}, a list of such dicts, or a pandas DataFrame. Values may be
    numbers or text; None, NaN and empty cells are gaps. Columns the model does not use are ignored."""
    notes: list[str] = []
    t, names = table(raw, where, notes)
    x = encode_table(spec, t)
    for note in notes:  # once encoded: an error stays the only line
        notice(note)
    return x, names


def read_inputs(spec: dict, path: str) -> tuple[torch.Tensor, list[str]]:
    """A user's CSV of rows to predict: (x, a name per row)."""
    return encode(spec, path)


# ---- loading a dataset --------------------------------------------------------------------

def _target_kind(t: Table, target: str, labels: np.ndarray, task: str) -> str:
    numbers = _numbers(labels, np.zeros(len(labels), bool))
    if task == "regression" and numbers is None:
        example = next(v for v in labels.tolist() if not _is_number(v))
        raise DeepAtlasError(f"{t.where}: {given('task', 'regression')} needs a numeric target; {target!r} holds "
                             f"{example!r}")
    if task != "auto":
        return task
    if numbers is None:
        return "classification"
    many = not np.array_equal(numbers, np.round(numbers)) or len(np.unique(numbers)) > MAX_CLASSES
    return "regression" if many else "classification"


def load(source: str, target: str | None = None, *, task: str = "auto", missing: str = "impute",
         drop: str = "", keep: str = "") -> TabularData:
    """An embedded dataset by name, or the user's CSV file with `target` as the label column. `task`, `missing`,
    `drop` and `keep` are catalog.Data's options of these names (see the module's docstring)."""
    notes: list[str] = []
    if source in EMBEDDED:
        if task == "regression":
            raise DeepAtlasError(f"{source}: an embedded classification set; {given('task', 'regression')} needs "
                                 "a CSV file with a numeric target")
        x, y, names, classes = EMBEDDED[source]()
        t = Table({n: x[:, i] for i, n in enumerate(names)}, source, np.arange(1, len(y) + 1), "row")
        labels, target, kind = np.array([classes[i] for i in y]), "target", "classification"
        kinds = _features(t, target, drop, keep, notes)  # every column numeric, without gaps
    elif source.endswith(".csv") or Path(source).exists():
        columns = read_csv(source, notes)
        if target is None:
            raise DeepAtlasError(f"{source}: say which column is the label with {given('target', 'COLUMN')} "
                                 f"(columns: {', '.join(columns)})")
        if target not in columns:
            raise DeepAtlasError(f"{source}: no column {target!r}; columns: {', '.join(columns)}")
        n = len(columns[target])
        t = Table({k: np.array(v, dtype=str) for k, v in columns.items()}, source, np.arange(2, n + 2))
        labels = t.columns.pop(target)
        kinds = _features(t, target, drop, keep, notes)
        t = Table({k: t.columns[k] for k in kinds}, t.where, t.lines)
        t, labels = _leave_out_gaps(t, kinds, target, labels, missing, notes)
        if missing == "drop" and len(t) < MIN_SPLIT:
            raise DeepAtlasError(f"{source}: {setting('missing', 'drop')} leaves {len(t)} of {n} rows, too few for a "
                                 f"train/val/test split ({setting('missing', 'impute')} keeps them)")
        kind = _target_kind(t, target, labels, task)
        classes = None
        if kind == "classification":
            classes = sorted(set(labels.tolist()))
            classes = sorted(classes, key=float) if all(map(_is_number, classes)) else classes
            if len(classes) < 2:
                raise DeepAtlasError(f"{source}: target {target!r} has a single class")
    else:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a file, nor one of {', '.join(EMBEDDED)}")

    train, val, test = split_indices(labels, source, "rows")
    spec = {"source": source, "target": target, "kind": kind, "missing": missing,
            "features": fit_features(t, kinds, train)}
    if kind == "regression":
        y = _numbers(labels, np.zeros(len(labels), bool))[train]
        if not y.std() > 0:
            raise DeepAtlasError(f"{source}: target {target!r} is constant on the training rows: nothing to regress")
        spec.update(target_mean=float(y.mean()), target_std=float(y.std()))
    else:
        values, counts = np.unique(labels[train], return_counts=True)
        majority = min(values[counts == counts.max()].tolist(), key=classes.index)  # ties: the first class
        spec.update(classes=classes, majority=majority)
    for note in notes:
        notice(note)

    def make(idx: np.ndarray) -> TensorDataset:
        rows = t.take(idx)
        return TensorDataset(encode_table(spec, rows), encode_target(spec, labels[idx], rows))
    return TabularData(make(train), make(val), make(test), spec)


def _leave_out_gaps(t: Table, kinds: dict[str, str], target: str, labels: np.ndarray, missing: str,
                    notes: list[str]) -> tuple[Table, np.ndarray]:
    """Rows without a target are left out (refused under missing=error); gaps in the features are refused, or
    their rows left out, or left to imputation, as `missing` says. Counts go to `notes`."""
    gaps = {name: _gaps(v) for name, v in t.columns.items()}
    unlabeled = _gaps(labels)
    if missing == "error" and (unlabeled.any() or any(g.any() for g in gaps.values())):
        raise _gaps_error(t, {target: unlabeled, **gaps}, f"{setting('missing', 'impute')} fills them, "
                                                          f"{setting('missing', 'drop')} leaves their rows out")
    said = [f"{int(unlabeled.sum())} rows without a target {target!r} left out"] if unlabeled.any() else []
    keep = ~unlabeled
    counts = {name: int(g[keep].sum()) for name, g in gaps.items() if g[keep].any()}
    if missing == "drop" and counts:
        with_gaps = keep & np.any(np.stack(list(gaps.values())), axis=0)
        keep &= ~with_gaps
        detail = ", ".join(f"{n} {c}" for n, c in counts.items())
        said.append(f"{int(with_gaps.sum())} rows with gaps left out ({detail})")
    elif counts:
        said.append("gaps imputed (median + indicator): " + ", ".join(
            f"{n} {c}" + (" (missing level)" if kinds[n] == "categorical" else "") for n, c in counts.items()))
    if said:
        notes.append(f"{t.where}: {'; '.join(said)}")
    return t.take(np.flatnonzero(keep)), labels[keep]


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """A user's CSV with the target column, to evaluate on every row that has a target (rows with gaps in the
    features are left out under missing=drop, imputed under impute)."""
    notes: list[str] = []
    t, _ = table(path, notes=notes)
    if spec["target"] not in t.columns:
        raise DeepAtlasError(f"{path}: needs the target column {spec['target']!r} to evaluate")
    labels = t.columns.pop(spec["target"])
    kinds = {f["name"]: f["kind"] for f in spec["features"] if f["name"] in t.columns}
    t, labels = _leave_out_gaps(Table({k: t.columns[k] for k in kinds}, t.where, t.lines), kinds, spec["target"],
                                labels, spec.get("missing", "error"), notes)
    if len(t) == 0:
        raise DeepAtlasError(f"{path}: no row to evaluate on")
    x, y = encode_table(spec, t), encode_target(spec, labels, t)
    for note in notes:
        notice(note)
    return TensorDataset(x, y)


def load_for(options, target: str | None = None) -> TabularData:
    return load(options.data, target, task=options.task, missing=options.missing, drop=options.drop, keep=options.keep)


# ---- predictions and the trivial baseline ----------------------------------------------------

@torch.no_grad()
def predict(objective, spec: dict, inputs) -> list[dict]:
    """Rows for `inputs` (what `encode` takes): a class and every class's probability, or a regression's value in
    the target's units."""
    x, names = encode(spec, inputs)
    x = x.to(next(objective.parameters()).device)
    if is_regression(spec):
        values = objective(x).reshape(len(x)).double().cpu() * spec["target_std"] + spec["target_mean"]
        return [{"input": n, "predicted": v} for n, v in zip(names, values.tolist())]
    probs = objective.predict(x).cpu()
    classes = spec["classes"]
    return [{"input": n, "predicted": classes[int(p.argmax())], "probabilities": dict(zip(classes, p.tolist()))}
            for n, p in zip(names, probs)]


def _targets(examples: Dataset) -> torch.Tensor:
    if hasattr(examples, "tensors"):
        return examples.tensors[1]
    return torch.stack([torch.as_tensor(examples[i][1]) for i in range(len(examples))])


def baseline(spec: dict, train: Dataset | None, examples: Dataset) -> tuple[str, dict[str, float]]:
    """The trivial predictor on `examples` (a labelled split), scored by the metrics the objective logs: the
    training rows' majority class (accuracy), or their mean target (mse, mae in the target's units; r2)."""
    y = _targets(examples)
    if is_regression(spec):
        error = y.double()  # standardized: the training mean is 0
        mse = float(error.square().mean())
        std = spec["target_std"]
        return "mean of the training target", {"mse": mse * std ** 2, "mae": float(error.abs().mean()) * std,
                                               "r2": 1.0 - mse / max(float(y.double().var(unbiased=False)), 1e-12)}
    classes = spec["classes"]
    if "majority" in spec:
        majority = classes.index(spec["majority"])
    elif train is not None:
        majority = int(torch.bincount(_targets(train), minlength=len(classes)).argmax())
    else:
        raise DeepAtlasError(f"{spec['source']}: the run's spec has no majority class; give the training split")
    return f"majority class {classes[majority]!r}", {"accuracy": float((y == majority).double().mean())}
