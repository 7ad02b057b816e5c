"""The "score_sde" entry: shapes and both samplers, the VE and VP marginals against an Euler–Maruyama simulation of
the forward SDE, continuous denoising score matching minimized by the true score of a Gaussian data set, the
predictor–corrector sampler and the probability flow ODE recovering that Gaussian from its exact score, the ODE's
likelihood equal to the analytic one, bits/dim bookkeeping, and a short learning test on 8×8 digits."""
import math

import pytest
import torch
from conftest import learn_digits

from deepatlas.models.generative.score_sde import (Config, ContinuousScoreMatching, ScoreSDE, VESDE, VPSDE, dsm_loss,
                                                    make_sde, ode_log_prob, ode_sample, pc_sample)

SDES = {"ve": VESDE(0.01, 50.0), "vp": VPSDE(0.1, 20.0)}


def _objective(**kw) -> ContinuousScoreMatching:
    torch.manual_seed(0)
    return ContinuousScoreMatching(ScoreSDE(Config(**kw)))


def _gaussian_score(sde, mu: float, s: float):
    """The exact score of p_t when the data are N(μ, s²I): N(m(t)μ, (m(t)²s² + s(t)²)I)."""
    def score(x, t):
        m, std = sde.marginal(torch.as_tensor(t))
        m, var = m.reshape(-1, *[1] * (x.dim() - 1)), (m ** 2 * s ** 2 + std ** 2).reshape(-1, *[1] * (x.dim() - 1))
        return -(x - m * mu) / var
    return score


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_shapes_and_samplers(sde):
    obj = _objective(data_shape=[1, 8, 8], channels=8, mults=[1, 2], sde=sde, sample_steps=8).eval()
    x = torch.rand(5, 1, 8, 8)
    assert obj.model.score(x, torch.rand(5)).shape == (5, 1, 8, 8)
    for sampler in obj.samplers:
        s = obj.sample(3, sampler=sampler)
        assert s.shape == (3, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
        s, frames = obj.sample(2, steps=20, sampler=sampler, trajectory=True)
        assert frames.dim() == 5 and frames.shape[1:] == (2, 1, 8, 8) and 5 <= len(frames) <= 30
        assert torch.equal(frames[-1], s)
    assert obj.samplers[0] == "pc"
    with pytest.raises(Exception):
        obj.sample(2, sampler="langevin")


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_forward_sde_marginals_match_the_closed_form(sde):
    """Euler–Maruyama on dx = f dt + g dw from x(0) = x0 (VE: the data perturbed by σ_min) gives at t the mean
    m(t)·x0 and the variance s(t)² of the perturbation kernel (VE: σ(t)², VP: 1 − m(t)²)."""
    torch.manual_seed(0)
    process = SDES[sde]
    x0 = torch.tensor([1.5, -0.5])
    x = x0.repeat(20000, 1)
    if sde == "ve":
        x = x + process.sigma_min * torch.randn_like(x)
    n = 1000
    for i in range(n):
        t = torch.tensor(i / n)
        x = x + process.drift(x, t) / n + process.diffusion(t) * math.sqrt(1 / n) * torch.randn_like(x)
        if i + 1 in (n // 2, n):
            m, std = process.marginal(torch.tensor((i + 1) / n))
            torch.testing.assert_close(x.mean(0), m * x0, atol=0.03 * max(1.0, std.item()), rtol=0)
            torch.testing.assert_close(x.var(0), (std ** 2).expand(2), rtol=0.05, atol=1e-3)
    if sde == "vp":
        m, std = process.marginal(torch.tensor(1.0))
        assert m < 0.01 and std.item() == pytest.approx(1.0, abs=1e-3)   # p_1 ≈ N(0, I), the prior


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_continuous_dsm_is_minimized_by_the_true_score(sde):
    """With Gaussian data N(μ, s²I) the true score of p_t gives the loss's minimum ½·D·m²s²/(m²s² + s(t)²) at each t;
    scaled or shifted scores pay ½s(t)²E‖δ‖² more."""
    torch.manual_seed(0)
    process, n, d, mu, s = SDES[sde], 200_000, 4, 0.7, 0.5
    x, z = mu + s * torch.randn(n, d), torch.randn(n, d)
    true = _gaussian_score(process, mu, s)
    for t in (0.3, 0.6, 0.95):
        tt = torch.full((n,), t)
        m, std = (v.item() for v in process.marginal(torch.tensor(t)))
        v = m ** 2 * s ** 2 + std ** 2
        best = dsm_loss(true, process, x, tt, z).mean().item()
        assert best == pytest.approx(0.5 * d * m ** 2 * s ** 2 / v, rel=0.02, abs=1e-4)
        for scale, shift in ((1.2, 0.0), (0.8, 0.0), (1.0, 0.3 / std), (1.0, -0.3 / std)):
            worse = dsm_loss(lambda y, u: scale * true(y, u) + shift, process, x, tt, z).mean().item()
            excess = 0.5 * std ** 2 * d * ((scale - 1) ** 2 / v + shift ** 2)
            assert worse - best == pytest.approx(excess, rel=0.3)


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_reverse_samplers_with_the_true_score_recover_the_data(sde):
    """From the prior, the pc sampler (in 64 dimensions, where the corrector's ‖z‖/‖s‖ step rule is meant to work)
    and the probability flow ODE with the exact score end at N(μ, s²I) (plus s(ε)², negligible here)."""
    torch.manual_seed(0)
    process, mu, s = SDES[sde], 0.7, 0.3
    score = _gaussian_score(process, mu, s)
    for corrector in (0, 1):
        x = pc_sample(score, process, process.prior_sample((2000, 64), "cpu"), 200, corrector, 0.16, 1e-3)
        assert x.mean().item() == pytest.approx(mu, abs=0.02)
        assert x.std(0).mean().item() == pytest.approx(s, abs=0.02)
    y = ode_sample(score, process, process.prior_sample((2000, 64), "cpu"), 1e-3, "rk4", 50, 1e-3)
    assert y.mean().item() == pytest.approx(mu, abs=0.02)
    assert y.std(0).mean().item() == pytest.approx(s, abs=0.02)


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_probability_flow_likelihood_equals_the_analytic_one(sde):
    """log p_ε(x) by the ODE (Hutchinson's divergence, dopri5) equals log N(x; m(ε)μ, v(ε)I), v = m²s² + s(t)², up to
    the prior's mismatch: the flow carries x to x(1) = m(1)μ + (x − m(ε)μ)·√(v(1)/v(ε)), where p_1 = N(m(1)μ, v(1)I)
    and the method reads the prior instead. (The Hutchinson estimate is exact here: the field's Jacobian is a
    multiple of I.)"""
    torch.manual_seed(0)
    process, mu, s, eps = SDES[sde], 0.2, 0.5, 1e-3
    x = (mu + s * torch.randn(64, 1, 3, 3)).double()
    logp, nfe = ode_log_prob(_gaussian_score(process, mu, s), process, x, eps, 1e-7)

    def marginal(t):
        m, std = process.marginal(torch.tensor(t, dtype=torch.float64))
        return m * mu, m ** 2 * s ** 2 + std ** 2

    def log_normal(y, mean, var):
        return torch.distributions.Normal(mean, var.sqrt()).log_prob(y).flatten(1).sum(1)

    (m0, v0), (m1, v1) = marginal(eps), marginal(1.0)
    x1 = m1 + (x - m0) * (v1 / v0).sqrt()
    exact = log_normal(x, m0, v0)
    torch.testing.assert_close(logp, exact - log_normal(x1, m1, v1) + process.prior_log_prob(x1), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(logp, exact, atol=0.05, rtol=0)  # the prior's mismatch is small (σ_max ≫ s)
    assert nfe > 10


def test_bits_per_dim_counts_dequantization_and_the_change_of_variables():
    """bpd = −log₂ p_model(2y − 1)/D − 1 + log₂ K: a uniform density on [−1, 1]^D gives exactly log₂ K bits (the
    uniform distribution over the K levels). The model is replaced by that density through its prior and zero field."""
    obj = _objective(data_shape=[1, 8, 8], channels=8, mults=[1, 2], sde="vp", levels=256).eval()
    x = torch.rand(3, 1, 8, 8)
    import deepatlas.models.generative.score_sde as mod
    original = mod.ode_log_prob
    mod.ode_log_prob = lambda score, sde, v, t_eps, tol: (torch.full((len(v),), -v[0].numel() * math.log(2.0)), 0)
    try:
        bits, _ = obj.nll_bits(x)
    finally:
        mod.ode_log_prob = original
    torch.testing.assert_close(bits, torch.full((3,), 8.0))
    y = obj.dequantize(x)
    k = (x * 255).round()
    assert ((y * 256 - k) >= 0).all() and ((y * 256 - k) < 1).all()


def test_sde_is_chosen_by_config():
    assert isinstance(make_sde(Config(sde="ve")), VESDE) and isinstance(make_sde(Config(sde="vp")), VPSDE)


def test_score_sde_learns_digits():
    """About 15 s of training on 8×8 digits (VP): the held-out DSM loss falls far below its start and the samples' FD
    to the test digits ends far below that of uniform noise (292 on this judge) and of the untrained model."""
    obj = _objective(data_shape=[1, 8, 8], channels=16, mults=[1, 2], sde="vp", sample_steps=30, ema=0.99)
    m = learn_digits(obj)
    assert m["after_loss"] < 0.5 * m["before_loss"], m
    assert m["after_fd"] < 0.3 * min(m["before_fd"], 292), m
