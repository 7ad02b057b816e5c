"""Training-step time on a quiet machine and beside one competing process, before and after deepatlas sizes
PyTorch's thread team to the cores other processes leave free (deepatlas/cores.py, in the `deepatlas`
command before torch loads).

    python benchmarks/load.py [--steps 300] [--repeats 3]

"before": PyTorch's defaults (one spinning OpenMP thread per core); "after": `cores.choose_threads()` first,
as the `deepatlas` command's training verbs do. The competing process, started first, is either a second
training loop in the same condition (two runs at once), or a plain busy loop (any other program using a
core). Each figure is the median over `--repeats` fresh processes of their median step time; models: mlp
(default config, batch 64), lenet (default config, 16x16 inputs, batch 64) and a medium mlp (width 1024,
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

MODELS = {"mlp": ("mlp", {}, (30,), 64), "lenet": ("lenet", {}, (1, 16, 16), 64),
          "medium": ("mlp", {"width": 1024, "depth": 3}, (30,), 256)}
RIVALS = {"quiet": None, "training": "training", "busy loop": "busy"}


def worker(condition: str, model: str, steps: int) -> None:
    if condition == "after":
        from deepatlas import cores
        cores.choose_threads()
    import deepatlas
    import torch
    name, overrides, shape, batch = MODELS[model]
    net = deepatlas.create_model(name, **overrides)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.randn(batch, *shape), torch.randint(0, 2, (batch,))
    times = []
    for i in range(steps if steps > 0 else 10**9):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    print(json.dumps({"ms": 1000 * statistics.median(times[steps // 10:])}))


def measure(condition: str, model: str, steps: int, rival_kind: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    run = [sys.executable, __file__, "--worker", condition, "--model"]
    rival = None
    if rival_kind == "training":
        rival = subprocess.Popen([*run, "medium", "--steps", "0"], env=env, stdout=subprocess.DEVNULL)
    elif rival_kind == "busy":
        rival = subprocess.Popen([sys.executable, "-c", "while True: pass"])
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
    parser.add_argument("--model", choices=list(MODELS), default="mlp")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.steps)
    print(f"{'model':8} {'beside':10} {'before ms':>10} {'after ms':>10} {'after/before':>13}")
    for model in MODELS:
        for label, rival in RIVALS.items():
            before, after = (statistics.median(measure(c, model, args.steps, rival) for _ in range(args.repeats))
                             for c in ("before", "after"))
            print(f"{model:8} {label:10} {before:10.2f} {after:10.2f} {after / before:13.2f}", flush=True)


if __name__ == "__main__":
    main()
