"""Model-based RL: a probabilistic ensemble of learned dynamics and cross-entropy-method planning (PETS).

K. Chua, R. Calandra, R. McAllister, S. Levine, 2018. "Deep Reinforcement Learning in a Handful of Trials using
Probabilistic Dynamics Models." NeurIPS 2018, arXiv:1805.12114.

No policy network is learned. The agent learns the environment's dynamics and plans through them at every step:

  Dynamics. An ensemble of B MLPs, each a Gaussian over the change of the observation,

      f_b(s, a) = N(mu_b(s, a), diag sigma_b^2(s, a)),      s' = s + Delta,   Delta ~ f_b(s, a)

  trained by the Gaussian negative log-likelihood (PETS's "probabilistic ensemble", PE; `probabilistic=False`
  gives deterministic members fitted by mean squared error, PETS's "DE")

      NLL_b = mean[ (Delta - mu_b)^2 / sigma_b^2 + log sigma_b^2 ] + 0.01 (sum max_logvar - sum min_logvar)

  with log sigma^2 softly bounded between two learned vectors (the PETS appendix). Each member b is trained on its
  own bootstrap resample of the transitions collected so far (epistemic uncertainty), inputs (s, a) and targets
  Delta are standardized with the data's mean and standard deviation.

  Reward. Known, as in PETS (which gives the planner each task's reward function). Pendulum-v1's is

      r(s, a) = -(theta^2 + 0.1 theta_dot^2 + 0.001 a^2),     theta = atan2(sin theta, cos theta) from the obs

  of the state before the step and the clipped torque.

  Planning (model-predictive control with the cross-entropy method). At each step, from the observed s_0, CEM
  searches action sequences a_{0:H} in the action box: sample N sequences from N(m, diag v) clipped to the
  bounds, propagate each through the ensemble by trajectory sampling TS1 (each of its P particles goes through
  one member for the whole horizon; the particles are spread over the members in turn, which for i.i.d.
  candidates is as good as drawing the member at random), score a sequence by its predicted return
  sum_t r(s_t, a_t) averaged over its particles, refit (m, v) to the top-K elites (m <- alpha m + (1 - alpha)
  mean(elites), same for v), repeat `iterations` times. Only the first action of m is executed (receding
  horizon); the next step's mean starts from m shifted by one step (warm start). All candidates, particles and
  members (and, in evaluation, all episodes) go through the model as one batched tensor computation per model
  step: a (B, rows, features) batched matrix product.

  Where this differs from the paper, for a 2-core CPU budget: P = 1 particle per candidate by default (PETS: 20)
  and, with `sample` off, each particle follows its member's mean (Pendulum is deterministic: the ensemble's
  disagreement, not the aleatoric noise, is what matters; `sample=True` restores PETS's sampled TS1); the
  candidate sequences are a clipped Gaussian (PETS: a truncated one); smaller networks (2 x 64 swish units;
  PETS: 3-4 x 200-500) fitted for a fixed number of minibatch steps after each episode (PETS: 5 epochs).

  Loop. `seed_episodes` random-action episodes, then alternately fit the ensemble on all data and play one
  episode with the planner, until `max_env_steps` environment steps (the cap counts every training step, random
  ones included, and is logged; the default 1,600 is well under the bar's 15,000). Validation and test
  episodes (20 with fixed seeds, planned in parallel) are evaluation, as in the paper's learning curves, and do
  not count toward the cap.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import Bar, Count, Data, Entry, NonNegative, Paper, Probability, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.rl import Algorithm, to_env_action


@dataclass
class Config:
    obs_dim: Size = 3
    """observation size (set from the environment)"""
    n_actions: Count = 0
    """discrete actions (set from the environment; mpc needs continuous actions, so 0)"""
    action_dim: Size = 1
    """continuous action dimensions (set from the environment)"""
    ensemble: Size = 5
    """B, dynamics models in the ensemble (each on its own bootstrap resample)"""
    hidden: Size = 64
    """units per hidden layer of each dynamics model"""
    layers: Size = 2
    """hidden layers of each dynamics model (SiLU, "swish", as PETS)"""
    probabilistic: bool = True
    """members output a Gaussian (mean, log-variance) trained by NLL (PETS's PE); False: a mean trained by MSE"""
    max_env_steps: Size = 1600
    """training environment steps, random seeding included (evaluation episodes do not count)"""
    seed_episodes: Size = 1
    """episodes of uniformly random actions that seed the data"""
    fit_steps: Size = 600
    """gradient steps on the ensemble after each episode (each member a minibatch of its bootstrap set)"""
    fit_batch: Size = 128
    """transitions per member per gradient step"""
    fit_decay: NonNegative = 1e-5
    """L2 penalty on the dynamics weights (AdamW decoupled)"""
    horizon: Size = 15
    """H, actions per planned sequence"""
    candidates: Size = 100
    """N, action sequences sampled per CEM iteration"""
    elites: Size = 10
    """K, best sequences the Gaussian is refitted to"""
    iterations: Size = 3
    """CEM iterations per executed action"""
    particles: Size = 1
    """P, propagated copies of each candidate, each through one member for the whole horizon (TS1)"""
    sample: bool = False
    """draw each particle's next state from its member's Gaussian (PETS's TS1); False: the member's mean"""
    alpha: Probability = 0.1
    """CEM smoothing: weight kept on the previous mean and variance at each refit"""
    max_steps: Size = 1000
    """a training episode longer than this is cut (Pendulum-v1 ends itself at 200)"""
    validate_every: Size = 3
    """planner episodes between validations"""
    val_episodes: Size = 3
    """validation episodes (of the fixed 20 validation seeds): each costs a full planned episode"""

    def __post_init__(self):
        if (self.candidates * self.particles) % self.ensemble:
            raise DeepAtlasError(f"mpc: candidates x particles ({self.candidates} x {self.particles}) must be a "
                                 f"multiple of ensemble ({self.ensemble}): the members share the particles equally")
        if self.elites > self.candidates:
            raise DeepAtlasError(f"mpc: elites ({self.elites}) must be at most candidates ({self.candidates})")


def pendulum_reward(obs: Tensor, action: Tensor) -> Tensor:
    """Pendulum-v1's reward of taking `action` (..., 1) in the state observed as `obs` (..., 3) = (cos theta,
    sin theta, theta_dot) -> (...,): -(theta^2 + 0.1 theta_dot^2 + 0.001 u^2), u the torque clipped to [-2, 2]."""
    theta = torch.atan2(obs[..., 1], obs[..., 0])              # in (-pi, pi], the env's angle_normalize
    torque = action[..., 0].clamp(-2.0, 2.0)
    return -(theta.pow(2) + 0.1 * obs[..., 2].pow(2) + 0.001 * torque.pow(2))


REWARDS = {"Pendulum-v1": pendulum_reward}
"""known reward functions r(obs, action) of the environments mpc can plan in"""


class EnsembleLinear(nn.Module):
    """B independent linear layers applied at once: x (B, rows, in) -> (B, rows, out) by one batched matmul."""

    def __init__(self, members: int, n_in: int, n_out: int):
        super().__init__()
        bound = 1 / math.sqrt(n_in)
        self.weight = nn.Parameter(torch.empty(members, n_in, n_out).uniform_(-bound, bound))  # (B, in, out)
        self.bias = nn.Parameter(torch.zeros(members, 1, n_out))                             # (B, 1, out)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)                                      # (B, rows, out)


class DynamicsEnsemble(nn.Module):
    """B MLPs (s, a) -> Gaussian over Delta = s' - s, with the data's normalization kept in buffers (saved with
    the weights, so a loaded run plans as the trained one did)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.members, self.probabilistic = cfg.ensemble, cfg.probabilistic
        n_in, n_out = cfg.obs_dim + cfg.action_dim, cfg.obs_dim
        sizes = [n_in, *[cfg.hidden] * cfg.layers]
        self.hidden = nn.ModuleList(EnsembleLinear(cfg.ensemble, a, b) for a, b in itertools.pairwise(sizes))
        self.head = EnsembleLinear(cfg.ensemble, cfg.hidden, 2 * n_out)          # mean and log-variance
        self.max_logvar = nn.Parameter(torch.full((n_out,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((n_out,), -10.0))
        for name, size in (("in_mean", n_in), ("in_std", n_in), ("out_mean", n_out), ("out_std", n_out)):
            self.register_buffer(name, torch.zeros(size) if "mean" in name else torch.ones(size))

    def set_normalization(self, inputs: Tensor, deltas: Tensor) -> None:
        """Standardize by the data: inputs (n, obs+act), deltas (n, obs)."""
        self.in_mean.copy_(inputs.mean(0))
        self.in_std.copy_(inputs.std(0).clamp(min=1e-6))
        self.out_mean.copy_(deltas.mean(0))
        self.out_std.copy_(deltas.std(0).clamp(min=1e-6))

    def forward(self, obs: Tensor, action: Tensor, with_logvar: bool = True) -> tuple[Tensor, Tensor | None]:
        """obs (B, rows, obs_dim), action (B, rows, action_dim), row-group b through member b -> mean and
        log-variance of the normalized Delta, each (B, rows, obs_dim) (the log-variance only `with_logvar`)."""
        h = (torch.cat([obs, action], -1) - self.in_mean) / self.in_std         # (B, rows, obs+act)
        for layer in self.hidden:
            h = F.silu(layer(h))                                                 # (B, rows, hidden)
        mean, raw = self.head(h).chunk(2, -1)                                    # (B, rows, obs) each
        if not with_logvar:
            return mean, None
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)             # soft upper bound
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)          # soft lower bound
        return mean, logvar

    def loss(self, obs: Tensor, action: Tensor, delta: Tensor) -> Tensor:
        """Gaussian NLL (or MSE) of the normalized targets, summed over members, averaged over rows."""
        mean, logvar = self(obs, action)
        target = (delta - self.out_mean) / self.out_std                          # (B, rows, obs)
        if not self.probabilistic:
            return (mean - target).pow(2).mean((1, 2)).sum()
        nll = ((mean - target).pow(2) * (-logvar).exp() + logvar).mean((1, 2)).sum()
        return nll + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())

    def step(self, obs: Tensor, action: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The next observation s + Delta for rows grouped by member, (B, rows, ...) -> (B, rows, obs_dim): the
        members' mean, or a draw from their Gaussian when `generator` is given (trajectory sampling)."""
        sample = generator is not None and self.probabilistic
        mean, logvar = self(obs, action, with_logvar=sample)
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            mean = mean + (0.5 * logvar).exp() * noise
        return obs + self.out_mean + self.out_std * mean


class MPC(Algorithm):
    action_kinds = ("continuous",)
    not_exported = "planning over many candidate action sequences, rolled out through the learned dynamics"

    def __init__(self, model: DynamicsEnsemble, cfg: Config):
        super().__init__(model)
        self.cfg = cfg
        self.reward = pendulum_reward
        self.register_buffer("low", -2.0 * torch.ones(cfg.action_dim))     # the action box (set from the env)
        self.register_buffer("high", 2.0 * torch.ones(cfg.action_dim))
        self.plan_mean: Tensor | None = None                                # warm start of `act`, (n, H, act)
        self.plan_generator: torch.Generator | None = None

    def check(self, env, name: str) -> None:
        super().check(env, name)
        if env.id not in REWARDS:
            raise DeepAtlasError(f"--data {env.id}: {name} plans with a known reward function, written for "
                                 f"{', '.join(REWARDS)} only")

    def use_env(self, env) -> None:
        self.reward = REWARDS[env.id]
        self.low.copy_(torch.tensor(env.spec["action"]["low"]))
        self.high.copy_(torch.tensor(env.spec["action"]["high"]))

    # ---- planning: CEM over action sequences through the ensemble -------------------------------------------
    @torch.no_grad()
    def predicted_return(self, obs: Tensor, actions: Tensor, generator: torch.Generator | None) -> Tensor:
        """obs (n, obs_dim), actions (n, N, H, act) -> return predicted by TS1 propagation, (n, N)."""
        cfg = self.cfg
        n, N, H, A = actions.shape
        B, P = cfg.ensemble, cfg.particles
        rows = n * N * P // B
        # every (episode, candidate) gets P particles; row r of the flattened (n, N, P) goes through member r mod B
        # (candidates are i.i.d. samples, so this fixed assignment is as good as a random one): TS1
        a = actions[:, :, None].expand(n, N, P, H, A).reshape(rows, B, H, A).transpose(0, 1)  # (B, rows, H, act)
        s = obs[:, None].expand(n, N * P, obs.shape[-1]).reshape(rows, B, -1).transpose(0, 1)  # (B, rows, obs)
        total = torch.zeros(B, rows, device=obs.device)
        for t in range(H):  # the horizon is sequential: each step's state comes from the previous one
            total += self.reward(s, a[:, :, t])                                        # r(s_t, a_t)
            s = self.model.step(s, a[:, :, t], generator if cfg.sample else None)      # s_{t+1} ~ f_b(s_t, a_t)
        return total.transpose(0, 1).reshape(n, N, P).mean(2)                          # (n, N): mean over P

    @torch.no_grad()
    def plan(self, obs: Tensor, mean: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One MPC step for n observations at once: obs (n, obs_dim), warm-start mean (n, H, act) -> the actions
        to execute (n, act) and the next step's warm start (n, H, act)."""
        cfg = self.cfg
        n, H, A = mean.shape
        low, high = self.low, self.high
        var = ((high - low) / 4).pow(2).expand(n, H, A).clone()                        # PETS's initial variance
        for _ in range(cfg.iterations):
            noise = torch.randn(n, cfg.candidates, H, A, generator=generator, device=obs.device)
            samples = (mean[:, None] + var.sqrt()[:, None] * noise).clamp(low, high)   # (n, N, H, act)
            returns = self.predicted_return(obs, samples, generator)                   # (n, N)
            top = returns.topk(cfg.elites, dim=1).indices                              # (n, K)
            elites = samples.gather(1, top[:, :, None, None].expand(n, cfg.elites, H, A))  # (n, K, H, act)
            mean = cfg.alpha * mean + (1 - cfg.alpha) * elites.mean(1)
            var = cfg.alpha * var + (1 - cfg.alpha) * elites.var(1, unbiased=False)
        shifted = torch.cat([mean[:, 1:], ((low + high) / 2).expand(n, 1, A)], 1)       # warm start, (n, H, act)
        return mean[:, 0], shifted

    def initial_plan(self, n: int, device) -> Tensor:
        return ((self.low + self.high) / 2).to(device).expand(n, self.cfg.horizon, self.cfg.action_dim).clone()

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Plan for a batch of observations (all evaluation episodes together), warm-started from the last call's
        plan when the batch is the same size."""
        if self.plan_generator is None or self.plan_generator.device != obs.device:
            self.plan_generator = torch.Generator(obs.device).manual_seed(0)
        if self.plan_mean is None or self.plan_mean.shape[0] != len(obs):
            self.plan_mean = self.initial_plan(len(obs), obs.device)
        action, self.plan_mean = self.plan(obs, self.plan_mean, self.plan_generator)
        return action

    @torch.no_grad()
    def evaluate(self, env, split: str = "test", episodes: int | None = None) -> dict[str, float]:
        """Reset the planner's warm start and its noise (seed 0) so that every evaluation plays the same way."""
        self.use_env(env)
        self.plan_mean, self.plan_generator = None, None
        return super().evaluate(env, split, episodes)

    # ---- the loop: collect, fit the ensemble, plan ---------------------------------------------------------------
    def bootstrap(self, n: int, generator: torch.Generator) -> Tensor:
        """Each member's resample of the n transitions: n indices drawn with replacement, (B, n)."""
        return torch.randint(n, (self.cfg.ensemble, n), generator=generator)

    def fit(self, data: dict[str, Tensor], optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
        """`fit_steps` gradient steps on the ensemble; member b sees only its own bootstrap resample."""
        cfg, model = self.cfg, self.model
        inputs = torch.cat([data["obs"], data["action"]], -1)
        deltas = data["next_obs"] - data["obs"]                                        # (n, obs)
        model.set_normalization(inputs, deltas)
        n = len(inputs)
        bootstrap = self.bootstrap(n, generator)                                       # (B, n)
        for _ in range(cfg.fit_steps):
            pick = torch.randint(n, (cfg.ensemble, cfg.fit_batch), generator=generator)
            index = bootstrap.gather(1, pick).to(deltas.device)                        # (B, batch)
            loss = model.loss(data["obs"][index], data["action"][index], deltas[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.item() / cfg.ensemble

    def learn(self, ctx) -> None:
        cfg, device = self.cfg, ctx.device
        self.use_env(ctx.env)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=ctx.train.lr, weight_decay=cfg.fit_decay)
        state = ctx.restore({"dynamics": optimizer}) or {"episode": 0, "env_steps": 0}
        data: dict[str, list[Tensor]] = {"obs": [], "action": [], "next_obs": []}
        for key in data:  # a resumed run's transitions are part of its saved loop state
            if key in state:
                data[key] = [state[key]]
        env = ctx.env.make()
        validated = False
        generator = torch.Generator(device).manual_seed(ctx.seed)
        try:
            while state["env_steps"] < cfg.max_env_steps and not ctx.should_stop():
                random = state["episode"] < cfg.seed_episodes
                if not random:
                    fit_loss = self.fit({k: torch.cat(v) for k, v in data.items()}, optimizer, ctx.generator)
                obs, _ = env.reset(seed=int(ctx.rng.integers(2**31)))
                plan = self.initial_plan(1, device)
                total, done, steps = 0.0, False, 0
                while not done and steps < cfg.max_steps and state["env_steps"] < cfg.max_env_steps:
                    o = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]   # (1, obs)
                    if random:
                        u = torch.rand(1, cfg.action_dim, generator=ctx.generator).to(device)
                        action = self.low + (self.high - self.low) * u
                    else:
                        action, plan = self.plan(o, plan, generator)
                    action = to_env_action(action, ctx.env)
                    obs, reward, terminated, truncated, _ = env.step(action[0].cpu().numpy())
                    next_o = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]
                    for key, value in (("obs", o), ("action", action), ("next_obs", next_o)):
                        data[key].append(value)
                    total += float(reward)
                    steps += 1
                    state["env_steps"] += 1
                    done = terminated or truncated
                    if steps % 50 == 0 and ctx.should_stop():
                        break
                state["episode"] += 1
                logs = {"episode_return": total, "env_steps": state["env_steps"], "episode_steps": steps}
                if not random:
                    logs["dynamics_loss"] = fit_loss
                ctx.log(state["episode"], logs)
                ctx.progress(state["env_steps"], cfg.max_env_steps, f"return {total:.1f}")
                last = state["env_steps"] >= cfg.max_env_steps or ctx.should_stop()
                if not random and ((state["episode"] - cfg.seed_episodes) % cfg.validate_every == 0 or last):
                    ctx.validate(state["episode"], cfg.val_episodes)
                    validated = True
                    ctx.checkpoint({"dynamics": optimizer}, {**state, **{k: torch.cat(v) for k, v in data.items()}})
            if not validated:  # the engine would validate on all 20 episodes; fewer keep a short run short
                self.fit({k: torch.cat(v) for k, v in data.items()}, optimizer, ctx.generator)
                ctx.validate(state["episode"], cfg.val_episodes)
        finally:
            env.close()


def build(cfg: Config) -> MPC:
    if cfg.action_dim < 1:
        raise ValueError("mpc plans continuous actions: action_dim must be at least 1")
    return MPC(DynamicsEnsemble(cfg), cfg)


register(Entry(
    name="mpc", title="MPC with a learned dynamics ensemble (PETS-style: probabilistic ensemble + CEM)",
    family="rl", year=2018,
    paper=Paper("K. Chua, R. Calandra, R. McAllister, S. Levine", "Deep Reinforcement Learning in a Handful of "
                "Trials using Probabilistic Dynamics Models", "arXiv:1805.12114"),
    summary="Learns the environment's dynamics with an ensemble of probabilistic neural networks, each on its own "
            "bootstrap of the collected transitions, and acts by planning: the cross-entropy method searches "
            "action sequences through the ensemble, scores them with the known reward, executes the first action "
            "and replans at the next step.",
    when_to_use="Environment steps are expensive and the reward is known or cheap to compute: it learns from a "
                "few thousand steps where model-free methods need hundreds of thousands; low-dimensional "
                "continuous control with short horizons.",
    when_not="Acting must be fast (every step runs a search through the model), long-horizon or sparse-reward "
             "tasks beyond the planning horizon, high-dimensional observations (pixels), or an unknown reward.",
    relations=[
        Relation("alternative_to", "ppo", "model-based: learns the dynamics and plans with CEM instead of learning a "
                 "policy"),
        Relation("uses", "mlp", "an ensemble of probabilistic MLPs is its dynamics model"),
    ],
    config=Config, build=build, objective=lambda model: model, task="rl",
    train_keys=("stop_at", "lr"),
    train=Train(lr=1e-3),
    data=Data("Pendulum-v1"),
    bar=Bar("mean_return", -250.0, "max", 300),
))
