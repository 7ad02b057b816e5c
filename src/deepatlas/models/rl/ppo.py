"""PPO: proximal policy optimization with the clipped surrogate objective.

J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov, 2017. "Proximal Policy Optimization Algorithms."
arXiv:1707.06347.

An on-policy actor-critic that squeezes several gradient steps out of each batch of experience without letting
the policy drift far from the one that collected it. Each iteration:

1. Rollout: the current policy pi_old plays T steps in each of n vectorized environments, storing s_t, a_t,
   log pi_old(a_t|s_t), V(s_t), r_t, and whether the episode terminated or was truncated at t.
2. Advantages by GAE(lambda) (Schulman et al. 2016), bootstrapped from V of the state after each step (the
   episode's final observation at a time-limit truncation, where the return goes on):

       delta_t = r_t + gamma V(s_{t+1}) (1 - terminated_t) - V(s_t),    A_t = delta_t + gamma lambda A_{t+1}
       R_t = A_t + V(s_t)                                                (the value target)

3. K epochs over the n T samples in shuffled minibatches, each minimizing

       r_t(theta) = pi_theta(a_t|s_t) / pi_old(a_t|s_t)
       L^CLIP     = E[ min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) ]          (A_t normalized per minibatch)
       L^VF       = E[ (V_theta(s_t) - R_t)^2 ]         (optionally clipped around the rollout's V, as in baselines)
       loss       = -L^CLIP + c_1 L^VF - c_2 H[pi_theta(.|s_t)]

   with the gradient norm clipped and, optionally, the learning rate and eps annealed linearly to 0.

The min makes the objective a pessimistic bound: once r_t A_t has improved past the clip range the gradient
vanishes, so a step cannot profit from moving the policy further. Discrete actions use a categorical policy,
continuous ones a diagonal Gaussian with a state-independent log standard deviation (the paper's MuJoCo setup).
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
    """Defaults are rl-baselines3-zoo's PPO hyperparameters for CartPole-v1 (8 envs, n_steps 32, batch 256,
    gamma 0.98, gae_lambda 0.8, 20 epochs, lr lin_1e-3, clip lin_0.2, ent_coef 0, 64x64 tanh MLPs); the Acrobot
    bar overrides them with the zoo's Acrobot-v1 settings (16 envs, n_steps 256, gamma 0.99, gae_lambda 0.94,
    lr 3e-4 constant) except three: 20 update epochs instead of 4 and minibatches of 512 instead of 64 (fewer,
    larger optimizer steps, which dominate the wall time on a CPU), and no VecNormalize of observations and
    rewards."""
    hidden: Size = 64
    """units per hidden layer of the policy and of the value network"""
    layers: Count = 2
    """hidden layers of each"""
    envs: Size = 8
    """environments stepped together (n)"""
    steps: Size = 32
    """rollout length per environment per iteration (T): n T samples per iteration"""
    total_steps: Size = 100_000
    """environment steps of the whole run (the annealing's horizon); it stops earlier at the time budget or
    the recipe's stop_at"""
    gamma: Annotated[float, Range(0.0, 1.0)] = 0.98
    """discount factor"""
    gae_lambda: Annotated[float, Range(0.0, 1.0)] = 0.8
    """GAE's lambda: 0 one-step TD advantages, 1 Monte-Carlo returns minus V"""
    update_epochs: Size = 20
    """passes (K) over each rollout (named apart from the recipe's `epochs`)"""
    minibatches: Size = 1
    """minibatches per epoch (the zoo's CartPole batch_size 256 = n T: one)"""
    clip: Annotated[float, Range(0.0, 1.0, exclusive_low=True)] = 0.2
    """eps of the clipped surrogate: the ratio pi/pi_old is clipped to [1 - eps, 1 + eps]"""
    value_clip: NonNegative = 0.0
    """clip V's change from the rollout's value to +-this in the value loss (0: no clipping)"""
    value_coef: NonNegative = 0.5
    """c_1, weight of the value loss"""
    entropy_coef: NonNegative = 0.0
    """c_2, weight of the entropy bonus (the zoo uses 0 on CartPole and Acrobot)"""
    reward_scale: Positive = 1.0
    """multiply rewards by this in the loss (0.1 suits Pendulum's rewards of down to -16 a step); evaluation
    reports the environment's own returns"""
    max_grad_norm: Positive = 0.5
    """clip the gradient's global norm to this"""
    anneal: bool = True
    """decay the learning rate and eps linearly to 0 over total_steps (the zoo's lin_ schedules)"""
    normalize_advantages: bool = True
    """normalize the advantages to zero mean and unit variance within each minibatch"""
    validate_every: Size = 10
    """iterations between validations (20 episodes with the fixed validation seeds)"""


def clipped_objective(ratio: Tensor, advantage: Tensor, clip: float) -> Tensor:
    """L^CLIP per sample: min(r A, clip(r, 1 - eps, 1 + eps) A), any shape -> same shape (to be maximized)."""
    return torch.min(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)


def normalize(advantage: Tensor) -> Tensor:
    """(A - mean A) / (std A + 1e-8) over the minibatch."""
    return (advantage - advantage.mean()) / (advantage.std() + 1e-8)


def ppo_loss(log_prob: Tensor, old_log_prob: Tensor, advantage: Tensor, value: Tensor, old_value: Tensor,
             returns: Tensor, entropy: Tensor, cfg: Config, clip: float) -> dict[str, Tensor]:
    """The minibatch loss -L^CLIP + c_1 L^VF - c_2 H; every tensor (B,)."""
    if cfg.normalize_advantages and len(advantage) > 1:
        advantage = normalize(advantage)
    ratio = (log_prob - old_log_prob).exp()                                          # pi_theta / pi_old
    policy_loss = -clipped_objective(ratio, advantage, clip).mean()
    value_loss = (value - returns).pow(2)
    if cfg.value_clip > 0:  # pessimistic too: the larger of the unclipped and the clipped error
        clipped = old_value + (value - old_value).clamp(-cfg.value_clip, cfg.value_clip)
        value_loss = torch.max(value_loss, (clipped - returns).pow(2))
    value_loss = value_loss.mean()
    entropy = entropy.mean()
    return {"loss": policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy,
            "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
            "clip_fraction": ((ratio - 1).abs() > clip).float().mean()}


class PPO(PolicyGradient):

    def learn(self, ctx) -> None:
        cfg = self.cfg
        optimizer = torch.optim.Adam(self.parameters(), lr=ctx.train.lr, eps=1e-5)
        state = ctx.restore({"policy": optimizer}) or {"update": 0}
        vector = ctx.env.make_vector(cfg.envs)
        iterations = max(1, cfg.total_steps // (cfg.envs * cfg.steps))
        obs, _ = vector.reset(seed=[int(s) for s in ctx.rng.integers(2**31, size=cfg.envs)])
        recent: list[float] = []
        running = np.zeros(cfg.envs)
        try:
            while state["update"] < iterations and not ctx.should_stop():
                frac = 1 - state["update"] / iterations if cfg.anneal else 1.0
                for group in optimizer.param_groups:
                    group["lr"] = frac * ctx.train.lr
                clip = frac * cfg.clip
                # T steps of n environments with pi_old (no gradient) -> (T, n) tensors
                batch, obs, finished = rollout(self.model, ctx.env, vector, obs, running, cfg.steps, ctx.device)
                recent = (recent + finished)[-20:]
                advantages, returns = gae(cfg.reward_scale * batch["reward"], batch["value"], batch["next_value"],
                                          batch["terminated"], batch["ended"], cfg.gamma, cfg.gae_lambda)
                flat = {k: batch[k].flatten(0, 1) for k in ("obs", "action", "log_prob", "value")}  # (T n, ...)
                flat["advantage"], flat["returns"] = advantages.flatten(), returns.flatten()
                size = len(flat["obs"])
                for _ in range(cfg.update_epochs):  # K epochs of shuffled minibatches over the same rollout
                    order = torch.randperm(size, generator=ctx.generator).to(ctx.device)
                    for index in order.chunk(cfg.minibatches):
                        mb = {k: v[index] for k, v in flat.items()}
                        dist = self.model.distribution(mb["obs"])
                        logs = ppo_loss(dist.log_prob(mb["action"]), mb["log_prob"], mb["advantage"],
                                        self.model.value(mb["obs"]), mb["value"], mb["returns"], dist.entropy(),
                                        cfg, clip)
                        optimizer.zero_grad(set_to_none=True)
                        logs["loss"].backward()
                        nn.utils.clip_grad_norm_(self.parameters(), cfg.max_grad_norm)
                        optimizer.step()
                state["update"] += 1
                shown = {k: v.item() for k, v in logs.items()}
                if recent:
                    shown["episode_return"] = float(np.mean(recent))
                ctx.log(state["update"] * size, shown)
                ctx.progress(state["update"], iterations, f"return {shown.get('episode_return', 0.0):.1f}")
                if state["update"] % cfg.validate_every == 0 or state["update"] == iterations:
                    ctx.validate(state["update"] * size)
                    ctx.checkpoint({"policy": optimizer}, state)
        finally:
            vector.close()


register(Entry(
    name="ppo", title="PPO (proximal policy optimization, clipped surrogate)", family="rl", year=2017,
    paper=Paper("J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov", "Proximal Policy Optimization "
                "Algorithms", "arXiv:1707.06347, 2017"),
    summary="Collects short rollouts from vectorized environments, estimates advantages with GAE, then takes "
            "several epochs of minibatch steps on a clipped surrogate that stops the policy moving far from the "
            "one that collected the data; with a value loss and an entropy bonus.",
    when_to_use="The default on-policy method: discrete or continuous actions, cheap simulators, when robust "
                "progress with little tuning matters more than sample efficiency.",
    when_not="Costly environment steps (off-policy DQN or SAC reuse data far more), sparse rewards that need "
             "deliberate exploration, or tiny problems where REINFORCE is enough.",
    relations=[
        Relation("builds_on", "a2c", "clips the policy ratio so each rollout trains several epochs safely"),
    ],
    config=Config, build=PPO.build, objective=lambda model: model, task="rl",
    train_keys=("stop_at", "lr"),
    train=Train(lr=1e-3, stop_at=500.0),
    data=Data("CartPole-v1"),
    bar=Bar("mean_return", 475.0, "max", 300),
    more_bars=[Bar("mean_return", -100.0, "max", 300, overrides={
        "data": "Acrobot-v1", "stop_at": "-85", "envs": "16", "steps": "256", "gamma": "0.99",
        "gae_lambda": "0.94", "minibatches": "8", "lr": "3e-4", "anneal": "false",
        "total_steps": "1000000", "validate_every": "2"})],
))
