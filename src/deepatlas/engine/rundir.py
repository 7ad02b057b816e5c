"""The run directory: everything a run leaves behind, in open formats.

    config.json          all that rebuilds model, data and recipe
    model.safetensors    the final (best-on-validation) weights
    checkpoint.safetensors  the last stop: model, optimizer, loop state (for --resume)
    metrics.json         final metrics on the held-out splits
    log.csv              every logged value: step, epoch, name, value
    curves.png           loss and metric curves
    *-PHASE.*            the same for each phase before the main training (checkpoint-pretrain.safetensors,
                         log-pretrain.csv, curves-pretrain.png, model-pretrain.safetensors)
    .lock                while a run uses the folder: its process id and host

One run per folder: a run holds the folder's lock while it trains. A new run is written into a hidden folder
beside its path (`.NAME.partial`) and takes its name only once its first checkpoint exists; a run that fails
before that leaves nothing. Every file is written under a temporary name, flushed to disk and renamed.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from deepatlas.errors import DeepAtlasError


def replace_atomically(tmp: Path, path: Path) -> None:
    """Flush the finished `tmp` to disk and rename it to `path`: a reader sees the old file or the new one, never
    half of one, even after a power cut."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a folder cannot be opened for fsync on every system
        return
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    replace_atomically(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunDir:
    """A run's folder. `start` (a new run) and `reopen` (a resumed one) lock it; `publish` gives a new run its
    name once it has a checkpoint; `close` unlocks it, and removes a new run that never got that far."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.final = self.path  # where the run ends up (a new run trains in a hidden folder beside it)
        self.locked = False
        self._made: list[Path] = []  # folders this run created (removed again if it fails before publishing)

    config = property(lambda self: self.path / "config.json")
    model = property(lambda self: self.path / "model.safetensors")
    checkpoint = property(lambda self: self.path / "checkpoint.safetensors")
    best = property(lambda self: self.path / "best.safetensors")
    metrics = property(lambda self: self.path / "metrics.json")
    log = property(lambda self: self.path / "log.csv")
    curves = property(lambda self: self.path / "curves.png")
    lock = property(lambda self: self.path / ".lock")
    published = property(lambda self: self.path == self.final)

    def phase(self, name: str) -> "RunDir":
        """The files of phase `name` in this run directory (a phase trains like a run of its own)."""
        return PhaseDir(self, name)

    @staticmethod
    def default_path(name: str, root: str | Path = "runs") -> Path:
        path = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        taken = lambda p: p.exists() or RunDir.staging(p).exists()  # noqa: E731
        return next(p for p in (path, *(path.with_name(f"{path.name}-{i}") for i in range(2, 1000))) if not taken(p))

    @staticmethod
    def staging(final: Path) -> Path:
        return final.parent / f".{final.name}.partial"

    # ---- a new run, a resumed run ------------------------------------------------------------------------------
    def start(self, main: bool = True) -> "RunDir":
        """Begin a new run at this path: refused if the folder holds a run or another run is writing it. Rank 0 of
        a multi-process run (`main`) makes the hidden folder and locks it; the other ranks only follow its path."""
        final = self.final
        if main:
            self.check_free()
        self.path = self.staging(final)
        if not main:
            return self
        try:
            missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
            self.path.mkdir(parents=True, exist_ok=True)
            self._made = missing
            self._take_lock(f"--out {final}")
            for leftover in self.path.iterdir():  # a new run killed before its first checkpoint
                if leftover != self.lock:
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        except OSError as err:
            self.close()
            raise DeepAtlasError(f"--out {final}: cannot write there ({err.strerror})") from None
        return self

    def check_free(self) -> None:
        """Refuse a new run here if the folder holds a run, or another run is writing it (before any work)."""
        final = self.final
        for folder in (final, self.staging(final)):
            self._refuse_if_locked(folder, f"--out {final}")
        if final.exists() and (not final.is_dir() or any(final.iterdir())):
            kind = "folder" if final.is_dir() else "file"
            raise DeepAtlasError(f"--out {final}: that {kind} already exists and is not empty; continue its run with "
                                 f"`deepatlas train --resume {final}` or choose another folder")

    def check_resumable(self) -> None:
        """Refuse to resume a run that another process is writing (before any work)."""
        if not self.path.is_dir():
            raise DeepAtlasError(f"{self.path}: no such run directory")
        self._refuse_if_locked(self.path, f"--resume {self.path}")

    def reopen(self) -> "RunDir":
        """Lock an existing run's folder to continue it, and drop temporary files a killed run left."""
        self.check_resumable()
        try:
            self._take_lock(f"--resume {self.path}")
            for tmp in self.path.glob("*.tmp"):
                tmp.unlink()
        except OSError as err:
            self.close()
            raise DeepAtlasError(f"--resume {self.path}: cannot write there ({err.strerror})") from None
        return self

    def publish(self, rename: bool = True) -> None:
        """Give a new run its name (once it has a checkpoint to resume from). The ranks of a multi-process run
        other than 0 only follow (`rename=False`)."""
        if self.published:
            return
        if not rename:
            self.path = self.final
            return
        if self.final.is_dir():  # an empty folder the user made for it
            self.final.rmdir()
        os.rename(self.path, self.final)
        self.path = self.final
        self._made = []

    def close(self) -> None:
        """Unlock; a new run that never published is removed, with the folders it made for itself."""
        if self.locked:
            self.lock.unlink(missing_ok=True)
            self.locked = False
        if not self.published and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        for folder in self._made:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass
        self._made = []

    def _refuse_if_locked(self, folder: Path, flag: str) -> None:
        owner = self._owner(folder / ".lock")
        if owner is None:
            return
        here = owner.get("host") == socket.gethostname()
        if here and not _alive(owner.get("pid", -1)):
            return  # stale: taken over in _take_lock
        where = "this machine" if here else f"host {owner.get('host')}"
        raise DeepAtlasError(f"{flag}: the folder is in use by another run (pid {owner.get('pid')} on {where}); "
                             f"wait for it, or delete {folder / '.lock'} if that run is gone")

    @staticmethod
    def _owner(lock: Path) -> dict | None:
        try:
            owner = json.loads(lock.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": -1, "host": socket.gethostname()}  # unreadable: treat as stale
        return owner if isinstance(owner, dict) else {"pid": -1, "host": socket.gethostname()}

    def _take_lock(self, flag: str) -> None:
        mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        try:
            fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            stale = self._owner(self.lock) or {}
            self._refuse_if_locked(self.path, flag)  # alive by now: another run won the race
            print(f"notice: {self.path}: taking over the lock of pid {stale.get('pid')}, which is no longer running",
                  file=sys.stderr)
            write_text_atomically(self.lock, mine)
        else:
            with os.fdopen(fd, "w") as f:
                f.write(mine)
        self.locked = True

    # ---- files ---------------------------------------------------------------------------------------------------
    def write_json(self, path: Path, obj) -> None:
        write_text_atomically(path, json.dumps(obj, indent=2) + "\n")

    def read_json(self, path: Path) -> dict:
        if not self.path.is_dir():
            raise DeepAtlasError(f"{self.path}: no such run directory")
        if not path.is_file():
            raise DeepAtlasError(f"{self.path}: not a deepatlas run (no {path.name})")
        try:
            found = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DeepAtlasError(f"{path}: malformed JSON ({err})") from None
        if not isinstance(found, dict):
            raise DeepAtlasError(f"{path}: malformed (expected a JSON object)")
        return found


class PhaseDir(RunDir):
    """A phase's own checkpoint, weights, log and curves, beside the run's (in its folder, wherever that is now)."""

    def __init__(self, run: RunDir, name: str):
        self.run, self.name = run, name

    path = property(lambda self: self.run.path)
    final = property(lambda self: self.run.final)
    model = property(lambda self: self.path / f"model-{self.name}.safetensors")
    checkpoint = property(lambda self: self.path / f"checkpoint-{self.name}.safetensors")
    best = property(lambda self: self.path / f"best-{self.name}.safetensors")
    log = property(lambda self: self.path / f"log-{self.name}.csv")
    curves = property(lambda self: self.path / f"curves-{self.name}.png")

    def publish(self, rename: bool = True) -> None:
        self.run.publish(rename)


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
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)
        replace_atomically(tmp, self.path)

    def write(self, step: int, epoch: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.writerow({"step": step, "epoch": epoch, "name": name, "value": f"{float(value):.6g}"})

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def read(path: Path) -> list[dict]:
        """The log's rows, without a last one a killed run left half written."""
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [r for r in rows if CSVLog._whole(r)]

    @staticmethod
    def _whole(row: dict) -> bool:
        try:
            int(row["step"]), int(row["epoch"]), float(row["value"])
        except (TypeError, ValueError):
            return False
        return bool(row["name"])


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
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    replace_atomically(tmp, out)

