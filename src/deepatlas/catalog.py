"""The catalog: one Entry per architecture, with its card, its bar and its builders.

The registry is the explicit list `MODULES`; each module calls `register(Entry(...))` once at its bottom.
Cards (name, title, family, year, paper, summary, when to use, related, bars, task, notes, training settings and
data) are read from those calls statically, with `ast`, without importing the module: `deepatlas list` imports
neither torch nor Lightning, `get(name)` imports only that entry's module, and a module that fails to import
breaks only its own entry, with one clear line when that entry is used.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from deepatlas.errors import DeepAtlasError

MODULES = tuple(f"deepatlas.models.{m}" for m in (
    "feedforward.perceptron", "feedforward.mlp", "feedforward.residual_mlp",
    "vision.lenet", "vision.alexnet", "vision.vgg", "vision.inception", "vision.resnet", "vision.xception",
    "vision.gcnn", "vision.vit", "vision.convnext",
    "detection.yolo", "detection.faster_rcnn", "detection.mask_rcnn", "detection.detr",
    "segmentation.fcn", "segmentation.unet",
    "sequence.rnn", "sequence.lstm", "sequence.gru", "sequence.tcn", "sequence.seq2seq", "sequence.recursive_nn",
    "language.transformer", "language.gpt", "language.bert", "language.word2vec", "language.glove",
    "language.fasttext", "language.elmo",
    "generative.autoencoder", "generative.denoising_autoencoder", "generative.vae", "generative.gan",
    "generative.stylegan", "generative.ddpm",
    "generative.ncsn", "generative.score_sde",
    "generative.pixelcnn", "generative.wavenet", "generative.rbm", "generative.dbn",
    "generative.cyclegan",
    "graph.gcn", "graph.graphsage", "graph.mpnn", "graph.gat", "graph.gin",
    "rl.reinforce", "rl.dqn", "rl.a2c", "rl.ppo", "rl.alphazero", "rl.mpc",
    "evolution.genetic", "evolution.evolution_strategies", "evolution.ga_search",
    "dynamics.pinn", "dynamics.neural_ode",
    "dynamics.latent_ode",
    "dynamics.ffjord",
    "dynamics.fno",
))
"""every architecture's module, in the order a reader meets them; adding an architecture adds a line here"""

FAMILIES = ("feedforward", "vision", "detection", "segmentation", "sequence", "language", "generative",
            "graph", "geometry", "dynamics", "tracking", "rl", "evolution")


@dataclass(frozen=True)
class Range:
    """The interval a numeric setting (or each number of a list setting) must lie in: checked on `--set`, on
    `create_model(...)` and on reading a run's config.json. A float setting must also be finite."""
    low: float
    high: float = math.inf
    exclusive_low: bool = False
    """low itself is not allowed (a learning rate > 0)"""

    def admits(self, value: float) -> bool:
        above = value > self.low if self.exclusive_low else value >= self.low
        return above and value <= self.high and math.isfinite(value)

    def __str__(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            return "finite"
        shown = [f"{int(v):,}" if float(v).is_integer() and abs(v) != math.inf else f"{v:g}" for v in (self.low, self.high)]
        low = f"> {shown[0]}" if self.exclusive_low else f"≥ {shown[0]}"
        return low if self.high == math.inf else f"{low} and ≤ {shown[1]}"


MAX_SIZE = 2**24
"""the largest any count or size may be (a width, a vocabulary, a number of steps); memory is checked besides"""
Size = Annotated[int, Range(1, MAX_SIZE)]
"""a size that must be at least 1: a width, channels, layers, heads, classes, a kernel"""
Count = Annotated[int, Range(0, MAX_SIZE)]
"""a count that may be 0 (often: off)"""
Probability = Annotated[float, Range(0.0, 1.0)]
"""a probability or a fraction: dropout, a mask rate"""
Positive = Annotated[float, Range(0.0, exclusive_low=True)]
"""a float above 0: a learning rate, a scale, a temperature"""
NonNegative = Annotated[float, Range(0.0)]
"""a float of 0 or more: a penalty weight, a clipping norm (0 often: off)"""
Real = Annotated[float, Range(-math.inf)]
"""any finite float"""


@dataclass(frozen=True)
class Paper:
    authors: str
    title: str
    ref: str  # arXiv id ("arXiv:1512.03385") or venue ("Psychological Review 65(6), 1958")

    def __str__(self) -> str:
        return f"{self.authors}. {self.title}. {self.ref}"


RELATION_KINDS = ("builds_on", "variant_of", "uses", "alternative_to")


@dataclass(frozen=True)
class Relation:
    """A typed edge from one entry to another, with its reason in one line."""
    kind: Literal["builds_on", "variant_of", "uses", "alternative_to"]
    """builds_on: extends the other's idea; variant_of: the same architecture changed in one respect; uses: has the
    other as a block or backbone; alternative_to: does the same job with another trade-off"""
    entry: str
    why: str
    """one line, e.g. replaces recurrence with attention"""
    later: str = ""
    """for a builds_on edge to an entry published later: why (our implementation takes a later block)"""


@dataclass(frozen=True)
class Bar:
    """The promise: `metric` on the held-out test split reaches `goal` within `budget_s` on a 2-core CPU."""
    metric: str
    goal: float
    direction: Literal["max", "min"]
    budget_s: float
    overrides: dict[str, str] = field(default_factory=dict, compare=False)
    """`--set` pairs for a further bar of the same entry (other data or config); empty for the main bar"""
    over: dict[str, str] = field(default_factory=dict, compare=False)
    """another entry run in the same bench ({"entry": NAME, and its `--set` pairs}): the goal is then a margin over
    that run's value of the metric (gcn's accuracy ≥ the mlp's on the same node features + 0.2)"""

    def met_by(self, value: float) -> bool:
        """`value`: the metric, or for a bar `over` another run, the margin (better by how much)."""
        return value >= self.goal if self.direction == "max" else value <= self.goal

    def goal_text(self) -> str:
        """E.g. "≥ 0.95", or "≥ mlp (data=sbm-features) + 0.2" for a bar over another entry's run."""
        op = "≥" if self.direction == "max" else "≤"
        if not self.over:
            return f"{op} {self.goal:g}"
        sets = ", ".join(f"{k}={v}" for k, v in self.over.items() if k != "entry")
        return f"{op} {self.over['entry']}{f' ({sets})' if sets else ''} {'+' if self.direction == 'max' else '-'} " \
               f"{self.goal:g}"

    def describe(self, default_data: str) -> str:
        """E.g. "accuracy ≥ 0.95 on future-tagging (bidirectional=true) in 120 s"."""
        data = self.overrides.get("data", default_data)
        rest = ", ".join(f"{k}={v}" for k, v in self.overrides.items() if k != "data")
        return f"{self.metric} {self.goal_text()} on {data}{f' ({rest})' if rest else ''} in {self.budget_s:g} s"


@dataclass
class Train:
    """How an entry is trained: the fit loop's settings. A method that owns its loop reads only the few its entry
    names (`Entry.train_keys`). Every field can be changed with `--set [train.]key=value`."""
    epochs: Count = 50
    """passes over the training examples"""
    steps: Count = 0
    """a budget in optimizer steps for a large corpus: steps × batch_size / epochs training examples drawn at
    random once per seeded run, passed over `epochs` times (0: every training example)"""
    batch_size: Annotated[int, Range(1, 2**20)] = 64
    """examples per optimizer step"""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """adamw, or plain sgd (momentum below)"""
    lr: Annotated[float, Range(0.0, 10.0, exclusive_low=True)] = 1e-3
    """peak learning rate"""
    momentum: Annotated[float, Range(0.0, 1.0)] = 0.0
    """sgd momentum"""
    weight_decay: NonNegative = 0.0
    """decoupled weight decay (adamw) or L2 (sgd)"""
    schedule: Literal["constant", "cosine", "inverse_sqrt"] = "cosine"
    """learning-rate schedule over all steps; inverse_sqrt: lr·sqrt(warmup/step) after the warm-up (Vaswani et al.)"""
    warmup: Count = 0
    """steps of linear learning-rate warm-up from 0 before the schedule (0: none)"""
    patience: Count = 0
    """stop after this many epochs without a better validation metric (0: never)"""
    grad_clip: NonNegative = 0.0
    """clip the gradient norm to this value (0: off)"""
    stop_at: Real | None = None
    """rl and evolution: stop once the validation episodes' metric reaches this (None: use the whole budget)"""


@dataclass
class Data:
    """What an entry trains on and how that data is prepared. A task's data module reads `data` and the options its
    Task names (`Task.options`); `--set [data.]key=value` changes them."""
    data: str = "breast_cancer"
    """embedded dataset name, or a path to the user's file"""
    image_size: Annotated[int, Range(0, 4096)] = 0
    """images: resize to this side length (0: keep the data's size)"""
    crop_pad: Annotated[int, Range(0, 256)] = 0
    """images: random crop after zero-padding by this many pixels (0: off)"""
    flip: bool = False
    """images: random horizontal flips (not for digits)"""
    binarize: bool = False
    """images for generative models: threshold pixels at 0.5 (the binary view, for Bernoulli models)"""
    rotate: Annotated[float, Range(0.0, 180.0)] = 0.0
    """images: random rotation within ±this many degrees (0: off)"""
    window: Annotated[int, Range(0, 2**16)] = 0
    """time series: input window length for forecasting; text: tokens of context (0: the data's default);
    trajectories: observations per training window (0: the whole observed half)"""
    tokens: Literal["char", "bpe", "word"] = "char"
    """text: characters, byte-pair subwords learned on the train split, or words (spelled out for char-aware models)"""
    vocab: Annotated[int, Range(0, 2**20)] = 0
    """text: BPE vocabulary size, or the number of most frequent words kept (0: the data's default)"""
    task: Literal["auto", "classification", "regression"] = "auto"
    """tables: what the target is (auto: a numeric target with many distinct values is regressed, else classes)"""
    missing: Literal["impute", "drop", "error"] = "impute"
    """gaps in a user's table or series: impute (tables: median plus a missing-indicator column, categories: their
    own "missing" level; series: interpolated), drop the rows, or refuse the file"""
    drop: str = ""
    """tables: columns to leave out, comma-separated (identifier-like and free-text columns are left out anyway)"""
    keep: str = ""
    """tables: columns to keep, comma-separated, even identifier-like ones (empty: decided from the data)"""
    normalize: Literal["auto", "global", "window"] = "auto"
    """series: global (the training part's mean and std) or window (each input window by its own, reversibly:
    RevIN, for trends and level shifts); auto: window for a user's file, global for the embedded sets"""
    season: Annotated[int, Range(0, 2**16)] = 0
    """series: the season length of the seasonal-naive baseline (0: found from the training part's autocorrelation)"""


def split_recipe(recipe: dict) -> tuple[Train, Data]:
    """A 0.1 run's one `recipe` (config.json) as its training settings and data options."""
    train = {f.name for f in dataclasses.fields(Train)}
    return (Train(**{k: v for k, v in recipe.items() if k in train}),
            Data(**{k: v for k, v in recipe.items() if k not in train}))


@dataclass(kw_only=True)
class Form:
    """The same architecture on another task, through that task's contract: what builds it there and the recipe it
    trains with. A run on one of that task's embedded datasets (and not of the entry's own task) takes the form
    (`api.form_for`); the entry's name, card and bar budget stay: the transformer's encoder reading the sequence
    tasks' series is still the transformer on the sequence leaderboards."""
    task: str
    config: type
    build: Callable[[Any], Any]
    objective: Callable[[Any], Any]
    train: Train = field(default_factory=Train)
    data: Data = field(default_factory=Data)
    metric: str = "loss"
    """the validation metric that picks its best epoch (and that `compare` ranks it by) on that task"""
    direction: Literal["max", "min"] = "min"


@dataclass(kw_only=True)
class Card:
    """What is known of an entry without importing its module: the literal arguments of its `register` call."""
    name: str
    title: str
    family: str
    year: int
    paper: Paper
    summary: str
    when_to_use: str
    when_not: str
    bar: Bar
    related: list[str] = field(default_factory=list)
    """every entry it relates to: the union of its `relations`' entries and any named here"""
    train: Train = field(default_factory=Train)
    """how it is trained by default"""
    data: Data = field(default_factory=Data)
    """what it trains on by default (an embedded dataset)"""
    task: str = "classification"
    """its Task (deepatlas.tasks): the data domain, the loop, what `predict` and `eval` give"""
    more_bars: list[Bar] = field(default_factory=list)
    """further promises, each a fresh run of the recipe with the bar's `overrides` applied"""
    notes: str = ""
    """calibration notes: what was measured to choose the recipe (printed by `info`)"""
    module: str = ""
    """the module that registers the entry (imported by `get`)"""
    relations: list[Relation] = field(default_factory=list)
    """typed edges to other entries (builds_on, variant_of, uses, alternative_to), each with its reason"""
    offers: list[str] = field(default_factory=list)
    """needs its architecture meets by construction (`recommend --need`): invariance, uncertainty, interpretability"""
    also: list[str] = field(default_factory=list)
    """the other tasks it runs on (the tasks of its `Entry.forms`, read from them, never written by hand)"""

    def __post_init__(self):
        self.related = list(dict.fromkeys([r.entry for r in self.relations] + list(self.related)))

    @property
    def bars(self) -> list[Bar]:
        return [self.bar, *self.more_bars]


@dataclass(kw_only=True)
class Entry(Card):
    """A card and what builds and trains its architecture."""
    config: type
    """the architecture's @dataclass Config; its defaults are the small preset"""
    build: Callable[[Any], Any]
    """Config -> nn.Module"""
    objective: Callable[[Any], Any]
    """nn.Module -> objective with training_step / validation_step"""
    train_keys: tuple[str, ...] | None = None
    """the Train fields a method that owns its loop reads (`--set` refuses the others); None: the fit loop's all"""
    phases: dict[str, Train] = field(default_factory=dict)
    """training settings of each phase before the main training (the objective's `phases`), by phase name"""
    forms: list[Form] = field(default_factory=list)
    """the architecture on other tasks (the transformer's encoder on the sequence tasks)"""

    def __post_init__(self):
        super().__post_init__()
        self.also = [f.task for f in self.forms]

    def card(self) -> dict:
        """The JSON card of `info --json`: the static card and the default config."""
        return {**card_json(self), "config": dataclasses.asdict(self.config())}


def card_json(c: Entry | Card) -> dict:
    """The JSON card of `list --json`."""
    return {
        "name": c.name, "title": c.title, "family": c.family, "year": c.year,
        "paper": str(c.paper), "summary": c.summary, "when_to_use": c.when_to_use,
        "when_not": c.when_not, "related": list(c.related), "task": c.task, "notes": c.notes,
        "relations": [{"kind": r.kind, "entry": r.entry, "why": r.why, **({"later": r.later} if r.later else {})}
                      for r in c.relations],
        "offers": list(c.offers), "also": list(c.also), "bar": _bar_card(c.bar),
        "more_bars": [{**_bar_card(b), "overrides": dict(b.overrides), **({"over": dict(b.over)} if b.over else {})}
                      for b in c.more_bars],
        "train": dataclasses.asdict(c.train), "data": dataclasses.asdict(c.data),
    }


def _bar_card(bar: Bar) -> dict:
    return {"metric": bar.metric, "goal": bar.goal, "direction": bar.direction, "budget_s": bar.budget_s}


_REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    if entry.family not in FAMILIES:
        raise ValueError(f"{entry.name}: unknown family {entry.family!r}")
    if entry.name in _REGISTRY and _REGISTRY[entry.name] is not entry:
        raise ValueError(f"entry {entry.name!r} is registered twice")
    entry.module = entry.module or entry.config.__module__
    _REGISTRY[entry.name] = entry
    return entry


# ---- cards, read without importing -----------------------------------------------------------

_CARD_FIELDS = {f.name for f in dataclasses.fields(Card)} - {"module"}
_LITERAL_CALLS = {"Paper": Paper, "Bar": Bar, "Train": Train, "Data": Data, "Relation": Relation}


def _literal(node: ast.AST, module: str) -> Any:
    """The value of a card argument: literals, lists, dicts, and Paper(...), Bar(...), Train(...), Data(...)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _LITERAL_CALLS:
        return _LITERAL_CALLS[node.func.id](*[_literal(a, module) for a in node.args],
                                            **{k.arg: _literal(k.value, module) for k in node.keywords})
    if isinstance(node, ast.List):
        return [_literal(e, module) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k, module): _literal(v, module) for k, v in zip(node.keys, node.values)}
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise DeepAtlasError(f"{module}: card field at line {node.lineno} is not a literal "
                             f"(cards are read without importing their module)") from None


def _source(module: str) -> Path | None:
    """The file of `module`, found without importing it (nor, for deepatlas's own, its packages)."""
    if module.startswith("deepatlas."):
        return Path(__file__).parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    spec = importlib.util.find_spec(module)  # a module of one's own, outside the package
    return Path(spec.origin) if spec is not None and spec.origin else None


def _read_card(module: str) -> Card:
    path = _source(module)
    if path is None or not path.is_file():
        raise DeepAtlasError(f"{module}: listed in catalog.MODULES but its file does not exist")
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    calls = [node.value.args[0] for node in tree.body
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
             and getattr(node.value.func, "id", None) == "register"]
    if len(calls) != 1 or not isinstance(calls[0], ast.Call):
        raise DeepAtlasError(f"{module}: expected one top-level register(Entry(...)) call, found {len(calls)}")
    values = {k.arg: _literal(k.value, module) for k in calls[0].keywords if k.arg in _CARD_FIELDS - {"also"}}
    forms = next((k.value for k in calls[0].keywords if k.arg == "forms"), None)
    also = [_literal(k.value, module) for f in getattr(forms, "elts", ()) for k in f.keywords if k.arg == "task"]
    return Card(**values, also=also, module=module)


@cache
def cards() -> tuple[Card, ...]:
    """Every entry's card, in catalog order (family, year, name), without importing any model module."""
    found = [_read_card(m) for m in MODULES]
    return tuple(sorted(found, key=lambda c: (FAMILIES.index(c.family), c.year, c.name)))


def card(name: str) -> Card:
    by_name = {c.name: c for c in cards()}  # 48 cards: cheaper to build than to keep in step with cards()
    if name in by_name:
        return by_name[name]
    close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `deepatlas list`"
    raise DeepAtlasError(f"unknown entry {name!r}{hint}")


def family_cards(family: str | None = None) -> list[Card]:
    if family is not None and family not in FAMILIES:
        raise DeepAtlasError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    return [c for c in cards() if family is None or c.family == family]


# ---- entries: importing the module ------------------------------------------------------------

def get(name: str) -> Entry:
    """The registered Entry of `name`, importing only its module; a module that fails to import is one line."""
    found = card(name)
    if name not in _REGISTRY:
        try:
            importlib.import_module(found.module)
        except DeepAtlasError:
            raise
        except Exception as err:  # a broken model file breaks its own entry only
            first = str(err).splitlines()[0] if str(err) else ""
            raise DeepAtlasError(f"{name}: its module {found.module} failed to import "
                                 f"({type(err).__name__}: {first})") from err
        if name not in _REGISTRY:
            raise DeepAtlasError(f"{name}: {found.module} did not register it")
    return _REGISTRY[name]


def entries(family: str | None = None) -> list[Entry]:
    """Every entry (of `family`), each module imported; raises on the first module that fails to import."""
    return [get(c.name) for c in family_cards(family)]


# ---- typed overrides for `--set key=value` -------------------------------------------------

def _convert(raw: str, kind: Any, key: str) -> Any:
    """Parse the text `raw` as the dataclass field type `kind` (a number's range is checked after), or say why not."""
    origin = typing.get_origin(kind)
    if origin is Annotated:
        return _convert(raw, kind.__origin__, key)
    if origin is Literal:
        if raw not in kind.__args__:
            raise DeepAtlasError(f"{key}={raw}: must be one of {', '.join(map(str, kind.__args__))}")
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
        raise DeepAtlasError(f"{key}={raw}: expected true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise DeepAtlasError(f"{key}={raw}: expected {'an integer' if kind is int else 'a number'}") from None
    if origin in (tuple, list):
        return kind([_convert(p, kind.__args__[0], key) for p in raw.split(",") if p])
    return raw


def _check(value: Any, kind: Any, key: str, bounds: Range | None = None) -> None:
    """Refuse a value that is not of the field's type (config.json is anyone's file) or outside its `Range`."""
    origin = typing.get_origin(kind)
    if origin is Annotated:
        bounds = next((m for m in kind.__metadata__ if isinstance(m, Range)), bounds)
        return _check(value, kind.__origin__, key, bounds)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in kind.__args__:
            return None
        return _check(value, next(a for a in kind.__args__ if a is not type(None)), key, bounds)
    if origin is Literal:
        if value not in kind.__args__:
            raise DeepAtlasError(f"{key}={value!r}: must be one of {', '.join(map(str, kind.__args__))}")
        return None
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise DeepAtlasError(f"{key}={value!r}: expected a list")
        for v in value:
            _check(v, kind.__args__[0], key, bounds)
        return None
    number = kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and not isinstance(value, int) or not number and kind in (int, float):
        raise DeepAtlasError(f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'}")
    if kind in (bool, str) and not isinstance(value, kind):
        raise DeepAtlasError(f"{key}={value!r}: expected {'true or false' if kind is bool else 'text'}")
    if number and not (bounds or Range(-math.inf)).admits(value):
        raise DeepAtlasError(f"{key}={value if isinstance(value, int) else f'{value:g}'}: must be {bounds or 'finite'}")


def ranges(cls: type) -> dict[str, Range | None]:
    """The declared `Range` of each numeric field of dataclass `cls` (None: a number field without one)."""
    found = {}
    for name, kind in typing.get_type_hints(cls, include_extras=True).items():
        parts = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
        bounds = [m for part in parts for m in getattr(part, "__metadata__", ()) if isinstance(m, Range)]
        plain = typing.get_type_hints(cls)[name]
        inner = {plain, *typing.get_args(plain)} - {type(None)}
        if bounds or inner & {int, float} or any(typing.get_args(a) in ((int,), (float,)) for a in inner):
            found[name] = bounds[0] if bounds else None
    return found


def apply_overrides(obj: Any, overrides: dict[str, Any], source: str = "--set ") -> Any:
    """Return a copy of dataclass `obj` with `overrides` applied; strings are parsed to the field's type, and every
    value is checked against its type and declared `Range`. Errors are one line that starts with `source`
    (`--set `, or the file the values came from and their part: `config.json: train.`)."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    changes = {}
    for key, value in overrides.items():
        if key not in hints:
            raise DeepAtlasError(f"{source}{key}: unknown setting; valid: {', '.join(hints)}")
        try:
            changes[key] = _convert(value, hints[key], key) if isinstance(value, str) else value
            _check(changes[key], hints[key], key)
        except DeepAtlasError as err:
            raise DeepAtlasError(f"{source}{err}") from None
    return dataclasses.replace(obj, **changes)


def settings_keys(entry: Entry, data_keys: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """The keys `--set` accepts for `entry`, by part: its config's, the training settings its loop reads, the
    data options its task's data module reads (`data_keys`; None: all), and each phase's training settings."""
    train = [f.name for f in dataclasses.fields(Train)]
    return {"model": [f.name for f in dataclasses.fields(entry.config)],
            "train": [k for k in train if entry.train_keys is None or k in entry.train_keys],
            "data": [f.name for f in dataclasses.fields(Data) if data_keys is None or f.name in ("data", *data_keys)],
            **{phase: [k for k in train if k != "stop_at"] for phase in entry.phases}}


def split_overrides(entry: Entry, overrides: dict[str, Any], data_keys: tuple[str, ...] | None = None
                    ) -> dict[str, dict]:
    """Split `--set` pairs by part: {"model", "train", "data", and each phase's name: {key: value}}. A key may name
    its part: `model.width`, `train.lr`, `data.window`, `pretrain.epochs`; a bare key goes where it is unambiguous
    (one in both the config and the data options, image_size, belongs to the data: the data is made to it, the
    model follows the data; a bare key never reaches a phase). A key the run never reads (not in the entry's
    `train_keys`, or not in its task's data options `data_keys`) or that no part has is one line naming the
    valid ones."""
    parts = settings_keys(entry, data_keys)
    split: dict[str, dict] = {part: {} for part in parts}
    for raw, value in overrides.items():
        part, dot, key = raw.partition(".")
        if not dot:
            part, key = ("data" if raw in parts["data"] else "train" if raw in parts["train"] else "model"), raw
        if part not in parts:
            raise DeepAtlasError(f"--set {raw}: name a part as {', '.join(f'{p}.KEY' for p in parts)}")
        if key not in parts[part]:
            raise DeepAtlasError(_unknown_setting(entry, raw, key, part if dot else None, parts))
        split[part][key] = value
    return split


def _unknown_setting(entry: Entry, raw: str, key: str, part: str | None, parts: dict[str, list[str]]) -> str:
    elsewhere = [p for p in ("model", "train", "data") if p != part and key in parts[p]]
    if part and elsewhere:
        return f"--set {raw}: {key} is a {elsewhere[0]} setting of {entry.name} ({elsewhere[0]}.{key})"
    never_read = key in {f.name for f in (*dataclasses.fields(Train), *dataclasses.fields(Data))}
    if never_read and part in (None, "train", "data"):
        return (f"--set {raw}: {entry.name} never reads {key}; valid: {', '.join(parts['model'])} (model), "
                f"{', '.join(parts['train'])} (train), {', '.join(parts['data'])} (data)")
    where = [part] if part else list(parts)
    close = difflib.get_close_matches(key, [k for p in where for k in parts[p]], n=1)
    if close:
        return f"unknown setting {raw!r} for {entry.name}; did you mean {close[0]}?"
    return (f"unknown setting {raw!r} for {entry.name}; valid: " +
            ", ".join(f"{', '.join(sorted(parts[p]))} ({p})" for p in where if parts[p]))


def field_help(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (what `info` prints as help); a config that subclasses another
    dataclass inherits its fields' docstrings (and may redocument them)."""
    import inspect
    import textwrap
    out = {}
    for base in [c for c in reversed(cls.__mro__) if "__dataclass_fields__" in vars(c)]:
        body = ast.parse(textwrap.dedent(inspect.getsource(base))).body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                out[node.target.id] = " ".join(str(nxt.value.value).split())  # one line, however it wraps
    return out


def markdown_table(found: list[Card] | None = None) -> str:
    """The README's catalog table, generated from the cards."""
    rows = ["| name | family | year | paper | bar (test split, 2-core CPU) |", "|---|---|---|---|---|"]
    for e in found if found is not None else cards():
        bars = "; ".join(b.describe(e.data.data) for b in e.bars)
        rows.append(f"| `{e.name}` | {e.family} | {e.year} | {e.title}: {e.paper.authors}, {e.paper.ref} | {bars} |")
    return "\n".join(rows)
