"""Tests of "ga_search": the GA's operators stay inside the search space, elitism keeps the best genome without
retraining it, the GA and random search get the same number of training runs, the GA beats random search on a
smooth synthetic fitness, and a short real search writes its table and re-reports its findings."""
import csv
import json
import math

import numpy as np
import pytest

import deepatlas
from deepatlas.models.evolution import ga_search as gs


def assert_in_space(genome):
    assert set(genome) == set(gs.SPACE)
    for name, gene in gs.SPACE.items():
        value = genome[name]
        if gene.kind == "choice":
            assert value in gene.choices and isinstance(value, int)
        elif gene.kind == "int":
            assert isinstance(value, int) and gene.low <= value <= gene.high
        else:
            assert isinstance(value, float) and gene.low <= value <= gene.high


def test_operators_stay_inside_the_space():
    rng = np.random.default_rng(0)
    population = [gs.sample(rng) for _ in range(8)]
    fitness = [gs.bowl(g) for g in population]
    for genome in population:
        assert_in_space(genome)
    for _ in range(300):
        a = gs.tournament(population, fitness, 3, rng)
        b = gs.tournament(population, fitness, 3, rng)
        assert a in population and b in population
        child = gs.crossover(a, b, rng)
        assert all(child[n] in (a[n], b[n]) for n in child)              # uniform crossover: each gene from a parent
        assert_in_space(child)
        assert_in_space(gs.mutate(child, 1.0, 2.0, rng))                 # every gene mutated, big log steps: clipped


def test_tournament_picks_the_fittest_drawn_and_mutation_steps_by_one():
    rng = np.random.default_rng(1)
    population = [gs.sample(rng) for _ in range(5)]
    fitness = [0.1, 0.9, 0.3, 0.5, 0.2]
    assert all(gs.tournament(population, fitness, 5, rng) is population[1] for _ in range(10))  # k = P: the best
    genome = {"width": 64, "depth": 2, "dropout": 0.1, "lr": 0.003}
    for _ in range(50):
        child = gs.mutate(genome, 1.0, 0.3, rng)
        assert abs(child["depth"] - 2) == 1                                   # an integer gene moves by +-1
        assert child["width"] in (32, 128)                                    # an ordinal gene by one step
        assert child["lr"] != 0.003 and 1e-4 <= child["lr"] <= 1e-1          # Gaussian in log space


def test_elitism_keeps_the_best_genome_without_retraining():
    rng = np.random.default_rng(2)
    cfg = gs.Config(population=6, elites=2)
    population = [gs.sample(rng) for _ in range(6)]
    fitness = [gs.bowl(g) for g in population]
    nxt = gs.next_generation(population, fitness, cfg, rng, {gs.key(g) for g in population})
    order = np.argsort(fitness)[::-1]
    assert nxt[:2] == [population[order[0]], population[order[1]]] and len(nxt) == 6
    calls = []

    def fitness_fn(genome, run, generation):
        calls.append(gs.key(genome))
        return gs.bowl(genome)

    first = [gs.sample(rng) for _ in range(6)]
    table = gs.genetic_search(fitness_fn, 30, cfg, rng, first)
    assert len(table) == 30 and len(set(calls)) == len(calls)            # no genome trained twice (cache)
    best_by_generation = {}
    for genome, value, generation in table:                               # the best so far never drops
        best_by_generation[generation] = max(best_by_generation.get(generation - 1, -1), value,
                                             best_by_generation.get(generation, -1))
    values = [best_by_generation[g] for g in sorted(best_by_generation)]
    assert values == sorted(values)


def test_ga_beats_random_search_on_a_smooth_bowl():
    cfg, runs, gaps_ga, gaps_random = gs.Config(), 30, [], []
    for seed in range(6):
        fitness = lambda genome, run, generation: gs.bowl(genome)
        randoms = gs.random_search(fitness, runs, np.random.default_rng([seed, 0]))
        same = np.random.default_rng([seed, 0])
        ga = gs.genetic_search(fitness, runs, cfg, np.random.default_rng([seed, 1]),
                               [gs.sample(same) for _ in range(cfg.population)])
        assert len(ga) == len(randoms) == runs
        assert [g for g, _, _ in ga[:cfg.population]] == [g for g, _ in randoms[:cfg.population]]  # same draws
        gaps_ga.append(1 - max(v for _, v, _ in ga))
        gaps_random.append(1 - max(v for _, v in randoms))
    assert np.mean(gaps_ga) < 0.6 * np.mean(gaps_random)
    assert sum(a <= b for a, b in zip(gaps_ga, gaps_random)) >= 5


def test_same_number_of_runs_through_the_engine(tmp_path):
    metrics = deepatlas.train("ga_search", overrides={"fitness": "bowl", "runs": 11}, out=tmp_path / "run")
    with open(tmp_path / "run" / "search.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(r["method"] == "ga" for r in rows) == sum(r["method"] == "random" for r in rows) == 11
    assert metrics["val"]["ga_runs"] == metrics["val"]["random_runs"] == 11
    assert metrics["val"]["ga_minus_random"] >= 0.0


def test_constructor_hook_replaces_the_training_run():
    search = gs.GASearch(gs.Config(runs=4), fitness=lambda genome: -abs(math.log10(genome["lr"]) + 2))
    assert search.fitness({"lr": 0.01}) == 0.0


def test_short_real_search_writes_its_table_and_reports_it(tmp_path):
    out = tmp_path / "run"
    metrics = deepatlas.train("ga_search", overrides={"runs": 2, "population": 2, "elites": 1, "run_epochs": 2},
                              out=out)
    with open(out / "search.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["random", "random", "ga", "ga"]
    assert rows[0]["width"] == rows[2]["width"] and rows[0]["lr"] == rows[2]["lr"]  # the GA starts from the same draws
    best_ga = max(float(r["val"]) for r in rows if r["method"] == "ga")
    best_random = max(float(r["val"]) for r in rows if r["method"] == "random")
    assert best_ga > 0.5                                                  # a real digits run learned (chance: 0.1)
    assert (out / "search.png").stat().st_size > 0
    found = json.loads((out / "search.json").read_text())
    best_row = max((r for r in rows if r["method"] == "ga"), key=lambda r: float(r["val"]))
    assert found["ga"]["genome"]["width"] == int(best_row["width"]) and found["ga"]["runs"] == 2
    assert_in_space(found["random"]["genome"])
    val = deepatlas.evaluate(out, split="val")
    test = deepatlas.evaluate(out, split="test")
    assert val["ga_accuracy"] == pytest.approx(best_ga) and val["random_accuracy"] == pytest.approx(best_random)
    assert val["ga_minus_random"] == pytest.approx(best_ga - best_random) == test["ga_minus_random"]
    assert 0.5 < test["ga_accuracy"] <= 1.0 and test == metrics["test"]
