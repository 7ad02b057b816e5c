"""Tasks: one `Task` object per domain, and the objectives and metrics shared by several architectures.

A Task is what a domain means to the rest of deepatlas: its data module (embedded datasets and readers for
users' files), which loop trains its methods, and what `predict` and `sample` give. An Entry names its task;
`get_task(name)` returns the object. The engine and the CLI never branch on task names.

An objective wraps a network (its `.model`, a plain nn.Module) and gives the loop
`training_step(batch) -> (loss, logs)` and `validation_step(batch) -> logs` (`deepatlas.protocols`). Most
measure a batch the same way in both; they subclass `Objective` and write only `measure`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from deepatlas.errors import DeepAtlasError, option
from deepatlas.protocols import Predicts
from deepatlas.tasks.predictions import ClassProbabilities, Prediction

TASK_MODULES = {
    "classification": "deepatlas.tasks.classification", "image_classification": "deepatlas.tasks.classification",
    "sequence": "deepatlas.tasks.sequence", "tree": "deepatlas.tasks.sequence",
    "translation": "deepatlas.tasks.translation", "language_model": "deepatlas.tasks.language",
    "embedding": "deepatlas.tasks.embedding", "generation": "deepatlas.tasks.generative",
    "image_translation": "deepatlas.tasks.generative",
    "detection": "deepatlas.tasks.detection", "segmentation": "deepatlas.tasks.detection",
    "rl": "deepatlas.tasks.rl", "search": "deepatlas.tasks.rl",
    "graph": "deepatlas.tasks.graph",
    "pde": "deepatlas.tasks.pde",
    "trajectory": "deepatlas.tasks.trajectory",
    "irregular": "deepatlas.tasks.irregular",
    "operator": "deepatlas.tasks.operator",
}
"""task name -> the module that defines its Task in `TASKS`; adding a domain adds a line here"""


def get_task(name: str) -> Task:
    if name not in TASK_MODULES:
        raise DeepAtlasError(f"unknown task {name!r}; tasks: {', '.join(TASK_MODULES)}")
    found = {t.name: t for t in import_module(TASK_MODULES[name]).TASKS}
    return found[name]


@dataclass(frozen=True)
class Task:
    """A domain. Its data module has `load_for(options, target) -> Splits`, `EMBEDDED`, `read_labeled(spec,
    path)` (for `eval --data`), and optionally `encode(spec, raw)` or `read_inputs(spec, path)` (classifiers'
    inputs), `predict(objective, spec, inputs[, out], **options) -> rows`, `baseline(spec, train, examples)` (the
    task's trivial predictor on a split), `write_samples(spec, samples, out)` and
    `plot_predictions(objective, spec, dataset, path)`."""
    name: str
    data: str
    """the data module"""
    loop: Literal["fit", "own"] = "fit"
    """fit: the engine's loop trains its methods; own: each method's `learn(ctx)` is the loop (rl, search)"""
    prediction: type[Prediction] = Prediction
    """what the data module's `predict` rows are"""
    draws: bool = False
    """`predict` can draw its predictions into a PNG (detection, segmentation)"""
    options: tuple[str, ...] = ()
    """the data options (catalog.Data fields) its data module reads besides `data`; `--set` refuses the others"""

    @property
    def module(self) -> ModuleType:
        return import_module(self.data)

    def load(self, options, target: str | None = None):
        """The data's `Splits` (an `Environment` for own-loop tasks) for data options `options` (catalog.Data)."""
        return self.module.load_for(options, target)

    def embedded(self) -> list[str]:
        """Names of the embedded datasets this task trains on without any file."""
        return list(self.module.EMBEDDED)

    def read_labeled(self, spec: dict, path: str) -> Dataset:
        return self.module.read_labeled(spec, path)

    def predict(self, objective, spec: dict, inputs, out: Path | None = None, render: Path | None = None,
                **options) -> Prediction:
        """Predictions for `inputs`: a path (a file or a folder), the input text itself, or raw inputs where the data
        module encodes them (rows as dicts or a DataFrame, PIL images or arrays, a series as numbers). `options`
        (steps, threshold, length, temperature, top_k, seed...) go to the data module's `predict`, which names the
        ones it takes as keywords; one it does not take is refused (a plain classifier takes none)."""
        options = {k: v for k, v in options.items() if v is not None}
        if render is not None:
            raise DeepAtlasError(f"{option('render')}: only rl runs play episodes")
        if inputs is None:
            raise DeepAtlasError("give INPUTS to predict for (or --neighbours WORD for an embedding run)")
        if out is not None and not self.draws:
            raise DeepAtlasError(f"{option('out')} PNG: only detection and segmentation runs draw their predictions")
        module = self.module
        if hasattr(module, "predict"):
            self.check_options(module.predict, options)
            inputs = str(inputs) if isinstance(inputs, Path) else inputs
            rows = module.predict(objective, spec, inputs, **({"out": Path(out)} if out else {}), **options)
            return self.prediction(rows, files=[str(out)] if out else [])
        self.check_options(None, options)
        if not isinstance(objective, Predicts):
            raise DeepAtlasError(f"{type(objective.model).__name__} generates rather than predicts: "
                                 f"try `deepatlas sample RUN_DIR`")
        x, names = module.encode(spec, inputs) if hasattr(module, "encode") else module.read_inputs(spec, str(inputs))
        probs = objective.predict(x.to(next(objective.parameters()).device))
        classes = spec["classes"]
        return ClassProbabilities([{"input": n, "predicted": classes[int(p.argmax())],
                                    "probabilities": dict(zip(classes, p.tolist()))} for n, p in zip(names, probs)])

    def check_options(self, predict, options: dict) -> None:
        """Refuse a predict option (a keyword of `predict`) that this task's predictions do not take."""
        taken = set(inspect.signature(predict).parameters) if predict is not None else set()
        for name in options:
            if name not in taken:
                inputs = {"objective", "spec", "text", "inputs", "path", "out", "render"}
                shown = ", ".join(option(k) for k in sorted(taken - inputs)) or "none"
                raise DeepAtlasError(f"{option(name)}: {self.name} predictions do not take it (they take: {shown})")

    def encode(self, spec: dict, raw) -> Tensor:
        """The tensor the network reads for `raw` inputs, encoded exactly as training encoded its data."""
        if not hasattr(self.module, "encode"):
            raise DeepAtlasError(f"{self.name} inputs are encoded inside predict(...): give them there")
        return self.module.encode(spec, raw)[0]

    def act(self, objective, spec: dict, observation):
        raise DeepAtlasError(f"this is a {self.name} run, not an rl run: it has no policy to act with")

    def generate(self, objective, spec: dict, prompt: str, **options) -> str:
        raise DeepAtlasError(f"a {self.name} run does not generate text (a gpt run does)")

    def trivial(self, spec: dict, train, examples) -> tuple[str, dict[str, float]] | None:
        """The task's trivial predictor scored on `examples` (the data module's `baseline`), or None."""
        find = getattr(self.module, "baseline", None)
        return None if find is None else find(spec, train, examples)

    def baseline(self, spec: dict, data, split: str = "test", episodes: int | None = None, examples=None) -> dict:
        """{"baseline": what the trivial predictor is, metric: value...} on `examples` (default: `data`'s `split`),
        fitted on `data`'s training split (None: on the examples themselves); {} where the task has none."""
        examples = examples if examples is not None else getattr(data, split)
        found = self.trivial(spec, None if data is None else data.train, examples)
        return {} if found is None else {"baseline": found[0], **found[1]}

    def write_samples(self, spec: dict, samples: Tensor, out: Path, columns: int = 0) -> list[Path]:
        """Samples where people look at them (a PNG grid, a scatter, WAV files)."""
        if not hasattr(self.module, "write_samples"):
            raise DeepAtlasError(f"the {self.name} task does not generate samples")
        return self.module.write_samples(spec, samples, out, **({"columns": columns} if columns else {}))

    def after_training(self, objective, spec: dict, splits, run_path: Path) -> None:
        """Dense predictions are judged by eye too: a grid of validation images (predictions.png)."""
        if hasattr(self.module, "plot_predictions"):
            self.module.plot_predictions(objective, spec, splits.val, run_path / "predictions.png")


def first_batch(examples: Dataset, n: int):
    """The first n examples, collated as training collates them."""
    return next(iter(DataLoader(examples, batch_size=n, collate_fn=getattr(examples, "collate", None))))


class Objective(nn.Module):
    """`measure(batch) -> {"loss": ..., metric: ...}` (batch means) is all a subclass writes."""

    data_spec: dict = {}
    """the run's data spec (its units, normalization, classes), set by the API when it trains or loads; read only"""

    not_exported: str = ""
    """what inference is where it is not one forward pass ("sampling pixel by pixel"); `deepatlas export` names it"""
    export_note: str = ""
    """what the exported outputs are where they are not the final prediction"""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(*inputs)

    def export_inputs(self, data, n: int) -> dict[str, Tensor]:
        """`infer`'s inputs for the first n examples of the test split: the network's input, a batch's first item."""
        return {"input": first_batch(data.test, n)[0]}

    def infer(self, *inputs: Tensor) -> Tensor | dict[str, Tensor]:
        """Inference as one forward pass (what `deepatlas export` writes): the network's output."""
        return self(*inputs)

    def measure(self, batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def prepare(self, data) -> Dataset | None:
        """Called once before training with the data's `Splits`. An objective that needs statistics of
        the training data (unigram counts, co-occurrence counts) computes them here into buffers, which
        are saved with the weights; it may return the Dataset to train on instead of `data.train`."""
        return None

    def training_step(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        logs = self.measure(batch)
        return logs["loss"], {k: v.detach() for k, v in logs.items()}

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        return self.measure(batch)
