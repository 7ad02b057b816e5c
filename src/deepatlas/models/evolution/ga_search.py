"""Genetic-algorithm hyperparameter search, judged against random search with the same number of training runs.

S. R. Young, D. C. Rose, T. P. Karnowski, S.-H. Lim, R. M. Patton, 2015. "Optimizing Deep Learning
Hyper-Parameters Through an Evolutionary Algorithm." MLHPC '15 (Workshop on Machine Learning in HPC
Environments), doi:10.1145/2834892.2834896. The genetic algorithm itself is J. H. Holland's (1975, "Adaptation
in Natural and Artificial Systems"); the baseline is J. Bergstra and Y. Bengio's random search (2012, "Random
Search for Hyper-Parameter Optimization", JMLR 13, 281-305).

An individual is a genome g: one value per gene of a search space (here the `mlp` entry's width, depth, dropout
and learning rate). Its fitness is the validation accuracy of a short real training run of that entry with g's
values (`deepatlas.train(...)` through the engine, all runs with the same seed, so f(g) is a deterministic
function of g and can be cached). Each generation of the GA:

    elites      E best genomes of the population, carried over without retraining (fitness cached by genome)
    selection   parent = argmax_{i in S} f(g_i),   S = k genomes drawn at random   (tournament of size k)
    crossover   child_j = a_j if u_j < 1/2 else b_j,   u_j ~ U(0, 1) per gene       (uniform crossover)
    mutation    with probability p_m per gene: log10 lr + N(0, sigma^2); an integer or ordinal gene +-1;
                any other gene resampled from its range

Random search draws every genome independently from the same space. Both get the same number of training runs
(random search runs first; the GA then gets exactly as many, fewer only if the time budget stops it) and start
from the same draws: the GA's first generation is random search's first P genomes (common random numbers), so
the difference measures what selection and variation add over more random draws. Both pick their best genome by
validation accuracy; the test accuracy of each best is measured once, after the search, and never used to choose.

    ga_minus_random = max_GA f(g) - max_random f(g)     (validation accuracy; >= 0: the GA at least matches)

The run directory holds search.csv (every training run: method, generation, genome, validation accuracy,
seconds), search.json (each method's best genome with its validation and test accuracy) and search.png (the
best validation accuracy so far against the number of runs, both methods). `eval` re-reports the findings kept
in model.safetensors: a search is not re-run.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from deepatlas import catalog
from deepatlas.catalog import (Bar, Count, Data, Entry, NonNegative, Paper, Positive, Probability, Relation, Size,
                              Train, register)
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.classification import TABLE_OPTIONS
from deepatlas.tasks.rl import Algorithm

Genome = dict[str, float]


@dataclass(frozen=True)
class Gene:
    """One searched hyperparameter: "int" (integers low..high, mutated by +-1), "choice" (ordered values, mutated
    by one step), "log" (log-uniform in [low, high], mutated by a Gaussian step in log10) or "float" (uniform in
    [low, high], resampled when mutated)."""
    kind: Literal["int", "choice", "log", "float"]
    low: float = 0.0
    high: float = 1.0
    choices: tuple[float, ...] = ()

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "int":
            return int(rng.integers(self.low, self.high + 1))
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.kind == "log":
            return _round(10 ** rng.uniform(math.log10(self.low), math.log10(self.high)))
        return round(float(rng.uniform(self.low, self.high)), 3)

    def unit(self, value: float) -> float:
        """The value's position in the space, in [0, 1] (log scale for "log", index for "choice")."""
        if self.kind == "choice":
            return self.choices.index(value) / (len(self.choices) - 1)
        if self.kind == "log":
            return (math.log10(value) - math.log10(self.low)) / (math.log10(self.high) - math.log10(self.low))
        return (value - self.low) / (self.high - self.low)


def _round(x: float) -> float:
    """3 significant digits: readable genomes, and near-identical learning rates share one cached run."""
    return float(f"{x:.3g}")


SPACE: dict[str, Gene] = {
    "width": Gene("choice", choices=(16, 32, 64, 128, 256)),
    "depth": Gene("int", 1, 4),
    "dropout": Gene("float", 0.0, 0.5),
    "lr": Gene("log", 1e-4, 1e-1),
}
"""the mlp entry's hyperparameters searched (width, depth, dropout: its Config; lr: its training settings)"""


@dataclass
class Config:
    target: str = "mlp"
    """the catalog entry whose hyperparameters are searched (its config or recipe has the fields of SPACE)"""
    runs: Size = 40
    """training runs per method: random search makes this many, the GA exactly as many"""
    population: Size = 8
    """genomes per GA generation"""
    elites: Count = 2
    """best genomes carried unchanged into the next generation (their fitness is cached, not retrained)"""
    tournament: Size = 3
    """genomes drawn per tournament; the fittest of them is a parent"""
    crossover: Probability = 0.9
    """probability that a child mixes two parents gene by gene (otherwise it copies the first)"""
    mutation: Probability = 0.3
    """probability that each gene of a child mutates"""
    lr_sigma: NonNegative = 0.3
    """standard deviation of a log-scale gene's mutation, in decades (log10)"""
    run_epochs: Size = 6
    """epochs of each training run (the target's other recipe fields keep their defaults; the search's own
    recipe only names the data)"""
    run_time: Positive = 10.0
    """time budget of each training run in seconds (a safety cap: runs normally finish their epochs first)"""
    metric: str = "accuracy"
    """the target's validation metric maximized (the fitness)"""
    fitness: Literal["train", "bowl"] = "train"
    """train: a real training run per genome; bowl: a smooth synthetic function of the genome with its optimum
    at 0.7 of every gene's range (for tests and demonstrations, milliseconds per genome)"""

    def __post_init__(self):
        if self.elites >= self.population:  # no child would ever be bred: the search would stand still
            raise DeepAtlasError(f"elites={self.elites}: must be fewer than population={self.population}")


# ---- the operators -------------------------------------------------------------------------------------------

def sample(rng: np.random.Generator, space: dict[str, Gene] = SPACE) -> Genome:
    return {name: gene.sample(rng) for name, gene in space.items()}


def key(genome: Genome) -> tuple:
    return tuple(genome[name] for name in sorted(genome))


def tournament(population: list[Genome], fitness: list[float], k: int, rng: np.random.Generator) -> Genome:
    """The fittest of k genomes drawn at random (without replacement) from the population."""
    drawn = rng.choice(len(population), size=min(k, len(population)), replace=False)
    return population[max(drawn, key=lambda i: fitness[i])]


def crossover(a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
    """Uniform crossover: each gene from a or b with probability 1/2."""
    return {name: a[name] if rng.random() < 0.5 else b[name] for name in a}


def mutate(genome: Genome, rate: float, lr_sigma: float, rng: np.random.Generator,
           space: dict[str, Gene] = SPACE) -> Genome:
    """Each gene mutates with probability `rate`, staying inside its range."""
    child = dict(genome)
    for name, gene in space.items():
        if rng.random() >= rate:
            continue
        step = 1 if rng.random() < 0.5 else -1
        if gene.kind == "int":
            child[name] = int(min(max(child[name] + step, gene.low), gene.high))
        elif gene.kind == "choice":
            i = min(max(gene.choices.index(child[name]) + step, 0), len(gene.choices) - 1)
            child[name] = gene.choices[i]
        elif gene.kind == "log":
            exponent = math.log10(child[name]) + rng.normal(0.0, lr_sigma)
            child[name] = _round(10 ** min(max(exponent, math.log10(gene.low)), math.log10(gene.high)))
        else:
            child[name] = gene.sample(rng)
    return child


def next_generation(population: list[Genome], fitness: list[float], cfg: Config, rng: np.random.Generator,
                    seen: set, space: dict[str, Gene] = SPACE) -> list[Genome]:
    """Elites first (unchanged), then children of tournament-selected parents by crossover and mutation. A child
    already evaluated is re-mutated (up to 10 times) so the training budget goes to new genomes."""
    order = sorted(range(len(population)), key=lambda i: -fitness[i])
    children = [population[i] for i in order[:cfg.elites]]                     # elitism
    while len(children) < cfg.population:
        mother = tournament(population, fitness, cfg.tournament, rng)
        father = tournament(population, fitness, cfg.tournament, rng)
        child = crossover(mother, father, rng) if rng.random() < cfg.crossover else dict(mother)
        child = mutate(child, cfg.mutation, cfg.lr_sigma, rng, space)
        for _ in range(10):
            if key(child) not in seen and all(key(child) != key(c) for c in children):
                break
            child = mutate(child, max(cfg.mutation, 0.5), cfg.lr_sigma, rng, space)
        children.append(child)
    return children


# ---- the two searches ----------------------------------------------------------------------------------------

Evaluate = Callable[[Genome, int, int], float]
"""fitness(genome, run, generation) -> the validation metric of one training run (the run's index within its
method; generation -1 for random search)"""


def random_search(fitness: Evaluate, runs: int, rng: np.random.Generator, stop=lambda: False,
                  space: dict[str, Gene] = SPACE) -> list[tuple[Genome, float]]:
    """`runs` genomes drawn independently from the space, each trained once -> [(genome, fitness)]."""
    table = []
    for run in range(runs):
        if stop():
            break
        genome = sample(rng, space)
        table.append((genome, fitness(genome, run, -1)))
    return table


def genetic_search(fitness: Evaluate, runs: int, cfg: Config, rng: np.random.Generator,
                   first: list[Genome], stop=lambda: False,
                   space: dict[str, Gene] = SPACE) -> list[tuple[Genome, float, int]]:
    """The GA with a budget of `runs` training runs, starting from the genomes `first` (generation 0) ->
    [(genome, fitness, generation)] for every training run. Fitness is cached by genome: elites and repeated
    children cost no run."""
    cache: dict[tuple, float] = {}
    table: list[tuple[Genome, float, int]] = []
    population, generation = [dict(g) for g in first[:cfg.population]], 0
    while len(table) < runs and not stop() and generation < 100 * max(runs, 1):  # a cap for spaces too small
        scores = []
        for genome in population:
            if key(genome) not in cache:
                if len(table) == runs or stop():                       # the budget ends mid-generation
                    break
                cache[key(genome)] = fitness(genome, len(table), generation)
                table.append((genome, cache[key(genome)], generation))
            scores.append(cache[key(genome)])
        population = population[:len(scores)]
        if len(table) == runs or stop():
            break
        population = next_generation(population, scores, cfg, rng, set(cache), space)
        generation += 1
    return table


def bowl(genome: Genome, space: dict[str, Gene] = SPACE) -> float:
    """A smooth synthetic fitness: 1 - mean over genes of (unit position - 0.7)^2; maximum near 1 at 0.7."""
    return 1.0 - float(np.mean([(gene.unit(genome[name]) - 0.7) ** 2 for name, gene in space.items()]))


# ---- the method ----------------------------------------------------------------------------------------------

class Findings(nn.Module):
    """What the search found, as buffers (saved in model.safetensors, so `eval` re-reports them): the best genome
    of each method (values in SPACE order), its validation and test accuracy, and the runs each made."""

    def __init__(self, genes: int):
        super().__init__()
        for method in ("ga", "random"):
            self.register_buffer(f"{method}_genome", torch.zeros(genes, dtype=torch.float64))
            self.register_buffer(f"{method}_val", torch.zeros((), dtype=torch.float64))
            self.register_buffer(f"{method}_test", torch.zeros((), dtype=torch.float64))
            self.register_buffer(f"{method}_runs", torch.zeros((), dtype=torch.long))


class GASearch(Algorithm):
    metric = "ga_minus_random"
    not_exported = "a search over training runs (it finds settings, not a network)"

    def __init__(self, cfg: Config, fitness: Callable[[Genome], float] | None = None):
        super().__init__(Findings(len(SPACE)))
        self.cfg = cfg
        self.fitness = fitness
        """a function of the genome replacing the training run (tests); None: cfg.fitness decides"""

    def check(self, env, name: str) -> None:
        """The search trains the target on tabular data; the target must exist and have every searched field."""
        if not hasattr(env, "train") or not hasattr(env, "dims"):
            raise DeepAtlasError(f"{name} searches over training runs on a tabular dataset, not an environment")
        target = catalog.get(self.cfg.target)
        fields = {f.name for f in dataclasses.fields(target.config())} | {f.name for f in dataclasses.fields(Train)}
        missing = sorted(set(SPACE) - fields)
        if missing:
            raise DeepAtlasError(f"{name}: target {self.cfg.target} has no field {missing[0]} to search over")

    def best(self, method: str) -> Genome:
        values = getattr(self.model, f"{method}_genome").tolist()
        return {name: (v if gene.kind in ("log", "float") else int(v)) for (name, gene), v in zip(SPACE.items(), values)}

    @torch.no_grad()
    def evaluate(self, env, split: str = "test", episodes: int | None = None) -> dict[str, float]:
        """The stored findings (a search is not re-run at evaluation). ga_minus_random is always the difference of
        the two best validation accuracies (the criterion both searches chose by, and the bar's metric); for the
        split asked ("val" or "test"), ga_accuracy and random_accuracy are each best configuration's accuracy on
        it and accuracy_gap their difference (on "test": measured once after the search, never used to choose)."""
        m = self.model
        which = "test" if split == "test" else "val"
        ga, rnd = getattr(m, f"ga_{which}").item(), getattr(m, f"random_{which}").item()
        return {"ga_minus_random": (m.ga_val - m.random_val).item(), "ga_accuracy": ga, "random_accuracy": rnd,
                "accuracy_gap": ga - rnd, "ga_runs": float(m.ga_runs), "random_runs": float(m.random_runs)}

    def learn(self, ctx) -> None:
        cfg = self.cfg
        if ctx.restore({}) is not None:                # a finished search's checkpoint: its findings are loaded
            ctx.validate(int(self.model.ga_runs + self.model.random_runs))
            return
        rows: list[dict] = []
        with tempfile.TemporaryDirectory(prefix="ga_search_") as tmp:
            run_dirs: dict[tuple[str, tuple], Path] = {}

            def evaluator(method: str) -> Evaluate:
                def fitness(genome: Genome, run: int, generation: int) -> float:
                    t = time.perf_counter()
                    if self.fitness is not None:
                        value = self.fitness(genome)
                    elif cfg.fitness == "bowl":
                        value = bowl(genome)
                    else:
                        out = Path(tmp) / f"{method}_{run}"
                        value = self.train_once(ctx, genome, out)
                        run_dirs[method, key(genome)] = out
                    best = max([value] + [r["val"] for r in rows if r["method"] == method])
                    rows.append({"method": method, "run": run, "generation": generation, **genome,
                                 "val": value, "seconds": round(time.perf_counter() - t, 2)})
                    ctx.log(run + 1, {"fitness": value, "generation": generation, "best": best}, prefix=f"{method}/")
                    ctx.progress(len(rows), 2 * cfg.runs, f"{method} run {run}: {cfg.metric} {value:.4f} (best {best:.4f})")
                    return value
                return fitness

            # common random numbers: random search's first draws are the GA's first generation
            random_table = random_search(evaluator("random"), cfg.runs, np.random.default_rng([ctx.seed, 0]),
                                         ctx.should_stop)
            same_draws = np.random.default_rng([ctx.seed, 0])
            first = [sample(same_draws) for _ in range(cfg.population)]
            ga_table = genetic_search(evaluator("ga"), len(random_table), cfg, np.random.default_rng([ctx.seed, 1]),
                                      first, ctx.should_stop)
            for method, table in (("random", random_table), ("ga", ga_table)):
                if not table:
                    continue
                genome, value = max(((t[0], t[1]) for t in table), key=lambda t: t[1])
                test = self.test_once(ctx, run_dirs.get((method, key(genome))), genome)
                m = self.model
                getattr(m, f"{method}_genome").copy_(torch.tensor([float(genome[n]) for n in SPACE], dtype=torch.float64))
                getattr(m, f"{method}_val").fill_(value)
                getattr(m, f"{method}_test").fill_(test)
                getattr(m, f"{method}_runs").fill_(len(table))
        self.write_table(ctx.run.path, rows)
        ctx.validate(len(rows))
        ctx.checkpoint({}, {"runs": len(rows)})

    def train_once(self, ctx, genome: Genome, out: Path) -> float:
        """One short real training run of the target through the API the run was handed; its validation metric."""
        table = {f"data.{k}": getattr(ctx.options, k) for k in TABLE_OPTIONS}  # the search's own data options
        overrides = {**genome, **table, "epochs": self.cfg.run_epochs}
        budget = self.cfg.run_time                                  # never past the whole search's time budget
        if ctx.max_time is not None:
            budget = max(min(budget, ctx.max_time - ctx.elapsed()), 0.5)
        with contextlib.redirect_stderr(io.StringIO()):             # the inner runs' progress lines stay quiet
            metrics = ctx.api.train(self.cfg.target, data=ctx.options.data, overrides=overrides, seed=ctx.seed,
                                    out=out, max_time=budget)
        return float(metrics["val"][self.cfg.metric])

    def test_once(self, ctx, run_dir: Path | None, genome: Genome) -> float:
        """The test metric of a method's best configuration, measured once after the search."""
        if run_dir is None:                                          # a synthetic fitness: no held-out split
            return bowl(genome) if self.fitness is None else self.fitness(genome)
        return float(ctx.api.evaluate(run_dir, split="test")[self.cfg.metric])

    def write_table(self, path: Path, rows: list[dict]) -> None:
        """search.csv (every training run), search.json (each method's best genome, its validation and test
        metric, its runs) and search.png (best-so-far validation metric against runs)."""
        if not rows:
            return
        m = self.model
        (path / "search.json").write_text(json.dumps({method: {
            "genome": self.best(method), f"val_{self.cfg.metric}": getattr(m, f"{method}_val").item(),
            f"test_{self.cfg.metric}": getattr(m, f"{method}_test").item(), "runs": int(getattr(m, f"{method}_runs"))}
            for method in ("ga", "random")}, indent=2))
        with (path / "search.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, label, style in (("random", "random search", {"linestyle": "--", "linewidth": 2}),
                                     ("ga", "genetic algorithm", {"linestyle": "-", "linewidth": 2})):
            values = [r["val"] for r in rows if r["method"] == method]
            if values:
                runs = range(1, len(values) + 1)
                line, = ax.plot(runs, np.maximum.accumulate(values), drawstyle="steps-post", label=label, **style)
                ax.scatter(runs, values, s=12, alpha=0.35, color=line.get_color())  # each run's own accuracy
        best = max(r["val"] for r in rows)
        ax.set_ylim(max(min(r["val"] for r in rows), best - 0.15), best + 0.01)
        ax.set_xlabel("training runs")
        ax.set_ylabel(f"best validation {self.cfg.metric} so far")
        ax.set_title(f"ga_search over {self.cfg.target}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path / "search.png", dpi=100)
        plt.close(fig)


def build(cfg: Config) -> GASearch:
    return GASearch(cfg)


register(Entry(
    name="ga_search", title="Genetic-algorithm hyperparameter search (against random search)", family="evolution",
    year=2015,
    paper=Paper("S. R. Young, D. C. Rose, T. P. Karnowski, S.-H. Lim, R. M. Patton",
                "Optimizing Deep Learning Hyper-Parameters Through an Evolutionary Algorithm",
                "MLHPC '15, doi:10.1145/2834892.2834896, 2015"),
    summary="Evolves hyperparameter genomes of another entry (the MLP's width, depth, dropout, learning rate) by "
            "tournament selection, uniform crossover, mutation and elitism, each genome scored by a short real "
            "training run; random search with the same number of runs is the baseline it must match.",
    when_to_use="Tuning a handful of mixed integer, ordinal and log-scale hyperparameters when each training run "
                "is cheap enough for tens of them, and good settings cluster (children of good parents are good).",
    when_not="When runs are expensive (a few runs: random search or Bayesian optimization spend them better), "
             "the space is tiny (grid search), or a single learning-rate sweep would do.",
    relations=[
        Relation("uses", "mlp", "its genomes are an MLP's hyperparameters, each scored by a real training run"),
        Relation("alternative_to", "genetic", "evolves the settings of trained networks rather than their weights"),
    ],
    config=Config, build=build, objective=lambda model: model, task="search",
    train_keys=("stop_at",),
    data=Data("digits"),
    bar=Bar("ga_minus_random", 0.0, "max", 300),
))
