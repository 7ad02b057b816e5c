"""Training-step time on a quiet machine and beside one competing process, before and after deepatlas sets
the OpenMP wait policy (`OMP_WAIT_POLICY=PASSIVE`, in `deepatlas/__init__.py`, before torch loads).

    python benchmarks/load.py [--steps 300]

"before": the interpreter imports torch first, so its OpenMP runtime starts with the default (spinning) policy;
"after": it imports deepatlas first, as the `deepatlas` command does. The competing process is a second
training loop in the same condition (two runs at once: a user's usual load). Each figure is the median
step time of a fresh process; models: mlp (default config, batch 64) and a medium mlp (width 1024,
depth 3, batch 256).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {"small": ({}, 64), "medium": ({"width": 1024, "depth": 3}, 256)}


def worker(condition: str, model: str, steps: int) -> None:
    if condition == "before":
        import torch  # noqa: F401  (first: OpenMP starts with the default policy)
    import deepatlas
    import torch
    overrides, batch = MODELS[model]
    net = deepatlas.create_model("mlp", **overrides)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 30), torch.randint(0, 2, (batch,))
    times = []
    for i in range(steps if steps > 0 else 10**9):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    print(json.dumps({"ms": 1000 * statistics.median(times[steps // 10:])}))


def measure(condition: str, model: str, steps: int, loaded: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    run = [sys.executable, __file__, "--worker", condition, "--model"]
    rival = subprocess.Popen([*run, "medium", "--steps", "0"], env=env, stdout=subprocess.DEVNULL) if loaded else None
    try:
        if rival:
            time.sleep(3)  # let it start its loop
        out = subprocess.run([*run, model, "--steps", str(steps)], env=env, capture_output=True, text=True, check=True)
    finally:
        if rival:
            rival.kill()
            rival.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])["ms"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["before", "after"])
    parser.add_argument("--model", choices=list(MODELS), default="small")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.steps)
    print(f"{'model':8} {'machine':10} {'before ms':>10} {'after ms':>10} {'after/before':>13}")
    for model in MODELS:
        for loaded in (False, True):
            before, after = (measure(c, model, args.steps, loaded) for c in ("before", "after"))
            print(f"{model:8} {'loaded' if loaded else 'quiet':10} {before:10.2f} {after:10.2f} {after / before:13.2f}")


if __name__ == "__main__":
    main()
