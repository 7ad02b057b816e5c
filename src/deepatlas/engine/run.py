"""Train, evaluate, load and predict, in terms of run directories.

`train` reads an entry from the catalog, loads its data, builds config + model + objective,
hands them to the loop, then measures the held-out splits with `evaluate` — the same code
`deepatlas eval` and `deepatlas bench` use.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from deepatlas import catalog, data as datasets
from deepatlas.catalog import Entry, Recipe
from deepatlas.data import envs
from deepatlas.engine import interact
from deepatlas.engine.checkpoint import load_weights
from deepatlas.engine.loop import Scaling, evaluate_loader, fit, make_fabric
from deepatlas.engine.rundir import RunDir
from deepatlas.errors import DeepAtlasError

VERSION = "0.1.0"
INTERACTIVE = ("rl", "search")
"""tasks whose methods own their loop (Algorithm.learn): an environment to act in, or runs to search over"""


def build_config(entry: Entry, overrides: dict, dims: dict | None = None):
    """The entry's Config with the data's sizes (in_features, n_classes, ...) and the user's overrides."""
    config = entry.config()
    if dims:
        fixed = sorted(set(dims) & set(overrides))
        if fixed:
            raise DeepAtlasError(f"--set {fixed[0]}: set from the data ({fixed[0]}={dims[fixed[0]]}), not by hand")
        fields = {f.name for f in dataclasses.fields(config)}
        config = dataclasses.replace(config, **{k: v for k, v in dims.items() if k in fields})
    return catalog.apply_overrides(config, overrides)


def create_model(name: str, **overrides):
    """The network of entry `name` from its default Config, with any field overridden."""
    entry = catalog.get(name)
    return entry.build(build_config(entry, overrides))


def train(name: str | None = None, *, data: str | None = None, target: str | None = None,
          overrides: dict | None = None, seed: int = 0, out: str | Path | None = None,
          max_time: float | None = None, resume: str | Path | None = None,
          scaling: Scaling | None = None) -> dict:
    """Train entry `name` (or resume the run in `resume`) and return its metrics (with "run_dir")."""
    overrides = dict(overrides or {})
    if resume is not None:
        if name or data or target or overrides:
            raise DeepAtlasError("--resume continues a run exactly as configured: drop NAME, --data, --target and --set")
        run = RunDir(resume)
        saved = run.read_json(run.config)
        if not run.checkpoint.exists():
            raise DeepAtlasError(f"{run.path}: no checkpoint.safetensors to resume from")
        entry = catalog.get(saved["name"])
        recipe = Recipe(**saved["recipe"])
        seed, target = saved["seed"], saved.get("target")
    else:
        if name is None:
            raise DeepAtlasError("name an entry to train (see `deepatlas list`) or give --resume RUN_DIR")
        entry = catalog.get(name)
        model_over, recipe_over = catalog.split_overrides(entry, overrides)
        recipe = catalog.apply_overrides(entry.recipe, {**recipe_over, **({"data": data} if data else {})})
        if Path(recipe.data).exists():  # a user's file or folder: recorded absolute, so eval works anywhere
            recipe = dataclasses.replace(recipe, data=str(Path(recipe.data).resolve()))

    if entry.task in INTERACTIVE:  # the loop is the algorithm: the method's own learn(ctx)
        return _train_interactive(entry, recipe, model_over if resume is None else saved["model"], seed=seed,
                                  out=out, max_time=max_time, resume=resume, scaling=scaling)
    dataset = datasets.load(entry.task, recipe, target)
    if resume is not None:
        config = entry.config(**saved["model"])
    else:
        config = build_config(entry, model_over, dataset.dims)
    torch.manual_seed(seed)  # the initial weights are part of the seeded run
    objective = entry.objective(entry.build(config))
    objective.data_spec = dataset.spec  # what the data is: generative metrics pick their scores by it
    train_set = objective.prepare(dataset) or dataset.train

    fabric = make_fabric(scaling or Scaling())
    if resume is None:  # rank 0 names the directory; the other ranks must agree on it
        run = RunDir(fabric.broadcast(str(out or RunDir.default_path(entry.name)), src=0))
    if fabric.global_rank == 0:
        run.create()
        run.write_json(run.config, _run_config(entry, seed, target, config, recipe, dataset.spec))
    fabric.barrier()
    try:
        summary = fit(objective, train_set, dataset.val, recipe, run, fabric=fabric, seed=seed,
                      train_transform=dataset.train_transform,
                      monitor=monitor_for(entry, recipe), max_time=max_time,
                      resume=resume is not None, title=entry.name)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(str(run.path)) from None  # tell the user which run to resume
    if fabric.global_rank != 0:
        return {"run_dir": str(run.path), **summary}
    plot_predictions = getattr(datasets.module(entry.task), "plot_predictions", None)
    if plot_predictions is not None:  # dense predictions are judged by eye too: a grid of validation images
        best = load(run.path)
        plot_predictions(best, dataset.spec, dataset.val, run.path / "predictions.png")
    metrics = {"run_dir": str(run.path), "name": entry.name, **summary,
               "params": count_params(objective), "test": evaluate(run.path, split="test"),
               "val": evaluate(run.path, split="val")}
    run.write_json(run.metrics, metrics)
    return metrics


def _run_config(entry: Entry, seed: int, target: str | None, config, recipe: Recipe, spec: dict) -> dict:
    """config.json: all that rebuilds the model, the data and the recipe of a run."""
    return {"deepatlas": VERSION, "name": entry.name, "seed": seed, "target": target,
            "model": dataclasses.asdict(config), "recipe": dataclasses.asdict(recipe), "data": spec}


def _train_interactive(entry: Entry, recipe: Recipe, model_over: dict, *, seed: int, out, max_time, resume,
                       scaling: Scaling | None) -> dict:
    """An rl or evolution method: its environment (or the data its search trains on) instead of a dataset to
    iterate, its learn(ctx) instead of `fit`."""
    env = datasets.load(entry.task, recipe)
    config = entry.config(**model_over) if resume is not None else build_config(entry, model_over, env.dims)
    torch.manual_seed(seed)
    objective = entry.objective(entry.build(config))
    objective.data_spec = env.spec
    objective.check(env, entry.name)
    fabric = make_fabric(scaling or Scaling())
    if fabric.world_size > 1:
        raise DeepAtlasError(f"{entry.name} runs on one device: its loop is the algorithm (drop --devices/--num-nodes)")
    run = RunDir(resume if resume is not None else out or RunDir.default_path(entry.name)).create()
    run.write_json(run.config, _run_config(entry, seed, None, config, recipe, env.spec))
    try:
        summary = interact.learn(objective, env, recipe, run, seed=seed, device=fabric.device,
                                 monitor=monitor_for(entry, recipe), max_time=max_time, resume=resume is not None,
                                 title=entry.name)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(str(run.path)) from None
    metrics = {"run_dir": str(run.path), "name": entry.name, **summary, "params": count_params(objective),
               "test": evaluate(run.path, split="test"), "val": evaluate(run.path, split="val")}
    run.write_json(run.metrics, metrics)
    return metrics


def monitor_for(entry: Entry, recipe: Recipe) -> tuple[str, str]:
    """The validation metric that picks the best epoch: that of the bar set on this data, if any."""
    bar = next((b for b in entry.bars if b.overrides.get("data", entry.recipe.data) == recipe.data), entry.bar)
    return bar.metric, bar.direction


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _read(run_dir: str | Path) -> tuple[RunDir, dict, Entry, object]:
    run = RunDir(run_dir)
    saved = run.read_json(run.config)
    try:
        entry = catalog.get(saved["name"])
        config = catalog.apply_overrides(entry.config(), saved["model"])
    except (KeyError, TypeError) as err:
        raise DeepAtlasError(f"{run.config}: not a deepatlas config ({err})") from None
    return run, saved, entry, config


def load(run_dir: str | Path) -> torch.nn.Module:
    """The trained objective (an nn.Module: its forward gives the network's output) of a run, in eval mode."""
    run, saved, entry, config = _read(run_dir)
    if not run.model.exists():
        raise DeepAtlasError(f"{run.path}: no model.safetensors (did the run finish? resume it with --resume)")
    objective = entry.objective(entry.build(config))
    objective.data_spec = saved["data"]
    return load_weights(objective, run.model).eval()


def evaluate(run_dir: str | Path, data: str | None = None, split: str = "test",
             episodes: int | None = None) -> dict[str, float]:
    """Metrics of a trained run on a held-out split of its own data, or on all rows of a user's file.
    rl and evolution runs: the return over `episodes` (default 20) episodes with the split's fixed seeds."""
    _, saved, entry, _ = _read(run_dir)
    objective = load(run_dir)
    if entry.task in INTERACTIVE:
        if data is not None:
            raise DeepAtlasError(f"--data: {entry.name} is evaluated where it trained ({saved['recipe']['data']})")
        return objective.evaluate(datasets.load(entry.task, Recipe(**saved["recipe"])), split, episodes)
    if episodes is not None:
        raise DeepAtlasError("--episodes: only rl and evolution runs are evaluated by episodes")
    if data is None:
        dataset = datasets.load(entry.task, Recipe(**saved["recipe"]), saved.get("target"))
        if dataset.spec != saved["data"]:
            raise DeepAtlasError(f"{saved['recipe']['data']}: data changed since the run was trained")
        examples = getattr(dataset, split)
    else:
        examples = datasets.module(entry.task).read_labeled(saved["data"], data)
    fabric = make_fabric(Scaling(devices=1))
    loader = fabric.setup_dataloaders(DataLoader(examples, batch_size=512, collate_fn=getattr(examples, "collate", None)),
                                      use_distributed_sampler=False)
    return evaluate_loader(fabric, fabric.setup_module(objective), loader)


def predict(run_dir: str | Path, path: str | Path | None = None, out: str | Path | None = None,
            render: str | Path | None = None) -> dict:
    """Predictions for the inputs in `path`. Classifiers (rows of a CSV, an image, a folder of images)
    give {"classes", "names", "probabilities", "predicted"}; other tasks (translate a sentence, forecast
    a series, evaluate an expression, detect objects: `path` may then be the input text itself) give
    {"names", "predicted", "details"}, with e.g. attention weights or boxes in "details". Detection and
    segmentation runs also draw their predictions into the PNG `out` (numbered when there are several).
    rl runs take no input: they play one test episode (saved as the GIF `render`) or show a board game."""
    run, saved, entry, _ = _read(run_dir)
    objective = load(run_dir)
    if entry.task == "rl":
        if path is not None or out is not None:
            raise DeepAtlasError(f"{entry.name} takes no input: it plays {saved['data']['env']} (--render GIF to watch)")
        return _as_predictions(envs.predict(objective, saved["data"], render=Path(render) if render else None))
    if entry.task == "search":
        raise DeepAtlasError(f"{entry.name} searches rather than predicts: its findings are in {run.metrics}")
    if render is not None:
        raise DeepAtlasError("--render: only rl runs play episodes")
    if path is None:
        raise DeepAtlasError("give INPUTS to predict for (or --neighbours WORD for an embedding run)")
    module = datasets.module(entry.task)
    draws = hasattr(module, "predict") and "out" in inspect.signature(module.predict).parameters
    if out is not None and not draws:
        raise DeepAtlasError("--out PNG: only detection and segmentation runs draw their predictions")
    if hasattr(module, "predict"):
        return _as_predictions(module.predict(objective, saved["data"], str(path), **({"out": Path(out)} if out else {})))
    if not hasattr(objective, "predict"):
        raise DeepAtlasError(f"{entry.name} generates rather than predicts: try `deepatlas sample {run.path}`")
    x, names = module.read_inputs(saved["data"], str(path))
    probs = objective.predict(x)
    classes = saved["data"]["classes"]
    return {"classes": classes, "names": names, "probabilities": probs.tolist(),
            "predicted": [classes[i] for i in probs.argmax(-1).tolist()]}


def _as_predictions(rows: list[dict]) -> dict:
    """[{"input", "predicted", ...details}] -> {"names", "predicted", "details"}."""
    return {"names": [r["input"] for r in rows], "predicted": [r["predicted"] for r in rows],
            "details": [{k: v for k, v in r.items() if k not in ("input", "predicted")} for r in rows]}


INTERPOLATION_STEPS = 10


@torch.no_grad()
def sample(run_dir: str | Path, n: int | None = None, out: str | Path | None = None, interpolate: bool = False,
           seed: int = 0) -> dict:
    """Draw `n` samples (default 64) from a trained generative run and write them where people look at them:
    a PNG grid (images), a scatter over the true density (toy2d) or WAV files (audio). With `interpolate`,
    a grid whose rows decode the line between the latent codes of two test images (`n` rows, default 8).
    Returns {"files": [...], "n": n}."""
    run, saved, entry, _ = _read(run_dir)
    objective = load(run_dir)
    if not hasattr(objective, "sample"):
        raise DeepAtlasError(f"{entry.name} has no sampler: there is nothing to sample (vae, gan, pixelcnn... do)")
    n = n if n is not None else (8 if interpolate else 64)
    if n < 1:
        raise DeepAtlasError(f"-n {n}: ask for at least one sample")
    spec, module = saved["data"], datasets.module(entry.task)
    torch.manual_seed(seed)
    if interpolate:
        if not hasattr(objective, "interpolate"):
            raise DeepAtlasError(f"{entry.name} has no latent space to interpolate in")
        test = datasets.load(entry.task, Recipe(**saved["recipe"]), saved.get("target")).test
        ends = torch.stack([test[i][0] for i in torch.randperm(len(test))[:2 * n].tolist()])
        if len(ends) < 2 * n:
            raise DeepAtlasError(f"-n {n}: the test split has only {len(test)} examples, enough for {len(test) // 2} rows")
        grid = objective.interpolate(ends[:n], ends[n:], INTERPOLATION_STEPS)  # (n, steps, *shape)
        files = module.write_samples(spec, grid.flatten(0, 1), Path(out or run.path / "interpolation.png"),
                                     columns=INTERPOLATION_STEPS)
    else:
        default = run.path / ("samples" if spec.get("kind") == "audio" else "samples.png")
        files = module.write_samples(spec, objective.sample(n), Path(out or default))
    return {"files": [str(f) for f in files], "n": n}
