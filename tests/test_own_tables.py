"""Users' tables done right (issue 18): gaps imputed, dropped or refused with one notice; a numeric target regressed
in its own units; identifier, free-text, counter and index columns left out; dates as numbers; raw rows encoded as
training encoded them; the trivial baseline of each task. Every table is written by pandas, as users' are."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepatlas.data import tabular
from deepatlas.errors import DeepAtlasError
from deepatlas.models.feedforward.mlp import MLP, Config
from deepatlas.tasks.classification import Classification
from deepatlas.tasks.predictions import TablePredictions

import pandas as pd

SPECIES = ["Adelie", "Gentoo", "Chinstrap"]


def penguins(n=150, seed=0) -> pd.DataFrame:
    """A penguins-like table: two measurements that tell the species apart, an island and a sex (noise), a name."""
    rng = np.random.default_rng(seed)
    species = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    return pd.DataFrame({
        "name": [f"bird {i:04d}" for i in range(n)],
        "island": rng.choice(["Biscoe", "Dream", "Torgersen"], n),
        "bill_length_mm": 38 + 8 * species + rng.normal(0, 1, n),
        "flipper_mm": 190 + 15 * (species == 1) + rng.normal(0, 3, n),
        "sex": rng.choice(["male", "female"], n),
        "species": np.array(SPECIES)[species],
    })


def with_gaps(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[[3, 30], "bill_length_mm"] = np.nan
    df["sex"] = df["sex"].astype(object)
    df.loc[[5, 6, 7], "sex"] = None
    df["species"] = df["species"].astype(object)
    df.loc[[9], "species"] = None
    return df


def write(df: pd.DataFrame, path, index=False) -> str:
    df.to_csv(path, index=index)
    return str(path)


def column(spec: dict, x: torch.Tensor, name: str) -> torch.Tensor:
    """The encoded columns of feature `name` (a number's value and indicator, a category's one-hot)."""
    widths = [len(f["values"]) + bool(f.get("missing_level")) if f["kind"] == "categorical"
              else 1 + bool(f.get("indicator")) for f in spec["features"]]
    start = 0
    for f, w in zip(spec["features"], widths):
        if f["name"] == name:
            return x[:, start:start + w]
        start += w
    raise KeyError(name)


def test_gaps_are_imputed_with_indicator_and_missing_level_and_said_once(tmp_path, capsys):
    path = write(with_gaps(penguins()), tmp_path / "penguins.csv")
    d = tabular.load(path, "species")
    err = capsys.readouterr().err
    assert "penguins.csv: 1 rows without a target 'species' left out" in err
    assert "gaps imputed (median + indicator): bill_length_mm 2, sex 3 (missing level)" in err
    assert "left out name (identifier-like or free text" in err
    assert len(d.train) + len(d.val) + len(d.test) == 149
    tabular.load(path, "species")
    assert capsys.readouterr().err == ""  # said once
    bill = next(f for f in d.spec["features"] if f["name"] == "bill_length_mm")
    sex = next(f for f in d.spec["features"] if f["name"] == "sex")
    assert bill["indicator"] and sex["missing_level"] and sex["values"] == ["female", "male"]
    assert "name" not in {f["name"] for f in d.spec["features"]}
    # the median comes from the training rows and is encoded with an indicator of 1
    row = {"island": "Dream", "flipper_mm": 200}
    x, names = tabular.encode(d.spec, [{**row, "bill_length_mm": None, "sex": float("nan")},
                                       {**row, "bill_length_mm": bill["fill"], "sex": "male"}])
    assert names == ["row 1", "row 2"]
    assert torch.equal(column(d.spec, x, "bill_length_mm")[:, 0], column(d.spec, x, "bill_length_mm")[[1, 1], 0])
    assert column(d.spec, x, "bill_length_mm")[:, 1].tolist() == [1.0, 0.0]
    assert column(d.spec, x, "sex").tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert x.shape[1] == d.in_features == 3 + 2 + 1 + 3  # island, bill + indicator, flipper, sex + missing
    # training rows with a gap got the training median
    train_bills = column(d.spec, d.train.tensors[0], "bill_length_mm")
    imputed = train_bills[:, 1] == 1
    assert imputed.any() and torch.allclose(train_bills[imputed, 0] * bill["std"] + bill["mean"],
                                            torch.tensor(bill["fill"]).float())


def test_missing_drop_and_error(tmp_path):
    path = write(with_gaps(penguins()), tmp_path / "penguins.csv")
    d = tabular.load(path, "species", missing="drop")
    assert len(d.train) + len(d.val) + len(d.test) == 150 - 1 - 5
    assert not any(f.get("indicator") or f.get("missing_level") for f in d.spec["features"])
    with pytest.raises(DeepAtlasError, match="the run was trained with .*drop"):  # new rows with gaps: refused
        tabular.encode(d.spec, {"island": "Dream", "bill_length_mm": None, "flipper_mm": 200, "sex": "male"})
    with pytest.raises(DeepAtlasError) as err:
        tabular.load(path, "species", missing="error")
    message = str(err.value)
    assert "\n" not in message and message.startswith(path)
    assert ("gaps in 'species' 1 (first: line 11), 'bill_length_mm' 2 (first: line 5), 'sex' 3 (first: line 7)"
            in message)
    few = penguins(n=12)
    few["flipper_mm"] = [np.nan] * 10 + [1.0, 2.0]
    with pytest.raises(DeepAtlasError, match="leaves 2 of 12 rows, too few for a train/val/test split"):
        tabular.load(write(few, tmp_path / "few.csv"), "species", missing="drop")


def test_numbers_with_stray_text_are_refused_and_common_gap_markers_are_gaps(tmp_path):
    df = penguins()
    df["flipper_mm"] = df["flipper_mm"].round(1).astype(object)
    df.loc[[20, 21], "flipper_mm"] = "unknown"
    df.loc[[22], "flipper_mm"] = "-"  # a gap, as several exports write it
    with pytest.raises(DeepAtlasError, match=r"penguins.csv: line 22: column 'flipper_mm' holds 'unknown' among "
                                             r"numbers \(2 such cells\): leave a gap empty"):
        tabular.load(write(df, tmp_path / "penguins.csv"), "species")
    df.loc[[20, 21], "flipper_mm"] = "n.a."
    d = tabular.load(write(df, tmp_path / "penguins.csv"), "species")
    flipper = next(f for f in d.spec["features"] if f["name"] == "flipper_mm")
    assert flipper["kind"] == "numeric" and flipper["indicator"]


def regression_table(n=300, seed=0) -> pd.DataFrame:
    """price = 1000 + 300 area + 200 [garden] + noise: many distinct non-integer values."""
    rng = np.random.default_rng(seed)
    area, garden = rng.normal(0, 1, n), rng.choice(["yes", "no"], n)
    price = 1000 + 300 * area + 200 * (garden == "yes") + rng.normal(0, 20, n)
    return pd.DataFrame({"area": area, "garden": garden, "rooms": rng.integers(1, 4, n), "price": price})


def test_numeric_target_with_many_values_is_regressed(tmp_path):
    df = regression_table()
    path = write(df, tmp_path / "houses.csv")
    d = tabular.load(path, "price")
    assert d.spec["kind"] == "regression" and d.dims == {"in_features": 1 + 2 + 1, "n_classes": 1}
    y = d.train.tensors[1]
    assert y.dtype == torch.float32 and y.shape == (len(d.train),)
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std(unbiased=False)) - 1) < 1e-5
    assert d.spec["target_mean"] == pytest.approx(1100, abs=60) and d.spec["target_std"] > 250
    # a few distinct integers are classes; the task option overrides either way
    assert tabular.load(path, "rooms").spec["classes"] == ["1", "2", "3"]
    assert tabular.load(path, "rooms", task="regression").dims["n_classes"] == 1
    assert tabular.load(path, "price", task="classification").n_classes == len(df)  # every price its own class
    with pytest.raises(DeepAtlasError, match="regression.* needs a numeric target; 'garden' holds '(yes|no)'"):
        tabular.load(path, "garden", task="regression")
    with pytest.raises(DeepAtlasError, match="an embedded classification set"):
        tabular.load("iris", task="regression")


def test_regression_learns_in_the_targets_units_and_beats_the_mean(tmp_path):
    d = tabular.load(write(regression_table(), tmp_path / "houses.csv"), "price")
    torch.manual_seed(0)
    objective = Classification(MLP(Config(**d.dims, width=32, dropout=0.0)))
    objective.data_spec = d.spec
    objective.prepare(d)
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-2)
    for _ in range(300):
        loss, logs = objective.training_step(d.train.tensors)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert set(logs) == {"loss", "mse", "mae"}
    objective.eval()
    logs = objective.summarize({k: float(v) for k, v in objective.validation_step(d.test.tensors).items()})
    what, base = tabular.baseline(d.spec, d.train, d.test)
    assert what == "mean of the training target" and set(base) == {"mse", "mae", "r2"}
    std = d.spec["target_std"]
    y = d.test.tensors[1].double() * std + d.spec["target_mean"]
    assert base["mae"] == pytest.approx(float((y - d.spec["target_mean"]).abs().mean()), rel=1e-5)
    assert float(logs["mae"]) < 40 < 200 < base["mae"]  # noise 20 in dollars; the mean is off by hundreds
    assert float(logs["r2"]) > 0.95 and abs(base["r2"]) < 0.1  # the mean explains none of the split's variance
    assert float(logs["mse"]) == pytest.approx(float(logs["loss"]) * std ** 2, rel=1e-5)
    # predictions are prices
    rows = tabular.predict(objective, d.spec, [{"area": 1.0, "garden": "yes", "rooms": 2},
                                               {"area": -1.0, "garden": "no", "rooms": 2}])
    assert rows[0]["predicted"] == pytest.approx(1500, abs=60) and rows[1]["predicted"] == pytest.approx(700, abs=60)
    shown = TablePredictions(rows)
    assert shown.csv_rows()[0] == ["input", "predicted"] and json.dumps(shown.to_json())


def test_perceptron_criterion_refuses_a_regressed_target(tmp_path):
    from deepatlas.models.feedforward.perceptron import perceptron_criterion
    d = tabular.load(write(regression_table(n=60), tmp_path / "houses.csv"), "price")
    with pytest.raises(DeepAtlasError, match="regressed"):
        Classification(MLP(Config(**d.dims)), loss=perceptron_criterion).prepare(d)


def test_identifier_counter_and_index_columns_left_out_and_drop_keep_choose(tmp_path, capsys):
    df = penguins()
    df.index = df.index + 1
    df.insert(0, "row", np.arange(1, len(df) + 1))
    df["comment"] = [f"seen on day {i} near the shore" for i in range(len(df))]
    path = write(df, tmp_path / "birds.csv", index=True)  # pandas' index: a first column without a name
    d = tabular.load(path, "species")
    err = capsys.readouterr().err
    assert "birds.csv: the first column has no name: pandas' index, left out" in err
    assert "left out row (counts the rows), name (identifier-like or free text: 150 distinct values in 150 rows)" in err
    assert [f["name"] for f in d.spec["features"]] == ["island", "bill_length_mm", "flipper_mm", "sex"]
    d = tabular.load(path, "species", drop="island, sex")
    assert [f["name"] for f in d.spec["features"]] == ["bill_length_mm", "flipper_mm"]
    d = tabular.load(path, "species", keep="row,flipper_mm")
    assert [f["name"] for f in d.spec["features"]] == ["row", "flipper_mm"]
    with pytest.raises(DeepAtlasError, match=r"'drop': 'flipper'}: no such column; columns: row, name, island, "
                                             r"bill_length_mm, flipper_mm, sex, comment"):
        tabular.load(path, "species", drop="flipper")
    with pytest.raises(DeepAtlasError, match="'species' is the target"):
        tabular.load(path, "species", drop="species")
    # an empty or repeated name elsewhere is an error, with a hint
    (tmp_path / "bad.csv").write_text("a,,b,a,y\n1,2,3,4,x\n")
    with pytest.raises(DeepAtlasError, match=r"bad.csv: header has empty or repeated column names \(column 2 has no "
                                             r"name; 'a' repeated\): give every column a name of its own"):
        tabular.load(str(tmp_path / "bad.csv"), "y")


def test_dates_become_days_since_1970(tmp_path):
    df = regression_table(n=60)
    df["sold"] = pd.date_range("2020-01-01", periods=60, freq="7D").strftime("%Y-%m-%d")
    df.loc[4, "sold"] = None
    d = tabular.load(write(df, tmp_path / "sold.csv"), "price")
    sold = next(f for f in d.spec["features"] if f["name"] == "sold")
    assert sold["kind"] == "date" and sold["indicator"]
    x, _ = tabular.encode(d.spec, {"area": 0, "garden": "no", "rooms": 1, "sold": "2020-01-08T12:00"})
    days = float(column(d.spec, x, "sold")[0, 0]) * sold["std"] + sold["mean"]
    assert days == pytest.approx(18269.5, abs=1e-2)  # 2020-01-08 is day 18269
    with pytest.raises(DeepAtlasError, match=r"input: row 1: column 'sold' holds 'soon', not an ISO date"):
        tabular.encode(d.spec, {"area": 0, "garden": "no", "rooms": 1, "sold": "soon"})


def test_encode_takes_paths_dicts_rows_and_dataframes(tmp_path):
    df = with_gaps(penguins(n=40))
    path = write(df, tmp_path / "penguins.csv")
    d = tabular.load(path, "species")
    rows = df.drop(columns="species").iloc[:8]
    x_csv, names = tabular.encode(d.spec, write(rows, tmp_path / "rows.csv"))
    assert names[0].endswith("rows.csv:1") and len(names) == 8
    x_frame, names = tabular.encode(d.spec, rows)
    assert names == [str(i) for i in rows.index]
    x_dicts, _ = tabular.encode(d.spec, rows.to_dict(orient="records"))
    x_one, _ = tabular.encode(d.spec, rows.iloc[3].to_dict())
    x_series, _ = tabular.encode(d.spec, rows.iloc[3])
    for x in (x_frame, x_dicts):
        assert torch.equal(x, x_csv)
    assert torch.equal(x_one, x_csv[3:4]) and torch.equal(x_series, x_csv[3:4])
    with pytest.raises(DeepAtlasError, match="missing column"):
        tabular.encode(d.spec, {"island": "Dream"})
    with pytest.raises(DeepAtlasError, match="cannot encode int"):
        tabular.encode(d.spec, 3)


def test_classification_baseline_and_predictions(tmp_path):
    d = tabular.load(write(penguins(), tmp_path / "p.csv"), "species")
    what, base = tabular.baseline(d.spec, d.train, d.test)
    assert what == "majority class 'Adelie'" and d.spec["majority"] == "Adelie"
    y = d.test.tensors[1]
    assert base == {"accuracy": pytest.approx(float((y == d.spec["classes"].index("Adelie")).double().mean()))}
    assert tabular.baseline(d.spec, None, d.test) == (what, base)
    objective = Classification(MLP(Config(**d.dims))).eval()
    rows = tabular.predict(objective, d.spec, str(tmp_path / "p.csv"))
    assert len(rows) == 150 and set(rows[0]["probabilities"]) == set(SPECIES)
    assert TablePredictions(rows).csv_rows()[0] == ["input", "predicted", *[f"p_{c}" for c in d.spec["classes"]]]


def test_embedded_sets_encode_as_standardized_features():
    """The bench's data: no gap, no indicator, each feature standardized by its training rows, bit for bit."""
    from sklearn.datasets import load_breast_cancer

    from deepatlas.data import split_indices
    bunch = load_breast_cancer()
    x = bunch.data
    d = tabular.load("breast_cancer")
    assert d.spec["kind"] == "classification" and d.in_features == 30
    assert not any(f.get("indicator") for f in d.spec["features"])
    train, _, test = split_indices(bunch.target_names[bunch.target], "breast_cancer")
    mean, std = (np.array([getattr(x[:, i][train], stat)() for i in range(30)]) for stat in ("mean", "std"))
    assert [f["mean"] for f in d.spec["features"]] == mean.tolist()
    assert [f["std"] for f in d.spec["features"]] == std.tolist()
    rows = torch.from_numpy((x - mean) / std).float()
    assert torch.equal(d.train.tensors[0], rows[train]) and torch.equal(d.test.tensors[0], rows[test])
    encoded, _ = tabular.encode(d.spec, {f["name"]: x[:, i] for i, f in enumerate(d.spec["features"])})
    assert torch.equal(encoded, rows)
