"""`deepatlas leaderboard`: every entry measured on every board of its task, from one results store.

A board is a task and an embedded dataset: the datasets some bar of the task's entries uses (plus the ones
`ALSO` names), and on each, every entry of the task whose data module reads that dataset, whether or not it is
the entry's own. A run is the entry's default recipe with only `data` changed, capped at its bar's budget,
trained in a fresh child process (its peak memory is its own) and measured: the test metrics, training
seconds, parameters, latency per input (a batch of one, median of repeated calls) and peak resident memory.

The store is `results.json` beside this file: a JSON object with `rows` (one per run and metric) and `unable`
(entries that cannot run on a board, with the one-line reason). `deepatlas bench --all --record` refreshes it:
each bar's run and each board run replace the rows with the same task, data, entry, settings and metric;
`deepatlas compare NAMES --data BOARD --record` adds (or replaces) the rows of the variants it trains fresh.
Reading it imports no torch, so `leaderboard` and `recommend` answer at once.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from deepatlas import catalog
from deepatlas.cores import cpu_name
from deepatlas.errors import DeepAtlasError

STORE = Path(os.environ.get("DEEPATLAS_RESULTS", Path(__file__).with_name("results.json")))
MEASURED_ON = ("measured on the project's 2-core x86_64 CPU, one thread on one core, no GPU (each row's `machine` "
               "says): seconds and latency on another machine differ, and seeded values can differ in the last "
               "digits")
BOARD_OF = {"image_classification": "classification"}
"""tasks that share their boards with another task: images are classified, by image and by table classifiers"""
ALSO = {"sequence": ("sine",)}
"""boards no bar uses: the embedded forecasting series, which `recommend --goal forecast` reads"""
SCORED_AS = {"detection": "segmentation"}
"""a task whose runs are also scored on another task's boards where they measure its metric on the same images:
a mask detector's masks painted into one class map (mIoU) on the shapes scenes the segmenters are ranked on"""


def board_task(task: str) -> str:
    return BOARD_OF.get(task, task)


def _store() -> dict:
    if not STORE.exists():
        return {"rows": [], "unable": []}
    try:
        return json.loads(STORE.read_text())
    except ValueError as err:
        raise DeepAtlasError(f"{STORE}: not a results store ({err}); restore it with git or record it again") from None


def rows(task: str | None = None, data: str | None = None) -> list[dict]:
    """The stored rows of `task` (a board task: image_classification is shown as classification) and `data`,
    best first within each (task, data, metric); ties go to the faster run."""
    task = task and board_task(task)
    found = [r for r in _store()["rows"] if task in (None, r["task"]) and data in (None, r["data"])]
    return sorted(found, key=lambda r: (r["task"], r["data"], r["metric"],
                                        -r["value"] if r["direction"] == "max" else r["value"], r["seconds"]))


def rows_for(name: str) -> list[dict]:
    """The stored rows of entry `name`, on every board."""
    return [r for r in rows() if r["name"] == name]


def unable(task: str | None = None, data: str | None = None) -> list[dict]:
    task = task and board_task(task)
    return [u for u in _store()["unable"] if task in (None, u["task"]) and data in (None, u["data"])]


def check(task: str | None, data: str | None) -> None:
    """One line when the request names no board that has rows."""
    stored = _store()["rows"]
    tasks = sorted({r["task"] for r in stored})
    if task is not None and board_task(task) not in tasks:
        raise DeepAtlasError(f"no leaderboard for task {task!r}; tasks with one: {', '.join(tasks) or 'none yet'} "
                             f"(record them with `deepatlas bench --all --record`)")
    datasets = sorted({r["data"] for r in stored if task is None or r["task"] == board_task(task)})
    if data is not None and data not in datasets:
        raise DeepAtlasError(f"no leaderboard on data {data!r}" + (f" for {task}" if task else "") +
                             f"; boards: {', '.join(datasets)}")


def _bars_on(task: str, data: str | None = None) -> list[tuple[str, object]]:
    """(dataset, bar) of every bar of the board task's entries (on `data` only, if given), read from the cards."""
    return [(b.overrides.get("data", c.data.data), b) for c in catalog.cards() if board_task(c.task) == task
            for b in c.bars if data in (None, b.overrides.get("data", c.data.data))]


def bar_metrics(task: str, data: str) -> dict[str, str]:
    """metric -> direction of the bars set on a board."""
    return {b.metric: b.direction for _, b in _bars_on(board_task(task), data)}


def boards(entry) -> list[str]:
    """The embedded datasets `entry` is measured on: its task's board datasets that its data module reads, then those
    of each other task it has a form for."""
    from deepatlas import api
    found = []
    for on in (entry, *(api.form_for(entry, task=f.task) for f in entry.forms)):
        task = board_task(on.task)
        used = {d for d, _ in _bars_on(task)}
        readable = set(api.task_of(on).embedded())
        found += sorted(d for d in used | set(ALSO.get(task, ())) if d in readable)
    return found


def board_metrics(task: str, data: str, test: dict) -> dict[str, str]:
    """metric -> direction recorded for a run on a board: those of the bars set on it, else every test metric
    (a board no bar uses, such as a forecasting series) but the loss."""
    bars = bar_metrics(task, data)
    if bars:
        return {m: d for m, d in bars.items() if m in test}
    lower = ("mse", "mae", "mase", "loss", "nll", "bpd", "fd", "perplexity", "ce")
    return {m: "min" if any(w in m for w in lower) else "max" for m in test if m != "loss"}


def machine() -> str:
    """The CPU, its cores and the threads used, and the accelerator (if one is used)."""
    import torch
    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, {threads} thread{'s' if threads > 1 else ''} used, {gpu}"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _run_in_child(name: str, overrides: dict, seed: int, max_time: float, out: str | None = None,
                  sample_scores: bool = True) -> dict:
    """Train (into `out`, or a folder deleted after) and measure in this (fresh) process: metrics, seconds, latency
    per input, peak memory (`sample_scores`: see `api.train`)."""
    import resource

    from deepatlas import api
    from deepatlas.tools.compare import one_input_latency_ms
    with tempfile.TemporaryDirectory(prefix=f"record-{name}-") as tmp:
        start = time.perf_counter()
        metrics = api.train(name, overrides=overrides, seed=seed, out=out or tmp, max_time=max_time,
                            sample_scores=sample_scores)
        seconds = time.perf_counter() - start
        latency = one_input_latency_ms(out or tmp)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"metrics": metrics, "seconds": seconds, "latency_ms": latency, "peak_mb": round(peak_mb, 1),
            "machine": machine()}


def measured_run(name: str, overrides: dict, seed: int, max_time: float, out: str | None = None,
                 sample_scores: bool = True) -> dict:
    """One fresh run of `name` in a child process (so its peak memory is its own and no state leaks)."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_run_in_child, name, overrides, seed, max_time, out and str(out), sample_scores).result()


def rows_of(entry, run: dict, overrides: dict, seed: int, source: str,
            metrics: dict[str, str] | None = None) -> list[dict]:
    """The store's rows for one measured run of `entry` with `overrides` (its data among them)."""
    task, data = board_task(entry.task), overrides.get("data", entry.data.data)
    test = run["metrics"]["test"]
    metrics = metrics if metrics is not None else board_metrics(task, data, test)
    settings = {k: v for k, v in overrides.items() if k != "data"}
    date = datetime.date.today().isoformat()
    scored = [(task, m, d) for m, d in metrics.items()]
    if task in SCORED_AS:
        scored += [(SCORED_AS[task], m, d) for m, d in bar_metrics(SCORED_AS[task], data).items()]
    return [{"task": t, "data": data, "name": entry.name, "overrides": settings, "metric": m, "direction": d,
             "value": round(test[m], 4), "seconds": round(run["seconds"], 2), "params": run["metrics"]["params"],
             "latency_ms": run["latency_ms"], "peak_mb": run["peak_mb"], "status": run["metrics"]["status"],
             "seed": seed, "date": date, "commit": _commit(), "machine": run["machine"], "source": source,
             **({"nfe": round(test["nfe"], 1)} if "nfe" in test else {})}  # an ODE solver's evaluations per solve
            for t, m, d in scored if m in test]


def record(new_rows: list[dict], new_unable: list[dict] = ()) -> None:
    """Merge rows into the store: a row replaces the one with the same task, data, entry, settings and metric."""
    def key(r):
        return r["task"], r["data"], r["name"], json.dumps(r.get("overrides", {}), sort_keys=True), r.get("metric")
    store = _store()
    replaced = {key(r) for r in new_rows} | {key(u) for u in new_unable}
    ran = {key(r)[:4] for r in new_rows}  # a board an entry now runs on is no longer one it cannot
    store["rows"] = [r for r in store["rows"] if key(r) not in replaced] + list(new_rows)
    store["unable"] = [u for u in store["unable"] if key(u) not in replaced and key(u)[:4] not in ran] + \
        list(new_unable)
    store["rows"].sort(key=lambda r: (r["task"], r["data"], r["metric"], r["name"]))
    tmp = STORE.with_suffix(".tmp")
    tmp.write_text(json.dumps(store, indent=1) + "\n")
    tmp.replace(STORE)  # never a half-written store


def record_boards(name: str, seed: int = 0, done: set[str] = frozenset(), say=print) -> None:
    """Run `name` on each of its boards but those in `done` (its bars' data), recording each as it finishes."""
    from deepatlas import api
    entry = catalog.get(name)
    for data in boards(entry):
        if data in done:
            continue
        say(f"board: {name} on {data}")
        overrides, on = {"data": data}, api.form_for(entry, data)
        try:
            run = measured_run(name, overrides, seed, entry.bar.budget_s)
        except Exception as err:  # noqa: BLE001 - the reason is stored and shown, a shape error or a refusal alike
            why = str(err).splitlines()[0] if isinstance(err, DeepAtlasError) else \
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            say(f"  cannot: {why}")
            record([], [{"task": board_task(on.task), "data": data, "name": name, "overrides": {}, "why": why}])
            continue
        record(rows_of(on, run, overrides, seed, "board"))
