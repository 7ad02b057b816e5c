"""Speed: one FFJORD training step with our `odeint`/`odeint_adjoint` (nn/ode.py) against torchdiffeq's.

The same dynamics (ffjord's ConcatSquash network and its [z, Δlogp] state with Hutchinson's trace, one fixed
probe ε), the same weights, the same batch of two-moons points and the same dopri5 tolerances on both sides; one
step is the forward solve of −mean log p(x) and its backward pass, through the solver's steps ("solver") or by
the adjoint method ("adjoint"). The network is first trained a few steps (`--pretrain`) so that the flow is not
the near-identity of its initialization. Runs alternate ours / torchdiffeq so that load from elsewhere on the
machine hits both alike; reported: forward and backward NFE, the median seconds per step, and the ratios.

    .venv/bin/python benchmarks/ffjord_vs_torchdiffeq.py [--batch 512] [--tol 1e-5] [--repeats 5]
        [--pretrain 60] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torchdiffeq

from deepatlas.data import toy2d
from deepatlas.models.dynamics.ffjord import FFJORD, Config, FlowObjective, probe
from deepatlas.nn import ode

SOLVERS = {
    ("ours", "solver"): lambda f, y, t, tol: ode.odeint(f, y, t, rtol=tol, atol=tol),
    ("ours", "adjoint"): lambda f, y, t, tol: ode.odeint_adjoint(f, y, t, rtol=tol, atol=tol),
    ("torchdiffeq", "solver"): lambda f, y, t, tol: torchdiffeq.odeint(f, y, t, rtol=tol, atol=tol, method="dopri5"),
    ("torchdiffeq", "adjoint"): lambda f, y, t, tol: torchdiffeq.odeint_adjoint(f, y, t, rtol=tol, atol=tol,
                                                                                method="dopri5"),
}


def pretrained(steps: int, x: torch.Tensor) -> FFJORD:
    torch.manual_seed(0)
    model = FFJORD(Config(rtol=1e-3, atol=1e-3))
    model.scale.fill_(float(x.std()))
    objective = FlowObjective(model).train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(steps):
        loss, _ = objective.training_step((x[torch.randint(len(x), (256,))],))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def step(model: FFJORD, solve, x: torch.Tensor, eps: torch.Tensor, tol: float) -> tuple[int, int, float]:
    """(forward NFE, backward NFE, seconds) of −mean log p(x) and its backward pass."""
    model.zero_grad()
    aug, counted = model.augmented, model.odefunc
    aug.trace, aug.eps = "hutchinson", eps
    counted.reset()
    start = time.perf_counter()
    y = x / model.scale
    state = torch.cat([y, torch.zeros_like(y[:, :1])], 1)
    end = solve(counted, state, torch.tensor([0.0, model.cfg.t_end]), tol)[-1]
    z, delta = end[:, :-1], end[:, -1]
    logp = -0.5 * (z.square().sum(1) + 2 * math.log(2 * math.pi)) - delta - 2 * model.scale.log()
    forward = counted.reset()
    (-logp.mean()).backward()
    seconds = time.perf_counter() - start
    return forward, counted.reset(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pretrain", type=int, default=60)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = toy2d.splits("moons")["train"][0]
    model = pretrained(args.pretrain, x)
    batch = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:args.batch]]
    eps = probe(batch.shape, batch, "rademacher")
    rows = []
    for mode in ("solver", "adjoint"):
        found = {}
        for lib in ("ours", "torchdiffeq"):
            step(model, SOLVERS[lib, mode], batch, eps, args.tol)  # warm-up
            found[lib] = {"times": []}
        for _ in range(args.repeats):  # alternate, so both see the same load
            for lib in ("ours", "torchdiffeq"):
                fwd, bwd, seconds = step(model, SOLVERS[lib, mode], batch, eps, args.tol)
                found[lib].update(forward_nfe=fwd, backward_nfe=bwd)
                found[lib]["times"].append(seconds)
        ours, theirs = found["ours"], found["torchdiffeq"]
        row = {"mode": mode, "batch": args.batch, "tol": args.tol,
               **{f"{lib}_{k}": v for lib, r in found.items() for k, v in r.items() if k != "times"},
               "ours_s": statistics.median(ours["times"]), "torchdiffeq_s": statistics.median(theirs["times"])}
        row["nfe_ratio"] = (ours["forward_nfe"] + ours["backward_nfe"]) / max(
            theirs["forward_nfe"] + theirs["backward_nfe"], 1)
        row["time_ratio"] = row["ours_s"] / row["torchdiffeq_s"]
        rows.append(row)
        print(f"{mode:8s} NFE fwd/bwd ours {ours['forward_nfe']}/{ours['backward_nfe']}  torchdiffeq "
              f"{theirs['forward_nfe']}/{theirs['backward_nfe']}  (ratio {row['nfe_ratio']:.2f})   "
              f"s/step ours {row['ours_s']:.3f}  torchdiffeq {row['torchdiffeq_s']:.3f}  "
              f"(ratio {row['time_ratio']:.2f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
