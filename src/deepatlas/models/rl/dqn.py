"""DQN: deep Q-learning with experience replay and a target network; Double DQN as an option.

V. Mnih, K. Kavukcuoglu, D. Silver, A. A. Rusu, J. Veness, M. G. Bellemare, A. Graves, M. Riedmiller,
A. K. Fidjeland, G. Ostrovski, S. Petersen, C. Beattie, A. Sadik, I. Antonoglou, H. King, D. Kumaran,
D. Wierstra, S. Legg, D. Hassabis, 2015. "Human-level control through deep reinforcement learning."
Nature 518, 529-533.
Double DQN: H. van Hasselt, A. Guez, D. Silver, 2016. "Deep Reinforcement Learning with Double Q-learning."
AAAI 2016, arXiv:1509.06461.

A network Q_theta(s, .) outputs one value per discrete action; acting greedily on it is the policy. It is fitted
by Q-learning, made stable for a deep network by two devices. Experience replay: every transition
(s, a, r, s', done) goes into a large buffer and each update samples a minibatch uniformly from it, which breaks
the correlation of consecutive steps. A target network Q_theta- (a copy of Q_theta refreshed every C steps)
provides the regression target, so the target does not move with every gradient step:

    y   = r + gamma (1 - done) max_a' Q_theta-(s', a')                              (DQN)
    y   = r + gamma (1 - done) Q_theta-(s', argmax_a' Q_theta(s', a'))              (Double DQN)
    L   = mean Huber(y - Q_theta(s, a))      Huber(d) = d^2 / 2 if |d| <= 1 else |d| - 1/2

The paper clips the TD error to [-1, 1] in the gradient, which is the Huber loss. Double DQN lets the online
network choose the next action and the target network value it, removing max's upward bias. `done` is 1 only at
a true termination: at a time-limit truncation the next state's value still counts. Behaviour is epsilon-greedy,
epsilon falling linearly from `eps_start` to `eps_end` over the first `eps_fraction` of training; the first
`learning_starts` steps are uniformly random and fill the buffer before any update.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import (Bar, Count, Data, Entry, NonNegative, Paper, Probability, Range, Relation, Size,
                              Train, register)
from deepatlas.tasks.rl import Algorithm, EnvSizes, ReplayBuffer, mlp


@dataclass
class Config(EnvSizes):
    """Defaults follow the rl-baselines3-zoo's tuned CartPole-v1 DQN for Stable-Baselines3 (50k steps, lr 2.3e-3
    in the recipe, batch 64, buffer 100k, learning_starts 1000, gamma 0.99, target update every 10 steps,
    train_freq 256 with 128 gradient steps, epsilon 1 -> 0.04 over 16%, two hidden layers of 256 ReLU units,
    gradient norm clipped at 10), so that the peer benchmark compares like with like."""
    hidden: Size = 256
    """units per hidden layer of the Q-network"""
    layers: Count = 2
    """hidden layers of the Q-network"""
    envs: Size = 1
    """environment copies stepped together (steps below count transitions of all copies)"""
    total_steps: Size = 50_000
    """environment steps of training; it stops earlier at the time budget or at the recipe's stop_at"""
    buffer_size: Size = 100_000
    """replay buffer capacity, in transitions"""
    gamma: Annotated[float, Range(0.0, 1.0)] = 0.99
    """discount factor"""
    learning_starts: Count = 1_000
    """warm-up: steps of uniformly random actions that fill the buffer before the first update"""
    train_freq: Size = 256
    """environment steps between training rounds"""
    gradient_steps: Size = 128
    """gradient steps per training round"""
    target_update: Size = 10
    """C: environment steps between target-network updates"""
    tau: Annotated[float, Range(0.0, 1.0, exclusive_low=True)] = 1.0
    """target update theta- <- tau theta + (1 - tau) theta-: 1 is the paper's hard copy, < 1 a soft (Polyak) one"""
    double: bool = False
    """Double DQN: the online network picks the next action, the target network values it"""
    eps_start: Probability = 1.0
    """epsilon of the epsilon-greedy behaviour at the start"""
    eps_end: Probability = 0.04
    """epsilon after the linear decay"""
    eps_fraction: Probability = 0.16
    """fraction of total_steps over which epsilon falls linearly from eps_start to eps_end"""
    max_grad_norm: NonNegative = 10.0
    """clip the gradient norm to this value (0: off)"""
    validate_every: Size = 1_024
    """environment steps between validations (20 episodes with the fixed validation seeds)"""


def crossed(step: int, n: int, every: int) -> bool:
    """Whether the last n steps (step - n, step] passed a multiple of `every`."""
    return step // every > (step - n) // every


class DQN(Algorithm):
    action_kinds = ("discrete",)

    def __init__(self, model: nn.Module, cfg: Config):
        super().__init__(model)
        self.cfg = cfg

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        return self.model(obs).argmax(-1)                                              # (n,) greedy

    def epsilon(self, step: int) -> float:
        """The linear schedule: eps_start at step 0, eps_end from eps_fraction * total_steps on."""
        cfg = self.cfg
        progress = min(step / max(cfg.eps_fraction * cfg.total_steps, 1), 1.0)
        return cfg.eps_start + progress * (cfg.eps_end - cfg.eps_start)

    @torch.no_grad()
    def td_target(self, batch: dict[str, Tensor], target: nn.Module) -> Tensor:
        """y = r + gamma (1 - done) Q_target(s', a*), a* = argmax of Q_target (DQN) or of Q_online (Double)."""
        next_q = target(batch["next_obs"])                                             # (B, A) Q_theta-(s', .)
        if self.cfg.double:
            best = self.model(batch["next_obs"]).argmax(-1, keepdim=True)             # (B, 1) online argmax
        else:
            best = next_q.argmax(-1, keepdim=True)                                    # (B, 1) target argmax
        next_value = next_q.gather(-1, best).squeeze(-1)                              # (B,)
        return batch["reward"] + self.cfg.gamma * (1 - batch["done"]) * next_value

    def loss(self, batch: dict[str, Tensor], target: nn.Module) -> dict[str, Tensor]:
        y = self.td_target(batch, target)                                              # (B,)
        q = self.model(batch["obs"]).gather(-1, batch["action"][:, None]).squeeze(-1)  # (B,) Q_theta(s, a)
        return {"loss": F.smooth_l1_loss(q, y), "q": q.mean().detach()}               # Huber on the TD error

    @torch.no_grad()
    def update_target(self, target: nn.Module) -> None:
        """theta- <- theta (hard copy, tau = 1) or theta- <- theta- + tau (theta - theta-) (soft)."""
        for t, p in zip(target.parameters(), self.model.parameters(), strict=True):
            if self.cfg.tau >= 1:
                t.copy_(p)
            else:
                t.lerp_(p, self.cfg.tau)

    def learn(self, ctx) -> None:
        cfg, device, n = self.cfg, ctx.device, self.cfg.envs
        fused = torch.device(device).type in ("cpu", "cuda")  # one kernel for Adam's update: a step is small
        optimizer = torch.optim.Adam(self.model.parameters(), lr=ctx.train.lr, fused=fused)
        target = copy.deepcopy(self.model).requires_grad_(False)                      # Q_theta-
        buffer = ReplayBuffer(cfg.buffer_size, cfg.obs_dim, device=device)
        state = ctx.restore({"q": optimizer})
        if state is None:
            state = {"step": 0, "updates": 0}
        else:  # resume: the target network and the replay buffer come back too
            target.load_state_dict(state["target"])
            for key in ("obs", "action", "reward", "next_obs", "done"):
                getattr(buffer, key).copy_(state["buffer"][key])
            buffer.size, buffer.cursor = state["buffer_size"], state["buffer_cursor"]
        vector = ctx.env.make_vector(n)
        obs, _ = vector.reset(seed=[int(s) for s in ctx.rng.integers(2**31, size=n)])
        episode_return, finished = np.zeros(n), []
        try:
            while state["step"] < cfg.total_steps and not ctx.should_stop():
                # ---- act: epsilon-greedy (uniformly random during the warm-up) ----
                o = torch.as_tensor(obs, dtype=torch.float32, device=device)           # (n, obs_dim)
                eps = 1.0 if state["step"] < cfg.learning_starts else self.epsilon(state["step"])
                explore = torch.rand(n, generator=ctx.generator) < eps                 # (n,)
                random_action = torch.randint(cfg.n_actions, (n,), generator=ctx.generator)
                action = torch.where(explore, random_action, self.act(o).cpu())        # (n,)
                obs, reward, terminated, truncated, info = vector.step(action.numpy())
                # ---- store: the true next state (SAME_STEP autoreset puts it in final_obs), done = terminated ----
                ended = terminated | truncated
                next_obs = obs.copy()
                if ended.any():
                    next_obs[ended] = np.stack(info["final_obs"][ended])
                buffer.add(o, action, torch.as_tensor(reward, dtype=torch.float32),
                           torch.as_tensor(next_obs, dtype=torch.float32, device=device), torch.as_tensor(terminated))
                episode_return += reward
                finished += episode_return[ended].tolist()
                episode_return[ended] = 0.0
                state["step"] += n
                step = state["step"]
                # ---- learn: a round of gradient steps on replayed minibatches every train_freq steps ----
                if step > cfg.learning_starts and crossed(step, n, cfg.train_freq):
                    for _ in range(cfg.gradient_steps):
                        logs = self.loss(buffer.sample(ctx.train.batch_size, ctx.generator), target)
                        optimizer.zero_grad(set_to_none=True)
                        logs["loss"].backward()
                        if cfg.max_grad_norm > 0:
                            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                        optimizer.step()
                        state["updates"] += 1
                    shown = {k: v.item() for k, v in logs.items()} | {"epsilon": eps}
                    if finished:
                        shown["episode_return"] = float(np.mean(finished))
                        finished = []
                    ctx.log(step, shown)
                    ctx.progress(step, cfg.total_steps, f"eps {eps:.2f}  loss {shown['loss']:.3g}")
                # ---- the target network follows every C steps ----
                if crossed(step, n, cfg.target_update):
                    self.update_target(target)
                if crossed(step, n, cfg.validate_every) or step >= cfg.total_steps:
                    ctx.validate(step)
                    ctx.checkpoint({"q": optimizer}, {
                        **state, "target": target.state_dict(), "buffer_size": buffer.size,
                        "buffer_cursor": buffer.cursor,
                        "buffer": {k: getattr(buffer, k) for k in ("obs", "action", "reward", "next_obs", "done")}})
        finally:
            vector.close()


def build(cfg: Config) -> DQN:
    return DQN(mlp([cfg.obs_dim, *[cfg.hidden] * cfg.layers, max(cfg.n_actions, 1)], nn.ReLU), cfg)


register(Entry(
    name="dqn", title="DQN (deep Q-network, with Double DQN as an option)", family="rl", year=2015,
    paper=Paper("V. Mnih, K. Kavukcuoglu, D. Silver et al.", "Human-level control through deep reinforcement "
                "learning", "Nature 518, 529-533, 2015; Double DQN: van Hasselt, Guez, Silver, AAAI 2016, "
                "arXiv:1509.06461"),
    summary="Learns the value Q(s, a) of each discrete action by Q-learning with a neural network, stabilized by "
            "experience replay and a periodically copied target network; acts greedily on Q.",
    when_to_use="Discrete actions where environment steps are costly: off-policy replay reuses every "
                "transition many times, so it needs fewer steps than on-policy methods such as REINFORCE.",
    when_not="Continuous actions (the max over actions is not computable: use an actor-critic or PPO), or when "
             "stable, monotone learning matters more than sample efficiency (Q-learning can oscillate).",
    relations=[
        Relation("alternative_to", "reinforce", "value-based: learns Q with replay and a target network instead of a "
                 "policy gradient"),
        Relation("uses", "mlp", "an MLP Q-network"),
    ],
    config=Config, build=build, objective=lambda model: model, task="rl",
    train_keys=("stop_at", "lr", "batch_size"),
    train=Train(lr=2.3e-3, batch_size=64, stop_at=500.0),
    data=Data("CartPole-v1"),
    bar=Bar("mean_return", 475.0, "max", 300),
))
