""""mpc" (PETS-style model-based RL): CEM finds the optimum of a known quadratic problem, the planner stays in the
action box, the known reward equals Pendulum's, the bootstrapped ensemble learns the dynamics, the env-step cap
holds exactly, and a short run swings the pendulum far better than random actions."""
import csv

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import deepatlas
from deepatlas.data import envs
from deepatlas.errors import DeepAtlasError
from deepatlas.models.rl.mpc import Config, build, pendulum_reward


class Integrator(nn.Module):
    """A fake dynamics "ensemble" with known dynamics s' = s + a (the planner's model interface)."""

    def step(self, obs, action, generator=None):
        return obs + action


def test_cem_converges_to_the_optimal_sequence_of_a_known_quadratic():
    H, lam = 5, 0.1
    cfg = Config(obs_dim=1, action_dim=1, horizon=H, candidates=500, elites=50, iterations=30, alpha=0.0)
    planner = build(cfg)
    planner.model = Integrator()
    planner.reward = lambda s, a: -(s[..., 0] - 1.0).pow(2) - lam * a[..., 0].pow(2)
    s0 = torch.tensor([[0.0], [0.5], [1.5]])                                      # three problems at once
    # return = -|s0 + L a - 1|^2 - lam |a|^2 with s_t = s0 + sum_{k<t} a_k: a* solves (L'L + lam I) a = L'(1 - s0)
    L = torch.tril(torch.ones(H, H), diagonal=-1)
    optimum = torch.linalg.solve(L.T @ L + lam * torch.eye(H), L.T @ (1 - s0.T).expand(H, 3)).T  # (3, H)
    assert optimum.abs().max() < 2                                                # inside the action box
    action, shifted = planner.plan(s0, planner.initial_plan(3, "cpu"), torch.Generator().manual_seed(0))
    assert action[:, 0] == pytest.approx(optimum[:, 0], abs=0.03)
    assert shifted[:, :-1, 0] == pytest.approx(optimum[:, 1:], abs=0.05)          # the warm start: shifted by one
    assert (shifted[:, -1] == 0).all()


def test_planner_respects_the_action_bounds():
    planner = build(Config(obs_dim=1, action_dim=1, horizon=4, candidates=50, elites=5, iterations=10))
    planner.model = Integrator()
    planner.reward = lambda s, a: 100 * a[..., 0]                                  # wants ever larger torques
    seen = []
    score = planner.predicted_return
    planner.predicted_return = lambda obs, actions, g: seen.append(actions) or score(obs, actions, g)
    actions = planner.act(torch.zeros(7, 1))
    sampled = torch.cat(seen)
    assert sampled.min() >= -2 and sampled.max() <= 2 and (sampled == 2).any()   # clipped samples
    assert (actions <= 2).all() and actions.min() > 1.0                           # pushed towards the bound


def test_reward_equals_pendulums_on_random_transitions():
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    ours, theirs = [], []
    for t in range(400):
        if t % 50 == 0:
            obs, _ = env.reset(seed=t)
        action = rng.uniform(-3, 3, size=1).astype(np.float32)                  # out-of-box torques too: clipped
        next_obs, reward, *_ = env.step(action)
        ours.append(pendulum_reward(torch.as_tensor(obs)[None], torch.as_tensor(action)[None]).item())
        theirs.append(reward)
        obs = next_obs
    env.close()
    assert np.abs(np.array(ours) - np.array(theirs)).max() < 1e-5


def random_transitions(n: int, seed: int) -> dict[str, torch.Tensor]:
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    rows = {"obs": [], "action": [], "next_obs": []}
    obs, _ = env.reset(seed=seed)
    for t in range(n):
        action = rng.uniform(-2, 2, size=1).astype(np.float32)
        next_obs, _, terminated, truncated, _ = env.step(action)
        for key, value in (("obs", obs), ("action", action), ("next_obs", next_obs)):
            rows[key].append(torch.as_tensor(value, dtype=torch.float32))
        obs = env.reset(seed=seed + t + 1)[0] if terminated or truncated else next_obs
    env.close()
    return {k: torch.stack(v) for k, v in rows.items()}


def test_bootstrapped_ensemble_predicts_held_out_transitions():
    torch.manual_seed(0)
    cfg = Config(fit_steps=500)
    planner = build(cfg)
    generator = torch.Generator().manual_seed(0)
    resamples = planner.bootstrap(1000, generator)                                # (B, n)
    unique = torch.tensor([len(r.unique()) / 1000 for r in resamples])
    assert unique.sub(1 - np.exp(-1)).abs().max() < 0.05                          # ~63% distinct per member
    assert all(not torch.equal(resamples[0], r) for r in resamples[1:])          # each member its own resample
    train, held = random_transitions(1000, seed=0), random_transitions(400, seed=1000)
    optimizer = torch.optim.AdamW(planner.model.parameters(), lr=1e-3, weight_decay=cfg.fit_decay)
    planner.fit(train, optimizer, generator)
    B = cfg.ensemble
    with torch.no_grad():
        predicted = planner.model.step(held["obs"].expand(B, -1, -1), held["action"].expand(B, -1, -1))  # (B, n, 3)
    delta = held["next_obs"] - held["obs"]
    error = (predicted.mean(0) - held["next_obs"]).pow(2).mean()
    zero_change = delta.pow(2).mean()                                             # predict s' = s
    assert error < 0.02 * zero_change
    assert (predicted[0] - predicted[1:]).abs().amax() > 1e-3                     # the members differ


def test_short_run_caps_env_steps_exactly_and_beats_random(tmp_path):
    # 650 = one random episode, two planned episodes and 50 steps of a third, cut by the cap
    overrides = {"max_env_steps": 650, "fit_steps": 300, "candidates": 60, "elites": 6, "horizon": 12,
                 "iterations": 2, "validate_every": 100, "val_episodes": 2}
    result = deepatlas.train("mpc", overrides=overrides, out=tmp_path / "run")
    with open(tmp_path / "run" / "log.csv") as f:
        steps = [float(row[3]) for row in csv.reader(f) if row[2] == "train/env_steps"]
    assert steps == [200, 400, 600, 650]
    assert result["test"]["mean_return"] > -500                                   # random actions: about -1200


def test_environments_without_a_known_reward_are_refused():
    planner = build(Config())
    with pytest.raises(DeepAtlasError, match="known reward function"):
        planner.check(envs.Environment(envs.describe("MountainCarContinuous-v0")), "mpc")
    with pytest.raises(DeepAtlasError, match="needs continuous actions"):
        planner.check(envs.Environment(envs.describe("CartPole-v1")), "mpc")
