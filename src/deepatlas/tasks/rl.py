"""What the rl and evolution families share: the Algorithm base, replay buffer, rollout storage and GAE,
policy networks, and evaluation by episode returns.

A method whose loop is the algorithm (DQN's act-store-sample-update, PPO's rollout-then-epochs, a genetic
algorithm's generations) subclasses `Algorithm` and writes that loop in `learn(ctx)`, in its own file, in
plain sight. The engine hands it a context (engine/interact.py) with the environment, the seeded RNG, the run
directory's log, the progress bar, a time budget, validation that keeps the best weights, and checkpoints.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from deepatlas.catalog import Count, Size
from deepatlas.data import envs
from deepatlas.data.envs import EPISODES, Environment, episode_returns, episode_seeds, summarize_returns
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks import Task
from deepatlas.tasks.classification import TABLE_OPTIONS
from deepatlas.tasks.predictions import Episodes, Prediction


@dataclass
class EnvSizes:
    """The sizes a method's Config takes from its environment (data/envs.py's dims), CartPole-v1's by default;
    a method's Config subclasses it."""
    obs_dim: Size = 4
    """observation size (set from the environment)"""
    n_actions: Count = 2
    """discrete actions (set from the environment; 0 for continuous)"""
    action_dim: Count = 0
    """continuous action dimensions (set from the environment; 0 for discrete)"""


class Algorithm(nn.Module):
    """Base of rl and evolution methods. `model` holds every network (saved to model.safetensors).

    A subclass writes `learn(ctx)` (its whole training loop) and `act(obs (n, obs_dim)) -> actions`, the
    policy used for evaluation (greedy or the distribution's mode). `evaluate` scores `act` by the mean
    undiscounted return over the split's fixed episode seeds; methods judged otherwise (a board game's
    results against fixed opponents) override it."""

    metric = "mean_return"
    action_kinds: tuple[str, ...] = ("discrete", "continuous")
    """the action spaces the method can act in; the engine refuses other environments with one line"""
    not_exported = ""
    """what acting is where it is not one forward pass of the policy (a search, a planner); `export` names it"""
    export_note = "the greedy action (the arg-max, or the mean of a continuous action)"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def check(self, env, name: str) -> None:
        """Refuse, in one line, an environment the method cannot act in (before anything is written)."""
        env.require(self.action_kinds, name)

    def learn(self, ctx) -> None:
        raise NotImplementedError("an rl or evolution method writes its loop in learn(ctx)")

    def use_env(self, env: Environment) -> None:
        """Take from the environment what `act` needs besides the saved weights (a planner's reward function) before
        acting outside `learn` and `evaluate`; most methods need nothing."""

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        raise NotImplementedError("an rl method writes act(obs) -> actions")

    def export_inputs(self, env: Environment, n: int) -> dict[str, Tensor]:
        """The first observations of the first n test episodes (their fixed seeds)."""
        self.use_env(env)
        game = env.make()
        try:
            first = [game.reset(seed=seed)[0] for seed in episode_seeds("test", n)]
        finally:
            game.close()
        return {"observation": torch.as_tensor(np.stack(first), dtype=torch.float32).flatten(1)}

    def infer(self, obs: Tensor) -> dict[str, Tensor]:
        return {"action": self.act(obs)}

    @torch.no_grad()
    def evaluate(self, env: Environment, split: str = "test", episodes: int | None = None) -> dict[str, float]:
        """Mean and std of the return over `episodes` (default 20) episodes with the split's fixed seeds."""
        episodes = episodes or EPISODES
        was_training = self.training
        self.eval()
        device = next(self.parameters(), torch.empty(0)).device
        returns = episode_returns(self.act, env, episode_seeds(split, episodes), device)
        self.train(was_training)
        return summarize_returns(returns)


class PolicyGradient(Algorithm):
    """Base of the policy-gradient methods over an ActorCritic (reinforce, a2c, ppo): built from a config with
    the network's sizes, acting in evaluation with the policy's most likely action."""

    def __init__(self, model: ActorCritic, cfg):
        super().__init__(model)
        self.cfg = cfg

    @classmethod
    def build(cls, cfg) -> PolicyGradient:
        """The method over an ActorCritic of cfg.hidden x cfg.layers for the environment's sizes in cfg."""
        return cls(ActorCritic(cfg.obs_dim, cfg.n_actions, cfg.action_dim, cfg.hidden, cfg.layers), cfg)

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        return self.model.mode(obs)


def mlp(sizes: list[int], activation: type[nn.Module] = nn.Tanh, out_gain: float = 1.0) -> nn.Sequential:
    """Linear layers of `sizes` with `activation` between them. Orthogonal initialization (gain sqrt 2 hidden,
    `out_gain` on the last layer) and zero biases: the policy-gradient literature's default (Engstrom et al. 2020)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(a, b)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(linear.weight, out_gain if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers += [linear] if last else [linear, activation()]
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """A policy pi(a|s) and a state value V(s), as two separate MLPs (no shared trunk, so the value loss's scale
    cannot disturb the policy's features). Discrete actions: a categorical over `n_actions` logits. Continuous
    actions: a diagonal Gaussian whose mean the network outputs and whose log standard deviation is a free
    parameter per dimension (state-independent, as in PPO's paper)."""

    def __init__(self, obs_dim: int, n_actions: int = 0, action_dim: int = 0, hidden: int = 64, layers: int = 2,
                 activation: type[nn.Module] = nn.Tanh):
        super().__init__()
        if (n_actions > 0) == (action_dim > 0):
            raise ValueError("give exactly one of n_actions (discrete) or action_dim (continuous)")
        self.continuous = action_dim > 0
        trunk = [obs_dim, *[hidden] * layers]
        self.policy = mlp([*trunk, action_dim or n_actions], activation, out_gain=0.01)
        self.value_net = mlp([*trunk, 1], activation, out_gain=1.0)
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def distribution(self, obs: Tensor) -> Distribution:
        """obs (n, obs_dim) -> pi(.|obs), batch shape (n,)."""
        out = self.policy(obs)
        if self.continuous:
            return Independent(Normal(out, self.log_std.exp().expand_as(out)), 1)
        return Categorical(logits=out)

    def value(self, obs: Tensor) -> Tensor:
        """obs (n, obs_dim) -> V(obs) (n,)."""
        return self.value_net(obs).squeeze(-1)

    def mode(self, obs: Tensor) -> Tensor:
        """The most likely action: the Gaussian's mean, or the arg-max logit."""
        out = self.policy(obs)
        return out if self.continuous else out.argmax(-1)


def to_env_action(action: Tensor, env: Environment) -> Tensor:
    """A continuous action clipped into the environment's box (the Gaussian's samples are unbounded); discrete
    actions unchanged."""
    if env.discrete:
        return action
    spec = env.spec["action"]
    low = torch.tensor(spec["low"], dtype=action.dtype, device=action.device)
    high = torch.tensor(spec["high"], dtype=action.dtype, device=action.device)
    return action.clamp(low, high)


# ---- storage -------------------------------------------------------------------------------------------------

class ReplayBuffer:
    """A ring buffer of transitions (obs, action, reward, next_obs, done) in preallocated tensors; `sample`
    draws a minibatch uniformly with replacement from what is stored (Mnih et al. 2015's experience replay).
    `done` is 1 only at a true termination: at a time-limit truncation the next state's value still counts."""

    def __init__(self, capacity: int, obs_dim: int, action_shape: tuple[int, ...] = (),
                 action_dtype: torch.dtype = torch.long, device: torch.device | str = "cpu"):
        self.capacity, self.size, self.cursor = capacity, 0, 0
        self.obs = torch.zeros(capacity, obs_dim, device=device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=device)
        self.action = torch.zeros(capacity, *action_shape, dtype=action_dtype, device=device)
        self.reward = torch.zeros(capacity, device=device)
        self.done = torch.zeros(capacity, device=device)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, done: Tensor) -> None:
        """Store a batch of n transitions (one per environment), overwriting the oldest when full."""
        n = len(obs)
        index = (self.cursor + torch.arange(n)) % self.capacity
        self.obs[index], self.action[index], self.reward[index] = obs, action.to(self.action.dtype), reward.float()
        self.next_obs[index], self.done[index] = next_obs, done.float()
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        index = torch.randint(self.size, (batch_size,), generator=generator).to(self.obs.device)
        return {"obs": self.obs[index], "action": self.action[index], "reward": self.reward[index],
                "next_obs": self.next_obs[index], "done": self.done[index]}


@torch.no_grad()
def rollout(model: ActorCritic, env, vector, obs: np.ndarray, running: np.ndarray, steps: int,
            device: torch.device) -> tuple[dict[str, Tensor], np.ndarray, list[float]]:
    """`steps` (T) steps of the n environments of `vector` with the policy of `model`, from observations `obs`
    (n, obs_dim) -> (T, n, ...) tensors obs, action, log_prob, value, reward, terminated, ended, next_obs and
    next_value (V of the state after each step: the finished episode's last observation where it ended), the
    observations to continue from, and the returns of the episodes that ended (`running` (n,) holds each
    environment's return so far and is updated in place). PPO and A2C collect their rollouts with it."""
    record: dict[str, list[Tensor]] = {k: [] for k in ("obs", "action", "log_prob", "value", "reward",
                                                       "terminated", "ended", "next_obs")}
    finished = []
    for _ in range(steps):  # environment time steps: sequential by nature
        o = torch.as_tensor(obs, dtype=torch.float32, device=device)                 # (n, obs_dim)
        dist = model.distribution(o)
        action = dist.sample()                                                       # (n,) or (n, D)
        obs, reward, terminated, truncated, info = vector.step(to_env_action(action, env).cpu().numpy())
        ended = terminated | truncated
        running += reward
        next_obs = obs.copy()  # SAME_STEP autoreset: obs already starts the next episode where one ended
        if ended.any():
            next_obs[ended] = np.stack(info["final_obs"][ended])
            finished += running[ended].tolist()
            running[ended] = 0.0
        for key, value in (("obs", o), ("action", action), ("log_prob", dist.log_prob(action)),
                           ("value", model.value(o)), ("reward", reward), ("terminated", terminated),
                           ("ended", ended), ("next_obs", next_obs)):
            record[key].append(torch.as_tensor(value, device=device))
    batch = {k: torch.stack(v) for k, v in record.items()}
    batch["reward"], batch["next_obs"] = batch["reward"].float(), batch["next_obs"].float()
    batch["next_value"] = model.value(batch["next_obs"].flatten(0, 1)).view(steps, -1)  # (T n, obs) -> (T, n)
    return batch, obs, finished


def gae(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, ended: Tensor,
        gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, arXiv:1506.02438) over a rollout of T steps of
    n environments; every argument is (T, n).

        delta_t = r_t + gamma V(s_{t+1}) (1 - terminated_t) - V(s_t)
        A_t     = delta_t + gamma lam (1 - ended_t) A_{t+1}

    `next_values` is V of the state after step t: the episode's last observation when it ended there (so a
    time-limit truncation still bootstraps), `terminated` stops the bootstrap at a true end, `ended`
    (terminated or truncated) stops the sum from running into the next episode. Returns (advantages,
    returns = advantages + values). lam = 1 gives Monte-Carlo returns minus the baseline; lam = 0, one-step TD."""
    T = len(rewards)
    deltas = rewards + gamma * next_values * (1 - terminated.float()) - values
    carry = 1 - ended.float()
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):  # a backward recursion over time: sequential by definition
        running = deltas[t] + gamma * lam * carry[t] * running
        advantages[t] = running
    return advantages, advantages + values


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """G_t = sum_k gamma^k r_{t+k} of one episode's rewards (T,) -> (T,), by one matrix product."""
    T = len(rewards)
    exponent = torch.arange(T, device=rewards.device)
    powers = gamma ** (exponent[None, :] - exponent[:, None]).clamp(min=0).to(rewards.dtype)  # (T, T)
    return (torch.triu(powers) * rewards[None, :]).sum(1)


# ---- the tasks --------------------------------------------------------------------------------

class EnvironmentTask(Task):
    """rl: methods act in an environment (a gymnasium id or a board game) and own their loop; `predict` takes
    no input: it plays one test episode (`render`: saved as a GIF) or shows a board game."""

    def predict(self, objective, spec: dict, path=None, out=None, render=None, **options) -> Prediction:
        self.check_options(None, {k: v for k, v in options.items() if v is not None})
        if path is not None or out is not None:
            raise DeepAtlasError(f"this run takes no input: it plays {spec['env']} (--render GIF to watch)")
        return Episodes(envs.predict(objective, spec, render=Path(render) if render else None),
                        files=[str(render)] if render else [])


    def act(self, objective, spec: dict, observation):
        return envs.act(objective, spec, observation)

    def baseline(self, spec: dict, data, split: str = "test", episodes: int | None = None, examples=None) -> dict:
        """A random policy (a random player) on the agent's own evaluation episodes."""
        description, values = envs.baseline(spec, data, split, episodes)
        return {"baseline": description, **values}


class SearchTask(Task):
    """search: a method that trains other entries (on tabular data) and keeps its findings."""

    def baseline(self, spec: dict, data, split: str = "test", episodes: int | None = None, examples=None) -> dict:
        return {}  # its findings are measured against each other

    def predict(self, objective, spec: dict, path=None, out=None, render=None, **options) -> Prediction:
        raise DeepAtlasError("a search run searches rather than predicts: its findings are in its metrics.json "
                             "and search.json")


TASKS = [EnvironmentTask("rl", "deepatlas.data.envs", loop="own"),
         SearchTask("search", "deepatlas.data.tabular", loop="own", options=TABLE_OPTIONS)]  # the search trains tabular classifiers
