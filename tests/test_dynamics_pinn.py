"""pinn (Raissi, Perdikaris & Karniadakis 2019): the residual computed by automatic differentiation is zero on an
exact solution and not on a wrong one, Burgers' operator matches hand derivatives, the initial/boundary loss is zero
on a function that meets the conditions, the reference solution is the shock problem's, and a short run through
`deepatlas.train` beats the trivial baseline (the initial condition held still) clearly."""
import math

import pytest
import torch
from torch import nn

import deepatlas
from deepatlas import api
from deepatlas.catalog import Data
from deepatlas.data import pde
from deepatlas.errors import DeepAtlasError
from deepatlas.models.dynamics.pinn import PINN, Config, PhysicsInformed, burgers, heat, latin_hypercube, partials

KAPPA = 0.1


class ClosedForm(nn.Module):
    """A "network" that is a formula u(x, t), to feed through the PINN's code paths."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, t):
        return self.fn(x, t)


def heat_solution(x, t):
    return torch.exp(-KAPPA * math.pi ** 2 * t) * torch.sin(math.pi * x)


def grid(n=50, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return -1 + 2 * torch.rand(n, generator=g, dtype=dtype), torch.rand(n, generator=g, dtype=dtype)


def test_heat_residual_of_the_exact_solution_is_zero_and_of_a_wrong_one_is_not():
    x, t = grid()
    exact = heat(partials(heat_solution, x, t), KAPPA)
    assert exact.abs().max() < 1e-12
    wrong = heat(partials(lambda x, t: torch.exp(-KAPPA * t) * torch.sin(math.pi * x), x, t), KAPPA)
    assert wrong.abs().mean() > 0.1  # decays too slowly: u_t - κ u_xx = κ(π² - 1) e^{-κt} sin(πx)
    # in float32, the precision the network trains at
    assert heat(partials(heat_solution, x.float(), t.float()), KAPPA).abs().max() < 1e-5


def test_burgers_residual_matches_hand_derivatives():
    x, t = grid()
    nu = 0.01 / math.pi
    d = partials(lambda x, t: t ** 2 * torch.sin(x) + x ** 3, x, t)
    u, u_t, u_x, u_xx = t ** 2 * torch.sin(x) + x ** 3, 2 * t * torch.sin(x), t ** 2 * torch.cos(x) + 3 * x ** 2, \
        -t ** 2 * torch.sin(x) + 6 * x
    for got, want in zip(d, (u, u_t, u_x, u_xx)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(burgers(d, nu), u_t + u * u_x - nu * u_xx)


def test_the_method_residual_goes_through_the_network_and_trains_its_weights():
    model = PINN(Config(hidden=8, layers=2))
    objective = PhysicsInformed(model)
    x, t = grid(20, torch.float32)
    f = objective.residual(x, t)
    assert f.shape == (20,) and torch.isfinite(f).all()
    f.square().mean().backward()  # second-order backprop reaches every weight
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_initial_and_boundary_loss_is_zero_on_a_function_that_meets_them():
    objective = PhysicsInformed(PINN(Config()))
    problem = pde.load_for(Data("burgers-shock"))
    points = objective.training_points(problem, torch.Generator().manual_seed(0))
    objective.model = ClosedForm(lambda x, t: -torch.sin(math.pi * x) * torch.exp(-t))  # u0 at t = 0, 0 at x = ±1
    assert objective.losses(points)["mse_u"] < 1e-12
    objective.model = ClosedForm(lambda x, t: (x ** 2 - 1) * t)  # meets the boundaries, not the initial condition
    assert objective.losses(points)["mse_u"] > 0.1
    # and the points are where they should be: half on t = 0, a quarter on each boundary, u = u0 or 0 there
    on_initial = points["t_u"] == 0
    assert on_initial.sum() == 50 and (points["x_u"][~on_initial].abs() == 1).all()
    torch.testing.assert_close(points["u"][on_initial], -torch.sin(math.pi * points["x_u"][on_initial]))
    assert (points["u"][~on_initial] == 0).all() and len(points["x_f"]) == 10_000 + 100


def test_latin_hypercube_puts_one_point_in_every_slice_of_every_axis():
    unit = latin_hypercube(200, 2, torch.Generator().manual_seed(3))
    assert unit.shape == (200, 2) and (unit >= 0).all() and (unit < 1).all()
    for axis in range(2):
        assert sorted((unit[:, axis] * 200).floor().long().tolist()) == list(range(200))


def test_the_reference_is_the_shock_problem_solution():
    problem = pde.load_for(Data("burgers-shock"))
    x, t, u = problem.grid("test")
    assert u.shape == (100, 256)
    torch.testing.assert_close(u[0], -torch.sin(math.pi * x), atol=1e-6, rtol=0)  # the initial condition
    assert u[:, [0, -1]].abs().max() < 1e-5                                       # the boundaries
    torch.testing.assert_close(u, -u.flip(1), atol=1e-5, rtol=0)                  # odd in x
    assert u[-1, 127] > 0.2 and u[-1, 128] < -0.2                                  # the shock at x = 0
    # Burgers' equation holds by finite differences on a fine grid before the shock steepens
    nu, h, k = problem.spec["nu"], 1e-3, 1e-4
    xs = torch.linspace(-0.9, 0.9, 37, dtype=torch.float64)
    for t0 in (0.05, 0.15):
        u0 = pde.reference(xs, t0, nu)
        u_t = (pde.reference(xs, t0 + k, nu) - pde.reference(xs, t0 - k, nu)) / (2 * k)
        u_x = (pde.reference(xs + h, t0, nu) - pde.reference(xs - h, t0, nu)) / (2 * h)
        u_xx = (pde.reference(xs + h, t0, nu) - 2 * u0 + pde.reference(xs - h, t0, nu)) / h ** 2
        assert (u_t + u0 * u_x - nu * u_xx).abs().max() < 1e-4
    # the val grid shares no point with the test grid
    vx, vt, _ = problem.grid("val")
    assert not set(vx.tolist()) & set(x.tolist()) and not set(vt.tolist()) & set(t.tolist())


SMALL = {"data": "burgers-smooth", "hidden": "20", "layers": "4", "collocation": "1000", "adam_steps": "0",
         "lbfgs_steps": "150", "validate_every": "100"}  # ν = 0.1/π: no shock to resolve, solved in seconds


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("pinn") / "run"
    metrics = deepatlas.train("pinn", overrides=SMALL, out=path, max_time=30)
    return path, metrics


def test_a_short_run_beats_the_initial_condition_held_still(short_run):
    path, metrics = short_run
    value, trivial = metrics["test"]["rel_l2"], metrics["baseline"]["rel_l2"]
    assert trivial > 0.5 and value < 0.2 * trivial, (value, trivial)  # measured: 0.047 against 0.57
    assert (path / "solution.png").exists() and (path / "model.safetensors").exists()
    again = api.evaluate(path, with_baseline=True)
    assert again["rel_l2"] == pytest.approx(value) and again["baseline"]["rel_l2"] == pytest.approx(trivial)


def test_predict_reads_points_from_a_csv_or_one_point(short_run, tmp_path):
    path, _ = short_run
    points = tmp_path / "points.csv"
    points.write_text("x,t\n-0.5,0.25\n0.5,0.25\n2.0,0.5\n")
    rows = deepatlas.predict(path, points).rows
    assert [r["input"] for r in rows] == ["x=-0.5, t=0.25", "x=0.5, t=0.25", "x=2, t=0.5"]
    assert abs(rows[0]["predicted"] - rows[0]["exact"]) < 0.25 and rows[0]["exact"] > 0.5
    assert rows[2]["note"] == "outside the trained domain" and rows[2]["exact"] is None
    one = deepatlas.predict(path, "-0.5,0.25").rows
    assert one[0]["predicted"] == pytest.approx(rows[0]["predicted"], abs=1e-5)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DeepAtlasError, match="bad.csv: expected a CSV whose header starts with the columns x,t"):
        deepatlas.predict(path, bad)


def test_the_problem_refuses_other_data_in_one_line():
    with pytest.raises(DeepAtlasError, match="burgers-shock"):
        deepatlas.train("pinn", data="spiral", max_time=1)
