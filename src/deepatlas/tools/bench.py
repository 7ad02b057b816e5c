"""`deepatlas bench`: train each default recipe fresh, measure its bars on the held-out test split."""
from __future__ import annotations

import tempfile
import time

from deepatlas import api
from deepatlas.catalog import Bar


def bench_bar(name: str, bar: Bar, seed: int = 0, out: str | None = None) -> dict:
    """One fresh run of `name`'s recipe (with the bar's overrides) under the bar's time budget."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        start = time.perf_counter()
        metrics = api.train(name, overrides=dict(bar.overrides), seed=seed, out=out or tmp, max_time=bar.budget_s)
        seconds = time.perf_counter() - start
    return _measure(name, metrics, bar, seconds)


def _measure(name: str, metrics: dict, bar: Bar, seconds: float) -> dict:
    value = metrics["test"][bar.metric]
    return {"name": name, "overrides": dict(bar.overrides), "metric": bar.metric, "value": round(value, 4),
            "goal": bar.goal, "direction": bar.direction, "passed": bool(bar.met_by(value) and seconds <= bar.budget_s),
            "seconds": round(seconds, 2), "budget_s": bar.budget_s, "params": metrics["params"],
            "status": metrics["status"], "metrics": metrics}


def bench(name: str, seed: int = 0) -> list[dict]:
    """Every bar of entry `name`: the main one, then any further ones. Bars with the same overrides (two
    promises about one run: a GAN's mode count and its sample quality) share one fresh run."""
    results: list[dict] = []
    for bar in api.get(name).bars:
        twin = next((r for r in results if r["overrides"] == bar.overrides), None)
        results.append(bench_bar(name, bar, seed) if twin is None else _measure(name, twin["metrics"], bar, twin["seconds"]))
    for r in results:
        r.pop("metrics", None)
    return results
