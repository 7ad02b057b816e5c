"""Speed: deepatlas's recurrent layers against torch.nn.LSTM / GRU / RNN on identical sizes.

Both sides get the same weights (ours load into torch's modules by name) and the same input; one
step is a forward pass over the whole sequence plus the backward pass of a loss on all outputs.
Runs alternate ours / torch so that load from elsewhere on the machine hits both alike; the
median time per step over the repeats (after warm-up) is reported, with the ratio ours / torch.
Uses torch's default thread count unless --threads is given.

    .venv/bin/python benchmarks/recurrent_vs_torch.py [--hidden 128] [--steps 100] [--batch 64]
        [--inputs 32] [--repeats 30] [--cells lstm,gru,rnn] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from deepatlas.models.sequence.gru import GRU_CELL
from deepatlas.models.sequence.lstm import LSTM_CELL
from deepatlas.models.sequence.rnn import RNN_CELL
from deepatlas.nn.recurrent import Recurrent

TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
CELLS = {"rnn": RNN_CELL, "lstm": LSTM_CELL, "gru": GRU_CELL}


def step_time(module: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward + backward over the sequence."""
    start = time.perf_counter()
    out, _ = module(x)
    out.square().mean().backward()
    return time.perf_counter() - start


def compare(cell: str, args) -> dict:
    torch.manual_seed(0)
    ours = Recurrent(CELLS[cell], args.inputs, args.hidden, num_layers=args.layers, bidirectional=args.bidirectional)
    peer = TORCH[cell](args.inputs, args.hidden, num_layers=args.layers, bidirectional=args.bidirectional,
                       batch_first=True)
    peer.load_state_dict(ours.state_dict())
    x = torch.randn(args.batch, args.steps, args.inputs)
    times = {"ours": [], "torch": []}
    for i in range(args.warmup + args.repeats):
        for name, module in (("ours", ours), ("torch", peer)):
            module.zero_grad(set_to_none=True)
            seconds = step_time(module, x)
            if i >= args.warmup:
                times[name].append(seconds)
    ours_ms, torch_ms = (1e3 * statistics.median(times[k]) for k in ("ours", "torch"))
    return {"cell": cell, "ours_ms": round(ours_ms, 2), "torch_ms": round(torch_ms, 2),
            "ratio": round(ours_ms / torch_ms, 3)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="sequence length T")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--inputs", type=int, default=32, help="input features F")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"T={args.steps} B={args.batch} F={args.inputs} H={args.hidden} layers={args.layers} "
          f"bidirectional={args.bidirectional} threads={torch.get_num_threads()}; forward+backward per step, median")
    rows = [compare(cell, args) for cell in args.cells.split(",")]
    for r in rows:
        print(f"{r['cell']:5s} ours {r['ours_ms']:7.2f} ms   torch.nn {r['torch_ms']:7.2f} ms   ratio {r['ratio']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
