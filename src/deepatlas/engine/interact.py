"""The engine's side of methods whose loop is the algorithm (rl and evolution): a context with the helpers
every such loop needs, so that each method's file holds only its algorithm.

    def learn(self, ctx):                      # in a method's own file
        state = ctx.restore(optimizers) or {"step": 0}
        while state["step"] < total and not ctx.should_stop():
            ...                                # act, store, update: the algorithm
            ctx.log(step, {"loss": ...})       # log.csv row and the progress bar
            if it is time: ctx.validate(step); ctx.checkpoint(optimizers, state)

The context keeps the weights that scored best on the validation episodes (model.safetensors, as the
supervised loop keeps its best epoch), stops at the time budget or when validation reaches the settings'
`stop_at`, and checkpoints weights, optimizers and the loop's own state (safetensors) so `--resume` continues.
Environments cannot be saved mid-episode: a resumed run starts fresh episodes.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from deepatlas.catalog import Data, Train
from deepatlas.data.envs import Environment
from deepatlas.engine.checkpoint import copy_atomically, load_state, save_state, save_weights
from deepatlas.engine.interrupt import StopRequests
from deepatlas.engine.progress import Progress
from deepatlas.engine.rundir import CSVLog, RunDir, plot_curves


class Context:
    """What `Algorithm.learn(ctx)` gets: `env`, `train` (the training settings it reads), `options` (the data
    options), `seed`, `device`, a seeded `generator` (torch) and
    `rng` (numpy), `api` (the public API the run was started from: a search trains other entries through it),
    and the methods below."""

    def __init__(self, objective, env: Environment, train: Train, options: Data, run: RunDir, *, seed: int,
                 device: torch.device,
                 monitor: tuple[str, str], max_time: float | None, resume: bool, title: str, api=None):
        self.objective, self.env, self.train, self.options = objective, env, train, options
        self.run, self.seed, self.device = run, seed, device
        self.api = api
        self.metric, self.direction = monitor
        self.max_time = max_time
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.best: float | None = None
        self.best_step, self.solved, self.val_logs = -1, False, {}
        self.elapsed_before = 0.0
        self.started = time.perf_counter()
        # resuming: drop the rows logged after the last checkpoint, which the resumed loop logs again
        self.saved = load_state(run.checkpoint) if resume else None  # read once: here and in `restore`
        self.log_file = CSVLog(run.log, keep_until_step=self.saved["context"]["step"] if self.saved else None)
        self.bar: Progress | None = None
        self.title = title
        self.stops = StopRequests()
        self.step = 0

    # ---- time and progress -----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def time_up(self) -> bool:
        return self.max_time is not None and self.elapsed() > self.max_time

    def should_stop(self) -> bool:
        """True once the time budget is spent, validation reached the settings' `stop_at`, or Ctrl-C was pressed."""
        return self.time_up() or self.solved or self.stops.requested

    def progress(self, done: int, total: int, info: str = "") -> None:
        if self.bar is None:
            self.bar = Progress(total, self.title)
        self.bar.step(done, info)

    def log(self, step: int, values: dict[str, float], prefix: str = "train/") -> None:
        """One row per value in log.csv (plotted in curves.png); `*_loss` and `loss` values get curves."""
        self.step = step
        self.log_file.write(step, 0, {f"{prefix}{k}": float(v) for k, v in values.items()})

    # ---- validation and the best weights ---------------------------------------------------------------------
    def validate(self, step: int, episodes: int | None = None) -> dict[str, float]:
        """Score the current policy on the validation episodes, log it, keep the weights if they are the best so
        far (a tie goes to the later, longer-trained weights) and note whether `stop_at` is reached."""
        logs = self.objective.evaluate(self.env, "val", episodes)
        value = logs[self.metric] if self.direction == "max" else -logs[self.metric]
        if self.best is None or value >= self.best:
            self.best, self.best_step = value, step
            save_weights(self.objective, self.run.best)
        stop_at = self.train.stop_at
        if stop_at is not None:
            self.solved = logs[self.metric] >= stop_at if self.direction == "max" else logs[self.metric] <= stop_at
        self.val_logs = logs
        self.log(step, logs, prefix="val/")
        self.log_file.flush()
        shown = "  ".join(f"{k} {v:.4g}" for k, v in logs.items())
        if self.bar is not None:
            self.bar.epoch(f"step {step}  val {shown}")
        return logs

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def checkpoint(self, optimizers: dict[str, torch.optim.Optimizer], state: dict) -> None:
        """Save weights, optimizers and the loop's `state` (numbers, lists, tensors: a replay buffer's too)."""
        save_state({"model": self.objective.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "loop": state, "context": {"best": self.best, "best_step": self.best_step, "step": self.step,
                                               "elapsed": self.elapsed(), "generator": self.generator.get_state(),
                                               "rng": self.rng.bit_generator.state}},
                   self.run.checkpoint)
        self.run.publish()  # a new run takes its name once it can be resumed
        self.log_file.flush()

    def restore(self, optimizers: dict[str, torch.optim.Optimizer] | None = None) -> dict | None:
        """When resuming: load weights and optimizers from the checkpoint and return the loop's saved state."""
        saved = self.saved
        if saved is None:
            return None
        self.objective.load_state_dict(saved["model"])
        for name, optimizer in (optimizers or {}).items():
            optimizer.load_state_dict(saved["optimizers"][name])
        ctx = saved["context"]
        self.best, self.best_step, self.step = ctx["best"], ctx["best_step"], ctx["step"]
        self.elapsed_before, self.started = ctx["elapsed"], time.perf_counter()
        self.generator.set_state(ctx["generator"])
        self.rng.bit_generator.state = ctx["rng"]
        return saved["loop"]

    def close(self, status: str) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log_file.close()
        if status != "interrupted":  # a finished run is kept even if it never checkpointed
            self.run.publish()
        if not self.run.published:  # interrupted before its first checkpoint: it leaves nothing
            return
        if self.run.best.exists():  # the run's model is its best validation
            copy_atomically(self.run.best, self.run.model)
            if status != "interrupted":
                self.run.best.unlink()
        elif not self.run.model.exists():
            save_weights(self.objective, self.run.model)
        plot_curves(self.run.log, self.run.curves, self.title)


def learn(objective, env: Environment, train: Train, options: Data, run: RunDir, *, seed: int, device: torch.device,
          monitor: tuple[str, str], max_time: float | None = None, resume: bool = False, title: str = "train",
          api=None) -> dict:
    """Run `objective.learn(ctx)` and leave the run directory as `fit` does. Returns {"status", "steps",
    "seconds", "best_step", "val"}."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    objective.to(device).train()
    if resume and not run.checkpoint.exists():
        resume = False
    if not resume and run.log.exists():
        run.log.unlink()
    ctx = Context(objective, env, train, options, run, seed=seed, device=device, monitor=monitor, max_time=max_time,
                  resume=resume, title=title, api=api)
    status = "completed"
    try:
        with ctx.stops:
            objective.learn(ctx)
        if ctx.stops.requested:
            raise KeyboardInterrupt
        if ctx.time_up():
            status = "stopped: time budget reached"
        elif ctx.solved:
            status = f"stopped: validation {ctx.metric} reached stop_at={train.stop_at:g}"
        if ctx.best is None:  # a method that never validated: judge its final weights
            ctx.validate(ctx.step)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        ctx.close(status)
    return {"status": status, "steps": ctx.step, "seconds": round(ctx.elapsed(), 2), "best_step": ctx.best_step,
            "val": ctx.val_logs}
