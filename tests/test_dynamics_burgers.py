"""Burgers' equation (issue 21): the project's pseudo-spectral solver against the exact Cole–Hopf solution, its
conservation of the mean, the Gaussian random field's spectrum, and the operator-learning sets built on them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepatlas.data import burgers
from deepatlas.errors import DeepAtlasError


def shock_grid(n: int) -> torch.Tensor:
    return -1 + 2 * torch.arange(n, dtype=torch.float64) / n  # the periodic [-1, 1), as the PINN's problem


def test_the_solver_matches_cole_hopf_through_the_shock():
    nu = 0.01 / math.pi  # Raissi et al.'s setting: a front of width ~ν forms at x = 0 from t ≈ 0.3
    x = shock_grid(1024)
    times = torch.tensor([0.25, 0.5, 1.0])
    u = burgers.solve(-torch.sin(math.pi * x)[None], nu, 1.0, length=2.0, times=times)  # (1, 3, N)
    assert u.shape == (1, 3, 1024) and u.dtype == torch.float64
    for i, t in enumerate(times.tolist()):
        exact = burgers.cole_hopf(x, t, nu)
        assert (u[0, i] - exact).abs().max() < 1e-4, t  # the front's slope is about 1/ν ≈ 300 here
    assert torch.allclose(burgers.solve(-torch.sin(math.pi * x)[None], nu, 1.0, length=2.0), u[:, -1])


def test_cole_hopf_is_converged_and_starts_at_the_sine():
    x = torch.linspace(-1, 1, 41, dtype=torch.float64)
    nu = 0.01 / math.pi
    assert torch.allclose(burgers.cole_hopf(x, 1.0, nu, 120), burgers.cole_hopf(x, 1.0, nu, 200), atol=1e-10)
    assert torch.allclose(burgers.cole_hopf(x, 1e-6, 0.1), -torch.sin(math.pi * x), atol=1e-3)


def test_the_solver_conserves_the_mean_and_is_batched():
    u0 = burgers.grf(6, 256, torch.Generator().manual_seed(3))  # (6, 256), means of order 1
    u = burgers.solve(u0, 0.05, 0.5, times=torch.tensor([0.1, 0.5]), dt=0.01)
    assert u.shape == (6, 2, 256)
    assert torch.allclose(u.mean(-1), u0.mean(-1)[:, None].expand(6, 2), atol=1e-12)
    assert u[:, 1].abs().max() <= u0.abs().max() + 1e-9  # the maximum principle
    one = burgers.solve(u0[2:3], 0.05, 0.5, dt=0.01)
    assert torch.allclose(one[0], u[2, 1], atol=1e-12)  # a sample solved alone: the same (same steps)
    faster = burgers.solve(u0, 0.05, 0.5, cfl=2.0, precision=torch.float32)
    assert faster.dtype == torch.float64 and torch.allclose(faster, u[:, 1], atol=1e-4)


def test_the_random_field_has_the_stated_spectrum():
    n, count = 64, 4000
    u0 = burgers.grf(count, n, torch.Generator().manual_seed(0))
    c = torch.fft.rfft(u0) / n  # (count, K): u = Σ c_k e^{2πikx}
    power = c.abs().square().mean(0)[:9]  # E|c_k|² = λ_k (L = 1): λ_0 for the real mean, 2 · λ_k / 2 beyond
    expected = burgers.grf_variance(n)[:9]
    assert torch.allclose(power, expected, rtol=0.1), (power / expected)
    assert abs(float(u0.mean())) < 0.05  # mean 0
    assert expected[0] == pytest.approx(1.0) and expected[1] == pytest.approx(625 / (4 * math.pi ** 2 + 25) ** 2)


def test_the_embedded_set_subsamples_one_solution_at_two_resolutions():
    data = burgers.load("burgers-64")
    assert (len(data.train), len(data.val), len(data.test)) == (1000, 100, 200)
    assert data.train.a.shape == (1000, 64, 1) and data.test.a_fine.shape == (200, 512, 1)
    assert data.train.a_fine is None  # training sees one resolution only
    assert torch.equal(data.test.a_fine[:, ::8], data.test.a) and torch.equal(data.test.u_fine[:, ::8], data.test.u)
    assert data.spec["resolution"] == 64 and data.spec["nu"] == 0.1 and data.dims == {"in_channels": 1,
                                                                                       "out_channels": 1}
    again = burgers.load("burgers")
    assert torch.equal(again.test.u[:, ::2], data.test.u)  # the same solutions, every other point
    assert not torch.equal(data.train.a[:200], data.test.a)  # splits from their own seeds
    u0, uT = burgers.simulate("test")  # (200, HIGH_RES): the solver kept each mean on its own grid
    assert torch.allclose(uT.mean(1), u0.mean(1), atol=1e-5)
    description, values = burgers.baseline(data.spec, data.train, data.test)
    assert "spatial mean" in description and 0.01 < values["rel_l2"] < 0.1


@pytest.mark.parametrize("name, message", [
    ("burgers-100", "power of 2"), ("burgers-2048", "power of 2"), ("burgers-128-0", "viscosity"),
    ("burgers-128-x", "unknown dataset"), ("burger", "unknown dataset")])
def test_bad_names_are_one_line(name, message):
    with pytest.raises(DeepAtlasError, match=message):
        burgers.load(name)


def test_users_npz_is_read_in_either_spelling(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", a=rng.normal(size=(10, 32)), u=rng.normal(size=(10, 32, 2)))
    data = burgers.load(str(tmp_path / "f.npz"))
    assert data.dims == {"in_channels": 1, "out_channels": 2} and len(data.train) == 6
    assert data.spec["kind"] == "file" and data.spec["fine"] is None


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((5, 8))}, "needs input fields `x` (or `a`) and output fields `y` (or `u`); it holds x"),
    ({"x": np.zeros((5, 8)), "y": np.zeros((5, 9))}, "differ in samples or grid points"),
    ({"x": np.zeros((5,)), "y": np.zeros((5,))}, "must be numbers of shape (n, N) or (n, N, channels)"),
    ({"x": np.full((5, 8), np.nan), "y": np.zeros((5, 8))}, "NaN or infinite"),
    ({"x": np.zeros((2, 8)), "y": np.zeros((2, 8))}, "2 samples"),
])
def test_bad_npz_is_refused_in_one_line(tmp_path, refused, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    err = refused("train", "fno", "--data", path, "--out", tmp_path / "run", message=message)
    assert str(path) in err


def test_a_file_that_is_not_an_npz_is_one_line(tmp_path, refused):
    path = tmp_path / "fields.npz"
    path.write_text("x,y\n1,2\n")
    err = refused("train", "fno", "--data", path, "--out", tmp_path / "run", message="not a readable NumPy .npz")
    assert str(path) in err
