"""Speed and NFE: our odeint / odeint_adjoint (deepatlas.nn.ode) against torchdiffeq's on the spiral ODE-Net.

The problem is neural_ode's own: its field f (an MLP of the state, the default Config) fitted briefly to the embedded
cubic spiral (`--pretrain` steps through our solver, so that f is a learned field rather than a random one), then
one step = the forward solve of a batch of trajectories from their first observations through the observed half's
times (standardized, as the objective does) and the backward pass of the mean squared error to the observations.
Both libraries solve with dopri5 at the same rtol and atol, through the solver (gradients by backpropagation) and by
the adjoint; f is wrapped in our `Counted` for both, so NFE is counted the same way (forward, and the backward pass's
evaluations). Runs alternate ours / theirs so that load from elsewhere hits both alike; the median wall time per step
over the repeats (after warm-up) is reported, with the ratios ours / torchdiffeq. The goal: equal NFE, and a wall time
ratio of at most 1.0. The gradients of the two libraries are compared too (largest difference relative to the largest
gradient).

    .venv/bin/python benchmarks/ode_vs_torchdiffeq.py [--batch 64] [--repeats 20] [--tolerances 1e-3,1e-5,1e-7]
        [--pretrain 200] [--dtype float32] [--threads N] [--json out.json]

Measured (defaults, one thread, torchdiffeq 0.2.5): equal NFE forward and backward at every tolerance (56 / 128 / 362
forward; the adjoint's backward 524 / 686 / 986), wall time 0.77-0.91x torchdiffeq's through the solver and 0.59-0.60x
by the adjoint; the gradients agree to 5e-5 (float32; in float64 the adjoint's to 1e-13).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchdiffeq

from deepatlas.catalog import Data
from deepatlas.data import spiral
from deepatlas.models.dynamics.neural_ode import Config, StateField
from deepatlas.nn.ode import Counted, odeint, odeint_adjoint

SOLVERS = {("ours", "direct"): odeint, ("ours", "adjoint"): odeint_adjoint,
           ("torchdiffeq", "direct"): torchdiffeq.odeint, ("torchdiffeq", "adjoint"): torchdiffeq.odeint_adjoint}


def problem(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `batch` training trajectories' observed half, standardized: observations (B, T, 2) and times (T,)."""
    data = spiral.load_for(Data("spiral"))
    spec, train = data.spec, data.train
    t, y, observed, _ = train.collate([train[i] for i in range(batch)])
    k = int(observed[0])
    z = (y[:, :k] - torch.tensor(spec["mean"])) / torch.tensor(spec["std"])
    return z.float(), (t[0, :k] / spec["time_scale"]).float()


def pretrain(f: Counted, z: torch.Tensor, t: torch.Tensor, steps: int) -> None:
    """Adam on windows of 10 observations, as the recipe trains (so the benchmark sees a learned field)."""
    optimizer = torch.optim.Adam(f.parameters(), lr=1e-2)
    for step in range(steps):
        start = step % (len(t) - 10)
        ys = odeint(f, z[:, start], t[start:start + 10] - t[start], rtol=1e-4, atol=1e-5).transpose(0, 1)
        loss = (ys - z[:, start:start + 10]).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def one_step(f: Counted, solve, z: torch.Tensor, t: torch.Tensor, tol: float) -> tuple[float, int, int, torch.Tensor]:
    """(seconds, forward NFE, backward NFE, the gradient) of one forward + backward pass."""
    f.zero_grad(set_to_none=True)
    f.reset()
    start = time.perf_counter()
    ys = solve(f, z[:, 0], t, rtol=tol, atol=tol / 10, method="dopri5")      # (T, B, 2)
    forward = f.nfe
    (ys.transpose(0, 1) - z).square().mean().backward()
    seconds = time.perf_counter() - start
    return seconds, forward, f.nfe - forward, torch.cat([p.grad.flatten() for p in f.parameters()])


def compare(tol: float, f: Counted, z: torch.Tensor, t: torch.Tensor, args) -> list[dict]:
    rows = []
    for mode in ("direct", "adjoint"):
        times = {"ours": [], "torchdiffeq": []}
        for i in range(args.warmup + args.repeats):
            for lib in ("ours", "torchdiffeq"):
                seconds, forward, backward, grad = one_step(f, SOLVERS[lib, mode], z, t, tol)
                if i >= args.warmup:
                    times[lib].append(seconds)
                if i == 0:
                    times[f"{lib} nfe"], times[f"{lib} grad"] = (forward, backward), grad
        ours, theirs = (statistics.median(times[k]) for k in ("ours", "torchdiffeq"))
        grad_diff = float((times["ours grad"] - times["torchdiffeq grad"]).abs().max() /
                          times["torchdiffeq grad"].abs().max())
        rows.append({"mode": mode, "rtol": tol, "atol": tol / 10,
                     "nfe_forward": times["ours nfe"][0], "nfe_backward": times["ours nfe"][1],
                     "torchdiffeq_nfe_forward": times["torchdiffeq nfe"][0],
                     "torchdiffeq_nfe_backward": times["torchdiffeq nfe"][1],
                     "ours_ms": round(1000 * ours, 2), "torchdiffeq_ms": round(1000 * theirs, 2),
                     "ratio": round(ours / theirs, 3), "grad_rel_diff": grad_diff})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tolerances", default="1e-3,1e-5,1e-7", help="rtol values (atol = rtol / 10)")
    parser.add_argument("--pretrain", type=int, default=200)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="float32: the training precision; float64: no step decision is left to rounding")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    z, t = problem(args.batch)
    f = Counted(StateField(Config()))
    pretrain(f, z, t, args.pretrain)
    dtype = getattr(torch, args.dtype)
    f, z, t = f.to(dtype), z.to(dtype), t.to(dtype)
    rows = [r for tol in map(float, args.tolerances.split(",")) for r in compare(tol, f, z, t, args)]
    print(f"spiral ODE-Net: MLP 2-{Config().hidden}x{Config().layers}-2 tanh, batch {args.batch}, {len(t)} times, "
          f"dopri5, {args.dtype}, median of {args.repeats} forward + backward passes, {torch.get_num_threads()} "
          f"threads")
    print("| gradients | rtol | atol | NFE fwd / bwd (ours) | NFE fwd / bwd (torchdiffeq) | ours ms | torchdiffeq ms | "
          "ours / torchdiffeq | gradients' max rel. difference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['rtol']:g} | {r['atol']:g} | {r['nfe_forward']} / {r['nfe_backward']} | "
              f"{r['torchdiffeq_nfe_forward']} / {r['torchdiffeq_nfe_backward']} | {r['ours_ms']} | "
              f"{r['torchdiffeq_ms']} | {r['ratio']:.2f}x | {r['grad_rel_diff']:.1e} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
