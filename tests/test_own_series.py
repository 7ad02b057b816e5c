"""A user's own series, done right (issue 18): gaps interpolated (or dropped, or refused) with a notice;
reversible instance normalization (RevIN) in training, evaluation and forecasting alike, off for the embedded
sets; errors in the series' own units next to the naive and seasonal-naive baselines; forecasts of any horizon
from a file or raw numbers, drawn against the truth; and, on a trending seasonal series, a model that beats the
naive last value where global standardization cannot."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepatlas import api
from deepatlas.data import sequences
from deepatlas.errors import DeepAtlasError
from deepatlas.models.sequence import gru
from deepatlas.tasks.sequence import SequenceObjective


def trending(n: int = 600, seed: int = 0) -> np.ndarray:
    """Monthly sales: a level rising 0.05 a month, a yearly cycle of ±2, noise of 0.3."""
    t = np.arange(n)
    return 50 + 0.05 * t + 2 * np.sin(2 * np.pi * t / 12) + 0.3 * np.random.default_rng(seed).standard_normal(n)


@pytest.fixture
def trend_csv(tmp_path):
    path = tmp_path / "sales.csv"
    months = pd.date_range("1970-01-01", periods=600, freq="MS").strftime("%Y-%m")
    pd.DataFrame({"month": months, "sales": trending().round(3)}).to_csv(path, index=False)
    return path


class Persistence(torch.nn.Module):
    """The next value is the last one."""
    def forward(self, x):
        return x[:, -1]


class Line(torch.nn.Module):
    """The next value continues the line through the last two."""
    def forward(self, x):
        return 2 * x[:, -1] - x[:, -2]


def objective_on(model, spec):
    objective = SequenceObjective(model)
    objective.data_spec = spec
    return objective


# ---- 1. gaps -----------------------------------------------------------------------------------

@pytest.fixture
def gappy_csv(tmp_path):
    """200 values 1..200 under dates, gaps written as pandas writes NaN (''), as 'NaN' and as 'NA' at rows
    0, 2, 3, 6 and 199 (file lines 2, 4, 5, 8, 201)."""
    level = pd.Series(np.arange(1.0, 201.0), dtype=object)
    level[[0, 6, 199]] = np.nan
    level[2], level[3] = "NaN", "NA"
    path = tmp_path / "gappy.csv"
    pd.DataFrame({"day": pd.date_range("2024-01-01", periods=200).strftime("%Y-%m-%d"), "level": level,
                  "note": "x"}).to_csv(path, index=False)
    return path


def test_gaps_are_interpolated_with_a_notice_and_found_without_column(gappy_csv, capsys):
    values, column = sequences.read_series(gappy_csv, None)   # today: "numeric columns: none"
    assert column == "level"
    expected = np.arange(1.0, 201.0)
    expected[0], expected[199] = 2.0, 199.0                    # the ends take the nearest value
    np.testing.assert_allclose(values, expected)               # the inner gaps lie on the line
    assert "5 gaps in column 'level' interpolated linearly" in capsys.readouterr().err
    data = sequences.load(str(gappy_csv), "level", window=8)
    assert data.spec["missing"] == "impute" and len(data.train) + len(data.val) + len(data.test) == 200 - 8


def test_gaps_dropped_or_refused_by_line(gappy_csv, tmp_path, capsys):
    values, _ = sequences.read_series(gappy_csv, "level", missing="drop")
    np.testing.assert_array_equal(values, np.delete(np.arange(1.0, 201.0), [0, 2, 3, 6, 199]))
    assert "5 rows with a gap in column 'level' dropped" in capsys.readouterr().err
    assert sequences.load(str(gappy_csv), "level", window=8, missing="drop").spec["missing"] == "drop"
    with pytest.raises(DeepAtlasError, match=r"gappy.csv: column 'level' has 5 gaps \(lines 2, 4, 5, 8, 201\)"):
        sequences.read_series(gappy_csv, "level", missing="error")
    many = tmp_path / "many.csv"
    pd.DataFrame({"v": [1.0, *[np.nan] * 8, 2.0]}).to_csv(many, index=False)
    with pytest.raises(DeepAtlasError, match=r"8 gaps \(lines 3, 4, 5, 6, 7 and 3 more\); fill them, or "
                                             r"overrides=\{'missing': 'impute'\}"):
        sequences.read_series(many, "v", missing="error")
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"v": [np.nan, np.nan]}).to_csv(empty, index=False)
    with pytest.raises(DeepAtlasError, match="holds no numbers, only gaps"):
        sequences.read_series(empty, "v")


def test_gaps_from_the_command_line(gappy_csv, cli_run):
    code, _, err = cli_run("train", "gru", "--data", gappy_csv, "--column", "level", "--set", "missing=error")
    assert code == 2 and "has 5 gaps (lines 2, 4, 5, 8, 201); fill them, or --set missing=impute" in err


# ---- 2. reversible normalization ----------------------------------------------------------------

def test_embedded_sine_keeps_its_global_standardization_and_windows():
    data = sequences.load("sine")
    assert data.spec["normalize"] == "global" and data.spec["window"] == 64
    values = sequences.sine_series()
    z = torch.tensor((values - data.spec["mean"]) / data.spec["std"])
    x, y = sequences.windows(z[:12_000], 64)                   # each part apart, as before the change
    assert torch.equal(data.train.tensors[0], x) and torch.equal(data.train.tensors[1], y)
    assert len(data.val) == len(data.test) == 4000 - 64
    objective = objective_on(Line(), data.spec)
    torch.testing.assert_close(objective(data.test.tensors[0]), Line()(data.test.tensors[0]), rtol=0, atol=0)


def test_window_normalization_is_reversible_and_equivariant(trend_csv):
    spec = sequences.load(str(trend_csv), "sales").spec
    assert spec["normalize"] == "window"                      # a user's file: on by default
    x = sequences.load(str(trend_csv), "sales").test.tensors[0][:16]   # (16, 32, 1)
    torch.manual_seed(0)
    model = gru.build(gru.Config(in_features=1, n_outputs=1, hidden=8))
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    objective = objective_on(model, spec)
    out = objective(x)
    torch.testing.assert_close(seen[0].mean(1), torch.zeros(16, 1), atol=1e-5, rtol=0)  # each window: mean 0
    torch.testing.assert_close(seen[0].std(1, unbiased=False), torch.ones(16, 1), atol=1e-3, rtol=0)  # and std 1
    mean, std = x.mean(1), x.std(1, unbiased=False)
    torch.testing.assert_close(out, model(seen[0]) * std + mean, atol=1e-4, rtol=1e-4)  # mapped back
    # so a level shift or a change of scale moves the forecast with it, in training, evaluation and forecasting
    torch.testing.assert_close(objective(3 * x - 5), 3 * out - 5, atol=1e-4, rtol=1e-4)
    fed = sequences.forecast(model, x[:2], 6, normalize=True)
    torch.testing.assert_close(sequences.forecast(model, 3 * x[:2] - 5, 6, normalize=True), 3 * fed - 5,
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fed[:, 0], out[:2, 0])         # the first fed-back step is the one-step forecast
    global_ = objective_on(model, {**spec, "normalize": "global"})
    assert not torch.allclose(global_(3 * x - 5), 3 * global_(x) - 5, atol=1e-2)


def test_a_model_with_its_own_generate_forecasts_under_window_normalization():
    class Generator(torch.nn.Module):
        """Continues by adding 1 each step to the last value, in the units it is handed."""
        def generate(self, context, steps):
            self.seen = context
            return context[:, -1:] + torch.arange(1.0, steps + 1)[None, :, None]   # (B, steps, 1)

    model = Generator()
    context = torch.tensor([10.0, 12.0, 14.0, 16.0])[None, :, None]
    path = sequences.forecast(model, context, 3, normalize=True)
    std = context.std(unbiased=False)
    assert abs(model.seen.mean()) < 1e-6 and abs(model.seen.std(unbiased=False) - 1) < 1e-4
    torch.testing.assert_close(path, 16 + std * torch.tensor([[1.0, 2.0, 3.0]]))


# ---- 3. errors in units, baselines ---------------------------------------------------------------

def test_errors_in_the_series_units_and_the_naive_baselines(trend_csv):
    data = sequences.load(str(trend_csv), "sales")
    spec, (x, y) = data.spec, data.test.tensors
    assert spec["season"] == 12                               # from the training part's autocorrelation
    description, naive = sequences.baseline(spec, data.train, data.test)
    error = x[:, -1] - y
    assert naive["mase"] == 1
    assert naive["mse"] == pytest.approx(error.square().mean().item(), rel=1e-5)
    assert naive["mse_units"] == pytest.approx(naive["mse"] * spec["std"] ** 2, rel=1e-5)
    truth = trending()[-len(y):]
    assert naive["mae_units"] == pytest.approx(np.abs(trending()[-len(y) - 1:-1] - truth).mean(), rel=1e-3)
    seasonal = np.abs(trending()[-len(y) - 12:-12] - truth).mean() / naive["mae_units"]
    assert f"seasonal naive (value 12 steps back): mase {seasonal:.3f}" in description
    # evaluation logs the same names: the naive forecaster, measured as a model, scores exactly the baseline
    objective = objective_on(Persistence(), spec).eval()
    logs = objective.summarize({k: float(v) for k, v in objective.measure((x, y)).items()})
    assert logs["mase"] == pytest.approx(1.0, abs=1e-5)
    for name in naive:
        assert logs[name] == pytest.approx(naive[name], rel=1e-4)
    # a season given wins over the one found; a season longer than the window is said
    assert sequences.load(str(trend_csv), "sales", season=6).spec["season"] == 6
    short = sequences.load(str(trend_csv), "sales", window=8)
    assert "a season of 12 is longer than the window of 8" in sequences.baseline(short.spec, None, short.test)[0]


def test_season_found_from_the_autocorrelation():
    t = np.arange(400)
    assert sequences.find_season(np.sin(2 * np.pi * t / 7) + 0.02 * t) == 7
    assert sequences.find_season(np.random.default_rng(0).standard_normal(400)) == 0


# ---- 4. predict: horizon, raw numbers, units, a plot ------------------------------------------------

def test_predict_any_horizon_from_a_file_or_raw_numbers_in_units(trend_csv, tmp_path):
    spec = sequences.load(str(trend_csv), "sales").spec
    values = pd.read_csv(trend_csv)["sales"]
    for raw in (str(trend_csv), values.tolist(), values.to_numpy(), values):
        [row] = sequences.predict(objective_on(Persistence(), spec), spec, raw, steps=7)
        assert row["values"] == pytest.approx([values.iloc[-1]] * 7, abs=1e-3)
    line = [100.0 + 2.5 * i for i in range(40)]                 # far above anything in training: RevIN follows
    line[5] = None                                             # a gap, interpolated as in training
    [row] = sequences.predict(objective_on(Line(), spec), spec, line, steps=4)
    assert row["input"] == "series of 40 values"
    assert row["values"] == pytest.approx([200.0, 202.5, 205.0, 207.5], abs=1e-2)
    for steps in (0, 10_001, 2.5):
        with pytest.raises(DeepAtlasError, match="steps="):
            sequences.predict(objective_on(Line(), spec), spec, line, steps=steps)
    with pytest.raises(DeepAtlasError, match="fewer than the window of 32"):
        sequences.predict(objective_on(Line(), spec), spec, line[:10])
    with pytest.raises(DeepAtlasError, match="one-dimensional"):
        sequences.predict(objective_on(Line(), spec), spec, np.ones((40, 2)))
    from deepatlas.tasks.predictions import Forecasts
    forecasts = Forecasts([row])
    assert forecasts.csv_rows()[:3] == [["input", "step", "value"], ["series of 40 values", 1, row["values"][0]],
                                        ["series of 40 values", 2, row["values"][1]]]
    [png] = forecasts.plot(tmp_path / "forecast.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---- 5. the bar that matters: beat the naive last value on a trending, seasonal series --------------

def test_a_trending_seasonal_series_is_forecast_better_than_the_naive_last_value(trend_csv, tmp_path, cli_run):
    settings = {"hidden": 16, "window": 24, "epochs": 15}
    metrics = api.train("gru", data=str(trend_csv), column="sales", overrides=settings, out=tmp_path / "run")
    run = tmp_path / "run"
    assert metrics["test"]["mase"] < 0.6                      # the naive last value scores 1
    assert metrics["test"]["mse_units"] < 0.5 * metrics["baseline"]["mse_units"]   # the naive's, on the same split
    assert (run / "predictions.png").read_bytes()[:4] == b"\x89PNG"
    # global standardization cannot follow the level out of the training range
    flat = api.train("gru", data=str(trend_csv), column="sales", overrides={**settings, "normalize": "global"},
                     out=tmp_path / "global")
    assert flat["test"]["mase"] > 1.5
    code, out, _ = cli_run("eval", run, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["mase"] == pytest.approx(metrics["test"]["mase"])
    assert shown["baseline"]["mase"] == 1 and "seasonal naive (value 12 steps back)" in shown["baseline"]["baseline"]
    code, out, _ = cli_run("predict", run, trend_csv, "--steps", "24", "--json")
    [row] = json.loads(out)
    assert code == 0 and len(row["values"]) == 24
    # a year ahead: above the last year's level, with its cycle (months 3 and 9 of a cycle apart by about 4)
    assert np.mean(row["values"][:12]) > np.mean(trending()[-12:]) and np.ptp(row["values"][:12]) > 2.5
    # from Python, raw numbers: the same forecast; the predictor on the encoded window gives its first step
    predictor, values = api.load(run), pd.read_csv(trend_csv)["sales"]
    assert predictor.predict(values, steps=24).rows[0]["values"] == pytest.approx(row["values"], rel=1e-6)
    first = predictor(predictor.encode(values.tolist())).item() * predictor.spec["std"] + predictor.spec["mean"]
    assert first == pytest.approx(row["values"][0], rel=1e-5)


def test_the_other_sequence_sets_have_their_trivial_baselines_too():
    adding = sequences.load("adding-50")
    assert sequences.baseline(adding.spec, adding.train, adding.test)[1]["mse"] == pytest.approx(1 / 6, abs=0.01)
    copy = sequences.load("copy-30")
    assert sequences.baseline(copy.spec, copy.train, copy.test)[1] == {"loss": copy.spec["chance_loss"]}
    digits = sequences.load("seq-digits")
    description, values = sequences.baseline(digits.spec, digits.train, digits.test)
    assert description.startswith("most frequent label") and 0.05 < values["accuracy"] < 0.15
    sine = sequences.load("sine")
    assert sequences.baseline(sine.spec, sine.train, sine.test)[1]["mse"] == pytest.approx(0.055, abs=0.001)
