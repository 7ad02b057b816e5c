"""REINFORCE: Monte-Carlo policy gradient with a learned baseline.

R. J. Williams, 1992. "Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
Learning." Machine Learning 8, 229-256.

The policy pi_theta(a|s) is improved by gradient ascent on the expected return J(theta), whose gradient is an
expectation over the policy's own episodes (the likelihood-ratio or "REINFORCE" estimator):

    grad J = E[ sum_t grad log pi(a_t|s_t) (G_t - b(s_t)) ],     G_t = sum_{k>=t} gamma^(k-t) r_k

G_t is the Monte-Carlo return from step t to the episode's end, so the update waits for whole episodes. Any
baseline b(s_t) that does not depend on a_t leaves the gradient unbiased and can cut its variance; here it is a
learned state value V_phi(s) fitted to G_t by least squares (Williams's reinforcement-comparison idea, with a
state-dependent comparison). Each update plays `episodes` episodes in parallel copies of the environment with
the current policy, then takes one gradient step on

    L = -mean_t [ log pi(a_t|s_t) (G_t - V(s_t)) ] + c_v mean_t [ (G_t - V(s_t))^2 ]

with (G_t - V(s_t)) normalized over the batch (`normalize`: a common variance reduction; set it off for the
paper's plain estimator). No bootstrapping, no clipping, no replay: the simplest policy gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Count, Data, Entry, NonNegative, Paper, Range, Relation, Size, Train, register
from deepatlas.tasks.rl import EnvSizes, PolicyGradient, gae, to_env_action


@dataclass
class Config(EnvSizes):
    hidden: Size = 64
    """units per hidden layer of the policy and of the baseline"""
    layers: Count = 2
    """hidden layers of each"""
    episodes: Size = 8
    """episodes played (in parallel) per update"""
    updates: Size = 600
    """policy updates; training stops earlier at the time budget or at the recipe's stop_at"""
    gamma: Annotated[float, Range(0.0, 1.0)] = 0.99
    """discount of the Monte-Carlo return"""
    value_coef: NonNegative = 0.5
    """weight of the baseline's squared error in the loss"""
    normalize: bool = True
    """normalize the advantages G_t - V(s_t) over each batch"""
    max_steps: Size = 1000
    """an episode longer than this is cut (CartPole-v1 ends itself at 500)"""
    validate_every: Size = 10
    """updates between validations (20 episodes with the fixed validation seeds)"""


class Reinforce(PolicyGradient):

    @torch.no_grad()
    def play(self, ctx, vector) -> dict[str, Tensor]:
        """One batch of whole episodes, one per environment copy -> (T, n) tensors with a mask of the steps that
        belong to an episode (a copy that finished keeps being stepped, its steps masked out)."""
        cfg, device = self.cfg, ctx.device
        obs, _ = vector.reset(seed=[int(s) for s in ctx.rng.integers(2**31, size=cfg.episodes)])
        running = torch.ones(cfg.episodes, dtype=torch.bool)
        steps: dict[str, list[Tensor]] = {"obs": [], "action": [], "reward": [], "mask": [], "ended": []}
        while running.any() and len(steps["obs"]) < cfg.max_steps:
            o = torch.as_tensor(obs, dtype=torch.float32, device=device)
            action = self.model.distribution(o).sample()
            obs, reward, terminated, truncated, _ = vector.step(to_env_action(action, ctx.env).cpu().numpy())
            ended = torch.as_tensor(terminated | truncated)
            for key, value in (("obs", o), ("action", action), ("reward", torch.as_tensor(reward, dtype=torch.float32)),
                               ("mask", running.clone()), ("ended", ended | (len(steps["obs"]) == cfg.max_steps - 1))):
                steps[key].append(value.to(device))
            running &= ~ended
        return {k: torch.stack(v) for k, v in steps.items()}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.cfg
        mask = batch["mask"].float()                                                  # (T, n)
        zeros = torch.zeros_like(batch["reward"])
        # lam = 1 and V = 0 turn GAE's recursion into the discounted Monte-Carlo return, cut at each episode's end
        returns, _ = gae(batch["reward"] * mask, zeros, zeros, batch["ended"], batch["ended"], cfg.gamma, 1.0)
        flat = lambda x: x.flatten(0, 1)                                              # (T n, ...)
        keep = flat(mask).bool()
        obs, action, returns = flat(batch["obs"])[keep], flat(batch["action"])[keep], flat(returns)[keep]
        values = self.model.value(obs)                                                # (N,)
        advantage = (returns - values).detach()
        if cfg.normalize and len(advantage) > 1:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        log_prob = self.model.distribution(obs).log_prob(action)                      # (N,)
        policy_loss = -(log_prob * advantage).mean()
        value_loss = (returns - values).pow(2).mean()
        return {"loss": policy_loss + cfg.value_coef * value_loss, "policy_loss": policy_loss,
                "value_loss": value_loss, "episode_return": (batch["reward"] * mask).sum(0).mean()}

    def learn(self, ctx) -> None:
        cfg = self.cfg
        optimizer = torch.optim.Adam(self.parameters(), lr=ctx.train.lr)
        state = ctx.restore({"policy": optimizer}) or {"update": 0}
        vector = ctx.env.make_vector(cfg.episodes)
        try:
            while state["update"] < cfg.updates and not ctx.should_stop():
                logs = self.loss(self.play(ctx, vector))
                optimizer.zero_grad(set_to_none=True)
                logs["loss"].backward()
                nn.utils.clip_grad_norm_(self.parameters(), 0.5)
                optimizer.step()
                state["update"] += 1
                ctx.log(state["update"], {k: v.item() for k, v in logs.items()})
                ctx.progress(state["update"], cfg.updates, f"return {logs['episode_return'].item():.1f}")
                if state["update"] % cfg.validate_every == 0 or state["update"] == cfg.updates:
                    ctx.validate(state["update"])
                    ctx.checkpoint({"policy": optimizer}, state)
        finally:
            vector.close()


register(Entry(
    name="reinforce", title="REINFORCE (Monte-Carlo policy gradient with baseline)", family="rl", year=1992,
    paper=Paper("R. J. Williams", "Simple Statistical Gradient-Following Algorithms for Connectionist "
                "Reinforcement Learning", "Machine Learning 8, 229-256, 1992"),
    summary="Plays whole episodes with a stochastic policy and raises the log-probability of each action in "
            "proportion to the return that followed it, minus a learned state-value baseline.",
    when_to_use="Teaching and small problems with short episodes; the base every policy-gradient method "
                "(A2C, PPO) refines; discrete or continuous actions with no value bootstrapping to tune.",
    when_not="Long or never-ending episodes (it waits for the end of each), costly environment steps "
             "(it is sample-hungry: prefer DQN or PPO), or when stable monotone progress matters.",
    relations=[
        Relation("uses", "mlp", "an MLP policy trained by the score-function gradient"),
    ],
    config=Config, build=Reinforce.build, objective=lambda model: model, task="rl",
    train_keys=("stop_at", "lr"),
    train=Train(lr=3e-3, stop_at=500.0),
    data=Data("CartPole-v1"),
    bar=Bar("mean_return", 475.0, "max", 300),
))
