"""`deepatlas compare`: several entries of one task on the same data, side by side.

Each entry is trained with its default recipe on the chosen data (or a finished run with the same
settings is reused), then measured: test metrics, parameters, training seconds, and inference
latency per input (batch of one, median of repeated calls). A variant of one entry is written
NAME:key=value,... (e.g. `seq2seq:attention=false`), so one architecture's options compare too. The table is returned as rows and
drawn as one PNG chart.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from deepatlas import api
from deepatlas.errors import DeepAtlasError


def _run_key(name: str, settings, overrides: dict, seed: int, columns: dict | None = None) -> str:
    """Same entry, settings, data, columns (target, column, task) and seed -> same key: a finished run with this key
    is reused."""
    text = json.dumps({"name": name, **settings.to_json(), "set": overrides, "seed": seed, **(columns or {}),
                       "version": api.VERSION}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """"lstm" or "lstm:bidirectional=true,hidden=64" -> (entry name, --set pairs)."""
    name, _, settings = text.partition(":")
    pairs = {}
    for pair in filter(None, settings.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeepAtlasError(f"{text}: write variants as NAME:key=value,key=value")
        pairs[key.strip()] = value.strip()
    return name, pairs


def _finished(metrics_file: Path) -> dict | None:
    """The metrics of a finished run to reuse, None if it has none (yet); a file holding something else is refused."""
    if not metrics_file.exists():
        return None
    try:
        metrics = json.loads(metrics_file.read_text())
        valid = isinstance(metrics, dict) and isinstance(metrics["test"], dict) and all(
            isinstance(metrics[k], (int, float)) for k in ("params", "seconds"))
    except (ValueError, KeyError, OSError):
        valid = False
    if not valid:
        raise DeepAtlasError(f"{metrics_file}: not a deepatlas run's metrics; delete {metrics_file.parent} to train it "
                             f"again")
    return metrics


@torch.no_grad()
def latency_ms(objective: torch.nn.Module, batch, repeats: int = 30) -> float:
    """Median milliseconds of one validation step (forward and metrics, decoding where the task
    decodes) on a batch holding a single input."""
    objective.eval()
    for _ in range(3):  # warm-up
        objective.validation_step(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        objective.validation_step(batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def one_input_latency_ms(run_dir: str | Path) -> float | None:
    """`latency_ms` of a finished run on the first input of its test split; None for methods that own their loop
    (rl, search), whose inference is a whole episode or search rather than one step on an input."""
    _, saved, entry, _ = api._read(run_dir)
    task = api.task_of(entry)
    if task.loop == "own":
        return None
    test = api._run_data(task, saved).test
    one = next(iter(DataLoader(test, batch_size=1, collate_fn=getattr(test, "collate", None))))
    return round(latency_ms(api.load_objective(run_dir), one), 3)


def compare(names: list[str], data: str | None = None, seed: int = 0, out: str | Path = "runs/compare",
            target: str | None = None, column: str | None = None, task: str | None = None,
            max_time: float | None = None, record: bool = False, say=print) -> list[dict]:
    """Each of `names` ("NAME" or "NAME:key=value,...") trained on `data` (or reused), measured. `target`, `column`
    and `task` are `train`'s (a table's label column, a series' value column, regression or classification);
    `max_time` caps each run. Each row holds the run's own metric and direction (a regressed table's is mse).
    `record`: each run trained here is measured in a child process as `bench --record` measures (its peak memory its
    own) and its rows go into the leaderboards' store; only on embedded data (the boards), and reused runs are not
    stored (they were not measured here)."""
    from deepatlas.tools import leaderboard
    if record and data is not None and Path(data).exists():
        raise DeepAtlasError(f"--record stores rows of the leaderboards' boards (embedded data); {data} is your own "
                             f"data: compare it without --record")
    columns = {k: v for k, v in (("target", target), ("column", column), ("task", task)) if v is not None}
    if record and columns:
        raise DeepAtlasError("--record stores rows of the embedded boards: --target, --column and --task name your "
                             "own file's columns")
    variants = [parse_variant(n) for n in names]
    entries = [api.get(name) for name, _ in variants]
    common = set.intersection(*({e.task, *e.also} for e in entries))
    if not common:
        raise DeepAtlasError("compare needs entries of one task; got " +
                             ", ".join(f"{e.name} ({e.task})" for e in entries))
    shared = entries[0].task if entries[0].task in common else sorted(common)[0]
    forms = {e.name: shared for e in entries if e.task != shared}  # the transformer beside the RNNs: its encoder
    entries = [api.form_for(e, data, forms.get(e.name)) for e in entries]
    planned = []  # every run's folder and reusable metrics, checked before any training
    for entry, (_, overrides) in zip(entries, variants):
        model_over, settings = api.settings_for(entry, overrides, data)
        its = {**columns, **({"task": forms[entry.name]} if entry.name in forms else {})}  # a form: in its key
        run_dir = Path(out) / f"{entry.name}-{_run_key(entry.name, settings, model_over, seed, its)}"
        planned.append((settings, run_dir, _finished(run_dir / "metrics.json"), its))
    rows = []
    for label, entry, (_, overrides), (settings, run_dir, metrics, its) in zip(names, entries, variants, planned):
        reused = metrics is not None
        if metrics is None and any(run_dir.glob("checkpoint*.safetensors")):  # an interrupted run: continue it
            metrics = api.train(resume=run_dir)
        elif metrics is None and record:
            on = {**overrides, "data": settings.options.data}
            run = leaderboard.measured_run(entry.name, on, seed, max_time or entry.bar.budget_s, out=run_dir)
            leaderboard.record(leaderboard.rows_of(entry, run, on, seed, "compare"))
            metrics = run["metrics"]
        elif metrics is None:
            metrics = api.train(entry.name, data=data, overrides=overrides, seed=seed, out=run_dir, max_time=max_time,
                                **its)
        if reused and record:
            say(f"{label}: reused from {run_dir}, not measured here: not recorded (give another --out to measure it)")
        _, saved, _, _ = api._read(run_dir)
        metric, direction = api.monitor_for(entry, api.saved_settings(saved).options, saved["data"])
        rows.append({"name": label, "data": settings.options.data, "metric": metric, "direction": direction,
                     **{f"test_{k}": round(v, 4) for k, v in metrics["test"].items()},
                     "params": metrics["params"], "train_seconds": metrics["seconds"],
                     "latency_ms": one_input_latency_ms(run_dir), "run_dir": str(run_dir), "reused": reused})
    return rows


def chart(rows: list[dict], metric: str, path: str | Path, direction: str = "max") -> None:
    """Metric, parameters, training time and latency per entry, as four bar panels in one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    panels = [(f"test_{metric}", f"test {metric} ({'higher' if direction == 'max' else 'lower'} is better)", False), ("params", "parameters", True),
              ("train_seconds", "training seconds", False), ("latency_ms", "latency per input (ms)", False)]
    fig, axes = plt.subplots(1, 4, figsize=(4 * 4, 3.6))
    for ax, (key, title, log) in zip(axes, panels):
        values = [r[key] or 0 for r in rows]  # no latency for methods that own their loop
        bars = ax.bar(names, values, color="tab:blue" if key.startswith("test") else "tab:gray")
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45)
        if log:
            ax.set_yscale("log")
        if key.startswith("test") and direction == "max":  # accuracies: zoom on the differences
            ax.set_ylim(min(values) * 0.95, 1.0 if max(values) <= 1 else max(values) * 1.05)
        elif key.startswith("test") and min(values) > 0:  # errors spanning decades
            ax.set_yscale("log")
    fig.suptitle(f"deepatlas compare on {rows[0]['data']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
