"""A genetic algorithm over the weights of a policy network (neuroevolution).

F. P. Such, V. Madhavan, E. Conti, J. Lehman, K. O. Stanley, J. Clune, 2017. "Deep Neuroevolution: Genetic
Algorithms Are a Competitive Alternative for Training Deep Neural Networks for Reinforcement Learning."
arXiv:1712.06567. Crossover of network weight vectors as in D. J. Montana and L. Davis, 1989, "Training
Feedforward Neural Networks Using Genetic Algorithms", IJCAI.

Each individual is a flat weight vector (D,) of the same policy MLP; a population is a (P, D) matrix. Its
fitness is the episode return, averaged over a few episodes to cut the noise of random starts. One generation:

    fitness_j  = mean over `episodes` returns of policy j           (all P x episodes played at once)
    elites     = the `elites` fittest, copied unchanged              (elitism: the best is never lost)
    parents    = tournament selection: the fittest of `tournament` individuals drawn at random, twice per child
    child      = crossover(parent_a, parent_b) with probability `crossover_rate` (uniform: each gene from either
                 parent with probability 1/2; one-point: genes before a random cut from a, after it from b),
                 else a copy of parent_a
    child     += mutation_sigma N(0, I)                              (Gaussian mutation of every gene)

No gradient anywhere: selection and variation alone. The policy acted with is the fittest individual of the last
generation, copied into the module's parameters (so model.safetensors holds it); it is deterministic (arg-max
for discrete actions, tanh-scaled output for continuous ones).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from deepatlas.catalog import (Bar, Count, Data, Entry, NonNegative, Paper, Positive, Probability, Relation, Size,
                              Train, register)
from deepatlas.errors import DeepAtlasError
from deepatlas.models.evolution.population import Policy, population_returns
from deepatlas.tasks.rl import Algorithm, EnvSizes


@dataclass
class Config(EnvSizes):
    hidden: Size = 16
    """units per hidden layer of the policy"""
    layers: Count = 1
    """hidden layers of the policy"""
    population: Size = 50
    """individuals (weight vectors) per generation"""
    episodes: Size = 2
    """episodes per individual; its fitness is their mean return"""
    elites: Count = 2
    """fittest individuals copied unchanged into the next generation"""
    tournament: Size = 3
    """individuals drawn per tournament; the fittest of them becomes a parent"""
    crossover: Literal["uniform", "one_point"] = "uniform"
    """how two parents' weight vectors combine"""
    crossover_rate: Probability = 0.5
    """probability that a child is a crossover of two parents (else a copy of one) before mutation"""
    mutation_sigma: NonNegative = 0.1
    """standard deviation of the Gaussian noise added to every gene of a child"""
    init_std: Positive = 0.5
    """standard deviation of the initial population's genes, N(0, init_std^2)"""
    generations: Size = 1000
    """generations; training stops earlier at the time budget or at the recipe's stop_at"""
    validate_every: Size = 5
    """generations between validations of the fittest individual (20 episodes with the fixed seeds)"""

    def __post_init__(self):
        if self.elites >= self.population:
            raise DeepAtlasError(f"genetic: elites ({self.elites}) must be fewer than population ({self.population})")


def tournament_select(fitness: Tensor, n: int, size: int, generator: torch.Generator | None = None) -> Tensor:
    """n tournaments, each over `size` individuals drawn uniformly (with replacement) from fitness (P,);
    -> the index of each tournament's fittest (n,)."""
    entrants = torch.randint(len(fitness), (n, size), generator=generator).to(fitness.device)  # (n, size)
    winner = fitness[entrants].argmax(1)                                                     # (n,)
    return entrants.gather(1, winner[:, None]).squeeze(1)


def crossover(a: Tensor, b: Tensor, kind: str = "uniform", generator: torch.Generator | None = None) -> Tensor:
    """Children of parent rows a, b (n, D) -> (n, D), each gene taken from one parent: uniform (a fair coin per
    gene) or one-point (a's genes before a random cut in 1..D-1, b's after it)."""
    n, D = a.shape
    if kind == "uniform":
        from_a = torch.rand(n, D, generator=generator).to(a.device) < 0.5                   # (n, D)
    elif kind == "one_point":
        cut = torch.randint(1, max(D, 2), (n, 1), generator=generator).to(a.device)          # (n, 1)
        from_a = torch.arange(D, device=a.device)[None, :] < cut                             # (n, D)
    else:
        raise ValueError(f"crossover must be uniform or one_point, not {kind!r}")
    return torch.where(from_a, a, b)


def mutate(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian mutation: x (n, D) + sigma N(0, I)."""
    return x + sigma * torch.randn(x.shape, generator=generator).to(x.device)


def next_generation(population: Tensor, fitness: Tensor, cfg: Config,
                    generator: torch.Generator | None = None) -> Tensor:
    """One generation of variation: population (P, D) with its fitness (P,) -> the next population (P, D), whose
    first `elites` rows are the fittest individuals unchanged (fittest first)."""
    P = len(population)
    elite = population[fitness.argsort(descending=True)[:cfg.elites]]                        # (k, D)
    n = P - len(elite)
    a = population[tournament_select(fitness, n, cfg.tournament, generator)]                 # (n, D)
    b = population[tournament_select(fitness, n, cfg.tournament, generator)]                 # (n, D)
    crossed = torch.rand(n, 1, generator=generator).to(population.device) < cfg.crossover_rate  # (n, 1)
    children = torch.where(crossed, crossover(a, b, cfg.crossover, generator), a)
    return torch.cat([elite, mutate(children, cfg.mutation_sigma, generator)])


class Genetic(Algorithm):
    action_kinds = ("discrete", "continuous")

    def __init__(self, model: Policy, cfg: Config):
        super().__init__(model)
        self.cfg = cfg

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        return self.model(obs)

    @torch.no_grad()
    def fitness(self, ctx, population: Tensor) -> Tensor:
        """Mean return over cfg.episodes episodes of each individual: population (P, D) -> (P,). All P x episodes
        episodes run together in one vectorized environment."""
        P, E = len(population), self.cfg.episodes
        seeds = [int(s) for s in ctx.rng.integers(2**31, size=P * E)]
        returns = population_returns(self.model, population.repeat(E, 1), ctx.env, seeds)    # (E P,)
        return returns.view(E, P).mean(0)                                                    # (P,)

    def learn(self, ctx) -> None:
        cfg, policy = self.cfg, self.model
        policy.set_bounds(ctx.env)
        D = len(policy.flat())
        state = ctx.restore() or {
            "generation": 0,
            "population": cfg.init_std * torch.randn(cfg.population, D, generator=ctx.generator)}  # (P, D)
        population = state["population"].to(ctx.device)
        while state["generation"] < cfg.generations and not ctx.should_stop():
            fitness = self.fitness(ctx, population)                                          # (P,)
            policy.load_flat(population[fitness.argmax()])  # the fittest acts (and is what validation scores)
            population = next_generation(population, fitness, cfg, ctx.generator)
            state["generation"] += 1
            state["population"] = population
            generation = state["generation"]
            ctx.log(generation, {"mean_fitness": fitness.mean().item(), "best_fitness": fitness.max().item()})
            ctx.progress(generation, cfg.generations, f"best {fitness.max().item():.1f}")
            if generation % cfg.validate_every == 0 or generation == cfg.generations:
                ctx.validate(generation)
                ctx.checkpoint({}, state)


def build(cfg: Config) -> Genetic:
    return Genetic(Policy(cfg.obs_dim, cfg.n_actions, cfg.action_dim, cfg.hidden, cfg.layers), cfg)


register(Entry(
    name="genetic", title="Genetic algorithm over policy weights (neuroevolution)", family="evolution", year=2017,
    paper=Paper("F. P. Such, V. Madhavan, E. Conti, J. Lehman, K. O. Stanley, J. Clune",
                "Deep Neuroevolution: Genetic Algorithms Are a Competitive Alternative for Training Deep Neural "
                "Networks for Reinforcement Learning", "arXiv:1712.06567"),
    summary="Evolves a population of policy-network weight vectors: fitness is the episode return, parents are "
            "chosen by tournament, children are crossovers of two parents plus Gaussian mutation, and the "
            "fittest few pass unchanged to the next generation.",
    when_to_use="Small policies, rewards that are sparse, deceptive or only known at an episode's end, "
                "non-differentiable policies or simulators, and many parallel workers; a robust baseline that "
                "needs no gradients, value functions or discounting.",
    when_not="Networks with many weights (random variation scales badly with dimension: prefer evolution "
             "strategies or policy gradients), or when environment steps are expensive.",
    relations=[
        Relation("alternative_to", "evolution_strategies", "selection, crossover and mutation of a population instead "
                 "of a gradient estimate"),
        Relation("uses", "mlp", "evolves an MLP policy's weights"),
    ],
    config=Config, build=build, objective=lambda model: model, task="rl",
    train_keys=("stop_at",),
    train=Train(stop_at=500.0),
    data=Data("CartPole-v1"),
    bar=Bar("mean_return", 475.0, "max", 300),
))
