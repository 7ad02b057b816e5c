"""The run directory: everything a run leaves behind, in open formats.

    config.json          all that rebuilds model, data and recipe
    model.safetensors    the final (best-on-validation) weights
    checkpoint.safetensors  the last epoch end: model, optimizer, loop state (for --resume)
    metrics.json         final metrics on the held-out splits
    log.csv              every logged value: step, epoch, name, value
    curves.png           loss and metric curves
    *-PHASE.*            the same for each phase before the main training (checkpoint-pretrain.safetensors,
                         log-pretrain.csv, curves-pretrain.png, model-pretrain.safetensors)
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

from deepatlas.errors import DeepAtlasError


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.json")
    model = property(lambda self: self.path / "model.safetensors")
    checkpoint = property(lambda self: self.path / "checkpoint.safetensors")
    metrics = property(lambda self: self.path / "metrics.json")
    log = property(lambda self: self.path / "log.csv")
    curves = property(lambda self: self.path / "curves.png")

    def phase(self, name: str) -> "RunDir":
        """The files of phase `name` in this run directory (a phase trains like a run of its own)."""
        return PhaseDir(self.path, name)

    @staticmethod
    def default_path(name: str, root: str | Path = "runs") -> Path:
        return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"

    def create(self) -> "RunDir":
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise DeepAtlasError(f"--out {self.path}: cannot write there ({err.strerror})") from None
        return self

    def write_json(self, path: Path, obj) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)

    def read_json(self, path: Path) -> dict:
        if not self.path.is_dir():
            raise DeepAtlasError(f"{self.path}: no such run directory")
        if not path.is_file():
            raise DeepAtlasError(f"{self.path}: not a deepatlas run (no {path.name})")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DeepAtlasError(f"{path}: malformed JSON ({err})") from None


class PhaseDir(RunDir):
    """A phase's own checkpoint, weights, log and curves, beside the run's."""

    def __init__(self, path: str | Path, name: str):
        super().__init__(path)
        self.name = name

    model = property(lambda self: self.path / f"model-{self.name}.safetensors")
    checkpoint = property(lambda self: self.path / f"checkpoint-{self.name}.safetensors")
    log = property(lambda self: self.path / f"log-{self.name}.csv")
    curves = property(lambda self: self.path / f"curves-{self.name}.png")


class CSVLog:
    """Long-format log, one row per value; appends, so a resumed run continues the same file."""

    fields = ["step", "epoch", "name", "value"]

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and path.exists():  # drop rows of a partial epoch before resuming
            rows = [r for r in self.read(path) if int(r["step"]) <= keep_until_step]
            self._write_all(rows)
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, self.fields)
        if new:
            self.writer.writeheader()

    def _write_all(self, rows) -> None:
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, step: int, epoch: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.writerow({"step": step, "epoch": epoch, "name": name, "value": f"{float(value):.6g}"})

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def read(path: Path) -> list[dict]:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))


def plot_curves(log: Path, out: Path, title: str = "") -> None:
    """Loss (per step and per epoch) and every validation metric per epoch, as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list, list]] = {}
    for row in CSVLog.read(log):
        xs, ys = series.setdefault(row["name"], ([], []))
        xs.append(int(row["step"]))
        ys.append(float(row["value"]))
    metrics = sorted(n for n in series if not n.endswith("loss") and "/" in n and n != "train/lr")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = sorted(n for n in series if n.startswith("train/step_"))  # step_loss, and each player's loss (GANs)
    for name, style in ([(n, dict(alpha=0.35, lw=0.8)) for n in steps]
                        + [("train/loss", dict(marker=".")), ("val/loss", dict(marker="."))]):
        if name in series:
            axes[0].plot(*series[name], label=name, **style)
    axes[0].set(xlabel="step", ylabel="loss", title="loss")
    if all(min(series[n][1]) > 0 for n in series if n.endswith("loss")):
        axes[0].set_yscale("log")
    for name in metrics:
        axes[1].plot(*series[name], marker=".", label=name)
    axes[1].set(xlabel="step", title="metrics")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)

