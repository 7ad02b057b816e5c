"""`deepatlas bench`: train each default recipe fresh, measure its bars on the held-out test split.

With `record`, each run is trained in a fresh child process and also measured for the leaderboards (latency per
input, peak memory), its rows go into the results store, and the entry then runs on its task's other boards
(`tools/leaderboard.py`).
"""
from __future__ import annotations

import tempfile
import time

from deepatlas import api
from deepatlas.catalog import Bar
from deepatlas.tools import leaderboard


def bench_bar(name: str, bar: Bar, seed: int = 0, out: str | None = None, record: bool = False,
              sample_scores: bool = True) -> dict:
    """One fresh run of `name`'s recipe (with the bar's overrides) under the bar's time budget (`sample_scores`:
    see `api.train`)."""
    if record:
        run = leaderboard.measured_run(name, dict(bar.overrides), seed, bar.budget_s, sample_scores=sample_scores)
        return {**_measure(name, run["metrics"], bar, run["seconds"]), "run": run}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        start = time.perf_counter()
        metrics = api.train(name, overrides=dict(bar.overrides), seed=seed, out=out or tmp, max_time=bar.budget_s,
                            sample_scores=sample_scores)
        seconds = time.perf_counter() - start
    return _measure(name, metrics, bar, seconds)


def _measure(name: str, metrics: dict, bar: Bar, seconds: float) -> dict:
    """The bar's verdict on one run. The budget is the training's (`seconds`, the loop's own clock); `wall_s` adds
    the evaluation, which for samplers (hundreds of network passes per sample) can take longer than the training."""
    value, trained = metrics["test"][bar.metric], metrics.get("seconds", seconds)
    return {"name": name, "overrides": dict(bar.overrides), "metric": bar.metric, "value": round(value, 4),
            "goal": bar.goal, "direction": bar.direction, "passed": bool(bar.met_by(value) and _within(trained, bar)),
            "seconds": round(trained, 2), "wall_s": round(seconds, 2), "budget_s": bar.budget_s,
            "params": metrics["params"], "status": metrics["status"], "metrics": metrics}


def _within(trained: float, bar: Bar) -> bool:
    return trained <= bar.budget_s * 1.01  # the loop stops at the first step past the budget


def _over(result: dict, bar: Bar, seed: int) -> dict:
    """A bar over another entry: that entry's run (its recipe with the bar's `over` pairs, under the same budget),
    and the margin by which this run beats it as the bar's value. The metric compared is one of its losses
    (accuracy, bits/dim), so a generative entry's samples are not scored (pixelcnn's take 1,024 passes each)."""
    other = {k: v for k, v in bar.over.items() if k != "entry"}
    theirs = bench_bar(bar.over["entry"], Bar(bar.metric, 0.0, bar.direction, bar.budget_s, other), seed,
                       sample_scores=False)
    margin = (result["metrics"]["test"][bar.metric] - theirs["value"]) * (1 if bar.direction == "max" else -1)
    return {**result, "metric": f"{bar.metric} over {bar.over['entry']}", "value": round(margin, 4),
            "passed": bool(margin >= bar.goal and _within(result["seconds"], bar)),  # better by ≥ goal, max or min
            "over": {"entry": bar.over["entry"], "overrides": other, "value": theirs["value"],
                     "seconds": theirs["seconds"]}}


def bench(name: str, seed: int = 0, record: bool = False, say=print) -> list[dict]:
    """Every bar of entry `name`: the main one, then any further ones. Bars with the same overrides (two
    promises about one run: a GAN's mode count and its sample quality) share one fresh run. `record`: the runs'
    rows go into the leaderboards' store, then the entry runs on its task's other boards."""
    entry = api.get(name)
    results: list[dict] = []
    for bar in entry.bars:
        twin = next((r for r in results if r["overrides"] == bar.overrides), None)
        results.append(bench_bar(name, bar, seed, record=record) if twin is None else
                       {**_measure(name, twin["metrics"], bar, twin["wall_s"]), "run": twin.get("run")})
        if bar.over:
            results[-1] = _over(results[-1], bar, seed)
    if record:
        for run in {id(r["run"]): r for r in results}.values():  # one entry per run, its bars' metrics together
            shared = {r["metric"]: r["direction"] for r in results if r["run"] is run["run"]}
            data = run["overrides"].get("data", entry.data.data)
            on = api.form_for(entry, data)  # a bar on another task's data is its form's run, on that task's board
            task = leaderboard.board_task(on.task)
            metrics = {**leaderboard.board_metrics(task, data, run["run"]["metrics"]["test"]), **shared}
            leaderboard.record(leaderboard.rows_of(on, run["run"], run["overrides"], seed, "bench", metrics))
        own = {r["overrides"].get("data", entry.data.data) for r in results if set(r["overrides"]) <= {"data"}}
        leaderboard.record_boards(name, seed, done=own, say=say)
    for r in results:
        r.pop("metrics", None)
        r.pop("run", None)
    return results
