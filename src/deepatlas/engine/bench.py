"""`deepatlas bench`: train each default recipe fresh, measure its bar on the held-out test split."""
from __future__ import annotations

import tempfile
import time

from deepatlas import catalog
from deepatlas.engine import run as runs


def bench(name: str, seed: int = 0, out: str | None = None) -> dict:
    entry = catalog.get(name)
    bar = entry.bar
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        start = time.perf_counter()
        metrics = runs.train(name, seed=seed, out=out or tmp, max_time=bar.budget_s)
        seconds = time.perf_counter() - start
    value = metrics["test"][bar.metric]
    return {"name": name, "metric": bar.metric, "value": round(value, 4), "goal": bar.goal,
            "direction": bar.direction, "passed": bool(bar.met_by(value) and seconds <= bar.budget_s),
            "seconds": round(seconds, 2), "budget_s": bar.budget_s, "params": metrics["params"],
            "status": metrics["status"]}
