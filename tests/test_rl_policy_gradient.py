"""The on-policy actor-critics "ppo" and "a2c": PPO's clipped surrogate on crafted ratios and advantages,
advantage normalization, the clipped value loss, A2C's n-step returns against a hand computation, the entropy
bonus's sign, and short learning runs (CartPole for both, Pendulum's continuous actions for PPO)."""
import pytest
import torch

import deepatlas
from deepatlas.data import envs
from deepatlas.models.rl import a2c, ppo

EPS = 0.2


def test_clipped_objective_matches_the_formula():
    ratio = torch.tensor([0.5, 0.9, 1.0, 1.1, 1.5])
    # min(r A, clip(r, 0.8, 1.2) A), by hand
    positive = ppo.clipped_objective(ratio, torch.full((5,), 2.0), EPS)
    assert torch.allclose(positive, torch.tensor([1.0, 1.8, 2.0, 2.2, 2.4]))   # r = 1.5 clipped to 1.2
    negative = ppo.clipped_objective(ratio, torch.full((5,), -2.0), EPS)
    assert torch.allclose(negative, torch.tensor([-1.6, -1.8, -2.0, -2.2, -3.0]))  # r = 0.5 clipped to 0.8
    # the gradient vanishes exactly where the ratio moved past the clip range in the advantage's favour
    r = ratio.clone().requires_grad_()
    advantage = torch.tensor([2.0, 2.0, -2.0, -2.0, 2.0])
    ppo.clipped_objective(r, advantage, EPS).sum().backward()
    assert r.grad.tolist() == [2.0, 2.0, -2.0, -2.0, 0.0]
    r = torch.tensor([0.5, 1.5], requires_grad=True)
    ppo.clipped_objective(r, torch.tensor([-1.0, -1.0]), EPS).sum().backward()
    assert r.grad.tolist() == [0.0, -1.0]  # r < 1 - eps with A < 0: no gain from lowering it further


def test_advantage_normalization_per_minibatch():
    advantage = torch.tensor([1.0, 2.0, 3.0, 10.0])
    normalized = ppo.normalize(advantage)
    assert normalized.mean().abs() < 1e-6 and normalized.std() == pytest.approx(1.0, abs=1e-6)
    cfg = ppo.Config()
    log_prob = torch.log(torch.tensor([0.2, 0.5, 0.4, 0.9]))
    old = torch.log(torch.tensor([0.25, 0.5, 0.5, 0.8]))
    zeros = torch.zeros(4)
    loss = lambda a, c: ppo.ppo_loss(log_prob, old, a, zeros, zeros, zeros, zeros, c, EPS)["policy_loss"]
    # normalized: an affine change of the advantages changes nothing
    assert loss(advantage, cfg) == pytest.approx(loss(5 * advantage - 7, cfg).item(), abs=1e-6)
    expected = -ppo.clipped_objective((log_prob - old).exp(), normalized, EPS).mean()
    assert loss(advantage, cfg) == pytest.approx(expected.item(), abs=1e-6)
    raw = ppo.Config(normalize_advantages=False)
    assert loss(advantage, raw) == pytest.approx(-ppo.clipped_objective((log_prob - old).exp(), advantage,
                                                                        EPS).mean().item(), abs=1e-6)


def test_clipped_value_loss_is_the_larger_error():
    cfg = ppo.Config(value_clip=0.5)
    zeros = torch.zeros(2)
    value, old_value, returns = torch.tensor([2.0, 0.2]), torch.tensor([0.0, 0.0]), torch.tensor([3.0, 1.0])
    logs = ppo.ppo_loss(zeros, zeros, torch.tensor([1.0, -1.0]), value, old_value, returns, zeros, cfg, EPS)
    # sample 0: unclipped (2-3)^2 = 1, clipped (0.5-3)^2 = 6.25 -> 6.25; sample 1: 0.64 vs (0.2-1)^2 -> 0.64
    assert logs["value_loss"].item() == pytest.approx((6.25 + 0.64) / 2)


def test_nstep_returns_by_hand():
    gamma = 0.5
    # three environments over T = 3 steps: no end; a termination at t = 1; a time-limit truncation at t = 0
    rewards = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 3.0, 1.0]])
    values = torch.tensor([[0.3, 0.7, 0.1], [0.2, 0.4, 0.6], [0.9, 0.5, 0.8]])
    next_values = torch.tensor([[0.2, 0.4, 8.0], [0.9, 99.0, 0.8], [10.0, 4.0, 2.0]])  # V(s_{t+1}); 99 unused
    terminated = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]]).bool()
    ended = torch.tensor([[0, 0, 1], [0, 1, 0], [0, 0, 0]]).bool()
    returns = a2c.nstep_returns(rewards, values, next_values, terminated, ended, gamma)
    expected = torch.tensor([
        [1 + 0.5 * (1 + 0.5 * (1 + 0.5 * 10)), 1 + 0.5 * 2, 1 + 0.5 * 8],  # column 0: 3-step, bootstrapped V = 10
        [1 + 0.5 * (1 + 0.5 * 10), 2.0, 1 + 0.5 * (1 + 0.5 * 2)],          # column 1: the termination keeps r only
        [1 + 0.5 * 10, 3 + 0.5 * 4, 1 + 0.5 * 2]])                          # column 2: truncation bootstraps V = 8
    assert torch.allclose(returns, expected)


def test_entropy_bonus_lowers_the_loss():
    n = 4
    low, high = torch.full((n,), 0.1), torch.full((n,), 0.6)
    zeros, ones = torch.zeros(n), torch.ones(n)
    cfg = ppo.Config(entropy_coef=0.01)
    ppo_at = lambda h: ppo.ppo_loss(zeros, zeros, ones, zeros, zeros, ones, h, cfg, EPS)["loss"]
    assert ppo_at(high) < ppo_at(low)
    assert (ppo_at(low) - ppo_at(high)).item() == pytest.approx(0.01 * 0.5, abs=1e-6)
    cfg = a2c.Config(entropy_coef=0.01)
    a2c_at = lambda h: a2c.a2c_loss(zeros, ones, zeros, ones, h, cfg)["loss"]
    assert a2c_at(high) < a2c_at(low)
    assert (a2c_at(low) - a2c_at(high)).item() == pytest.approx(0.01 * 0.5, abs=1e-6)


def test_ppo_learns_cartpole(tmp_path):
    result = deepatlas.train("ppo", out=tmp_path / "run", overrides={"total_steps": "8192", "validate_every": "16"})
    assert result["test"]["mean_return"] > 150  # a random policy: about 22


def test_a2c_learns_cartpole(tmp_path):
    result = deepatlas.train("a2c", out=tmp_path / "run", overrides={"total_steps": "16000", "validate_every": "100"})
    assert result["test"]["mean_return"] > 150


def test_ppo_improves_on_pendulum_continuous_actions(tmp_path):
    env = envs.Environment(envs.describe("Pendulum-v1"))
    torch.manual_seed(0)
    start = deepatlas.create_model("ppo", **env.dims)
    before = start.evaluate(env)  # the untrained policy on the same 20 test episodes
    overrides = {"data": "Pendulum-v1", "stop_at": "none", "envs": "8", "steps": "128", "gamma": "0.9",
                 "gae_lambda": "0.95", "update_epochs": "20", "minibatches": "4", "total_steps": "12288", "lr": "3e-3",
                 "reward_scale": "0.1", "validate_every": "6"}
    result = deepatlas.train("ppo", out=tmp_path / "run", overrides=overrides)
    assert result["test"]["mean_return"] > before["mean_return"] + 250  # about -1100 -> -730
