"""The "ncsn" entry: shapes, the geometric noise scales, denoising score matching minimized by the true score of a
Gaussian data set, annealed Langevin dynamics recovering a Gaussian mixture from its exact score, and a short
learning test on 8×8 digits."""
import math

import pytest
import torch
from conftest import learn_digits

from deepatlas.models.generative.ncsn import (NCSN, Config, ScoreMatching, annealed_langevin, dsm_loss, sigmas)


def _objective(**kw) -> ScoreMatching:
    torch.manual_seed(0)
    return ScoreMatching(NCSN(Config(**kw)))


@pytest.mark.parametrize("shape", [[1, 8, 8], [3, 16, 16]])
def test_shapes_and_samples(shape):
    obj = _objective(data_shape=shape, channels=8, mults=[1, 2], levels=4, steps_per_level=2).eval()
    x = torch.rand(5, *shape)
    assert obj.model.score(x, torch.full((5,), 0.3)).shape == (5, *shape)
    assert obj.model.score(x, torch.tensor(0.3), average=True).shape == (5, *shape)
    s = obj.sample(3)
    assert s.shape == (3, *shape) and s.min() >= 0 and s.max() <= 1
    s, frames = obj.sample(2, steps=3, trajectory=True)
    assert s.shape == (2, *shape) and frames.dim() == 5 and frames.shape[1:] == (2, *shape)
    assert 10 <= len(frames) <= 30 and frames.min() >= 0 and frames.max() <= 1
    assert torch.equal(frames[-1], s)
    assert obj.samplers[0] == "langevin"
    with pytest.raises(Exception):
        obj.sample(2, sampler="ode")


def test_score_is_divided_by_sigma():
    obj = _objective(data_shape=[1, 8, 8], channels=8, mults=[1, 2])
    x, sigma = torch.rand(4, 1, 8, 8), torch.full((4,), 0.25)
    raw = obj.model.net(x, sigma.log())
    torch.testing.assert_close(obj.model.score(x, sigma), raw / 0.25)


def test_sigmas_are_geometric_with_the_configured_ends():
    s = sigmas(Config(levels=7, sigma_max=50.0, sigma_min=0.01))
    assert len(s) == 7
    torch.testing.assert_close(s[0], torch.tensor(50.0))
    torch.testing.assert_close(s[-1], torch.tensor(0.01))
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (0.01 / 50.0) ** (1 / 6)))
    assert (ratios < 1).all()


def test_dsm_is_minimized_by_the_true_score_of_a_gaussian():
    """Data N(μ, s²I): the perturbed data are N(μ, (s² + σ²)I), whose score −(x̃ − μ)/(s² + σ²) minimizes the
    σ²-weighted DSM loss at ½·D·s²/(s² + σ²); scaled or shifted scores do worse."""
    torch.manual_seed(0)
    n, d, mu, s = 200_000, 4, 0.7, 0.5
    x = mu + s * torch.randn(n, d)
    z = torch.randn(n, d)

    def loss(sigma, scale=1.0, shift=0.0):
        sig = torch.full((n,), sigma)
        true = lambda y, sg: scale * -(y - mu) / (s ** 2 + sg[:, None] ** 2) + shift
        return dsm_loss(true, x, sig, z).mean().item()

    for sigma in (0.05, 0.5, 3.0):
        best = loss(sigma)
        assert best == pytest.approx(0.5 * d * s ** 2 / (s ** 2 + sigma ** 2), rel=0.01)
        v = s ** 2 + sigma ** 2
        for scale, shift in ((1.2, 0.0), (0.8, 0.0), (1.0, 0.2 / sigma), (1.0, -0.2 / sigma)):
            # the excess of s* + δ is ½σ²E‖δ‖² (the cross term vanishes at the optimum): small at small σ, yet > 0
            excess = 0.5 * sigma ** 2 * d * ((scale - 1) ** 2 / v + shift ** 2)
            assert loss(sigma, scale, shift) - best == pytest.approx(excess, rel=0.3)


def _mixture_score(means: torch.Tensor, weights: torch.Tensor, std: float):
    """∇ log Σ_k w_k N(x; m_k, (std² + σ²)I): the exact score of the mixture perturbed by N(0, σ²I)."""
    def score(x, sigma):
        var = std ** 2 + sigma ** 2
        diff = means[None] - x[:, None]                                 # (N, K, D)
        logits = weights.log()[None] - diff.square().sum(-1) / (2 * var)  # (N, K)
        return (logits.softmax(-1)[..., None] * diff).sum(1) / var      # (N, D)
    return score


def test_annealed_langevin_with_the_true_score_recovers_a_mixture():
    """Two well separated modes with weights 0.8/0.2: plain Langevin from one scale cannot move mass between them,
    annealed Langevin with the exact perturbed scores gets the weights, the means and the spread right."""
    torch.manual_seed(0)
    means, weights, std = torch.tensor([[-4.0, 0.0], [4.0, 0.0]]), torch.tensor([0.8, 0.2]), 0.5
    score = _mixture_score(means, weights, std)
    levels = sigmas(Config(levels=10, sigma_max=10.0, sigma_min=0.1))
    x = annealed_langevin(score, 20 * torch.rand(4000, 2) - 10, levels, steps=100, step_lr=3e-3, denoise=False)
    right = x[:, 0] > 0
    assert right.float().mean().item() == pytest.approx(0.2, abs=0.04)
    spread = math.sqrt(std ** 2 + 0.1 ** 2)  # the chain ends at the last level: the data perturbed by σ_L = 0.1
    for mask, m in ((right, means[1]), (~right, means[0])):
        torch.testing.assert_close(x[mask].mean(0), m, atol=0.08, rtol=0)
        torch.testing.assert_close(x[mask].std(0), torch.full((2,), spread), atol=0.05, rtol=0)
    # one scale alone (σ_L, the same steps): the chains stay in the mode they start nearest, half of them right
    y = annealed_langevin(score, 20 * torch.rand(4000, 2) - 10, levels[-1:], steps=1000, step_lr=3e-3, denoise=False)
    assert (y[:, 0] > 0).float().mean().item() > 0.4


def test_final_denoising_step_is_tweedie():
    """For Gaussian data the denoising step x + σ²·s(x, σ) is the posterior mean E[x | x̃], which shrinks x̃ towards μ
    by s²/(s² + σ²)."""
    mu, s, sigma = 0.3, 0.2, 0.1
    score = lambda y, sg: -(y - mu) / (s ** 2 + sg ** 2)
    y = torch.randn(10, 3)
    out = annealed_langevin(score, y, torch.tensor([sigma]), steps=0, step_lr=1e-3, denoise=True)
    torch.testing.assert_close(out, mu + (y - mu) * s ** 2 / (s ** 2 + sigma ** 2))


def test_ncsn_learns_digits():
    """About 15 s of training on 8×8 digits: the held-out DSM loss falls far below its start and the samples' FD to
    the test digits ends far below that of uniform noise (292 on this judge) and of the untrained model."""
    obj = _objective(data_shape=[1, 8, 8], channels=16, mults=[1, 2], levels=8, sigma_max=1.0, sigma_min=0.02,
                     steps_per_level=5, step_lr=4e-4, ema=0.99)
    m = learn_digits(obj)
    assert m["after_loss"] < 0.3 * m["before_loss"], m
    assert m["after_fd"] < 0.3 * min(m["before_fd"], 292), m
    assert not math.isnan(m["after_fd"])
