"""Evolution strategies: a policy's weights improved by a gradient estimated from random perturbations alone.

T. Salimans, J. Ho, X. Chen, S. Sidor, I. Sutskever, 2017. "Evolution Strategies as a Scalable Alternative to
Reinforcement Learning." arXiv:1703.03864.

The policy's parameters form one vector theta (D,). ES smooths the episode return F with Gaussian noise and
climbs the smoothed objective, whose gradient needs no back-propagation, only returns of perturbed policies:

    J(theta) = E_{eps ~ N(0, I)} F(theta + sigma eps),     grad J = (1 / sigma) E[ F(theta + sigma eps) eps ]

Each generation draws n/2 perturbations eps_i and uses each twice, as +eps_i and -eps_i (mirrored or antithetic
sampling: a constant part of F cancels within each pair), plays one episode per perturbed policy (all n at once
in a vectorized environment, the n networks run as one batched network), and replaces the returns by their
centered ranks (fitness shaping: ranks mapped linearly onto [-0.5, 0.5], so the update ignores the returns'
scale and outliers). The estimate

    g = 1 / (n sigma) sum_{i=1..n} shaped_i eps_i

feeds Adam as the gradient of -J (ascent), with optional L2 weight decay, as in the paper. The policy acted with
and evaluated is the mean theta itself, deterministic (arg-max for discrete actions, tanh-scaled mean for
continuous ones). The paper's scale (thousands of workers sharing noise by seeds) is out of scope: here the
population is evaluated in one process, in parallel environments.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from deepatlas.catalog import Bar, Count, Data, Entry, MAX_SIZE, Paper, Positive, Range, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.models.evolution.population import Policy, population_returns
from deepatlas.tasks.rl import Algorithm, EnvSizes


@dataclass
class Config(EnvSizes):
    hidden: Size = 16
    """units per hidden layer of the policy"""
    layers: Count = 1
    """hidden layers of the policy"""
    population: Annotated[int, Range(2, MAX_SIZE)] = 40
    """perturbed policies per generation, n (even: n/2 perturbations and their mirrors)"""
    sigma: Positive = 0.1
    """standard deviation of the parameter noise"""
    generations: Size = 1000
    """generations; training stops earlier at the time budget or at the recipe's stop_at"""
    validate_every: Size = 5
    """generations between validations of the mean policy (20 episodes with the fixed validation seeds)"""

    def __post_init__(self):
        if self.population % 2:
            raise DeepAtlasError(f"evolution_strategies: population must be even (antithetic pairs), "
                                 f"not {self.population}")


def centered_ranks(fitness: Tensor) -> Tensor:
    """Fitness shaping: fitness (n,) -> its ranks mapped linearly onto [-0.5, 0.5] (lowest -0.5, highest 0.5).
    Depends only on the order of the values, so any increasing transform of the fitness leaves it unchanged."""
    n = len(fitness)
    ranks = torch.empty_like(fitness)
    ranks[fitness.argsort()] = torch.arange(n, dtype=fitness.dtype, device=fitness.device)
    return ranks / max(n - 1, 1) - 0.5


def es_gradient(eps: Tensor, fitness: Tensor, sigma: float) -> Tensor:
    """The mirrored-sampling ES estimate. eps (h, D): the h = n/2 perturbations; fitness (n,): the (shaped)
    fitness of theta + sigma eps_i for i < h, then of theta - sigma eps_i. -> g (D,):

        g = 1 / (n sigma) sum_i (f(+eps_i) eps_i + f(-eps_i) (-eps_i)) = 1 / (n sigma) sum_i (f+_i - f-_i) eps_i"""
    h = len(eps)
    return (fitness[:h] - fitness[h:]) @ eps / (2 * h * sigma)                      # (h,) @ (h, D) -> (D,)


class EvolutionStrategies(Algorithm):
    action_kinds = ("discrete", "continuous")

    def __init__(self, model: Policy, cfg: Config):
        super().__init__(model)
        self.cfg = cfg

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        return self.model(obs)

    def learn(self, ctx) -> None:
        cfg, policy = self.cfg, self.model
        policy.set_bounds(ctx.env)
        optimizer = torch.optim.Adam(policy.net.parameters(), lr=ctx.train.lr, weight_decay=ctx.train.weight_decay)
        state = ctx.restore({"theta": optimizer}) or {"generation": 0}
        h = cfg.population // 2
        while state["generation"] < cfg.generations and not ctx.should_stop():
            theta = policy.flat()                                                     # (D,)
            # ---- ES: n/2 Gaussian perturbations and their mirrors, one episode each (a pair shares its seeds)
            eps = torch.randn(h, len(theta), generator=ctx.generator).to(theta.device)  # (h, D)
            population = theta + cfg.sigma * torch.cat([eps, -eps])                    # (n, D)
            seeds = [int(s) for s in ctx.rng.integers(2**31, size=h)] * 2
            returns = population_returns(policy, population, ctx.env, seeds)          # (n,)
            # ---- fitness shaping and the gradient estimate, then Adam on -g
            g = es_gradient(eps, centered_ranks(returns), cfg.sigma)                  # (D,)
            params = list(policy.net.parameters())
            for p, piece in zip(params, (-g).split([p.numel() for p in params])):
                p.grad = piece.view_as(p).clone()
            optimizer.step()
            state["generation"] += 1
            generation = state["generation"]
            ctx.log(generation, {"mean_return": returns.mean().item(), "max_return": returns.max().item(),
                                 "grad_norm": g.norm().item()})
            ctx.progress(generation, cfg.generations, f"return {returns.mean().item():.1f}")
            if generation % cfg.validate_every == 0 or generation == cfg.generations:
                ctx.validate(generation)
                ctx.checkpoint({"theta": optimizer}, state)


def build(cfg: Config) -> EvolutionStrategies:
    return EvolutionStrategies(Policy(cfg.obs_dim, cfg.n_actions, cfg.action_dim, cfg.hidden, cfg.layers), cfg)


register(Entry(
    name="evolution_strategies", title="Evolution strategies (OpenAI-ES)", family="evolution", year=2017,
    paper=Paper("T. Salimans, J. Ho, X. Chen, S. Sidor, I. Sutskever",
                "Evolution Strategies as a Scalable Alternative to Reinforcement Learning", "arXiv:1703.03864"),
    summary="Perturbs a policy's weights with antithetic Gaussian noise, plays an episode with each perturbed "
            "policy, and moves the weights along the noise weighted by rank-shaped returns (Adam on the "
            "estimated gradient): a gradient of the smoothed return without back-propagation.",
    when_to_use="Episodic tasks with sparse or delayed rewards, non-differentiable policies or simulators, long "
                "horizons where credit assignment is hard, and many cheap parallel workers: it only needs returns.",
    when_not="Sample efficiency matters (each generation spends whole episodes on every perturbation), or the "
             "policy has millions of weights and few workers: policy gradients (PPO) or DQN use data better.",
    relations=[
        Relation("alternative_to", "ppo", "gradient-free: perturbs the policy's weights instead of backpropagating "
                 "returns"),
        Relation("uses", "mlp", "an MLP policy"),
    ],
    config=Config, build=build, objective=lambda model: model, task="rl",
    train_keys=("stop_at", "lr", "weight_decay"),
    train=Train(lr=0.05, weight_decay=0.005, stop_at=500.0),
    data=Data("CartPole-v1"),
    bar=Bar("mean_return", 475.0, "max", 300),
))
