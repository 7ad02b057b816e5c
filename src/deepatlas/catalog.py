"""The catalog: one Entry per architecture, with its card, its bar and its builders.

Every module under `deepatlas.models` is imported explicitly by `_discover()` the first time
the catalog is read; each calls `register(Entry(...))` once at its bottom.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from deepatlas.errors import DeepAtlasError

FAMILIES = ("feedforward", "vision", "detection", "segmentation", "sequence", "language", "generative",
            "graph", "geometry", "dynamics", "tracking", "rl", "evolution")


@dataclass(frozen=True)
class Paper:
    authors: str
    title: str
    ref: str  # arXiv id ("arXiv:1512.03385") or venue ("Psychological Review 65(6), 1958")

    def __str__(self) -> str:
        return f"{self.authors}. {self.title}. {self.ref}"


@dataclass(frozen=True)
class Bar:
    """The promise: `metric` on the held-out test split reaches `goal` within `budget_s` on a 2-core CPU."""
    metric: str
    goal: float
    direction: Literal["max", "min"]
    budget_s: float
    overrides: dict[str, str] = field(default_factory=dict, compare=False)
    """`--set` pairs for a further bar of the same entry (other data or config); empty for the main bar"""

    def met_by(self, value: float) -> bool:
        return value >= self.goal if self.direction == "max" else value <= self.goal

    def describe(self, default_data: str) -> str:
        """E.g. "accuracy ≥ 0.95 on future-tagging (bidirectional=true) in 120 s"."""
        data = self.overrides.get("data", default_data)
        rest = ", ".join(f"{k}={v}" for k, v in self.overrides.items() if k != "data")
        op = "≥" if self.direction == "max" else "≤"
        return f"{self.metric} {op} {self.goal:g} on {data}{f' ({rest})' if rest else ''} in {self.budget_s:g} s"


@dataclass
class Recipe:
    """How an entry is trained by default. Every field can be changed with `--set key=value`."""
    data: str = "breast_cancer"
    """embedded dataset name, or a path to the user's file"""
    epochs: int = 50
    """passes over the training split"""
    batch_size: int = 64
    """examples per optimizer step"""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """adamw, or plain sgd (momentum below)"""
    lr: float = 1e-3
    """peak learning rate"""
    momentum: float = 0.0
    """sgd momentum"""
    weight_decay: float = 0.0
    """decoupled weight decay (adamw) or L2 (sgd)"""
    schedule: Literal["constant", "cosine", "inverse_sqrt"] = "cosine"
    """learning-rate schedule over all steps; inverse_sqrt: lr·sqrt(warmup/step) after the warm-up (Vaswani et al.)"""
    warmup: int = 0
    """steps of linear learning-rate warm-up from 0 before the schedule (0: none)"""
    patience: int = 0
    """stop after this many epochs without a better validation metric (0: never)"""
    grad_clip: float = 0.0
    """clip the gradient norm to this value (0: off)"""
    image_size: int = 0
    """images: resize to this side length (0: keep the data's size)"""
    crop_pad: int = 0
    """images: random crop after zero-padding by this many pixels (0: off)"""
    flip: bool = False
    """images: random horizontal flips (not for digits)"""
    binarize: bool = False
    """images for generative models: threshold pixels at 0.5 (the binary view, for Bernoulli models)"""
    rotate: float = 0.0
    """images: random rotation within ±this many degrees (0: off)"""
    window: int = 0
    """time series: input window length for forecasting; text: tokens of context (0: the data's default)"""
    tokens: Literal["char", "bpe", "word"] = "char"
    """text: characters, byte-pair subwords learned on the train split, or words (spelled out for char-aware models)"""
    vocab: int = 0
    """text: BPE vocabulary size, or the number of most frequent words kept (0: the data's default)"""
    stop_at: float | None = None
    """rl and evolution: stop once the validation episodes' metric reaches this (None: use the whole budget)"""


@dataclass
class Entry:
    name: str
    title: str
    family: str
    year: int
    paper: Paper
    summary: str
    when_to_use: str
    when_not: str
    related: list[str]
    config: type
    """the architecture's @dataclass Config; its defaults are the small preset"""
    build: Callable[[Any], Any]
    """Config -> nn.Module"""
    objective: Callable[[Any], Any]
    """nn.Module -> objective with training_step / validation_step"""
    bar: Bar
    recipe: Recipe = field(default_factory=Recipe)
    task: str = "classification"
    """what the model does with data: decides the data domain, `predict` and `eval`"""
    more_bars: list[Bar] = field(default_factory=list)
    """further promises, each a fresh run of the recipe with the bar's `overrides` applied"""
    notes: str = ""
    """calibration notes: what was measured to choose the recipe (printed by `info`)"""

    @property
    def bars(self) -> list[Bar]:
        return [self.bar, *self.more_bars]

    def card(self) -> dict:
        """The JSON card of `list --json` and `info --json`."""
        return {
            "name": self.name, "title": self.title, "family": self.family, "year": self.year,
            "paper": str(self.paper), "summary": self.summary, "when_to_use": self.when_to_use,
            "when_not": self.when_not, "related": list(self.related), "task": self.task, "notes": self.notes,
            "bar": _bar_card(self.bar), "more_bars": [{**_bar_card(b), "overrides": dict(b.overrides)}
                                                      for b in self.more_bars],
            "recipe": dataclasses.asdict(self.recipe),
            "config": dataclasses.asdict(self.config()),
        }


def _bar_card(bar: Bar) -> dict:
    return {"metric": bar.metric, "goal": bar.goal, "direction": bar.direction, "budget_s": bar.budget_s}


_REGISTRY: dict[str, Entry] = {}
_discovered = False


def register(entry: Entry) -> Entry:
    if entry.family not in FAMILIES:
        raise ValueError(f"{entry.name}: unknown family {entry.family!r}")
    if entry.name in _REGISTRY and _REGISTRY[entry.name] is not entry:
        raise ValueError(f"entry {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def _discover() -> None:
    """Import every module under deepatlas.models once; each registers its entry."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import deepatlas.models as models
    for info in pkgutil.walk_packages(models.__path__, models.__name__ + "."):
        importlib.import_module(info.name)


def entries(family: str | None = None) -> list[Entry]:
    _discover()
    if family is not None and family not in FAMILIES:
        raise DeepAtlasError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    found = [e for e in _REGISTRY.values() if family is None or e.family == family]
    return sorted(found, key=lambda e: (FAMILIES.index(e.family), e.year, e.name))


def get(name: str) -> Entry:
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `deepatlas list`"
    raise DeepAtlasError(f"unknown entry {name!r}{hint}")


# ---- typed overrides for `--set key=value` -------------------------------------------------

def _convert(raw: str, kind: Any, key: str) -> Any:
    """Parse the text `raw` as the dataclass field type `kind`, or say why not."""
    origin = typing.get_origin(kind)
    if origin is Literal:
        if raw not in kind.__args__:
            raise DeepAtlasError(f"--set {key}={raw}: must be one of {', '.join(map(str, kind.__args__))}")
        return raw
    if origin in (typing.Union, types.UnionType):
        options = [a for a in kind.__args__ if a is not type(None)]
        if raw.lower() in ("none", "null") and len(options) < len(kind.__args__):
            return None
        return _convert(raw, options[0], key)
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise DeepAtlasError(f"--set {key}={raw}: expected true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise DeepAtlasError(f"--set {key}={raw}: expected {kind.__name__}") from None
    if origin in (tuple, list):
        return kind([_convert(p, kind.__args__[0], key) for p in raw.split(",") if p])
    return raw


def apply_overrides(obj: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of dataclass `obj` with `overrides` applied; strings are parsed to the field's type."""
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in overrides.items():
        if key not in hints:
            raise DeepAtlasError(f"unknown setting {key!r}; valid: {', '.join(hints)}")
        changes[key] = _convert(value, hints[key], key) if isinstance(value, str) else value
    return dataclasses.replace(obj, **changes)


def split_overrides(entry: Entry, overrides: dict[str, Any]) -> tuple[dict, dict]:
    """Split `--set` pairs into (model config, recipe) overrides; an unknown key lists both."""
    model_keys = {f.name for f in dataclasses.fields(entry.config)}
    recipe_keys = {f.name for f in dataclasses.fields(Recipe)}
    unknown = [k for k in overrides if k not in model_keys | recipe_keys]
    if unknown:
        close = difflib.get_close_matches(unknown[0], model_keys | recipe_keys, n=1)
        if close:
            raise DeepAtlasError(f"unknown setting {unknown[0]!r} for {entry.name}; did you mean {close[0]}?")
        raise DeepAtlasError(f"unknown setting {unknown[0]!r} for {entry.name}; valid: "
                             f"{', '.join(sorted(model_keys))} (model), {', '.join(sorted(recipe_keys))} (recipe)")
    # a key in both (image_size) belongs to the recipe: the data is made to it, the model follows the data
    return ({k: v for k, v in overrides.items() if k in model_keys - recipe_keys},
            {k: v for k, v in overrides.items() if k in recipe_keys})


def field_help(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (what `info` prints as help); a config that subclasses another
    dataclass inherits its fields' docstrings (and may redocument them)."""
    import ast
    import inspect
    import textwrap
    out = {}
    for base in [c for c in reversed(cls.__mro__) if "__dataclass_fields__" in vars(c)]:
        body = ast.parse(textwrap.dedent(inspect.getsource(base))).body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                out[node.target.id] = str(nxt.value.value).strip()
    return out


def markdown_table(found: list[Entry] | None = None) -> str:
    """The README's catalog table, generated from the registry."""
    rows = ["| name | family | year | paper | bar (test split, 2-core CPU) |", "|---|---|---|---|---|"]
    for e in found if found is not None else entries():
        bars = "; ".join(b.describe(e.recipe.data) for b in e.bars)
        rows.append(f"| `{e.name}` | {e.family} | {e.year} | {e.title}: {e.paper.authors}, {e.paper.ref} | {bars} |")
    return "\n".join(rows)
