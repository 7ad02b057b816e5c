"""neural_ode (Chen, Rubanova, Bettencourt & Duvenaud 2018): the ODE block's output is our odeint of its function,
an Euler step of size 1 is a residual block, the adjoint's gradients equal those through the solver, NFE is counted
forward and backward and logged, a short run extrapolates the spiral far better than the last velocity (and than
the last value held), the ODE-Net digits form beats chance, users' trajectory CSVs train, evaluate and predict,
and bad CSVs are refused in one line."""
import json
import math

import pytest
import torch

import deepatlas
from deepatlas import api, catalog
from deepatlas.data import spiral
from deepatlas.models.dynamics.neural_ode import (ConvField, NeuralODE, ODEBlock, ODENet, ODENetConfig, Config,
                                                  StateField)
from deepatlas.nn.ode import odeint
from deepatlas.tasks import get_task


def test_shapes_each_row_read_at_its_own_times():
    torch.manual_seed(0)
    model = NeuralODE(Config(dims=3, hidden=8))
    t = torch.tensor([[0.0, 0.1, 0.4, 0.4], [0.0, 0.2, 0.3, 0.9]])  # rows of their own times, a repeat
    ys = model(torch.randn(2, 3), t)
    assert ys.shape == (2, 4, 3) and torch.isfinite(ys).all()
    torch.testing.assert_close(ys[0, 2], ys[0, 3])  # one time, one state
    assert ODENet(ODENetConfig(channels=8))(torch.randn(5, 1, 16, 16)).shape == (5, 10)


def test_the_block_is_our_odeint_of_its_function_and_each_row_its_own_solution():
    torch.manual_seed(0)
    model = NeuralODE(Config(dims=2, hidden=16)).double()
    y0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.3, 1.0], [0.0, 0.5, 0.7], [0.0, 0.3, 0.7]], dtype=torch.float64)
    f = model.block.func.f
    grid = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0], dtype=torch.float64)
    expected = odeint(f, y0, grid, rtol=model.cfg.rtol, atol=model.cfg.atol)       # (5, 3, 2)
    got = model(y0, t)
    torch.testing.assert_close(got[0], expected[[0, 1, 4], 0], rtol=0, atol=0)     # the same solve, bit for bit
    torch.testing.assert_close(got[1], expected[[0, 2, 3], 1], rtol=0, atol=0)
    alone = odeint(f, y0[1:2], t[1], rtol=1e-9, atol=1e-10)[:, 0]                  # row 1 solved by itself
    torch.testing.assert_close(got[1], alone, rtol=0, atol=1e-3)

    net = ODENet(ODENetConfig(channels=8)).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        h0 = net.downsample(x)
        h1 = odeint(net.block.func.f, h0, torch.tensor([0.0, 1.0]), rtol=1e-3, atol=1e-3)[-1]
        torch.testing.assert_close(net(x), net.head(h1), rtol=0, atol=0)


def test_an_euler_step_of_size_one_is_a_residual_block():
    torch.manual_seed(0)
    field = ConvField(8)
    block = ODEBlock(field, "euler", 1e-3, 1e-3, step_size=1.0, adjoint=False)
    h = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(h, torch.tensor([0.0, 1.0]))[-1], h + field(torch.tensor(0.0), h))


@pytest.mark.parametrize("form", ["trajectory", "digits"])
def test_adjoint_and_backpropagation_through_the_solver_give_the_same_gradients(form):
    torch.manual_seed(0)
    if form == "trajectory":
        models = [NeuralODE(Config(dims=2, hidden=16, rtol=1e-8, atol=1e-9, adjoint=a, time_dependent=True)).double()
                  for a in (False, True)]
        inputs = (torch.randn(4, 2, dtype=torch.float64), torch.linspace(0, 1.5, 6, dtype=torch.float64))
    else:  # a smooth field (at ReLU's kinks the discrete solution's derivative and the adjoint's differ by ~1e-3)
        models = [ODENet(ODENetConfig(channels=4, rtol=1e-8, atol=1e-8, adjoint=a, activation="softplus")).double()
                  for a in (False, True)]
        inputs = (torch.randn(3, 1, 8, 8, dtype=torch.float64),)
    models[1].load_state_dict(models[0].state_dict())
    grads = []
    for model in models:
        model.train()
        model(*inputs).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().max() > 1e-3  # not vacuous
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4 * float(grads[0].abs().max()))


def test_nfe_is_counted_forward_and_backward():
    torch.manual_seed(0)
    for adjoint in (False, True):
        model = NeuralODE(Config(dims=2, hidden=8, adjoint=adjoint)).train()
        before = model.block.func.nfe
        ys = model(torch.randn(4, 2), torch.linspace(0, 1, 5))
        forward = model.block.func.nfe - before
        counts = model.counts()
        assert counts["nfe"] == forward >= 8 and counts["nfe_backward"] == 0  # not yet filled in
        ys.sum().backward()
        backward = model.block.func.nfe - before - forward
        assert counts["nfe_backward"] == backward
        assert (backward > forward) if adjoint else backward == 0  # the adjoint solves y, a and a_θ back
    with torch.no_grad():
        model.eval()(torch.randn(4, 2), torch.linspace(0, 1, 5))
    assert set(model.counts()) == {"nfe"}


def test_objective_logs_extrapolation_velocity_baseline_and_nfe():
    entry = catalog.get("neural_ode")
    data = get_task("trajectory").load(entry.data)
    objective = entry.objective(NeuralODE(Config(hidden=8)))
    objective.data_spec = data.spec
    batch = data.test.collate([data.test[i] for i in range(8)])
    logs = objective.eval().validation_step(batch)
    assert {"loss", "mse", "velocity_mse", "nfe"} <= set(logs) and logs["mse#n"] == 8 * 50 * 2
    _, baseline = spiral.baseline(data.spec, data.train, data.test)
    t, y, observed, length = batch
    line = spiral.velocity_baseline(t, y, observed)
    torch.testing.assert_close(line[:, 50], y[:, 49] + (y[:, 49] - y[:, 48]) * (t[:, 50] - t[:, 49])[:, None] /
                               (t[:, 49] - t[:, 48])[:, None])  # the line through the last two observations
    assert baseline["mse_vs_velocity"] == 1.0 and baseline["mse"] == baseline["velocity_mse"] > 1
    assert objective.summarize({"mse": 0.1, "velocity_mse": 2.0})["mse_vs_velocity"] == pytest.approx(0.05)
    loss, train_logs = objective.train().training_step(batch)
    assert torch.isfinite(loss) and {"nfe", "nfe_backward"} <= set(train_logs)


def test_the_embedded_spirals_are_the_stated_systems():
    for system, other in (("cubic", "linear"), ("linear", "cubic")):
        t, ys = spiral.simulate(system, "val")
        assert ys.shape == (spiral.SIZES["val"], spiral.POINTS, 2) and float(t[-1]) == spiral.T_END
        residual = {}
        for field in (system, other):  # each flowed from the (noisy) first observation over the first tenth
            flowed = odeint(lambda s, y, f=field: spiral.spiral_field(f, y), ys[:, 0].double(), t[:10], rtol=1e-9,
                            atol=1e-10)
            residual[field] = float((ys[:, 1:10].double() - flowed[1:].transpose(0, 1)).std())
        assert residual[system] < 2 * spiral.NOISE < residual[other]
    r = ys[:, 0].double().norm(dim=-1)
    assert r.min() > spiral.R_LOW - 0.1 and r.max() < spiral.R_HIGH + 0.1


@pytest.fixture(scope="module")
def spiral_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("neural_ode") / "spiral"
    return out, deepatlas.train("neural_ode", out=out, overrides={"epochs": "40", "lr": "1e-2"})


def test_a_short_run_extrapolates_far_better_than_the_last_velocity_and_the_last_value(spiral_run):
    out, result = spiral_run
    test = result["test"]
    assert test["mse_vs_velocity"] < 0.03  # the bar asks 0.1 of the full recipe
    held = float(result["baseline"]["baseline"].split("mse ")[1].rstrip(")"))  # the last value held still
    assert test["mse"] < 0.1 * held
    assert test["nfe"] >= 8 and (out / "trajectories.png").exists() and (out / "phase_portrait.png").exists()
    logged = {line.split(",")[2] for line in (out / "log.csv").read_text().splitlines()[1:]}
    assert {"train/nfe", "train/nfe_backward", "val/nfe", "val/mse_vs_velocity"} <= logged
    assert api.evaluate(out) == pytest.approx(test)


def test_eval_reports_the_nfe_of_its_evaluation(spiral_run, cli_run):
    code, out, _ = cli_run("eval", spiral_run[0])
    assert code == 0 and "nfe:" in out and "mse_vs_velocity:" in out and "last observed velocity" in out


def test_adjoint_training_logs_backward_nfe(tmp_path):
    result = deepatlas.train("neural_ode", out=tmp_path / "run", overrides={"epochs": "1", "adjoint": "true"})
    rows = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    backward = [float(r[3]) for r in rows if r[2] == "train/nfe_backward"]
    forward = [float(r[3]) for r in rows if r[2] == "train/nfe"]
    assert backward and backward[0] > forward[0] > 0
    assert result["test"]["nfe"] > 0


def test_the_digits_form_trains_briefly_and_beats_chance(tmp_path):
    result = deepatlas.train("neural_ode", data="digits", out=tmp_path / "run",
                             overrides={"epochs": "2", "channels": "16"})
    assert result["test"]["accuracy"] > 0.4 and result["test"]["nfe"] >= 14  # chance: 0.1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["task"] == "image_classification" and saved["model"]["channels"] == 16
    assert api.evaluate(tmp_path / "run")["accuracy"] == pytest.approx(result["test"]["accuracy"])
    entry = catalog.get("neural_ode")
    [digits] = [b for b in entry.more_bars if b.overrides.get("data") == "digits"]
    assert digits.metric == "accuracy" and api.form_for(entry, "digits").task == "image_classification"


def write_oscillators(path, n=8, points=30, seed=0):
    """Damped oscillators x'' = -ω² x - 0.2 x' at irregular times (position, velocity), in kilometres."""
    g = torch.Generator().manual_seed(seed)
    lines = ["id,seconds,position_km,velocity_km"]
    for i in range(n):
        times = torch.cumsum(0.1 + 0.1 * torch.rand(points, generator=g, dtype=torch.float64), 0)
        amplitude, phase = 1 + torch.rand(1, generator=g).item(), 6 * torch.rand(1, generator=g).item()
        for s in times.tolist():
            decay = math.exp(-0.1 * s)
            x = 1000 * amplitude * decay * math.cos(2 * s + phase)
            v = 1000 * amplitude * decay * (-2 * math.sin(2 * s + phase) - 0.1 * math.cos(2 * s + phase))
            lines.append(f"s{i},{s + 100:.4f},{x:.3f},{v:.3f}")  # times from 100 s, in the file's units
    path.write_text("\n".join(lines) + "\n")
    return path


def test_users_csv_trains_evaluates_and_predicts_in_its_units_and_times(tmp_path, cli_run):
    data = write_oscillators(tmp_path / "oscillators.csv")
    out = tmp_path / "run"
    result = deepatlas.train("neural_ode", data=str(data), out=out, overrides={"epochs": "30", "lr": "1e-2"})
    assert result["test"]["mse_vs_velocity"] < 0.5
    assert api.evaluate(out, data=str(data))["mse"] > 0
    history = write_oscillators(tmp_path / "history.csv", n=2, points=12, seed=5)
    prediction = api.predict(out, str(history), steps=5)
    assert [r["series"] for r in prediction.rows] == ["s0", "s1"]
    row = prediction.rows[0]
    assert len(row["times"]) == len(row["values"]) == 5 and len(row["values"][0]) == 2
    assert row["times"][0] > row["history_times"][-1] > 100  # after the series, in its times
    assert 50 < abs(row["values"][0][0]) + abs(row["values"][0][1]) < 5000  # in kilometres, near the last state
    csv_out, plot = tmp_path / "pred.csv", tmp_path / "pred.png"
    code, shown, _ = cli_run("predict", out, history, "--out", csv_out, "--plot", plot)
    assert code == 0 and "s1" in shown
    assert csv_out.read_text().splitlines()[0] == "series,time,position_km,velocity_km"
    assert len(csv_out.read_text().splitlines()) == 1 + 2 * 12  # as many as each series has, by default
    assert (tmp_path / "pred-1.png").exists() and (tmp_path / "pred-2.png").exists()


@pytest.mark.parametrize("text, message", [
    ("id,t\na,1\n", "trajectories need a series id, a time and at least one value column"),
    ("id,t,x\na,0,1\na,1,oops\n", ":3: column 'x' holds 'oops', not a finite number"),
    ("id,t,x\na,0,1\na,0,2\n", ":3: series 'a' at time 0 after time 0; each series' times must increase"),
    ("id,t,x\na,0,1\na,1,2,3\n", ":3: 4 fields, the header has 3"),
    ("id,t,x\n" + "".join(f"{s},{i},{i}\n" for s in "ab" for i in range(5)), "2 series; a 60/20/20"),
    ("id,t,x\n" + "".join(f"{s},{i},{i}\n" for s in "abc" for i in range(5)) + "d,0,1\n",
     "series 'd' has 1 observation; each needs at least 4"),
])
def test_bad_csv_is_refused_in_one_line(refused, tmp_path, text, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    refused("train", "neural_ode", "--data", bad, message=message)


def test_predict_refuses_another_number_of_components(refused, spiral_run, tmp_path):
    bad = tmp_path / "three.csv"
    bad.write_text("id,t,x,y,z\na,0,1,2,3\na,1,1,2,3\n")
    refused("predict", spiral_run[0], bad, message="3 value columns (x, y, z); this run's trajectories have 2")
