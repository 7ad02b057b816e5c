"""Evolution over policy weights: "evolution_strategies" (antithetic ES gradient, rank shaping, Adam) and
"genetic" (tournament selection, crossover, Gaussian mutation, elitism), and their shared population policy."""
import json

import pytest
import torch

import deepatlas
from deepatlas.models.evolution import genetic
from deepatlas.models.evolution.evolution_strategies import centered_ranks, es_gradient
from deepatlas.models.evolution.population import Policy, population_act

# ---- the population policy (shared) -----------------------------------------------------------------------------

@pytest.mark.parametrize("continuous", [False, True])
def test_population_act_equals_each_policy_on_its_own(continuous):
    torch.manual_seed(0)
    policy = Policy(5, 0 if continuous else 3, 2 if continuous else 0, hidden=8, layers=2)
    D = len(policy.flat())
    population, obs = torch.randn(6, D), torch.randn(6, 5)
    batched = population_act(policy, population, obs)                     # (6,) or (6, 2)
    for i in range(6):  # the reference: one policy at a time
        policy.load_flat(population[i])
        assert torch.allclose(policy(obs[i:i + 1])[0].float(), batched[i].float(), atol=1e-6)
    policy.load_flat(population[2])
    assert torch.equal(policy.flat(), population[2])


# ---- evolution strategies ---------------------------------------------------------------------------------------

def test_es_gradient_on_a_quadratic_points_toward_the_optimum():
    """f(theta) = -|theta - theta*|^2: the antithetic estimate (raw or rank-shaped fitness) aligns with the true
    gradient -2 (theta - theta*)."""
    g = torch.Generator().manual_seed(0)
    D, h, sigma = 10, 2000, 0.1
    theta, target = torch.randn(D, generator=g), torch.randn(D, generator=g)
    eps = torch.randn(h, D, generator=g)                                  # (h, D)
    population = theta + sigma * torch.cat([eps, -eps])                   # (2h, D)
    fitness = -(population - target).pow(2).sum(1)                        # (2h,)
    true = -2 * (theta - target)
    for shaped in (fitness, centered_ranks(fitness)):
        estimate = es_gradient(eps, shaped, sigma)
        assert torch.cosine_similarity(estimate, true, dim=0) > 0.9
    # raw fitness: an unbiased estimate of the smoothed gradient, whose magnitude is the true one here
    assert torch.allclose(es_gradient(eps, fitness, sigma), true, rtol=0.25, atol=0.25)


def test_antithetic_pairs_cancel_a_constant_fitness_exactly():
    eps = torch.randn(16, 7)
    assert torch.equal(es_gradient(eps, torch.full((32,), 3.7), 0.05), torch.zeros(7))
    # and a constant added to any fitness leaves the estimate unchanged
    fitness = torch.randn(32)
    assert torch.allclose(es_gradient(eps, fitness + 100.0, 0.05), es_gradient(eps, fitness, 0.05), atol=1e-4)


def test_rank_shaping_is_invariant_to_a_monotone_transform():
    fitness = torch.randn(51, dtype=torch.float64) * 30
    shaped = centered_ranks(fitness)
    for transform in (lambda f: 3 * f + 7, torch.exp, lambda f: f.pow(3), lambda f: torch.atan(f / 10)):
        assert torch.equal(centered_ranks(transform(fitness)), shaped)
    assert shaped.min() == -0.5 and shaped.max() == 0.5 and abs(shaped.sum()) < 1e-12
    assert shaped[fitness.argmax()] == 0.5 and shaped[fitness.argmin()] == -0.5


def test_evolution_strategies_learns_cartpole_well_above_random(tmp_path):
    """A random policy scores ~22 on CartPole; a few ES generations lift the mean policy well above."""
    result = deepatlas.train("evolution_strategies", out=tmp_path / "run",
                             overrides={"generations": "8", "population": "20", "validate_every": "4"})
    assert result["test"]["mean_return"] > 100
    rows = (tmp_path / "run" / "log.csv").read_text()
    assert "val/mean_return" in rows and "train/grad_norm" in rows


# ---- genetic algorithm ------------------------------------------------------------------------------------------

def test_tournament_selection_picks_the_fittest_of_its_sample():
    fitness = torch.randn(20)
    winners = genetic.tournament_select(fitness, 500, 4, torch.Generator().manual_seed(3))
    entrants = torch.randint(20, (500, 4), generator=torch.Generator().manual_seed(3))  # the same draws
    assert torch.equal(fitness[winners], fitness[entrants].max(1).values)
    # a tournament over the whole population (size 1 is a uniform draw) favours the fit: selection pressure
    many = genetic.tournament_select(fitness, 2000, 4, torch.Generator().manual_seed(4))
    assert fitness[many].mean() > fitness.mean() + 0.5


def test_elitism_keeps_the_best_unchanged_across_a_generation():
    g = torch.Generator().manual_seed(0)
    cfg = genetic.Config(elites=3, mutation_sigma=0.5)
    population, fitness = torch.randn(30, 12, generator=g), torch.randn(30, generator=g)
    following = genetic.next_generation(population, fitness, cfg, g)
    assert following.shape == population.shape
    top = fitness.argsort(descending=True)[:3]
    assert torch.equal(following[:3], population[top])                    # the elites, bit for bit, best first
    # every other row is a mutated child: none equals an individual of the previous generation
    assert not (following[3:, None, :] == population[None, :, :]).all(-1).any()


def test_gaussian_mutation_has_the_configured_sigma():
    x = torch.randn(400, 250)
    noise = genetic.mutate(x, 0.3, torch.Generator().manual_seed(0)) - x  # 100,000 draws
    assert abs(noise.mean().item()) < 0.005
    assert noise.std().item() == pytest.approx(0.3, rel=0.01)


@pytest.mark.parametrize("kind", ["uniform", "one_point"])
def test_crossover_children_take_each_gene_from_one_parent(kind):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 40, generator=g), torch.randn(200, 40, generator=g)
    child = genetic.crossover(a, b, kind, g)
    from_a, from_b = child == a, child == b
    assert (from_a | from_b).all() and not (from_a & from_b).any()
    assert 0.4 < from_a.float().mean() < 0.6                              # both parents contribute
    if kind == "one_point":  # a prefix of genes from a, the rest from b, cut strictly inside
        assert torch.equal(from_a, from_a.cummin(1).values)
        assert from_a[:, 0].all() and from_b[:, -1].all()


def test_genetic_learns_cartpole_well_above_random(tmp_path):
    """A random policy scores ~22 on CartPole; a few generations of selection and variation lift the fittest
    individual well above."""
    result = deepatlas.train("genetic", out=tmp_path / "run",
                             overrides={"generations": "3", "population": "20", "validate_every": "3"})
    assert result["test"]["mean_return"] > 100


def test_genetic_resumes_its_population_from_the_checkpoint(tmp_path):
    deepatlas.train("genetic", out=tmp_path / "run",
                    overrides={"generations": "1", "population": "8", "episodes": "1", "validate_every": "1"})
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model"]["generations"] = 2  # as if the first run had been stopped at generation 1 of 2
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    result = deepatlas.train(resume=tmp_path / "run")
    assert result["steps"] == 2
