"""The sequence data module: the synthetic tasks are what their papers define, the baselines the
bars quote are right, users' CSV series load (or fail with one line), forecasting feeds back."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from deepatlas import catalog
from deepatlas.catalog import Bar
from deepatlas.data import sequences
from deepatlas import api
from deepatlas.tools import bench
from deepatlas.errors import DeepAtlasError


def _all(dataset, n=None):
    return next(iter(DataLoader(dataset, batch_size=n or len(dataset))))


def test_adding_problem_marks_two_steps_one_per_half_and_sums_them():
    x, y = sequences.adding(50, 500, np.random.default_rng(0))
    marks = x[..., 1]
    assert (marks.sum(1) == 2).all()
    assert (marks[:, :25].sum(1) == 1).all() and (marks[:, 25:].sum(1) == 1).all()
    torch.testing.assert_close((x[..., 0] * marks).sum(1, keepdim=True), y)
    test = sequences.load("adding-200").test
    assert F.mse_loss(torch.ones_like(test.tensors[1]), test.tensors[1]) == pytest.approx(1 / 6, abs=0.01)


def test_copy_memory_layout_and_its_chance_loss():
    data = sequences.load("copy-30")
    x, y = _all(data.test, 256)
    tokens = x.argmax(-1)
    assert x.shape == (256, 50, 10) and y.shape == (256, 50)
    assert (tokens[:, 39] == 9).all() and (tokens[:, 10:39] == 0).all() and (tokens[:, 40:] == 0).all()
    torch.testing.assert_close(y[:, -10:], tokens[:, :10])   # repeat the first ten digits at the end
    assert ((1 <= y[:, -10:]) & (y[:, -10:] <= 8)).all() and (y[:, :-10] == 0).all()
    # "blank until the end, then uniform over the 8 digits" scores exactly the chance loss
    logits = torch.full((256, 50, 10), -1e9)
    logits[:, :-10, 0] = 0
    logits[:, -10:, 1:9] = 0
    chance = F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1)).item()
    assert chance == pytest.approx(data.spec["chance_loss"], rel=1e-5) == pytest.approx(10 * math.log(8) / 50)


def test_future_tagging_needs_the_next_token():
    data = sequences.load("future-tagging")
    x, y = _all(data.test)
    tokens = x.argmax(-1)
    assert torch.equal(y[:, :-1], (tokens[:, 1:] > tokens[:, :-1]).long()) and (y[:, -1] == 0).all()
    # the best guess from the past alone: "the next token is larger" when this one is small
    best_from_past = (tokens < sequences.TAGGING_VOCAB / 2).long()
    best_from_past[:, -1] = 0
    ceiling = (best_from_past == y).float().mean().item()
    assert ceiling == pytest.approx(0.7625, abs=0.015)
    assert data.dims == {"in_features": 8, "n_outputs": 2, "per_step": True}


def test_generated_splits_are_fixed_and_distinct():
    a, b = sequences.load("adding-50"), sequences.load("adding-50")
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.val.tensors[0], a.test.tensors[0])
    assert sequences.load("seq-digits").dims == {"in_features": 8, "n_outputs": 10, "per_step": False}


def test_sine_forecasting_is_split_in_time_and_standardized():
    data = sequences.load("sine")
    x, y = data.train.tensors
    assert x.shape[1:] == (64, 1) and y.shape[1:] == (1,)
    torch.testing.assert_close(x[1, :-1], x[0, 1:])        # consecutive windows slide by one step
    torch.testing.assert_close(x[1, -1], y[0])
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    persistence = F.mse_loss(data.test.tensors[0][:, -1], data.test.tensors[1]).item()
    assert 0.02 < persistence < 0.2  # the trivial baseline a forecaster must beat


@pytest.fixture
def series_csv(tmp_path):
    t = np.arange(400)
    path = tmp_path / "series.csv"
    path.write_text("day,load,note\n" + "".join(f"{i},{10 + math.sin(i / 5):.5f},x\n" for i in t))
    return path


def test_user_series_csv(series_csv, tmp_path):
    data = sequences.load(str(series_csv), "load", window=16)
    assert data.dims == {"in_features": 1, "n_outputs": 1, "per_step": False}
    assert data.spec["column"] == "load" and abs(data.spec["mean"] - 10) < 0.1
    # split in time by target: every value after the first window is a target once, val and test windows
    # reading their context from the part before them
    assert (len(data.train), len(data.val), len(data.test)) == (240 - 16, 80, 80)
    (train_x, train_y), (val_x, _) = data.train.tensors, data.val.tensors
    assert torch.equal(val_x[0, :-1], train_x[-1, 1:]) and torch.equal(val_x[0, -1], train_y[-1])
    with pytest.raises(DeepAtlasError, match="no column 'price'; columns: day, load, note"):
        sequences.load(str(series_csv), "price")
    with pytest.raises(DeepAtlasError, match="name the series column with column="):
        sequences.load(str(series_csv))
    bad = tmp_path / "bad.csv"
    bad.write_text("load\n1\n2\noops\n")
    with pytest.raises(DeepAtlasError, match=r"bad.csv:4: column 'load' holds 'oops', not a number"):
        sequences.load(str(bad), "load")
    short = tmp_path / "short.csv"
    short.write_text("load\n" + "1\n" * 30)
    with pytest.raises(DeepAtlasError, match="too few for windows"):
        sequences.load(str(short), "load")
    with pytest.raises(DeepAtlasError, match="unknown dataset 'adding'"):
        sequences.load("adding")


class Persistence(torch.nn.Module):
    """Predicts that the next value equals the last one."""
    def forward(self, x):
        return x[:, -1]


def test_forecast_feeds_predictions_back_one_to_many(series_csv):
    spec = sequences.load(str(series_csv), "load", window=16).spec
    objective = type("Objective", (), {"model": Persistence()})()
    [row] = sequences.predict(objective, spec, str(series_csv), steps=5)
    last = float(series_csv.read_text().splitlines()[-1].split(",")[1])
    assert row["values"] == pytest.approx([last] * 5, abs=1e-4)
    ramp = torch.arange(8.0)[None, :, None]
    step = type("Step", (torch.nn.Module,), {"forward": lambda self, x: x[:, -1] + 1})()
    assert sequences.forecast(step, ramp, 3).tolist() == [[8.0, 9.0, 10.0]]


def test_train_on_a_csv_series_and_forecast_from_the_command_line(series_csv, tmp_path, cli_run):
    run = tmp_path / "run"
    code, _, err = cli_run("train", "gru", "--data", series_csv, "--column", "load", "--set", "window=16",
                           "--set", "hidden=16", "--set", "epochs=20", "--out", run)
    assert code == 0, err
    code, out, _ = cli_run("eval", run, "--data", series_csv, "--json")
    assert code == 0 and json.loads(out)["mse"] < 0.5  # standardized units: a constant guess scores 1
    code, out, _ = cli_run("predict", run, series_csv, "--json")
    [row] = json.loads(out)
    assert row["input"] == f"{series_csv} [load]" and len(row["values"]) == 10
    assert all(8.5 < v < 11.5 for v in row["values"])  # the series lives in 10 ± 1
    code, _, err = cli_run("train", "gru", "--data", series_csv, "--column", "load", "--target", "load")
    assert code == 2 and "give one" in err


def test_bench_runs_every_bar_with_its_overrides(monkeypatch):
    entry = catalog.get("mlp")
    extra = Bar("accuracy", 0.5, "max", 30, overrides={"data": "wine"})
    monkeypatch.setattr(entry, "more_bars", [extra])
    seen = []

    def fake_train(name, overrides, seed, out, max_time, sample_scores=True):
        seen.append((overrides, max_time))
        return {"test": {"accuracy": 0.97}, "params": 1, "status": "completed"}

    monkeypatch.setattr(api, "train", fake_train)
    results = bench.bench("mlp")
    assert [r["overrides"] for r in results] == [{}, {"data": "wine"}]
    assert seen == [({}, entry.bar.budget_s), ({"data": "wine"}, 30)]
    assert all(r["passed"] for r in results)
    assert api.monitor_for(entry, api.settings_for(entry, {}, "wine")[1].options) == ("accuracy", "max")
    assert "on wine in 30 s" in catalog.markdown_table([entry])
