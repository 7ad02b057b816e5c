"""A2C: synchronous advantage actor-critic with n-step returns.

V. Mnih, A. P. Badia, M. Mirza, A. Graves, T. P. Lillicrap, T. Harley, D. Silver, K. Kavukcuoglu, 2016.
"Asynchronous Methods for Deep Reinforcement Learning." ICML 2016, arXiv:1602.01783.

The paper's A3C runs actor-learners in parallel threads, each applying its gradients to shared weights
asynchronously; A2C is its synchronous variant (OpenAI baselines): n environments are stepped together by one
policy, and one gradient step is taken on the whole batch. Each update:

1. Rollout: t_max steps in each of the n environments with the current policy pi(a|s).
2. n-step returns bootstrapped from the critic at the rollout's end (or at an episode's end: 0 after a
   termination, V of the last observation after a time-limit truncation):

       R_t = r_t + gamma r_{t+1} + ... + gamma^(k-1) r_{t+k-1} + gamma^k V(s_{t+k})

   i.e. GAE with lambda = 1 over the rollout (`gae_lambda` < 1 blends in shorter returns).
3. One step of RMSprop (as in the paper, here with SB3's alpha 0.99, eps 1e-5) on

       loss = -mean_t [ log pi(a_t|s_t) (R_t - V(s_t)) ] + c_v mean_t [ (R_t - V(s_t))^2 ] - beta mean_t H[pi(.|s_t)]

   where the advantage R_t - V(s_t) is held constant in the policy term and beta weighs the entropy bonus the
   paper adds to discourage premature convergence to a deterministic policy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from torch import Tensor, nn

from deepatlas.catalog import (Bar, Count, Data, Entry, NonNegative, Paper, Positive, Range, Relation, Size, Train,
                              register)
from deepatlas.tasks.rl import EnvSizes, PolicyGradient, gae, rollout


@dataclass
class Config(EnvSizes):
    """Defaults are rl-baselines3-zoo's A2C hyperparameters for CartPole-v1 (SB3's defaults with 8 envs:
    n_steps 5, gamma 0.99, gae_lambda 1, lr 7e-4 constant, RMSprop alpha 0.99 eps 1e-5, vf_coef 0.5,
    max_grad_norm 0.5, ent_coef 0, 64x64 tanh MLPs)."""
    hidden: Size = 64
    """units per hidden layer of the policy and of the value network"""
    layers: Count = 2
    """hidden layers of each"""
    envs: Size = 8
    """environments stepped together (n)"""
    steps: Size = 5
    """t_max: rollout length per environment, the n of the n-step return"""
    total_steps: Size = 500_000
    """environment steps of the whole run; it stops earlier at the time budget or the recipe's stop_at"""
    gamma: Annotated[float, Range(0.0, 1.0)] = 0.99
    """discount factor"""
    gae_lambda: Annotated[float, Range(0.0, 1.0)] = 1.0
    """1: the paper's n-step returns; below 1, GAE's exponentially weighted mix of them"""
    value_coef: NonNegative = 0.5
    """c_v, weight of the value loss"""
    entropy_coef: NonNegative = 0.0
    """beta, weight of the entropy bonus (the paper used 0.01 on Atari; the zoo uses 0 on CartPole)"""
    max_grad_norm: Positive = 0.5
    """clip the gradient's global norm to this"""
    rmsprop: bool = True
    """RMSprop (the paper's, alpha 0.99 eps 1e-5); false: Adam"""
    validate_every: Size = 200
    """updates between validations (20 episodes with the fixed validation seeds)"""


def nstep_returns(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, ended: Tensor,
                  gamma: float, lam: float = 1.0) -> Tensor:
    """(T, n) rollout -> (T, n) bootstrapped n-step returns R_t (lam = 1), cut at episode ends."""
    return gae(rewards, values, next_values, terminated, ended, gamma, lam)[1]


def a2c_loss(log_prob: Tensor, advantage: Tensor, value: Tensor, returns: Tensor, entropy: Tensor,
             cfg: Config) -> dict[str, Tensor]:
    """policy loss + c_v value loss - beta entropy; every tensor (N,), `advantage` a constant."""
    policy_loss = -(log_prob * advantage).mean()
    value_loss = (returns - value).pow(2).mean()
    entropy = entropy.mean()
    return {"loss": policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy,
            "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


class A2C(PolicyGradient):

    def learn(self, ctx) -> None:
        cfg = self.cfg
        if cfg.rmsprop:
            optimizer = torch.optim.RMSprop(self.parameters(), lr=ctx.train.lr, alpha=0.99, eps=1e-5)
        else:
            optimizer = torch.optim.Adam(self.parameters(), lr=ctx.train.lr)
        state = ctx.restore({"policy": optimizer}) or {"update": 0}
        vector = ctx.env.make_vector(cfg.envs)
        updates = max(1, cfg.total_steps // (cfg.envs * cfg.steps))
        obs, _ = vector.reset(seed=[int(s) for s in ctx.rng.integers(2**31, size=cfg.envs)])
        running, recent = np.zeros(cfg.envs), []
        try:
            while state["update"] < updates and not ctx.should_stop():
                # t_max steps of n environments (no gradient) -> (T, n) tensors
                batch, obs, finished = rollout(self.model, ctx.env, vector, obs, running, cfg.steps, ctx.device)
                recent = (recent + finished)[-20:]
                returns = nstep_returns(batch["reward"], batch["value"], batch["next_value"], batch["terminated"],
                                        batch["ended"], cfg.gamma, cfg.gae_lambda).flatten()   # (T n,)
                obs_flat, action = batch["obs"].flatten(0, 1), batch["action"].flatten(0, 1)
                dist = self.model.distribution(obs_flat)   # the same states again, now with the gradient
                value = self.model.value(obs_flat)                                               # (T n,)
                logs = a2c_loss(dist.log_prob(action), (returns - value).detach(), value, returns, dist.entropy(),
                                cfg)
                optimizer.zero_grad(set_to_none=True)
                logs["loss"].backward()
                nn.utils.clip_grad_norm_(self.parameters(), cfg.max_grad_norm)
                optimizer.step()
                state["update"] += 1
                if state["update"] % 20 == 0 or state["update"] % cfg.validate_every == 0:
                    shown = {k: v.item() for k, v in logs.items()}
                    if recent:
                        shown["episode_return"] = float(np.mean(recent))
                    ctx.log(state["update"] * cfg.envs * cfg.steps, shown)
                    ctx.progress(state["update"], updates, f"return {shown.get('episode_return', 0.0):.1f}")
                if state["update"] % cfg.validate_every == 0 or state["update"] == updates:
                    ctx.validate(state["update"] * cfg.envs * cfg.steps)
                    ctx.checkpoint({"policy": optimizer}, state)
        finally:
            vector.close()


register(Entry(
    name="a2c", title="A2C (synchronous advantage actor-critic)", family="rl", year=2016,
    paper=Paper("V. Mnih, A. P. Badia, M. Mirza, A. Graves, T. P. Lillicrap, T. Harley, D. Silver, K. Kavukcuoglu",
                "Asynchronous Methods for Deep Reinforcement Learning", "ICML 2016, arXiv:1602.01783"),
    summary="Steps several environments together for a few steps, forms n-step returns bootstrapped from a "
            "learned critic, and takes one gradient step on the advantage-weighted policy gradient, the critic's "
            "squared error and an entropy bonus.",
    when_to_use="Cheap simulators where frequent small on-policy updates suit; a simple, fast baseline between "
                "REINFORCE and PPO, for discrete or continuous actions.",
    when_not="When stability matters (one step per rollout with no trust region: PPO is steadier), or costly "
             "environment steps (it reuses no data; prefer DQN).",
    relations=[
        Relation("builds_on", "reinforce", "a learned critic as the baseline: advantage actor-critic over parallel "
                 "environments"),
    ],
    config=Config, build=A2C.build, objective=lambda model: model, task="rl",
    train_keys=("stop_at", "lr"),
    train=Train(lr=7e-4, stop_at=500.0),
    data=Data("CartPole-v1"),
    bar=Bar("mean_return", 475.0, "max", 300),
))
