"""The public API: create_model, train, evaluate, load, predict, sample, entries, cards.

`train` reads an entry from the catalog, loads its data through its Task, builds config + model + objective,
hands them to the engine's loop (or, for a method that owns its loop, to its `learn(ctx)`), then measures the
held-out splits with `evaluate`: the same code `deepatlas eval` and `deepatlas bench` use.

Torch, Lightning and the engine are imported inside the functions that need them, so that `import deepatlas`
and the CLI's `list` and `--help` stay cheap.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from deepatlas import __version__ as VERSION
from deepatlas import catalog, cores, errors, memory
from deepatlas.catalog import (Card, Data, Entry, Train, card, card_json, cards, entries, family_cards, field_help, get,
                               markdown_table, split_recipe)
from deepatlas.errors import DeepAtlasError, option

__all__ = ["create_model", "train", "evaluate", "baseline", "load", "Predictor", "predict", "sample", "play", "entries",
           "get", "cards", "card", "family_cards", "Entry", "Card", "Train", "Data", "Scaling", "DeepAtlasError",
           "VERSION"]


def __getattr__(name: str):
    if name == "Scaling":  # Fabric's scaling flags (the engine's, imported on use)
        from deepatlas.engine.loop import Scaling
        return Scaling
    raise AttributeError(f"module 'deepatlas.api' has no attribute {name!r}")


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
    entry = get(name)
    return build(entry, build_config(entry, overrides))


def build(entry: Entry, config):
    """`entry.build(config)`; a config the architecture cannot be built from (a ValueError of its own checks, such
    as an even kernel where the centre matters) is the user's input, so one line."""
    try:
        return entry.build(config)
    except ValueError as err:
        raise DeepAtlasError(f"{entry.name}: {str(err).splitlines()[0] if str(err) else 'cannot build this config'}") from None


def split_overrides(entry: Entry, overrides: dict) -> dict[str, dict]:
    """`--set` pairs by part ("model", "train", "data", and each phase's name); keys the entry's loop or its task's
    data never read are refused."""
    return catalog.split_overrides(entry, overrides, task_of(entry).options)


def settings_keys(entry: Entry) -> dict[str, list[str]]:
    """The keys `--set` accepts for `entry`, by part."""
    return catalog.settings_keys(entry, task_of(entry).options)


@dataclasses.dataclass
class Settings:
    """A run's settings besides its architecture's config: how it trains, what data, and each phase's training."""
    train: Train
    options: Data
    phases: dict[str, Train] = dataclasses.field(default_factory=dict)
    fitted: bool = False
    """the main training is fitted to the user's data and time budget (see `fit_to_data`)"""

    def to_json(self) -> dict:
        return {"train": dataclasses.asdict(self.train), "options": dataclasses.asdict(self.options),
                "phases": {name: dataclasses.asdict(t) for name, t in self.phases.items()}, "fitted": self.fitted}


FITTED_EPOCHS = 1000
"""a fitted run's most epochs: the time budget and early stopping end it sooner on all but the smallest data"""
FITTED_PATIENCE = 20
"""a fitted run stops after this many epochs without a better validation metric..."""
FITTED_PATIENCE_STEPS = 200
"""...and at least this many optimizer steps: 20 epochs of one step each are too few to judge a model by"""
SET_BY_RECIPE = ("epochs", "steps", "patience")
"""training settings a user who sets any of them takes charge of: their run is not fitted"""


def fit_to_data(entry: Entry, train: Train, given: set[str]) -> tuple[Train, bool]:
    """An entry's recipe was tuned to its embedded data: its epochs (or steps) stop far too early or far too late on a
    user's data of another size. On a user's file, unless the user sets epochs, steps or patience, the main training
    runs until early stopping (FITTED_PATIENCE epochs without a better validation metric) or the time budget (the
    entry's bar budget unless --max-time), with the cosine schedule over the epochs that fit (decided after the first
    epoch by the engine), the warm-up at most one epoch and the patience at least FITTED_PATIENCE_STEPS steps
    (`fit_lengths`)."""
    if given & set(SET_BY_RECIPE) or task_of(entry).loop != "fit":
        return train, False
    return dataclasses.replace(train, epochs=max(train.epochs, FITTED_EPOCHS), steps=0, patience=FITTED_PATIENCE), True


def fit_lengths(train: Train, train_examples: int, world_size: int = 1) -> Train:
    """A fitted run's lengths in steps, from its data's steps per epoch: the recipe's warm-up, but at most one epoch
    (the recipe's 100 steps of warm-up were a few percent of its embedded run; on 40 steps of a user's data they
    would be the whole run), and a patience of at least FITTED_PATIENCE_STEPS steps."""
    steps_per_epoch = -(-train_examples // (train.batch_size * world_size))
    return dataclasses.replace(train, warmup=min(train.warmup, steps_per_epoch),
                               patience=max(train.patience, -(-FITTED_PATIENCE_STEPS // steps_per_epoch)))


def settings_for(entry: Entry, overrides: dict, data: str | None = None) -> tuple[dict, Settings]:
    """(config overrides, settings) of a run of `entry` with `overrides` on `data` (a user's path is made absolute,
    so that `eval` works from anywhere)."""
    parts = split_overrides(entry, overrides)
    options = catalog.apply_overrides(entry.data, parts["data"])
    if data:
        options = dataclasses.replace(options, data=data)
    users = Path(options.data).exists()
    if users:
        options = dataclasses.replace(options, data=str(Path(options.data).resolve()))
        if "image_size" not in parts["data"]:  # the recipe's size is its embedded data's: yours is your images'
            options = dataclasses.replace(options, image_size=0)
    phases = {name: catalog.apply_overrides(t, parts[name], f"--set {name}.") for name, t in entry.phases.items()}
    train = catalog.apply_overrides(entry.train, parts["train"])
    if "epochs" in settings_keys(entry)["train"] and train.epochs < 1:
        raise DeepAtlasError(f"--set epochs={train.epochs}: the training needs at least one epoch")
    train, fitted = fit_to_data(entry, train, set(parts["train"])) if users else (train, False)
    return parts["model"], Settings(train, options, phases, fitted)


MOVED_TO_TRAINING = ("train_windows", "train_examples", "pretrain", "pretrain_epochs", "pretrain_lr",
                     "pretrain_batch_size")
"""0.1 Config fields that were training budgets (GPT, BERT, DETR, DBN): now `steps` and phases' settings"""


def saved_model(saved: dict) -> dict:
    """The Config fields a run's config.json records; a 0.1 run's training budgets are left out (they shaped its
    training, not its network)."""
    if "recipe" in saved:
        return {k: v for k, v in saved["model"].items() if k not in MOVED_TO_TRAINING}
    return saved["model"]


def saved_settings(saved: dict, source: str = "config.json") -> Settings:
    """The settings a run's config.json records (a 0.1 run: its one recipe, no phases), each value checked."""
    if "recipe" in saved:
        saved = dict(zip(("train", "options"), map(dataclasses.asdict, split_recipe(saved["recipe"]))))
    try:
        return Settings(catalog.apply_overrides(Train(), saved["train"], f"{source}: train."),
                        catalog.apply_overrides(Data(), saved["options"], f"{source}: options."),
                        {name: catalog.apply_overrides(Train(), t, f"{source}: phases.{name}.")
                         for name, t in saved.get("phases", {}).items()}, saved.get("fitted") is True)
    except (KeyError, TypeError, AttributeError) as err:
        raise DeepAtlasError(f"{source}: not a deepatlas config ({type(err).__name__}: {err})") from None


def check_output(path: str | Path | None, flag: str, kind: str = "file") -> None:
    """Refuse, before any work, an output path that cannot be written: under a file, in a folder without write
    permission (tried, not guessed: root ignores permissions, a read-only mount does not), or a folder where a file
    is wanted (`kind`: "file", "folder" or "either"). Missing folders are fine: they are made when the output is
    written."""
    import os
    import tempfile
    if path is None:
        return
    path = Path(path)
    if path.is_dir() and kind == "file":
        raise DeepAtlasError(f"{flag} {path}: is a folder; give a file name")
    if path.exists() and not path.is_dir() and kind == "folder":
        raise DeepAtlasError(f"{flag} {path}: is a file; give a folder")
    existing = next(p for p in (path if path.is_dir() else path.parent, *path.parents) if p.exists())
    if not existing.is_dir():
        raise DeepAtlasError(f"{flag} {path}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".deepatlas-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise DeepAtlasError(f"{flag} {path}: cannot write in {existing} ({err.strerror})") from None


MAX_SAMPLES = 10_000
"""the most samples one `sample` call draws"""

SEEDS = range(0, 2**32)
"""the seeds every library accepts (Lightning's and numpy's are 32-bit)"""


def check_seed(seed, flag: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in SEEDS:
        raise DeepAtlasError(f"{flag} {seed!r}: must be an integer from 0 to {SEEDS.stop - 1}")
    return seed


def check_max_time(max_time) -> None:
    import math
    if max_time is not None and not (isinstance(max_time, (int, float)) and math.isfinite(max_time) and max_time > 0):
        raise DeepAtlasError(f"--max-time {max_time}: must be a positive number of seconds")


def task_of(entry: Entry | Card):
    from deepatlas.tasks import get_task
    return get_task(entry.task)


def form_for(entry: Entry, data: str | None = None, task: str | None = None) -> Entry:
    """The entry as it runs on `data` (or on `task`): itself, or its form for the task whose embedded dataset `data`
    is (and its own task's is not), with that form's config, builder, objective and recipe."""
    from deepatlas.tasks import get_task
    for form in entry.forms:
        embedded = data is not None and data in get_task(form.task).embedded() and \
            data not in task_of(entry).embedded()
        if task == form.task or embedded:
            return dataclasses.replace(entry, task=form.task, config=form.config, build=form.build,
                                       objective=form.objective, train=form.train, data=form.data, forms=[],
                                       more_bars=[],  # its bar's budget stays: the entry's time on any board
                                       bar=dataclasses.replace(entry.bar, metric=form.metric, direction=form.direction))
    return entry


def _objective(entry: Entry, config, spec: dict):
    """The entry's objective around a fresh network; it knows the run's data spec (generative metrics pick
    their scores by it)."""
    objective = entry.objective(build(entry, config))
    objective.data_spec = spec
    return objective


def train(name: str | None = None, *, data: str | None = None, env: str | None = None, target: str | None = None,
          column: str | None = None, task: str | None = None, overrides: dict | None = None, seed: int = 0,
          out: str | Path | None = None, max_time: float | None = None, resume: str | Path | None = None,
          scaling=None, sample_scores: bool = True) -> dict:
    """Train entry `name` (or resume the run in `resume`) and return its metrics (with "run_dir").

    `data`: an embedded dataset's name or your file or folder; `env`: rl: a gymnasium environment id; `target`: a
    table's label column; `column`: a series' value column; `task`: "classification" or "regression" for a table's
    target (default: from its values), or for an entry that also runs on other tasks, the task to run it on (the
    transformer on your series: "sequence"; its embedded datasets choose it themselves);
    `overrides`: {key: value} of the entry's model, train and data settings (the CLI's --set); `max_time`: seconds;
    `scaling`: Fabric's flags (`Scaling(accelerator, devices, strategy, num_nodes, precision)`);
    `sample_scores=False`: a generative model's test metrics without scoring its samples (its losses: bits/dim)."""
    import torch

    from deepatlas.engine.loop import Scaling, make_fabric, within_steps
    from deepatlas.engine.rundir import RunDir
    from deepatlas.protocols import Supervised

    overrides = dict(overrides or {})
    check_max_time(max_time)
    if target is not None and column is not None:
        raise DeepAtlasError(f"{option('target')} names a table's label column, {option('column')} a series' value "
                             f"column: give one")
    target = target if target is not None else column
    if env is not None:
        if data is not None:
            raise DeepAtlasError(f"{option('env')} names an environment, {option('data')} a dataset: give one")
        data = env
    form = None
    if task is not None and name is not None and task in get(name).also:
        form, task = task, None
    if task is not None:
        catalog.apply_overrides(Data(), {"task": task}, "--" if errors.SPELL_AS_FLAGS else "")  # named as typed
        overrides["data.task"] = task
    saved = None
    if resume is not None:
        if name or data or target or overrides:  # (env is data by now)
            raise DeepAtlasError(f"{option('resume')} continues a run exactly as configured: drop the name, "
                                 f"{option('data')}, {option('target')}, {option('column')}, {option('task')} and "
                                 f"{'--set' if errors.SPELL_AS_FLAGS else 'overrides='}")
        run = RunDir(resume)
        run.check_resumable()
        saved = run.read_json(run.config)
        if not any(run.path.glob("checkpoint*.safetensors")):
            raise DeepAtlasError(f"{run.path}: no checkpoint.safetensors to resume from")
        entry, config = _saved_entry(run, saved)
        settings = saved_settings(saved, str(run.config))
        seed, target = check_seed(saved.get("seed"), f"{run.config}: seed"), saved.get("target")
        threads = saved.get("threads")
        if threads is not None and not (isinstance(threads, int) and 1 <= threads <= 4096):
            raise DeepAtlasError(f"{run.config}: threads {threads!r}: must be an integer from 1 to 4096")
        cores.use_threads(threads)
    else:
        if name is None:
            raise DeepAtlasError("name an entry to train (see `deepatlas list`) or give --resume RUN_DIR")
        check_seed(seed)
        entry = form_for(get(name), data or overrides.get("data", overrides.get("data.data")), form)
        model_over, settings = settings_for(entry, overrides, data)
        run = RunDir(out or RunDir.default_path(entry.name))
        check_output(run.final, "--out", "folder")
        run.check_free()

    task = task_of(entry)
    scaling = scaling or Scaling()
    splits = task.load(settings.options, target)
    if saved is None and target is not None and not Path(settings.options.data).exists():
        raise DeepAtlasError(f"{option('target')}/{option('column')} {target}: {settings.options.data} is an embedded "
                             f"dataset; they name a column of your own CSV file ({option('data')}FILE)")
    if saved is None:
        config = build_config(entry, model_over, splits.dims)
    if settings.fitted:
        max_time = max_time or entry.bar.budget_s
        if saved is None:
            settings.train = fit_lengths(settings.train, len(splits.train))
    memory.check_model(entry.build, config, f"{entry.name} with this config and batch_size {settings.train.batch_size}",
                       _example(splits), settings.train.batch_size, accelerator=scaling.accelerator)
    fabric = make_fabric(scaling)
    run = RunDir(fabric.broadcast(str(run.final), src=0))  # rank 0's path (a default one holds the time)
    if saved is not None:
        run.reopen() if fabric.global_rank == 0 else None
    else:  # rank 0 locks a hidden folder, named once it has a checkpoint; the other ranks follow its path
        run.start(main=fabric.global_rank == 0)
    try:
        torch.manual_seed(seed)  # the initial weights are part of the seeded run
        objective = _objective(entry, config, splits.spec)
        if saved is None and fabric.global_rank == 0:
            run.write_json(run.config, _run_config(entry, seed, target, config, settings, splits.spec))
        if task.loop == "own":
            summary = _learn(entry, objective, splits, settings, seed, run, max_time, resume is not None, fabric)
        else:
            if not isinstance(objective, Supervised):
                raise DeepAtlasError(f"{entry.name}: its objective has no training_step/validation_step for the fit loop")
            train_set = within_steps(objective.prepare(splits) or splits.train, settings.train)
            summary = _fit(entry, objective, train_set, splits, settings, seed, run, max_time, resume is not None,
                           fabric)
            if fabric.global_rank != 0:
                return {"run_dir": str(run.path), **summary}
            task.after_training(load_objective(run.path), splits.spec, splits, run.path)
        # samplers too slow to score every epoch are scored once, on the test split
        val_scores = getattr(objective, "sample_metrics_per_epoch", True)
        metrics = {"run_dir": str(run.path), "name": entry.name, **summary, "params": count_params(objective),
                   "test": evaluate(run.path, split="test", sample_scores=sample_scores),
                   "val": evaluate(run.path, split="val", sample_scores=val_scores and sample_scores)}
        metrics["baseline"] = task.baseline(splits.spec, splits)  # the test split's, beside "test"
        run.write_json(run.metrics, metrics)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(str(run.path) if run.published else "") from None  # tell the user which run to resume
    finally:
        run.close()  # unlock; a new run that never checkpointed leaves nothing
    return metrics


def _example(splits):
    """One training input (a tensor), to estimate a batch's activations; None where the data is not a dataset."""
    import torch
    try:
        first = splits.train[0]
    except Exception:  # an environment, or a dataset that cannot be indexed
        return None
    first = first[0] if isinstance(first, (tuple, list)) else first
    return first if isinstance(first, torch.Tensor) else None


def _saved_entry(run, saved: dict) -> tuple[Entry, object]:
    """The entry and Config a run's config.json names, every value checked (the folder may come from anyone)."""
    if not isinstance(saved.get("name"), str):
        raise DeepAtlasError(f"{run.config}: not a deepatlas config (no entry name)")
    entry = get(saved["name"])
    if saved.get("task", entry.task) != entry.task:  # a run of one of its forms (older runs name no task)
        if not isinstance(saved["task"], str):
            raise DeepAtlasError(f"{run.config}: task {saved['task']!r} is not a task name")
        entry = form_for(entry, task=saved["task"])
    model = saved_model(saved) if isinstance(saved.get("model"), dict) else None
    if model is None or not isinstance(saved.get("data"), dict):
        raise DeepAtlasError(f"{run.config}: not a deepatlas config (no model or data part)")
    return entry, catalog.apply_overrides(entry.config(), model, f"{run.config}: model.")


def _fit(entry: Entry, objective, train_set, splits, settings: Settings, seed: int, run, max_time, resume: bool,
         fabric) -> dict:
    """The engine's fit loop, on every rank: each phase the objective declares, then the main training."""
    from deepatlas.engine.checkpoint import save_weights
    from deepatlas.engine.loop import fit, run_phases
    from deepatlas.protocols import Phased

    resuming_main = resume and run.checkpoint.exists()  # its checkpoint holds every weight
    spent = 0.0
    if isinstance(objective, Phased) and not resuming_main:
        spent, stopped = run_phases(objective.phases(splits), settings.phases, run, fabric=fabric, seed=seed,
                                    max_time=max_time, resume=resume, title=entry.name)
        if stopped is not None:  # the budget ran out before the main training: --resume continues the phase
            if fabric.global_rank == 0:
                save_weights(objective, run.model)
            return {**stopped, "epochs": 0, "steps": 0, "best_epoch": -1}
    left = None if max_time is None else max(max_time - spent, 0.0)
    return fit(objective, train_set, splits.val, settings.train, run, fabric=fabric, seed=seed,
               train_transform=splits.train_transform, monitor=monitor_for(entry, settings.options, splits.spec),
               max_time=left, resume=resuming_main, title=entry.name, plan=settings.fitted)


def _learn(entry: Entry, objective, env, settings: Settings, seed: int, run, max_time, resume: bool, fabric) -> dict:
    """A method whose loop is the algorithm: its environment (or the data its search trains on) instead of a
    dataset to iterate, its learn(ctx) instead of `fit`. It is handed this API (a search trains through it)."""
    import sys

    from deepatlas.engine import interact
    from deepatlas.protocols import OwnLoop

    if not isinstance(objective, OwnLoop):
        raise DeepAtlasError(f"{entry.name}: its task owns the loop, but its objective has no learn(ctx)")
    objective.check(env, entry.name)
    if fabric.world_size > 1:
        raise DeepAtlasError(f"{entry.name} runs on one device: its loop is the algorithm (drop --devices/--num-nodes)")
    return interact.learn(objective, env, settings.train, settings.options, run, seed=seed, device=fabric.device,
                          monitor=monitor_for(entry, settings.options), max_time=max_time, resume=resume,
                          title=entry.name, api=sys.modules[__name__])


def _run_config(entry: Entry, seed: int, target: str | None, config, settings: Settings, spec: dict) -> dict:
    """config.json: all that rebuilds a run, in three parts (the architecture's config, the training settings with
    any phases', the data options) and the data's spec (how new inputs are encoded as training encoded them); and
    the CPU threads it trains with (a resumed run uses them again: another count sums in another order)."""
    import torch
    return {"deepatlas": VERSION, "name": entry.name, "task": entry.task, "seed": seed, "target": target,
            "threads": torch.get_num_threads(),
            "model": dataclasses.asdict(config), **settings.to_json(), "data": spec}


def monitor_for(entry: Entry, options: Data, spec: dict | None = None) -> tuple[str, str]:
    """The validation metric that picks the best epoch: that of the bar set on this data, if any; a regressed table's
    mse (its bars are classification bars)."""
    if spec is not None and spec.get("kind") == "regression":
        return "mse", "min"
    bar = next((b for b in entry.bars if b.overrides.get("data", entry.data.data) == options.data), entry.bar)
    return bar.metric, bar.direction


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _read(run_dir: str | Path) -> tuple:
    from deepatlas.engine.rundir import RunDir
    run = RunDir(run_dir)
    saved = run.read_json(run.config)
    entry, config = _saved_entry(run, saved)
    return run, saved, entry, config


def load_objective(run_dir: str | Path):
    """The trained objective (an nn.Module: its forward gives the network's output) of a run, in eval mode."""
    return _trained(*_read(run_dir))


def _trained(run, saved: dict, entry: Entry, config):
    from deepatlas.engine.checkpoint import load_weights
    if not run.model.exists():
        raise DeepAtlasError(f"{run.path}: no model.safetensors (did the run finish? resume it with "
                             f"{option('resume')}RUN_DIR)")
    memory.check_model(entry.build, config, f"{run.config}: its {entry.name}", training=False)
    return load_weights(_objective(entry, config, saved["data"]), run.model).eval()


def load(run_dir: str | Path) -> Predictor:
    """A trained run, ready for raw inputs (`Predictor`): `.predict(...)`, `.encode(...)`, `.model`; rl runs `.act`,
    language models `.generate`."""
    return Predictor(run_dir)


class Predictor:
    """A trained run as the CLI uses it, from Python. `predict(inputs, **options)` takes what `deepatlas predict`
    takes (paths, the input text itself) and raw inputs (rows as dicts or a DataFrame, PIL images or arrays, a series
    as numbers), with the same options as keywords (steps, threshold, length, temperature, top_k, seed), and returns
    a typed `Prediction` in the input's units. `encode(raw)` gives the tensor the network reads; `model` is the plain
    nn.Module and `objective` the module that wraps it with its loss and metrics; calling the predictor runs the
    objective's forward on encoded inputs."""

    def __init__(self, run_dir: str | Path):
        run, saved, self.entry, self.config = _read(run_dir)
        self.run_dir, self.spec, self.task = Path(run_dir), saved["data"], task_of(self.entry)
        self.objective = _trained(run, saved, self.entry, self.config)
        self.model = self.objective.model

    def __repr__(self) -> str:
        return f"Predictor({self.entry.name}, {str(self.run_dir)!r})"

    def __call__(self, *inputs):
        import torch
        with torch.no_grad():
            return self.objective(*inputs)

    def predict(self, inputs=None, *, out: str | Path | None = None, render: str | Path | None = None, **options):
        check_output(out, option("out"))
        check_output(render, option("render"))
        return self.task.predict(self.objective, self.spec, inputs, out=Path(out) if out else None,
                                 render=Path(render) if render else None, **options)

    def encode(self, raw):
        """The tensor the network reads for `raw` inputs, encoded exactly as training encoded its data."""
        return self.task.encode(self.spec, raw)

    def act(self, observation):
        """The trained policy's greedy action for one observation, in the environment's action space (rl runs)."""
        return self.task.act(self.objective, self.spec, observation)

    def generate(self, prompt: str, **options) -> str:
        """The prompt continued (language models); options: length, temperature, top_k, seed."""
        return self.task.generate(self.objective, self.spec, prompt, **options)


def baseline(run_dir: str | Path, data: str | None = None, split: str = "test", episodes: int | None = None) -> dict:
    """The task's trivial predictor on the same examples `evaluate` measures ({"baseline": what it is, metric:
    value...}): the majority class, the training mean, the naive last value, a bigram, a random policy. Empty where
    the task has none. On a user's file (`data`) it is fitted on the run's training split, or on the file itself
    where the training data is no longer there."""
    _, saved, entry, _ = _read(run_dir)
    task = task_of(entry)
    splits = _run_data(task, saved, required=data is None)
    examples = None if data is None else task.read_labeled(saved["data"], data)
    return task.baseline(saved["data"], splits, split, episodes, examples)


def _run_data(task, saved: dict, required: bool = True):
    """The data a run trained on (its Splits, or its environment), checked unchanged; None where it is gone and not
    `required` (a user's file measured instead)."""
    options = saved_settings(saved).options
    try:
        splits = task.load(options, saved.get("target"))
    except DeepAtlasError:
        if required:
            raise
        return None
    if task.loop == "fit" and splits.spec != saved["data"]:
        raise DeepAtlasError(f"{options.data}: data changed since the run was trained")
    return splits


def evaluate(run_dir: str | Path, data: str | None = None, split: str = "test",
             episodes: int | None = None, with_baseline: bool = False, sample_scores: bool = True) -> dict:
    """Metrics of a trained run on a held-out split of its own data, or on all rows of a user's file.
    Methods that own their loop: the return over `episodes` (default 20) episodes with the split's fixed seeds.
    `with_baseline`: also {"baseline": ...} (see `baseline`), on the same examples and data loaded once.
    `sample_scores=False`: a generative model's losses only, without scoring its samples."""
    from torch.utils.data import DataLoader

    from deepatlas.engine.loop import Scaling, evaluate_loader, make_fabric

    _, saved, entry, _ = _read(run_dir)
    task = task_of(entry)
    objective = load_objective(run_dir)
    if task.loop == "own":
        if data is not None:
            raise DeepAtlasError(f"--data: {entry.name} is evaluated where it trained "
                                 f"({saved_settings(saved).options.data})")
        env = _run_data(task, saved)
        metrics = objective.evaluate(env, split, episodes)
        return {**metrics, "baseline": task.baseline(saved["data"], env, split, episodes)} if with_baseline else metrics
    if episodes is not None:
        raise DeepAtlasError("--episodes: only rl and evolution runs are evaluated by episodes")
    if data is None:
        splits = _run_data(task, saved)
        examples = getattr(splits, split)
    else:  # the run's own data only fits the baseline, where it is still there
        splits = _run_data(task, saved, required=False) if with_baseline else None
        examples = task.read_labeled(saved["data"], data)
    fabric = make_fabric(Scaling(devices=1))
    loader = fabric.setup_dataloaders(DataLoader(examples, batch_size=512, collate_fn=getattr(examples, "collate", None)),
                                      use_distributed_sampler=False)
    metrics = evaluate_loader(fabric, fabric.setup_module(objective), loader, sample_scores=sample_scores)
    if with_baseline:
        metrics["baseline"] = task.baseline(saved["data"], splits, split, episodes, examples)
    return metrics


def predict(run_dir: str | Path, inputs=None, out: str | Path | None = None, render: str | Path | None = None,
            **options):
    """A `Prediction` (tasks/predictions.py) for `inputs`: rows of a CSV, an image or a folder, a sentence to translate
    or continue, a series to forecast (a path, or the input text itself, or raw inputs: see `Predictor`). Detection
    and segmentation runs also draw their predictions into the PNG `out`. rl runs take no input: they play one
    test episode (saved as the GIF `render`) or show a board game. `options`: steps (series), threshold (detection,
    segmentation), length, temperature, top_k, seed (text)."""
    return load(run_dir).predict(inputs, out=out, render=render, **options)


def predict_many(run_dir: str | Path, inputs: list[str | Path], out: str | Path | None = None, **options):
    """One `Prediction` for several inputs; a PNG `out` is numbered (out-1.png, ...) when there are several."""
    predictor = load(run_dir)
    if not inputs:
        return predictor.predict(None, out=out, **options)
    from deepatlas.data.draw import numbered
    results = [predictor.predict(p, out=None if out is None else numbered(Path(out), i, len(inputs)), **options)
               for i, p in enumerate(inputs)]
    combined = results[0]
    for r in results[1:]:
        combined = combined + r
    return combined


INTERPOLATION_STEPS = 10
MIX_COLUMNS, MIX_COLUMNS_MAX = 5, 64


def sample(run_dir: str | Path, n: int | None = None, out: str | Path | None = None, interpolate: bool = False,
           seed: int = 0, steps: int | None = None, sampler: str | None = None, trajectory: bool = False,
           mix: bool = False) -> dict:
    """Draw `n` samples (default 64) from a trained generative run and write them where people look at them:
    a PNG grid (images), a scatter over the true density (toy2d) or WAV files (audio). With `interpolate`,
    a grid whose rows decode the line between the latent codes of two test images (`n` rows, default 8).
    Images are also written each as its own PNG (a folder beside the grid). Diffusion and score models (ddpm, ncsn,
    score_sde) take `steps` and `sampler`, and with `trajectory` write the sampling chain as an animated GIF.
    With `mix` (stylegan), the style-mixing grid: `n` sources B (default 5) across the top, sources A down the side,
    each cell A with B's coarse, middle or fine styles (StyleGAN's figure 3).
    Returns {"files": [...], "n": n}."""
    import torch

    from deepatlas.protocols import Denoises, Densities, Interpolates, Mixes, Samples

    if mix and interpolate:
        raise DeepAtlasError("--mix and --interpolate: choose one")
    n = n if n is not None else (8 if interpolate else MIX_COLUMNS if mix else 64)
    if not 1 <= n <= MAX_SAMPLES:
        raise DeepAtlasError(f"-n {n}: ask for 1 to {MAX_SAMPLES:,} samples")
    check_seed(seed)
    check_output(out, "--out", "either")
    run, saved, entry, _ = _read(run_dir)
    objective = load_objective(run_dir)
    if not isinstance(objective, Samples):
        raise DeepAtlasError(f"{entry.name} has no sampler: there is nothing to sample (vae, gan, pixelcnn... do)")
    spec, task = saved["data"], task_of(entry)
    torch.manual_seed(seed)
    with torch.no_grad():
        if mix:
            if not isinstance(objective, Mixes):
                raise DeepAtlasError(f"{entry.name} has no styles to mix (stylegan has)")
            if n > MIX_COLUMNS_MAX:
                raise DeepAtlasError(f"-n {n}: a style-mixing grid takes 1 to {MIX_COLUMNS_MAX} sources B")
            grid = objective.mix(n)  # (rows, 1 + n, *shape)
            files = task.write_samples(spec, grid.flatten(0, 1), Path(out or run.path / "mixing.png"),
                                       columns=grid.shape[1])
        elif interpolate:
            if not isinstance(objective, Interpolates):
                raise DeepAtlasError(f"{entry.name} has no latent space to interpolate in")
            test = task.load(saved_settings(saved).options, saved.get("target")).test
            ends = torch.stack([test[i][0] for i in torch.randperm(len(test))[:2 * n].tolist()])
            if len(ends) < 2 * n:
                raise DeepAtlasError(f"-n {n}: the test split has only {len(test)} examples, enough for {len(test) // 2} rows")
            grid = objective.interpolate(ends[:n], ends[n:], INTERPOLATION_STEPS)  # (n, steps, *shape)
            files = task.write_samples(spec, grid.flatten(0, 1), Path(out or run.path / "interpolation.png"),
                                       columns=INTERPOLATION_STEPS)
        else:
            from deepatlas.data.generative import write_each, write_trajectory
            if isinstance(objective, Denoises):
                if sampler is not None and sampler not in objective.samplers:
                    raise DeepAtlasError(f"--sampler {sampler}: {entry.name} samples with "
                                         f"{' or '.join(objective.samplers)}")
                if steps is not None and steps < 1:
                    raise DeepAtlasError(f"--steps {steps}: sample with at least 1 step")
                try:
                    result = objective.sample(n, steps=steps, sampler=sampler, trajectory=trajectory)
                except ValueError as err:  # steps beyond the model's T, and the like
                    raise DeepAtlasError(str(err)) from None
                samples, frames = result if trajectory else (result, None)
            else:
                if steps is not None or sampler is not None or trajectory:
                    raise DeepAtlasError(f"{entry.name} samples in one pass: --steps, --sampler and --trajectory are "
                                         "for diffusion and score models (ddpm, ncsn, score_sde)")
                samples, frames = objective.sample(n), None
            grid = Path(out or run.path / ("samples" if spec.get("kind") == "audio" else "samples.png"))
            files = task.write_samples(spec, samples, grid)
            if spec.get("kind") == "images":  # the grid, and each image at its own size beside it
                files += write_each(samples, grid.with_suffix(""))
            if frames is not None:
                files.append(write_trajectory(frames, grid.with_name(f"{grid.stem}-trajectory.gif")))
            if isinstance(objective, Densities) and spec.get("kind") == "points":  # exact log-densities drawn (ffjord)
                first = Path(files[0])
                files += task.module.plot_density(objective, spec, samples,
                                                  first.with_name(f"{first.stem}-density.png"))
    return {"files": [str(f) for f in files], "n": n}


def play(run_dir: str | Path, human_first: bool, ask, say) -> None:
    """Play a board game against a trained agent in the terminal (`ask(prompt) -> move`, `say(text)`)."""
    from deepatlas.protocols import Plays
    agent = load_objective(run_dir)
    if not isinstance(agent, Plays):
        raise DeepAtlasError(f"{run_dir}: this run does not play board games (train alphazero)")
    agent.play(human_first=human_first, ask=ask, say=say)
