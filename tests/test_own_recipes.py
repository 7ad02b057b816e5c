"""Recipes fitted to a user's data, the trivial baseline beside every metric, and the Python API's symmetry with the
command line (issue 18)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning_fabric import Fabric
from torch import nn

import deepatlas
from deepatlas import api
from deepatlas.catalog import Train
from deepatlas.engine.loop import planned_epochs
from deepatlas.errors import DeepAtlasError


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """240 rows; the label is the sign of a + b, which an MLP learns in a few epochs (a majority guess: about 0.5)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 240))
    lines = ["a,b,label"] + [f"{x:.4f},{y:.4f},{'yes' if x + y > 0 else 'no'}" for x, y in zip(a, b)]
    path = tmp_path_factory.mktemp("table") / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fitted_run(table, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "fitted"
    metrics = deepatlas.train("mlp", data=str(table), target="label", out=run, max_time=60)
    return run, metrics


def test_a_users_file_trains_to_early_stopping_not_the_embedded_epochs(fitted_run):
    run, metrics = fitted_run
    config = json.loads((run / "config.json").read_text())
    assert config["fitted"] is True
    steps_per_epoch = -(-144 // config["train"]["batch_size"])       # 144 training rows
    patience = -(-api.FITTED_PATIENCE_STEPS // steps_per_epoch)        # 200 steps' worth of epochs
    assert config["train"]["patience"] == patience > api.FITTED_PATIENCE
    assert config["train"]["epochs"] == api.FITTED_EPOCHS
    # the embedded recipe's 50 epochs would have stopped; this one runs until the validation metric stops improving
    assert metrics["status"].startswith("stopped early"), metrics["status"]
    assert metrics["epochs"] == metrics["best_epoch"] + patience
    assert metrics["test"]["accuracy"] >= metrics["baseline"]["accuracy"] + 0.3


def test_setting_epochs_or_using_embedded_data_keeps_the_recipe(table, tmp_path):
    _, settings = api.settings_for(api.get("mlp"), {"epochs": "3"}, str(table))
    assert not settings.fitted and settings.train.epochs == 3
    _, settings = api.settings_for(api.get("mlp"), {}, None)
    assert not settings.fitted and settings.train == api.get("mlp").train
    _, settings = api.settings_for(api.get("lenet"), {}, str(tmp_path))
    assert settings.fitted and settings.options.image_size == 0  # the recipe's 16 px were for 8x8 digits
    _, settings = api.settings_for(api.get("lenet"), {"image_size": "24"}, str(tmp_path))
    assert settings.options.image_size == 24


def test_the_warm_up_is_at_most_one_epoch_and_the_patience_at_least_200_steps():
    recipe = Train(warmup=100, batch_size=16, patience=api.FITTED_PATIENCE)
    assert api.fit_lengths(recipe, 40).warmup == 3            # 40 examples: 3 steps an epoch
    assert api.fit_lengths(recipe, 40).patience == 67         # ... so 67 epochs make 200 steps
    assert api.fit_lengths(recipe, 40_000).warmup == 100      # large data: the recipe's own warm-up
    assert api.fit_lengths(recipe, 40_000).patience == 20     # ... and 20 epochs
    assert api.fit_lengths(recipe, 40, world_size=2).warmup == 2


def test_the_epochs_that_fit_follow_the_first_epochs_seconds():
    fabric = Fabric(accelerator="cpu", devices=1)
    assert planned_epochs(fabric, 2.0, 60.0, 1000) == 30
    assert planned_epochs(fabric, 0.001, 60.0, 1000) == 1000   # at most the cap
    assert planned_epochs(fabric, 100.0, 60.0, 1000) == 1      # at least one


def test_eval_shows_the_trivial_baseline_beside_the_metric(fitted_run, cli_run):
    run, metrics = fitted_run
    code, out, err = cli_run("eval", run)
    assert code == 0, err
    assert f"accuracy: {metrics['test']['accuracy']:.4f}   (baseline {metrics['baseline']['accuracy']:.4f})" in out
    assert "baseline: majority class" in out
    assert abs(metrics["baseline"]["accuracy"] - 0.5) < 0.15


def test_load_gives_a_predictor_symmetric_with_the_cli(fitted_run, table):
    run, _ = fitted_run
    predictor = deepatlas.load(run)
    assert isinstance(predictor.model, nn.Module) and not predictor.objective.training
    by_path = predictor.predict(str(table)).rows
    raw = predictor.predict({"a": 2.0, "b": 1.0}).rows            # one raw row, no file
    assert raw[0]["predicted"] == "yes" and len(by_path) == 240
    x = predictor.encode([{"a": 2.0, "b": 1.0}, {"a": -2.0, "b": -1.0}])
    assert x.shape == (2, 2) and predictor(x).argmax(-1).tolist() == [1, 0]  # classes sorted: no, yes
    with pytest.raises(DeepAtlasError, match="not an rl run"):
        predictor.act([0.0, 0.0])
    with pytest.raises(DeepAtlasError, match="does not generate text"):
        predictor.generate("hello")
    with pytest.raises(DeepAtlasError, match=r"steps=: classification predictions do not take it"):
        predictor.predict(str(table), steps=3)


def test_python_errors_name_keywords_and_the_cli_names_flags(fitted_run, cli_run, table):
    run, _ = fitted_run
    with pytest.raises(DeepAtlasError, match=r"resume= continues .* data=, target=, column=, task= and overrides="):
        deepatlas.train(resume=run, data=str(table))
    with pytest.raises(DeepAtlasError, match=r"target= names a table's label column, column= a series'"):
        deepatlas.train("mlp", data=str(table), target="label", column="a")
    code, _, err = cli_run("predict", run, str(table), "--steps", "3")
    assert code == 2 and "--steps: classification predictions do not take it" in err
    code, _, err = cli_run("train", "mlp", "--data", table, "--target", "label", "--column", "a")
    assert code == 2 and "--target names a table's label column, --column a series'" in err


def test_train_takes_column_as_a_keyword(tmp_path):
    t = np.arange(300)
    values = np.sin(2 * np.pi * t / 25) + 0.01 * t
    (tmp_path / "s.csv").write_text("when,level\n" + "".join(f"{i},{v:.5f}\n" for i, v in zip(t, values)))
    metrics = deepatlas.train("gru", data=str(tmp_path / "s.csv"), column="level", overrides={"epochs": "1", "window": "8"},
                              out=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["column"] == "level"
    assert metrics["epochs"] == 1


def test_a_loaded_rl_run_acts_and_a_loaded_language_run_generates(tmp_path):
    deepatlas.train("ppo", overrides={"total_steps": "512"}, out=tmp_path / "ppo")
    agent = deepatlas.load(tmp_path / "ppo")
    action = agent.act([0.0, 0.1, 0.02, -0.1])                     # a raw CartPole observation
    assert isinstance(action, int) and action in (0, 1)
    (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 200)
    deepatlas.train("gpt", data=str(tmp_path / "t.txt"), overrides={"epochs": "1", "steps": "20", "layers": "1"},
                    out=tmp_path / "gpt")
    model = deepatlas.load(tmp_path / "gpt")
    text = model.generate("the cat ", length=12, seed=3)
    assert text.startswith("the cat ") and len(text) > len("the cat ")
    assert text == model.generate("the cat ", length=12, seed=3)  # seeded
    with pytest.raises(DeepAtlasError, match="not an rl run"):
        model.act([0.0])


def test_the_printed_plan_repeats_the_fitted_run(fitted_run, table, tmp_path):
    """Tiny data plans the cap of epochs, so the schedule never depended on the clock: the settings the run prints
    (epochs, patience, warm-up) give the same run again, weights and all."""
    run, metrics = fitted_run
    plan = json.loads((run / "config.json").read_text())["train"]
    assert metrics["planned_epochs"] == plan["epochs"] == api.FITTED_EPOCHS
    again = deepatlas.train("mlp", data=str(table), target="label", out=tmp_path / "again",
                            overrides={k: str(plan[k]) for k in ("epochs", "patience", "warmup")})
    assert again["epochs"] == metrics["epochs"] and again["test"] == metrics["test"]
