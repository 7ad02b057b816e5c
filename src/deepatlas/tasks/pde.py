"""pde: a network that solves a partial differential equation from the equation itself (a physics-informed
network), judged against the problem's reference solution on held-out grids.

The data module (deepatlas.data.pde) gives a `Problem` (the equation, its coefficients, domain, initial and
boundary conditions) instead of examples: the method owns its loop (`learn(ctx)`, Adam then L-BFGS), and its
`evaluate(problem, split)` is the relative L2 error on the split's grid. `predict RUN points.csv` gives u(x, t) at
the points of a CSV with columns x,t (or at one point written "x,t").
"""
from __future__ import annotations

from deepatlas.data import pde
from deepatlas.tasks import Task


class PDETask(Task):

    def baseline(self, spec: dict, data, split: str = "test", episodes: int | None = None, examples=None) -> dict:
        """The initial condition held still on the same grid `evaluate` measures."""
        description, values = pde.baseline(spec, data, split)
        return {"baseline": description, **values}


TASKS = [PDETask("pde", "deepatlas.data.pde", loop="own")]
