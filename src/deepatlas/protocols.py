"""Everything the training loop and the API may call on an objective, declared once.

An objective is an `nn.Module` that wraps a network and gives the loop what it needs. The loop and the API
check these protocols by type (`isinstance(objective, SplitMetrics)`), never by scattered name lookups;
an objective provides a capability by defining the methods (or attribute) below. `tasks.Objective` is the
base class most objectives subclass: it provides `Supervised`.

The fit loop (`engine.loop.fit`) runs `Supervised` objectives; an objective that is an `OwnLoop` (rl,
evolution, search) runs its own loop, CleanRL style, with the engine's context. Which loop an entry gets is
declared by its task (`Task.loop`), and checked against these protocols when the run starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:  # types only: this module imports nothing heavy
    from torch import Tensor


@runtime_checkable
class Supervised(Protocol):
    """Trained by the fit loop: one loss per batch, validation values per batch (batch means)."""

    def training_step(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss to minimize and the values to log; a key "NAME#n" weighs NAME's batch mean by a count."""

    def validation_step(self, batch) -> dict[str, Tensor]:
        """Values measured on a held-out batch (no gradients); averaged over the split by the loop."""

    def prepare(self, data) -> Any:
        """Called once before training with the data's `Splits`: statistics of the training data into buffers;
        may return the Dataset to train on instead of `data.train`."""


@dataclass
class Phase:
    """A stage of training before the main one (DETR's backbone pre-training as a classifier), trained by the same
    fit loop on the run's device, under the run's time budget, with its own checkpoint, log and curves. Its
    training settings are the entry's `phases[name]` (`--set NAME.epochs=0` skips it)."""
    name: str
    objective: Any
    """a `Supervised` module that shares the parameters it trains with the main objective"""
    train_set: Any
    val_set: Any
    monitor: tuple[str, str]
    """(validation metric, "max" or "min"): what its log and progress show"""
    settings: str | None = None
    """the entry's `phases` key of its training settings (None: `name`); the layers of a stack share one"""
    start: Callable[[], None] | None = None
    """called before the phase trains (or resumes): what needs the phases before it done (a statistic of the data)"""
    finish: Callable[[], None] | None = None
    """called after it trained (or was found trained): hand its result to the main model"""


@runtime_checkable
class Phased(Protocol):
    """Trains in phases: each of `phases(data)` runs, in order, before the main training."""

    def phases(self, data) -> list[Phase]:
        ...


@runtime_checkable
class ManualOptimization(Protocol):
    """Steps its optimizers itself, in the order its algorithm needs (a GAN: discriminator, then generator).
    The loop then calls `training_step(batch, optimize)`; `optimize(name, loss)` is one update of optimizer
    `name` (zero grads, backward, clip, step)."""

    manual_optimization: bool

    def training_step(self, batch, optimize: Callable[[str, Tensor], None]) -> tuple[Tensor, dict[str, Tensor]]:
        ...


@runtime_checkable
class OptimizerGroups(Protocol):
    """Several optimizers, or param groups with their own settings ("lr_scale" multiplies the recipe's lr)."""

    def optimizer_groups(self) -> dict[str, Any]:
        """{optimizer name: parameters or param groups}."""


@runtime_checkable
class SplitMetrics(Protocol):
    """Metrics of a whole split (mAP, mean IoU), accumulated over its batches by `validation_step`."""

    def reset_metrics(self) -> None:
        ...

    def compute_metrics(self) -> dict[str, float]:
        ...


@runtime_checkable
class Summarize(Protocol):
    """Derives further values from the split's means (a ratio of two means)."""

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        ...


@runtime_checkable
class SampleMetrics(Protocol):
    """A generative model scored by its samples against the split's whole input tensor (FD, modes)."""

    def sample_metrics(self, real: Tensor) -> dict[str, float]:
        ...


@runtime_checkable
class Predicts(Protocol):
    """A classifier: class probabilities (B, K) of inputs (B, ...)."""

    def predict(self, x: Tensor) -> Tensor:
        ...


@runtime_checkable
class Samples(Protocol):
    """A generative model: `n` samples in the data's own shape and units."""

    def sample(self, n: int) -> Tensor:
        ...


@runtime_checkable
class Denoises(Protocol):
    """A model that samples by many denoising steps (diffusion, score models): `samplers` names its samplers (the
    first is the default); `sample(n, steps, sampler, trajectory)` returns the samples, or with `trajectory` a
    pair (samples, frames (F, n, *shape)) of the states on the way."""

    samplers: tuple[str, ...]

    def sample(self, n: int, steps: int | None = None, sampler: str | None = None, trajectory: bool = False):
        ...


@runtime_checkable
class Densities(Protocol):
    """A generative model with an exact log-density: log p(x) (B,) of points x (B, ...) (a continuous flow)."""

    def log_prob(self, x: Tensor) -> Tensor:
        ...


@runtime_checkable
class Interpolates(Protocol):
    """A latent-variable model: `steps` decodings along the line between the codes of inputs a and b."""

    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """(n, steps, *shape) from a and b (n, *shape)."""


@runtime_checkable
class Mixes(Protocol):
    """A style-based generator: the style-mixing grid of StyleGAN's figure 3."""

    def mix(self, n: int) -> Tensor:
        """(rows, 1 + n, *shape): a top row of n sources B after a blank corner, then one row per source A, its
        first image A itself and the others A with one level of styles (coarse, middle, fine) copied from B."""


@runtime_checkable
class OwnLoop(Protocol):
    """A method whose loop is the algorithm (rl rollouts, evolutionary generations, a search over runs)."""

    def check(self, env, name: str) -> None:
        """Raise a DeepAtlasError if this method cannot run on `env` (the task's loaded data)."""

    def learn(self, ctx) -> None:
        """The whole training loop, using the engine's context (`engine.interact.Context`)."""

    def evaluate(self, env, split: str = "test", episodes: int | None = None) -> dict[str, float]:
        """Metrics on a split's fixed episodes (or stored findings)."""


@runtime_checkable
class Exports(Protocol):
    """What `deepatlas export` writes to ONNX: `infer(*export_inputs(data, n).values())`, where the objective's
    inference is one forward pass of its network. `tasks.Objective` and `tasks.rl.Algorithm` provide defaults."""

    not_exported: str
    """empty where inference is one forward pass; else what it is instead ("a tree search (MCTS) guided by the
    network"), which `export` names in its one-line refusal"""
    export_note: str
    """what the outputs are where they are not the final prediction ("raw outputs, before box decoding and NMS")"""

    def export_inputs(self, data, n: int) -> dict[str, Tensor]:
        """`infer`'s inputs, by name, for n examples of the run's data (its Splits' test split, or its Environment)."""

    def infer(self, *inputs: Tensor) -> Tensor | dict[str, Tensor]:
        """Inference as one forward pass: a tensor, or several by name."""


@runtime_checkable
class Plays(Protocol):
    """A board-game agent a person can play against in the terminal."""

    def play(self, human_first: bool, ask: Callable[[str], str], say: Callable[[str], None]) -> None:
        ...
