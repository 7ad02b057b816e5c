"""The "gan" entry: both architectures' shapes and DCGAN's rules, the generator losses against their formulas
(and where their gradients vanish), alternating updates that each move one player only, and a short
learning test on the 8-gaussians ring."""
import math

import pytest
import torch
from torch import nn

from deepatlas.data import toy2d
from deepatlas.models.generative import gan
from deepatlas.models.generative.gan import GAN, Adversarial, Config, discriminator_loss, generator_loss


def _objective(**kw) -> Adversarial:
    torch.manual_seed(0)
    return Adversarial(GAN(Config(**kw)))


def test_point_mlps_shapes():
    obj = _objective(data_shape=[2], latent=3, hidden=32, depth=2)
    z = torch.randn(5, 3)
    assert obj.model.generator(z).shape == (5, 2)
    assert obj.model.discriminator(torch.randn(5, 2)).shape == (5,)
    assert obj.sample(7).shape == (7, 2)
    assert not any(isinstance(m, nn.Conv2d) for m in obj.modules())


@pytest.mark.parametrize("shape", [[1, 8, 8], [1, 16, 16], [3, 28, 28]])
def test_dcgan_shapes_and_rules(shape):
    obj = _objective(data_shape=shape, latent=10, width=8, extra_layers=1)
    G, D = obj.model.generator, obj.model.discriminator
    x = G(torch.randn(4, 10))
    assert x.shape == (4, *shape) and x.abs().max() <= 1  # tanh output in [−1, 1]
    assert D(x).shape == (4,)
    s = obj.eval().sample(6)
    assert s.shape == (6, *shape) and s.min() >= 0 and s.max() <= 1  # data space [0, 1]
    g_layers, d_layers = list(G.net), list(D.net)
    # the generator: transposed convolutions up, batch norm + ReLU, tanh out with no batch norm before it
    assert isinstance(g_layers[0], nn.ConvTranspose2d) and isinstance(g_layers[-1], nn.Tanh)
    assert not isinstance(g_layers[-2], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g_layers) == 1 + gan._stages(shape)
    assert {type(m) for m in g_layers} <= {nn.ConvTranspose2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Tanh}
    # the discriminator: no batch norm on the input layer, LeakyReLU(0.2), strided convolutions, no pooling/FC
    assert isinstance(d_layers[0], nn.Conv2d) and isinstance(d_layers[1], nn.LeakyReLU)
    assert all(m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in d_layers) == gan._stages(shape)
    assert not any(isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d)) for m in obj.modules())


def test_generator_losses_match_their_formulas_and_gradients():
    logits = torch.tensor([-12.0, -3.0, 0.0, 2.5], requires_grad=True)
    d = torch.sigmoid(logits).detach()
    ns = generator_loss(logits, "nonsaturating")
    mm = generator_loss(logits, "minimax")
    torch.testing.assert_close(ns, -d.log().mean(), rtol=1e-5, atol=1e-6)  # −log D(G(z))
    torch.testing.assert_close(mm, (1 - d).log().mean(), rtol=1e-5, atol=1e-6)  # log(1 − D(G(z)))
    (g_ns,) = torch.autograd.grad(ns, logits)
    (g_mm,) = torch.autograd.grad(mm, logits)
    torch.testing.assert_close(g_ns, -(1 - d) / 4)  # d/dl softplus(−l) = −σ(−l)
    torch.testing.assert_close(g_mm, -d / 4)  # d/dl −softplus(l) = −σ(l)
    # where D rejects the fakes (D(G(z)) ≈ 6e-6), minimax's gradient vanishes and the non-saturating one does not
    assert abs(g_mm[0]) < 1e-5 and abs(g_ns[0]) > 0.24
    # the discriminator's loss is −log D(x) − log(1 − D(G(z))); 2 log 2 when D cannot tell (D = 1/2)
    torch.testing.assert_close(discriminator_loss(torch.zeros(3), torch.zeros(3)), torch.tensor(2 * math.log(2)))
    with pytest.raises(ValueError):
        generator_loss(logits, "wasserstein")


@pytest.mark.parametrize("shape", [[2], [1, 8, 8]])
def test_each_optimize_call_moves_one_player_only(shape):
    obj = _objective(data_shape=shape, latent=4, hidden=16, depth=2, width=4, d_steps=2).train()
    groups = obj.optimizer_groups()
    assert set(groups) == {"discriminator", "generator"}
    assert all(g["betas"] == (0.5, 0.999) for groups_ in groups.values() for g in groups_)  # DCGAN's β1
    optimizers = {k: torch.optim.Adam(g, lr=1e-2) for k, g in groups.items()}
    players = {"discriminator": obj.model.discriminator, "generator": obj.model.generator}
    calls = []

    def snapshot():
        return {k: [p.detach().clone() for p in m.parameters()] for k, m in players.items()}

    def optimize(name, loss):
        before = snapshot()
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        after = snapshot()
        other = "generator" if name == "discriminator" else "discriminator"
        assert all(torch.equal(a, b) for a, b in zip(before[other], after[other])), f"{name} step moved {other}"
        assert any(not torch.equal(a, b) for a, b in zip(before[name], after[name])), f"{name} step moved nothing"
        calls.append(name)

    batch = (torch.rand(16, *shape), torch.zeros(16, dtype=torch.long))
    loss, logs = obj.training_step(batch, optimize)
    assert calls == ["discriminator", "discriminator", "generator"]  # d_steps D updates, then one G update
    assert torch.isfinite(loss) and {"d_loss", "g_loss", "d_real", "d_fake"} <= set(logs)
    val = obj.eval().validation_step(batch)
    assert {"loss", "d_loss", "g_loss"} <= set(val) and all(torch.isfinite(v) for v in val.values())


def test_parzen_nll_matches_the_mixture_density(monkeypatch):
    monkeypatch.setattr(gan, "PARZEN_BANDWIDTHS", [0.3])
    x, s = torch.randn(6, 3), torch.randn(9, 3)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(9)),
        torch.distributions.Independent(torch.distributions.Normal(s, 0.3), 1))
    torch.testing.assert_close(gan.parzen_nll(x, s), -mix.log_prob(x).mean(), rtol=1e-5, atol=1e-5)


def test_gan_learns_the_ring():
    """A few hundred alternating steps pull the samples onto the 8-gaussians ring's modes."""
    d = toy2d.density("8gaussians")
    x = toy2d.splits("8gaussians")["train"][0]
    obj = _objective(data_shape=[2], latent=2, hidden=64, depth=2)
    optimizers = {k: torch.optim.Adam(g, lr=2e-3) for k, g in obj.optimizer_groups().items()}

    def optimize(name, loss):
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    def distance_to_modes() -> float:
        torch.manual_seed(1)
        return torch.cdist(obj.sample(2000), d.modes).min(-1).values.mean().item()

    before = distance_to_modes()
    generator = torch.Generator().manual_seed(0)
    for _ in range(600):
        obj.training_step((x[torch.randint(len(x), (256,), generator=generator)],), optimize)
    after = distance_to_modes()
    assert after < 0.3 * before, (before, after)
