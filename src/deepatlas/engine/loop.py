"""The training loop: one explicit loop over epochs and batches on Lightning Fabric.

Fabric owns devices, precision, the DDP strategy and gathering state for checkpoints;
this loop owns the order of things: seed the epoch, step, log, validate, keep the best
weights, checkpoint, stop early, stop on a time budget, a Ctrl-C or a non-finite loss.

A stop inside an epoch (time budget, Ctrl-C) checkpoints its exact position: the batches done, their summed
logs and the random state after them. Resuming replays the epoch's seeded shuffle up to there, so a run
stopped and resumed any number of times ends with the weights of the run that never stopped, bit for bit.

The time budget holds back the last validation's seconds, so a run ends on a validated model inside it: the epoch
the budget stops is validated too, and its weights are the run's if they are better. A resumed run still picks its
best among whole epochs only, as the run that never stopped did (best.safetensors keeps theirs meanwhile).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from deepatlas.catalog import Train
from deepatlas.engine.checkpoint import SafetensorsIO, copy_atomically, save_weights
from deepatlas.engine.interrupt import StopRequests
from deepatlas.engine.progress import Progress
from deepatlas.engine.rundir import CSVLog, RunDir, plot_curves
from deepatlas.errors import DeepAtlasError, setting
from deepatlas.protocols import ManualOptimization, OptimizerGroups, SampleMetrics, SplitMetrics, Summarize


@dataclass
class Scaling:
    """Fabric's scaling flags, passed through unchanged."""
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"


STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
"""strategies whose checkpoints go through `SafetensorsIO` (Lightning's FSDP and DeepSpeed write theirs with pickle)"""


def make_fabric(scaling: Scaling) -> Fabric:
    if scaling.strategy not in STRATEGIES:
        raise DeepAtlasError(f"--strategy {scaling.strategy}: not supported, because its checkpoints would be pickled; "
                             f"use one of {', '.join(STRATEGIES)}")
    try:
        fabric = Fabric(accelerator=scaling.accelerator, devices=scaling.devices, strategy=scaling.strategy,
                        num_nodes=scaling.num_nodes, precision=scaling.precision, plugins=[SafetensorsIO()])
    except (ValueError, RuntimeError, TypeError, ImportError) as err:  # --accelerator gpu on a machine without one
        raise DeepAtlasError(f"--accelerator/--devices/--strategy/--precision: {err}".splitlines()[0]) from None
    fabric.launch()
    if fabric.device.type == "cpu" and fabric.world_size > 1:  # processes share the cores: no oversubscription
        torch.set_num_threads(max(1, (os.cpu_count() or 1) * scaling.num_nodes // fabric.world_size))
    return fabric


@dataclass
class LoopState:
    """What a checkpoint must hold besides weights and optimizer to resume exactly."""
    epoch: int = 0
    step: int = 0
    elapsed: float = 0.0
    best: list = field(default_factory=list)  # comparison key of the best validation so far
    best_epoch: int = -1
    bad_epochs: int = 0
    batch: int = 0  # batches of epoch `epoch` already trained: a stop inside the epoch
    sums: dict = field(default_factory=dict)  # their summed training logs
    rng: list = field(default_factory=list)  # the random state after them: the CPU's, then the accelerator's
    planned: int = 0  # epochs a run fitted to its time budget chose after its first one (0: train.epochs)
    val_seconds: float = 0.0  # the last validation's: the time budget holds them back for the stopped epoch's


def random_state(device: torch.device) -> list[torch.Tensor]:
    return [torch.get_rng_state(), *([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])]


def set_random_state(states: list[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


def make_optimizer(params, train: Train) -> torch.optim.Optimizer:
    """`params`: parameters, or param groups (dicts) whose own "lr", "betas"... override the settings', and
    whose "lr_scale" multiplies their lr (a pre-trained backbone trained 10x slower: lr_scale 0.1).
    Each group remembers its peak lr as "base_lr", which the schedule scales."""
    if train.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    for group in optimizer.param_groups:
        group["lr"] *= group.pop("lr_scale", 1.0)
        group.setdefault("base_lr", group["lr"])
    return optimizer


def make_optimizers(objective, train: Train) -> dict[str, torch.optim.Optimizer]:
    """One optimizer over all parameters, or one per entry of the objective's `optimizer_groups()`
    ({name: parameters or param groups}: a GAN's discriminator and generator)."""
    groups = objective.optimizer_groups() if isinstance(objective, OptimizerGroups) else {"model": objective.parameters()}
    return {name: make_optimizer(params, train) for name, params in groups.items()}


class Optimize:
    """`optimize(name, loss)`: one update of optimizer `name` from `loss` (zero grads, backward, clip, step).
    `ManualOptimization` objectives get it in `training_step(batch, optimize)` and call it
    themselves, in the order their algorithm needs (a GAN: discriminator, then generator)."""

    def __init__(self, fabric: Fabric, model, optimizers: dict, grad_clip: float):
        self.fabric, self.model, self.optimizers, self.grad_clip = fabric, model, optimizers, grad_clip

    def __call__(self, name: str, loss: torch.Tensor) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        if self.grad_clip > 0:
            self.fabric.clip_gradients(self.model, optimizer, max_norm=self.grad_clip)
        optimizer.step()


def lr_factor(train: Train, step: int, total: int) -> float:
    """The multiple of the peak lr `train.lr` at optimizer step `step` (0-based) of `total`."""
    warm = min(1.0, (step + 1) / train.warmup) if train.warmup else 1.0
    if train.schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    if train.schedule == "inverse_sqrt":  # Vaswani et al. (3): peak lr at the end of the warm-up, then 1/sqrt(step)
        return warm * min(1.0, math.sqrt(max(train.warmup, 1) / (step + 1)))
    return warm


def within_steps(train_set: Dataset, train: Train) -> Dataset:
    """The training examples a `steps` budget allows: steps × batch_size / epochs of them drawn at random, once
    (the seeded run's draw), or all of them when that is as many or more."""
    n = train.steps * train.batch_size // max(train.epochs, 1)
    if not 0 < n < len(train_set):
        return train_set
    drawn = Subset(train_set, torch.randperm(len(train_set))[:n].tolist())
    drawn.collate = getattr(train_set, "collate", None)  # its items are the set's own: batched the same way
    return drawn


def make_loader(fabric: Fabric, dataset: Dataset, batch_size: int, train: bool, seed: int) -> DataLoader:
    """Shuffled by the global RNG, which the loop reseeds every epoch; sharded across DDP ranks."""
    if fabric.world_size > 1:
        sampler = DistributedSampler(dataset, fabric.world_size, fabric.global_rank, shuffle=train, seed=seed)
    else:
        sampler = RandomSampler(dataset) if train else None
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                        collate_fn=getattr(dataset, "collate", None))  # e.g. detection: a list of targets
    return fabric.setup_dataloaders(loader, use_distributed_sampler=False)


def evaluate_loader(fabric: Fabric, objective, loader, monitor: str | None = None, sample_scores: bool = True
                    ) -> dict[str, float]:
    """Mean of each validation value over all examples (all ranks).

    A batch mean averages over the batch's examples, unless the logs also hold "NAME#n": the number
    of things (tokens, queries) that batch's NAME averages over, which then weighs it instead. A `Summarize`
    objective derives further values (a ratio of two means). A `SampleMetrics` objective scores its samples
    against the split's whole input tensor (single device); during training only when the `monitor`ed metric
    is not already among the batch means, and unless its `sample_metrics_per_epoch` is False (diffusion models,
    whose hundreds of network passes per sample would spend the budget on scoring), and never with `sample_scores`
    False. A `SplitMetrics` objective accumulates what its validation_step sees
    (predictions and targets for mAP) and adds the split's metrics at the end (single device)."""
    objective.eval()
    plain = unwrap(objective)  # the objective itself: Fabric's wrapper forwards only the step methods
    sums: dict[str, torch.Tensor] = {}
    scores_samples = isinstance(plain, SampleMetrics)  # generative models: scores of their samples
    real = []
    if isinstance(plain, SplitMetrics):  # metrics of the whole split (mAP, mean IoU), accumulated per batch
        plain.reset_metrics()
    for batch in loader:
        n = len(batch[0]) if isinstance(batch, (list, tuple)) else len(next(iter(batch.values())))
        if scores_samples:
            real.append(batch[0])
        with fabric.autocast():
            logs = objective.validation_step(batch)
        for k, v in logs.items():
            if k.endswith("#n"):
                continue
            weight = torch.as_tensor(logs.get(f"{k}#n", n), device=fabric.device).float()
            sums[k] = sums.get(k, 0) + v.detach().float() * weight
            sums[f"{k}#n"] = sums.get(f"{k}#n", 0) + weight
    total = fabric.all_reduce(torch.stack(list(sums.values())), reduce_op="sum")
    totals = dict(zip(sums, total.tolist()))
    means = {k: v / max(totals[f"{k}#n"], 1e-12) for k, v in totals.items() if not k.endswith("#n")}
    if isinstance(plain, SplitMetrics):
        means.update(plain.compute_metrics())
    if isinstance(plain, Summarize):
        means = plain.summarize(means)
    # per epoch only if they pick the best epoch, and not for samplers too slow for that (the lowest loss picks then)
    per_epoch = getattr(plain, "sample_metrics_per_epoch", True)
    if sample_scores and scores_samples and real and monitor not in means and (monitor is None or per_epoch):
        means.update(plain.sample_metrics(torch.cat(real)))
    return means


def unwrap(module):
    """The module inside Fabric's wrapper (protocols are checked, and non-step methods called, on it)."""
    return getattr(module, "_original_module", module)


def run_phases(phases: list, settings: dict[str, Train], run: RunDir, *, fabric: Fabric, seed: int = 0,
               max_time: float | None = None, resume: bool = False, title: str = "train") -> tuple[float, dict | None]:
    """Train each `Phase` in order with its settings (a phase whose settings have no epochs is skipped), each a `fit`
    of its own with its own checkpoint, log and curves (`run.phase(name)`), all within `max_time`. Resuming, a
    phase whose checkpoint exists continues from it (a finished one only reloads its weights). Returns the seconds
    spent, which the main training's budget leaves out, and the summary of a phase the time budget stopped (then
    the run stops there: `--resume` continues that phase), or None."""
    started = time.perf_counter()
    for phase in phases:
        train = settings[phase.settings or phase.name]
        if train.epochs <= 0:
            continue
        part = run.phase(phase.name)
        if phase.start is not None:
            phase.start()
        left = None if max_time is None else max(max_time - (time.perf_counter() - started), 0.0)
        summary = fit(phase.objective, phase.train_set, phase.val_set, train, part, fabric=fabric, seed=seed,
                      monitor=phase.monitor, max_time=left, resume=resume and part.checkpoint.exists(),
                      title=f"{title} {phase.name}")
        if summary["status"] == "stopped: time budget reached":
            return time.perf_counter() - started, {**summary, "status": f"{summary['status']} in phase {phase.name}"}
        if phase.finish is not None:
            phase.finish()
    return time.perf_counter() - started, None


def planned_epochs(fabric: Fabric, first_epoch: float, max_time: float, most: int) -> int:
    """The epochs that fit in `max_time` when the first took `first_epoch` seconds (the slowest rank's), 1..`most`."""
    slowest = fabric.all_reduce(torch.tensor(first_epoch, device=fabric.device), reduce_op="max").item()
    return int(min(max(max_time // max(slowest, 1e-9), 1), most))


def _key(logs: dict, metric: str, direction: str) -> list[float] | None:
    """Higher is better: the monitored metric first, lower validation loss breaks ties. None when the logs hold
    neither (a GAN on a user's images: no judge, and its players' losses do not rank generators): the latest is best."""
    if metric not in logs:  # trained on data another metric measures: the lowest loss is best
        return [-logs["loss"]] if "loss" in logs else None
    value = logs[metric] if direction == "max" else -logs[metric]
    return [value, -logs.get("loss", 0.0)]


def _better(key: list[float] | None, best: list[float]) -> bool:
    """Whether a validation with `key` beats the `best` so far: any does when there is none yet, or none to compare."""
    return key is None or not best or key > best


def fit(objective, train_set: Dataset, val_set: Dataset, train: Train, run: RunDir, *, fabric: Fabric,
        monitor: tuple[str, str], seed: int = 0, max_time: float | None = None, resume: bool = False,
        title: str = "train", train_transform=None, plan: bool = False) -> dict:
    """Train `objective` (an nn.Module with training_step/validation_step) and leave the run directory
    with model.safetensors (best validation weights), checkpoint.safetensors, log.csv and curves.png.

    `train_transform(batch) -> batch` (data augmentation) runs on each training batch, on its device.
    `plan`: fit the run to `max_time`: after the first epoch, its seconds decide how many epochs fit (at most
    `train.epochs`), and the schedule runs over those; the choice is kept in the checkpoint, so a resumed run keeps it.
    Returns {"status", "epochs", "steps", "seconds", "best_epoch", "val": {...}}.
    """
    metric, direction = monitor
    fabric.seed_everything(seed, verbose=False)
    names = list(make_optimizers(objective, train).items())
    model, *optimizers = fabric.setup(objective, *(o for _, o in names))
    optimizers = dict(zip((n for n, _ in names), optimizers))
    manual = isinstance(objective, ManualOptimization) and objective.manual_optimization
    optimize = Optimize(fabric, model, optimizers, train.grad_clip)
    saved = {"model": model, **{"optimizer" if n == "model" else f"optimizer_{n}": o for n, o in optimizers.items()}}
    model.mark_forward_method("training_step")   # route through DDP's forward so gradients sync
    model.mark_forward_method("validation_step")
    train_loader = make_loader(fabric, train_set, train.batch_size, True, seed)
    val_loader = make_loader(fabric, val_set, train.batch_size, False, seed)
    total_steps = train.epochs * len(train_loader)

    state = LoopState()
    if resume:
        try:
            extra = fabric.load(run.checkpoint, saved)
            state = LoopState(**extra["loop"])
        except (RuntimeError, KeyError, TypeError, ValueError) as err:  # another config's, or a crafted file
            raise DeepAtlasError(f"{run.checkpoint}: does not match the run's config "
                                 f"({str(err).splitlines()[0][:200]})") from None
    main = fabric.global_rank == 0
    log = CSVLog(run.log, keep_until_step=state.step if resume else -1) if main else None
    if state.planned:
        total_steps = state.planned * len(train_loader)
    progress = Progress(total_steps, title, enabled=main)
    progress.step(state.step)
    if plan and not state.planned:
        progress.epoch(f"fitted to your data: trains until {train.patience} epochs bring no better val {metric}, or "
                       f"the time budget of {max_time:g}s ends (--max-time)"
                       + (f"; warm-up {train.warmup} steps" if train.warmup else "")
                       + "; set epochs or patience to choose yourself")

    def checkpoint() -> None:
        fabric.save(run.checkpoint, {**saved, "loop": vars(state)})
        fabric.barrier()
        run.publish(rename=main)  # a new run takes its name once it can be resumed

    status, val_logs, started = "completed", {}, time.perf_counter() - state.elapsed
    stops, finished, partial_best = StopRequests(), False, False
    try:
        with stops:
            while state.epoch < (state.planned or train.epochs) and status == "completed":
                torch.manual_seed(seed * 100_003 + state.epoch)  # this epoch's shuffle and dropout, resumed or not
                if isinstance(train_loader.sampler, DistributedSampler):
                    train_loader.sampler.set_epoch(state.epoch)
                model.train()
                sums, n_batches = dict(state.sums), state.batch
                batches = iter(train_loader)
                if state.batch:  # resumed inside this epoch: replay its shuffle to where it stopped, then its RNG
                    for _ in range(state.batch):
                        next(batches)
                    set_random_state(state.rng, fabric.device)
                for batch in batches:
                    if train_transform is not None:
                        batch = train_transform(batch)
                    factor = lr_factor(train, state.step, total_steps)
                    for optimizer in optimizers.values():
                        for group in optimizer.param_groups:
                            group["lr"] = group.get("base_lr", train.lr) * factor
                    with fabric.autocast():  # --precision applies to the step, not only to forward()
                        loss, logs = model.training_step(batch, optimize) if manual else model.training_step(batch)
                    finite = fabric.all_reduce(torch.isfinite(loss.detach()).float(), reduce_op="min")
                    if finite.item() < 1:
                        status = f"stopped: non-finite loss at step {state.step}"
                        break
                    if not manual:
                        optimize("model", loss)
                    state.step += 1
                    n_batches += 1
                    for k, v in logs.items():
                        if not k.endswith("#n"):  # counts only weigh evaluation means
                            sums[k] = sums.get(k, 0.0) + float(v)
                    if main:  # every loss per step: a GAN's two players each get a curve
                        log.write(state.step, state.epoch, {"train/step_loss": loss.item(), **{
                            f"train/step_{k}": float(v) for k, v in logs.items() if k.endswith("_loss")}})
                        progress.step(state.step, f"epoch {state.epoch + 1}/{state.planned or train.epochs} "
                                                  f"loss {loss.item():.4f}")
                    time_up = max_time is not None and time.perf_counter() - started + state.val_seconds > max_time
                    # every rank stops at the same step (their clocks differ)
                    stop = fabric.all_reduce(torch.tensor([float(time_up), float(stops.requested)], device=fabric.device),
                                          reduce_op="max")
                    if stop.any():
                        status = "interrupted" if stop[1] else "stopped: time budget reached"
                        break
                if status.startswith("stopped: non-finite"):
                    break  # keep the last good checkpoint untouched
                if n_batches < len(train_loader):  # stopped inside the epoch: checkpoint exactly here
                    state.batch, state.sums, state.rng = n_batches, sums, random_state(fabric.device)
                    state.elapsed = time.perf_counter() - started
                    checkpoint()
                    if status == "stopped: time budget reached" and state.val_seconds:  # its time was held back
                        val_logs = evaluate_loader(fabric, model, val_loader, monitor=metric)
                        key = _key(val_logs, metric, direction)
                        partial_best = _better(key, state.best)
                        state.elapsed = time.perf_counter() - started  # the run's seconds; its checkpoint's exclude these
                        shown = "  ".join(f"val/{k} {v:.4f}" for k, v in val_logs.items())
                        progress.epoch(f"the time budget stopped epoch {state.epoch + 1} at step {n_batches}/"
                                       f"{len(train_loader)}: {shown}; " + (
                                           "these weights are kept" if partial_best else
                                           f"epoch {state.best_epoch}'s weights are kept (better)"))
                    break

                validating = time.perf_counter()
                val_logs = evaluate_loader(fabric, model, val_loader, monitor=metric)
                state.val_seconds = time.perf_counter() - validating
                state.epoch += 1
                state.batch, state.sums, state.rng = 0, {}, []
                state.elapsed = time.perf_counter() - started
                if plan and not state.planned and max_time is not None:
                    state.planned = planned_epochs(fabric, state.elapsed, max_time, train.epochs)
                    total_steps = state.planned * len(train_loader)
                    plan_again = (("epochs", state.planned), ("patience", train.patience), ("warmup", train.warmup))
                    again = ", ".join(setting(k, v) for k, v in plan_again)
                    progress.plan(total_steps, f"epoch 1 took {state.elapsed:.2f}s: up to {state.planned} epochs of "
                                               f"{len(train_loader)} steps fit in {max_time:g}s; the learning-rate "
                                               f"schedule runs over them (to repeat this plan: {again})")
                key = _key(val_logs, metric, direction)
                if state.epoch == 1 and metric not in val_logs:  # a user's data no judge or bar metric measures
                    progress.epoch(f"val {metric} is not measured on this data: " + (
                        "the lowest val loss picks the epoch" if key else "the latest epoch's weights are kept"))
                if _better(key, state.best):
                    state.best, state.best_epoch, state.bad_epochs = key or [], state.epoch, 0
                    if main:
                        save_weights(objective, run.best)
                else:
                    state.bad_epochs += 1
                if train.patience and state.bad_epochs >= train.patience and status == "completed":
                    status = f"stopped early: no better val {metric} for {train.patience} epochs"
                checkpoint()
                if main:
                    train_means = {f"train/{k}": v / max(n_batches, 1) for k, v in sums.items()}
                    log.write(state.step, state.epoch, {**train_means, **{f"val/{k}": v for k, v in val_logs.items()},
                                                         "train/lr": train.lr * lr_factor(train, max(state.step - 1, 0),
                                                                                           total_steps)})
                    log.flush()
                    shown = "  ".join(f"{k} {v:.4f}" for k, v in {**train_means, **{f"val/{k}": v for k, v in val_logs.items()}}.items())
                    progress.epoch(f"epoch {state.epoch}/{state.planned or train.epochs}  {shown}")
        finished = status != "interrupted"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        progress.close()
        if finished:  # a finished run is kept even without a checkpoint (a non-finite loss in its first epoch)
            run.publish(rename=main)
        if main:
            log.close()
            if run.published:  # a run without a checkpoint leaves nothing (api removes its folder)
                if partial_best:  # the epoch the budget stopped; best.safetensors keeps the whole epochs' best
                    if not run.best.exists() and run.model.exists():
                        copy_atomically(run.model, run.best)
                    save_weights(objective, run.model)
                elif run.best.exists():  # the run's model is its best validation epoch
                    copy_atomically(run.best, run.model)
                    if status != "interrupted":
                        run.best.unlink()
                elif not run.model.exists():
                    save_weights(objective, run.model)
                plot_curves(run.log, run.curves, title)
        fabric.barrier()
    if status == "interrupted":
        raise KeyboardInterrupt
    best_epoch = round(state.epoch + state.batch / len(train_loader), 2) if partial_best else state.best_epoch
    return {"status": status, "epochs": state.epoch, "steps": state.step, "seconds": round(state.elapsed, 2),
            "best_epoch": best_epoch, "val": val_logs, **({"planned_epochs": state.planned} if plan else {})}
