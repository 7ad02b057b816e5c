"""What `predict` returns: one small typed result per kind of output, which knows how to print itself, turn
into JSON rows and save its files. The CLI renders any of them without knowing the task.

Every prediction holds `rows`, one per input: {"input": name, "predicted": text, ...details}. The details
depend on the kind: class probabilities, attention weights, boxes, a generated continuation, a game.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from deepatlas.errors import DeepAtlasError


@dataclass
class Prediction:
    """Inputs and what was predicted for them, shown as an input -> predicted table."""
    rows: list[dict]
    files: list[str] = field(default_factory=list)
    """files written while predicting (drawn images, a rendered episode)"""

    @property
    def names(self) -> list[str]:
        return [r["input"] for r in self.rows]

    @property
    def predicted(self) -> list:
        return [r["predicted"] for r in self.rows]

    @property
    def details(self) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("input", "predicted")} for r in self.rows]

    def __add__(self, other: Prediction) -> Prediction:
        """The predictions of several inputs as one (the CLI's `predict RUN a.png b.png`)."""
        return type(self)(self.rows + other.rows, self.files + other.files)

    def to_json(self) -> list[dict]:
        return [dict(r) for r in self.rows]

    def show(self, console) -> None:
        from rich.markup import escape
        from rich.table import Table
        table = Table("input", "predicted")
        for r in self.rows:
            table.add_row(escape(str(r["input"])), escape(str(r["predicted"])))  # "[column]" is text, not markup
        console.print(table)

    def csv_rows(self) -> list[list]:
        return [["input", "predicted"], *[[r["input"], r["predicted"]] for r in self.rows]]

    def save(self, path: Path) -> None:
        """The predictions as a CSV file."""
        with Path(path).open("w", newline="") as f:
            csv.writer(f).writerows(self.csv_rows())

    def plot(self, path: Path) -> list[Path]:
        """Attention heat maps of the inputs whose model returned attention weights (numbered when several)."""
        maps = [(r["input"], r["attention"]) for r in self.rows if r.get("attention")]
        if not maps:
            raise DeepAtlasError("--plot: this model returns no attention weights")
        from deepatlas.data.draw import numbered
        written = [numbered(Path(path), i, len(maps)) for i in range(len(maps))]
        for (name, att), out in zip(maps, written):
            plot_attention(att["source"], att["target"], att["weights"], out, title=name)
        return written


@dataclass
class ClassProbabilities(Prediction):
    """A class per input, with every class's probability: rows hold "probabilities" {class: p}."""

    @property
    def classes(self) -> list[str]:
        return list(self.rows[0]["probabilities"]) if self.rows else []

    @property
    def probabilities(self) -> list[list[float]]:
        return [list(r["probabilities"].values()) for r in self.rows]

    def show(self, console) -> None:
        from rich.markup import escape
        from rich.table import Table
        classes = self.classes
        if len(classes) <= 4:  # every probability fits on the line
            table = Table("input", "predicted", *[f"p({c})" for c in classes])
            for r in self.rows:
                table.add_row(escape(str(r["input"])), r["predicted"], *[f"{p:.4f}" for p in r["probabilities"].values()])
        else:  # the top three classes
            table = Table("input", "predicted", "top classes")
            for r in self.rows:
                top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
                table.add_row(escape(str(r["input"])), r["predicted"], "  ".join(f"{c} {p:.3f}" for c, p in top))
        console.print(table)

    def csv_rows(self) -> list[list]:
        return [["input", "predicted", *[f"p_{c}" for c in self.classes]],
                *[[r["input"], r["predicted"], *r["probabilities"].values()] for r in self.rows]]


@dataclass
class Continuations(Prediction):
    """Generated text: the prompt and its "continuation", which reads best as text."""

    def show(self, console) -> None:
        from rich.markup import escape
        for r in self.rows:  # as plain text: no highlighting of numbers and words (slow over a long prompt)
            console.print(f"[bold]{escape(r['input'])}[/bold]{escape(r['continuation'])}\n", highlight=False)


@dataclass
class Episodes(Prediction):
    """An agent's play: a test episode's return, or a board game shown move by move ("game")."""

    def show(self, console) -> None:
        from rich.markup import escape
        if all("game" in r for r in self.rows):
            for r in self.rows:
                console.print(f"{escape(r['game'])}\n[bold]{escape(str(r['input']))}[/bold]: {escape(str(r['predicted']))}")
            return
        super().show(console)


def plot_attention(source: list[str], target: list[str], weights, out: Path, title: str = "") -> None:
    """Attention weights (len(target), len(source)) as a heat map: one row per output token."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * len(source) + 1.5), max(3.0, 0.32 * len(target) + 1.2)))
    image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(source)), ["␣" if t == " " else t for t in source], fontsize=8)
    ax.set_yticks(range(len(target)), ["␣" if t == " " else t for t in target], fontsize=8)
    ax.set(xlabel="source", ylabel="output", title=title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


@dataclass
class Forecasts(Prediction):
    """A series' next values: rows hold "values" (the forecast, in the series' units), "history" (the input's last
    values) and "column". Saved one row per step; plotted as the history and the forecast after it."""

    def csv_rows(self) -> list[list]:
        return [["input", "step", "value"],
                *[[r["input"], step, v] for r in self.rows for step, v in enumerate(r.get("values", []), start=1)]]

    def plot(self, path: Path) -> list[Path]:
        """The forecast after the input's last values, one PNG per input (numbered when several)."""
        import numpy as np

        from deepatlas.data.draw import numbered
        from deepatlas.data.sequences import draw_series
        written = [numbered(Path(path), i, len(self.rows)) for i in range(len(self.rows))]
        for r, out in zip(self.rows, written):
            history, values = r["history"], r["values"]
            draw_series(out, f"{r['input']}: forecast of {len(values)} steps", r["column"], [
                (np.arange(-len(history), 0) + 1, history, "input (last values)", {"color": "black"}),
                (np.arange(len(values) + 1), [history[-1], *values], "forecast", {"color": "tab:orange", "marker": "."})])
        return written


@dataclass
class TablePredictions(ClassProbabilities):
    """A table's rows: a class with every class's probability, or, for a regressed target, a number in the
    target's units (rows without "probabilities")."""

    @property
    def classes(self) -> list[str]:
        return list(self.rows[0].get("probabilities", {})) if self.rows else []

    def show(self, console) -> None:
        if self.classes or not self.rows:
            return super().show(console)
        from rich.markup import escape
        from rich.table import Table
        table = Table("input", "predicted")
        for r in self.rows:
            table.add_row(escape(str(r["input"])), f"{r['predicted']:.6g}")
        console.print(table)

    def csv_rows(self) -> list[list]:
        return super().csv_rows() if self.classes else Prediction.csv_rows(self)
