"""The "ffjord" entry: Hutchinson's estimator is unbiased, the exact trace is the Jacobian's, the flow's
log-density integrates to 1 (untrained and briefly trained), sampling inverts encoding, a short run beats a
fitted Gaussian's NLL, and `sample` writes samples and the density plot through the API."""
import math

import pytest
import torch

import deepatlas
from deepatlas.data import toy2d
from deepatlas.models.dynamics.ffjord import (FFJORD, Config, Dynamics, FlowObjective, exact_trace, hutchinson_trace,
                                              probe)


def _flow(**kw) -> FFJORD:
    torch.manual_seed(0)
    return FFJORD(Config(**{"hidden": 32, "depth": 2, **kw}))


def _trained(steps: int = 60, name: str = "moons", **kw) -> FlowObjective:
    """A small flow trained `steps` Adam steps on `name` (seconds)."""
    model = _flow(**kw)
    x = toy2d.splits(name)["train"][0]
    obj = FlowObjective(model)
    obj.data_spec = {"kind": "points", "source": name}
    model.scale.fill_(float(x.std()))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    obj.train()
    for _ in range(steps):
        loss, _ = obj.training_step((x[torch.randint(len(x), (256,), generator=generator)],))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return obj.eval()


def test_shapes_and_the_packed_state():
    model = _flow().eval()
    x = torch.randn(5, 2)
    assert model.log_prob(x).shape == (5,)
    state = torch.cat([x, torch.zeros(5, 1)], 1)
    d = model.augmented(torch.tensor(0.3), state)  # d/dt [z, Δlogp]
    assert d.shape == (5, 3)
    z = x.clone().requires_grad_(True)
    dz = model.augmented.f(torch.tensor(0.3), z)
    torch.testing.assert_close(d[:, :2], dz.detach())
    torch.testing.assert_close(d[:, 2], -exact_trace(dz, z, False))  # d log p / dt = −Tr(∂f/∂z)


def test_exact_trace_equals_the_brute_force_jacobian_trace():
    f = Dynamics(3, 16, 2)
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    f = f.double()
    t = torch.tensor(0.7, dtype=torch.float64)
    tr = exact_trace(f(t, z), z, False)
    brute = torch.stack([torch.autograd.functional.jacobian(lambda v: f(t, v[None])[0], zi).trace() for zi in z])
    torch.testing.assert_close(tr, brute)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(kind):
    """The mean of εᵀ(∂f/∂z)ε over many probes is the exact trace, within 4 standard errors."""
    torch.manual_seed(1)
    f = Dynamics(2, 16, 2).double()
    t = torch.tensor(0.2, dtype=torch.float64)
    k = 20_000
    z = torch.randn(1, 2, dtype=torch.float64).expand(k, 2).clone().requires_grad_(True)  # one point, k probes
    dz = f(t, z)
    eps = probe((k, 2), z, kind)
    assert kind != "rademacher" or set(eps.unique().tolist()) == {-1.0, 1.0}
    exact = exact_trace(dz, z, False)[0]  # keeps the graph for the next product
    estimates = hutchinson_trace(dz, z, eps, False)
    se = estimates.std() / math.sqrt(k)
    assert abs(estimates.mean() - exact) < 4 * se + 1e-12
    assert estimates.std() > 0  # a real estimator, not the exact trace in disguise


def _mass(log_prob, half: float, n: int) -> float:
    """∫ p over [−half, half]² by the midpoint rule on n × n cells."""
    h = 2 * half / n
    c = torch.linspace(-half + h / 2, half - h / 2, n)
    grid = torch.cartesian_prod(c, c)
    with torch.no_grad():
        logp = torch.cat([log_prob(g) for g in grid.split(5000)])
    return float(logp.exp().sum() * h * h)


def test_log_density_integrates_to_one_untrained_and_briefly_trained():
    untrained = _flow(eval_tol=1e-6).eval()
    assert _mass(untrained.log_prob, 6.0, 100) == pytest.approx(1.0, abs=0.01)
    trained = _trained(40, eval_tol=1e-6)
    assert _mass(trained.log_prob, 3.0, 120) == pytest.approx(1.0, abs=0.03)


def test_sampling_then_encoding_returns_the_base_points():
    obj = _trained(20, eval_tol=1e-8)
    z = torch.randn(64, 2)
    x = obj.model.decode(z)                       # z at t1 -> x at t0
    assert not torch.allclose(x, z, atol=0.05)    # the flow moved them
    torch.testing.assert_close(obj.model.encode(x), z, atol=1e-4, rtol=1e-4)


def test_adjoint_and_solver_gradients_agree():
    model = _flow(atol=1e-8, rtol=1e-8)
    x = torch.randn(16, 2)
    grads = {}
    for how in ("solver", "adjoint"):
        model.zero_grad()
        torch.manual_seed(3)  # the same Hutchinson probe for both
        (-model.log_prob(x, trace="hutchinson", adjoint=how == "adjoint").mean()).backward()
        grads[how] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads["adjoint"], grads["solver"], atol=1e-4, rtol=1e-3)


def test_a_short_run_beats_a_fitted_gaussian():
    """~80 steps on two moons: the test NLL falls clearly below the best single Gaussian's (mean and covariance
    fitted on train), which an untrained flow (≈ a standard Gaussian of the scaled data) cannot beat."""
    splits = toy2d.splits("moons")
    x, test = splits["train"][0], splits["test"][0][:1000]
    gaussian = torch.distributions.MultivariateNormal(x.mean(0), torch.cov(x.T))
    baseline = -gaussian.log_prob(test).mean().item()
    untrained = _flow().eval()
    untrained.scale.fill_(float(x.std()))
    assert -untrained.log_prob(test).mean().item() > baseline
    obj = _trained(80)
    logs = obj.validation_step((test,))
    assert logs["nll"].item() < baseline - 0.1, (logs["nll"].item(), baseline)
    true = -toy2d.density("moons").log_prob(test).mean().item()
    assert logs["nll_gap"].item() == pytest.approx(logs["nll"].item() - true, abs=1e-4)


def test_sample_through_the_api(tmp_path):
    deepatlas.train("ffjord", out=tmp_path / "run", overrides={"epochs": "1", "hidden": "8", "depth": "1",
                                                               "batch_size": "2000", "rtol": "1e-2", "atol": "1e-2",
                                                               "eval_tol": "1e-2"})
    assert (tmp_path / "run" / "density.png").is_file()  # drawn at the end of training
    result = deepatlas.sample(tmp_path / "run", n=300)
    files = [str(f) for f in result["files"]]
    assert result["n"] == 300 and any(f.endswith("samples.png") for f in files)
    assert any(f.endswith("samples-density.png") for f in files)
    samples = deepatlas.load(tmp_path / "run")
    assert samples is not None
