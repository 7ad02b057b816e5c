"""CPU time of the CLI's cheap commands, and whether they import torch or Lightning.

    python benchmarks/cli_startup.py [--repeats 5]

Each command runs in a fresh interpreter; its CPU time (user + system, from the children's rusage)
is the median over the repeats. `python -X importtime` tells which heavy packages were imported.
CPU time, not wall time: it does not depend on what else the machine is doing.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys

COMMANDS = (["--help"], ["list"], ["info", "mlp"])
HEAVY = ("torch", "lightning_fabric", "lightning")


def cpu_seconds(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "deepatlas.cli", *argv], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_imports(argv: list[str]) -> list[str]:
    """The heavy top-level packages `python -X importtime` shows the command importing."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-m", "deepatlas.cli", *argv],
                         check=True, capture_output=True, text=True).stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    return [h for h in HEAVY if h in names]


def import_total_s(argv: list[str]) -> float:
    """Sum of the top-level (cumulative) import times `-X importtime` reports, in seconds."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-m", "deepatlas.cli", *argv],
                         check=True, capture_output=True, text=True).stderr
    total = 0
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if not name.startswith(" " * 2):  # a top-level import: its cumulative time holds its children's
            total += int(cumulative)
    return total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| command | CPU s (median) | -X importtime total s | imports |")
    print("|---|---|---|---|")
    for argv in COMMANDS:
        seconds = statistics.median(cpu_seconds(argv) for _ in range(args.repeats))
        heavy = heavy_imports(argv)
        print(f"| deepatlas {' '.join(argv)} | {seconds:.2f} | {import_total_s(argv):.2f} | "
              f"{', '.join(heavy) or 'no torch, no Lightning'} |")


if __name__ == "__main__":
    main()
