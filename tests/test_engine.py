"""The engine: exact resume, determinism, time budget, non-finite loss, safetensors checkpoints."""
import json

import pytest
import torch
from safetensors.torch import load_file

import deepatlas
from deepatlas.engine.checkpoint import load_state, load_weights, save_state
from deepatlas.engine.loop import Scaling
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.classification import Classification

QUICK = {"data": "iris", "epochs": "6", "batch_size": "32", "lr": "0.01"}  # 3 steps an epoch


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        deepatlas.train("mlp", overrides=QUICK, seed=seed, out=tmp_path / name)
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["model.net.0.weight"], weights(tmp_path / "c")["model.net.0.weight"])


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path, monkeypatch):
    full = deepatlas.train("mlp", overrides=QUICK, seed=3, out=tmp_path / "full")

    original, calls = Classification.training_step, {"n": 0}

    def interrupted(self, batch):  # Ctrl-C in the middle of epoch 4
        calls["n"] += 1
        if calls["n"] == 3 * 3 + 2:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Classification, "training_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        deepatlas.train("mlp", overrides=QUICK, seed=3, out=tmp_path / "cut")
    monkeypatch.setattr(Classification, "training_step", original)
    assert load_state(tmp_path / "cut" / "checkpoint.safetensors")["loop"]["epoch"] == 3
    assert (tmp_path / "cut" / "model.safetensors").exists(), "an interrupted run keeps a usable model"

    resumed = deepatlas.train(resume=tmp_path / "cut")
    assert resumed["epochs"] == full["epochs"] == 6
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    assert resumed["test"] == full["test"]
    steps = [int(line.split(",")[0]) for line in (tmp_path / "cut" / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps.count(10) == 1, "the partial epoch's log rows are dropped on resume"


def test_non_finite_loss_stops_cleanly_keeping_last_good_checkpoint(tmp_path, monkeypatch):
    original, calls = Classification.training_step, {"n": 0}

    def explodes(self, batch):
        calls["n"] += 1
        loss, logs = original(self, batch)
        return (loss * float("nan"), logs) if calls["n"] > 2 * 3 else (loss, logs)

    monkeypatch.setattr(Classification, "training_step", explodes)
    result = deepatlas.train("mlp", overrides=QUICK, out=tmp_path / "nan")
    assert result["status"].startswith("stopped: non-finite loss")
    assert load_state(tmp_path / "nan" / "checkpoint.safetensors")["loop"]["epoch"] == 2
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "nan").values())
    assert result["test"]["accuracy"] > 0.5


def test_precision_flag_reaches_the_training_step(tmp_path, monkeypatch):
    original, seen = Classification.training_step, []

    def record(self, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, batch)

    monkeypatch.setattr(Classification, "training_step", record)
    deepatlas.train("mlp", overrides={**QUICK, "epochs": "1"}, out=tmp_path / "bf16",
                    scaling=Scaling(accelerator="cpu", precision="bf16-mixed"))
    assert seen and all(seen)


def test_time_budget_stops_training(tmp_path):
    result = deepatlas.train("mlp", overrides={**QUICK, "epochs": "100000"}, max_time=1.0, out=tmp_path / "t")
    assert result["status"] == "stopped: time budget reached"
    assert result["seconds"] < 10 and result["epochs"] < 100000
    assert (tmp_path / "t" / "model.safetensors").exists()


def test_the_epoch_the_budget_stops_is_validated_within_it_and_a_resume_forgets_it(tmp_path, monkeypatch):
    """On a clock where a step takes 1 s and a validation 5 s, the budget holds back the 5 s: it stops epoch 2 after
    2 of its 3 steps and validates them inside the budget. Scored best, those weights are the stopped run's model;
    resumed, the run picks its best among whole epochs only, as the run that never stopped did."""
    from deepatlas.engine import loop
    clock, scores, real, train_step = [0.0], [], loop.evaluate_loader, Classification.training_step

    def step(self, batch):
        clock[0] += 1.0
        return train_step(self, batch)

    def validate(*args, **kwargs):
        logs = real(*args, **kwargs)
        if "monitor" in kwargs:  # a validation inside fit, not the test split's evaluation
            clock[0] += 5.0
            logs["accuracy"] = scores.pop(0)
        return logs
    monkeypatch.setattr(loop, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    monkeypatch.setattr(loop, "evaluate_loader", validate)
    monkeypatch.setattr(Classification, "training_step", step)
    settings = {**QUICK, "epochs": "3"}
    scores[:] = [0.5, 0.4, 0.45]  # epoch 1 is the best
    whole = deepatlas.train("mlp", overrides=settings, seed=4, out=tmp_path / "whole")
    assert whole["best_epoch"] == 1

    clock[0], scores[:] = 0.0, [0.5, 0.9]  # epoch 1, then 2 steps of epoch 2 scored better
    cut = deepatlas.train("mlp", overrides=settings, seed=4, out=tmp_path / "cut", max_time=14.5)
    assert cut["status"] == "stopped: time budget reached" and cut["steps"] == 5 and not scores
    assert cut["seconds"] == 15.0  # steps end at 10 s (the first past 14.5 − 5), validation at 15: one step over
    assert cut["best_epoch"] == 1.67
    assert_same(load_file(str(tmp_path / "cut" / "best.safetensors")), weights(tmp_path / "whole"))
    assert not torch.equal(weights(tmp_path / "cut")["model.net.0.weight"], weights(tmp_path / "whole")["model.net.0.weight"])

    scores[:] = [0.4, 0.45]
    resumed = deepatlas.train(resume=tmp_path / "cut")
    assert resumed["status"] == "completed" and resumed["best_epoch"] == 1 and not scores
    assert_same(weights(tmp_path / "cut"), weights(tmp_path / "whole"))
    assert not (tmp_path / "cut" / "best.safetensors").exists()


def test_run_directory_layout(mlp_run):
    for name in ("config.json", "model.safetensors", "checkpoint.safetensors", "metrics.json", "log.csv", "curves.png"):
        assert (mlp_run / name).is_file(), name
    config = json.loads((mlp_run / "config.json").read_text())
    assert {"name", "seed", "model", "train", "phases", "options", "data"} <= set(config)
    assert (mlp_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    header = (mlp_run / "log.csv").read_text().splitlines()[0]
    assert header == "step,epoch,name,value"
    assert not list(mlp_run.glob("*.tmp")) and not (mlp_run / "best.safetensors").exists()


def test_nothing_in_a_run_is_pickled(mlp_run):
    for path in mlp_run.iterdir():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head[:1] != b"\x80" and not path.read_bytes().startswith(b"PK"), path


def test_checkpoint_state_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 4), "b": torch.arange(3)},
             "optimizer": {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(2)}},
                           "param_groups": [{"lr": 0.1, "params": [0], "betas": (0.9, 0.999)}]},
             "loop": {"epoch": 2, "best": [0.9, -0.1], "name": None}}
    save_state(state, tmp_path / "c.safetensors")
    back = load_state(tmp_path / "c.safetensors")
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert list(back["optimizer"]["state"]) == [0]  # int keys stay ints
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["loop"] == state["loop"]


def test_load_rebuilds_the_trained_model(mlp_run):
    model = deepatlas.load(mlp_run).objective
    trained = weights(mlp_run)
    assert_same({k: v for k, v in model.state_dict().items()}, trained)
    assert not model.training


def test_load_refuses_weights_that_do_not_match_the_config(mlp_run, tmp_path):
    wrong = deepatlas.create_model("mlp", in_features=30, n_classes=2, width=16)
    with pytest.raises(DeepAtlasError, match="do not match"):
        load_weights(Classification(wrong), mlp_run / "model.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(DeepAtlasError, match="not a valid safetensors"):
        load_weights(Classification(wrong), tmp_path / "junk.safetensors")
