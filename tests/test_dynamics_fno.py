"""fno (issue 21): the Fourier layer is a circular convolution, the same weights run on any grid, and it learns
Burgers' solution operator; users' .npz fields train, evaluate and predict."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import deepatlas
from deepatlas import api
from deepatlas.data import burgers
from deepatlas.models.dynamics.fno import FNO, Config, SpectralConv


@pytest.mark.parametrize("n", [16, 15])
def test_the_fourier_layer_is_a_circular_convolution_with_its_kernel(n):
    torch.manual_seed(0)
    layer = SpectralConv(3, 2, modes=n // 2 + 1).double()  # every mode kept
    with torch.no_grad():
        layer.weight.normal_()
    v = torch.randn(4, 3, n, dtype=torch.float64)  # (B, C_in, N)
    kappa = layer.kernel(n)  # (C_in, C_out, N)
    shift = (torch.arange(n)[:, None] - torch.arange(n)[None, :]) % n  # (x, y) -> x - y mod N
    dense = kappa[:, :, shift]  # (C_in, C_out, N, N): the circulant matrix of each channel pair
    expected = torch.einsum("ioxy,biy->box", dense, v)  # y_o[x] = Σ_i Σ_y κ_io[x - y] v_i[y]
    assert torch.allclose(layer(v), expected, atol=1e-5)
    assert torch.allclose(layer.as_matrices(v), expected, atol=1e-5)  # the real-arithmetic form ONNX gets
    fewer = SpectralConv(3, 2, modes=3).double()  # and with modes dropped
    assert torch.allclose(fewer.as_matrices(v), fewer(v), atol=1e-10)


def test_modes_beyond_k_max_are_dropped():
    layer = SpectralConv(1, 1, modes=4)
    x = torch.arange(64) / 64
    high = torch.cos(2 * math.pi * 9 * x)[None, None]  # mode 9
    low = torch.cos(2 * math.pi * 2 * x)[None, None]  # mode 2
    assert layer(high).abs().max() < 1e-6 and layer(low).abs().max() > 1e-4


def test_the_same_weights_run_at_128_and_512_points():
    torch.manual_seed(0)
    model = FNO(Config()).eval()
    fields = burgers.grf(3, 512, torch.Generator().manual_seed(1)).float()[..., None]  # (3, 512, 1)
    with torch.no_grad():
        fine, coarse = model(fields), model(fields[:, ::4])
    assert fine.shape == (3, 512, 1) and coarse.shape == (3, 128, 1)
    # the grid points both share: close, the GELUs' harmonics aliasing differently on the two grids aside
    assert burgers.relative_l2(coarse, fine[:, ::4]).max() < 0.02
    layer = model.layers[0].spectral  # a single Fourier layer on a band-limited field: exact on both grids
    with torch.no_grad():
        low = torch.fft.irfft(torch.fft.rfft(fields[..., 0])[:, :20], n=512)[:, None]  # (3, 1, 512), 20 modes
        lifted = low.expand(3, 64, 512).contiguous()
        assert torch.allclose(layer(lifted)[..., ::4], layer(lifted[..., ::4]), atol=1e-5)


def test_shapes_and_channels():
    model = FNO(Config(in_channels=2, out_channels=3, width=8, modes=4, layers=2, projection=16))
    assert model(torch.randn(5, 33, 2)).shape == (5, 33, 3)
    assert FNO(Config(grid=False, width=8))(torch.randn(2, 10, 1)).shape == (2, 10, 1)


def test_fno_learns_burgers_beyond_the_trivial_baseline(tmp_path):
    """Burgers to T = 0.1 (ν = 0.1) from 200 random fields, solved by our solver at 256 points and given at 64, as a
    user's .npz; a small config for 10 epochs ends far under the best trivial predictor (held-still input or its
    conserved mean, rel_l2 about 0.45 here), which a network that cannot learn the operator would not pass."""
    u0 = burgers.grf(200, 256, torch.Generator().manual_seed(0))
    np.savez(tmp_path / "burgers.npz", x=u0[:, ::4].numpy(), y=burgers.solve(u0, 0.1, 0.1)[:, ::4].numpy())
    result = deepatlas.train("fno", data=str(tmp_path / "burgers.npz"), out=tmp_path / "run",
                             overrides={"width": "16", "modes": "12", "epochs": "10", "batch_size": "10"})
    assert result["baseline"]["rel_l2"] > 0.3
    assert result["test"]["rel_l2"] < 0.25 * result["baseline"]["rel_l2"], (result["test"], result["baseline"])
    assert (tmp_path / "run" / "predictions.png").stat().st_size > 0


def test_the_embedded_run_scores_the_same_weights_at_512_points(tmp_path):
    result = deepatlas.train("fno", data="burgers-32", out=tmp_path / "run",
                             overrides={"width": "8", "modes": "8", "epochs": "1", "batch_size": "50"})
    test = result["test"]
    assert test["resolution_ratio"] == pytest.approx(test["rel_l2_512"] / test["rel_l2"], rel=1e-6)
    assert deepatlas.evaluate(tmp_path / "run")["rel_l2_512"] == pytest.approx(test["rel_l2_512"], rel=1e-5)


def _npz(path, n=60, points=48, seed=0):
    """A small operator: u = the field shifted by a quarter period and smoothed (a linear map), two output
    channels (it and its square), in units far from 1."""
    fields = burgers.grf(n, points, torch.Generator().manual_seed(seed)).numpy() * 40 + 300
    shifted = np.roll(fields, points // 4, axis=1)
    smooth = (np.roll(shifted, 1, 1) + shifted + np.roll(shifted, -1, 1)) / 3
    np.savez(path, x=fields, y=np.stack([smooth, smooth ** 2 / 300], -1))


def test_users_npz_trains_evaluates_and_predicts(tmp_path, cli_run):
    _npz(tmp_path / "fields.npz")
    code, out, err = cli_run("train", "fno", "--data", tmp_path / "fields.npz", "--out", tmp_path / "run",
                             "--set", "epochs=30", "--set", "width=16", "--set", "modes=8", "--set", "batch_size=8")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["rel_l2"] < metrics["baseline"]["rel_l2"], metrics
    code, out, err = cli_run("eval", tmp_path / "run", "--json")
    assert code == 0 and json.loads(out)["rel_l2"] == pytest.approx(metrics["test"]["rel_l2"], rel=1e-4)
    fields = np.load(tmp_path / "fields.npz")["x"][:3]
    np.savez(tmp_path / "ask.npz", x=fields[:, ::2])  # another resolution: 24 points
    code, out, err = cli_run("predict", tmp_path / "run", tmp_path / "ask.npz", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["input"] for r in rows] == ["ask.npz[0]", "ask.npz[1]", "ask.npz[2]"]
    predicted = np.array([r["predicted"] for r in rows])  # (3, 24, 2) in the file's units
    assert predicted.shape == (3, 24, 2) and 200 < predicted[..., 0].mean() < 400
    run = api.load(tmp_path / "run")
    with torch.no_grad():
        direct = run.objective(torch.as_tensor(fields[:, ::2], dtype=torch.float32)[..., None])
    assert np.allclose(predicted, direct.numpy(), atol=1e-3)


def test_predict_refuses_other_channels_in_one_line(tmp_path, cli_run, refused):
    _npz(tmp_path / "fields.npz", n=12)
    code, _, err = cli_run("train", "fno", "--data", tmp_path / "fields.npz", "--out", tmp_path / "run",
                           "--set", "epochs=1", "--set", "width=8", "--set", "modes=4")
    assert code == 0, err
    np.savez(tmp_path / "two.npz", x=np.zeros((2, 16, 2)))
    refused("predict", tmp_path / "run", tmp_path / "two.npz", message="2 input channels; this run maps 1 input")
    np.savez(tmp_path / "none.npz", z=np.zeros((2, 16)))
    refused("predict", tmp_path / "run", tmp_path / "none.npz", message="needs input fields `x` (or `a`); it holds z")
