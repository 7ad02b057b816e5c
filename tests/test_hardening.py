"""The hostile user's trial (issue "Hardening"), held: every bad input below is refused with exit 2 and one
`error:` line, no traceback, and no file left behind; a time-budget stop resumes bit for bit; two runs cannot
share a folder; killed runs resume exactly; no strategy writes a pickle. Bad data files: test_hardening_data.py."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import deepatlas


def _craft(mlp_run: Path, folder: Path, change) -> Path:
    """A copy of the shared mlp run whose config.json `change(config)` edits (returns the config to write)."""
    shutil.copytree(mlp_run, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(change(config)))
    return folder


def _set(part: str, key: str, value):
    def change(config):
        config[part][key] = value
        return config
    return change


def _drop(key):
    def change(config):
        del config[key]
        return config
    return change


class Paths:
    """What the cases point at, made once per test in tmp_path."""

    def __init__(self, root: Path, mlp_run: Path):
        self.root, self.mlp = root, mlp_run
        self.file = root / "a-file"
        self.file.write_text("not a folder\n")

    def run(self, name: str, change=None) -> Path:
        return _craft(self.mlp, self.root / name, change or (lambda c: c))

    def locked(self) -> Path:
        """A run folder whose lock belongs to a live process (this one's parent: not us, and running)."""
        folder = self.run("locked")
        (folder / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
        return folder


CASES = {  # id: (argv maker, message)
    # training settings: --set
    "lr=nan": (lambda p: ["train", "mlp", "--set", "lr=nan"], "lr=nan: must be > 0"),
    "lr=-1": (lambda p: ["train", "mlp", "--set", "lr=-1"], "lr=-1: must be > 0"),
    "lr=inf": (lambda p: ["train", "mlp", "--set", "lr=inf"], "lr=inf: must be > 0"),
    "batch_size=0": (lambda p: ["train", "mlp", "--set", "batch_size=0"], "batch_size=0: must be ≥ 1"),
    "epochs=-1": (lambda p: ["train", "mlp", "--set", "epochs=-1"], "epochs=-1: must be ≥ 0"),
    "epochs=0": (lambda p: ["train", "mlp", "--set", "epochs=0"], "needs at least one epoch"),
    "momentum=2": (lambda p: ["train", "mlp", "--set", "momentum=2"], "momentum=2"),
    "patience=-2": (lambda p: ["train", "mlp", "--set", "patience=-2"], "patience=-2"),
    "grad_clip=nan": (lambda p: ["train", "mlp", "--set", "grad_clip=nan"], "grad_clip=nan"),
    "warmup=1.5": (lambda p: ["train", "mlp", "--set", "warmup=1.5"], "expected an integer"),
    "phase epochs=-1": (lambda p: ["train", "dbn", "--set", "pretrain.epochs=-1"], "pretrain.epochs=-1"),
    # model settings
    "width=0": (lambda p: ["train", "mlp", "--set", "width=0"], "width=0: must be ≥ 1"),
    "width=-5": (lambda p: ["train", "mlp", "--set", "width=-5"], "width=-5"),
    "dropout=1.5": (lambda p: ["train", "mlp", "--set", "dropout=1.5"], "dropout=1.5"),
    "dropout=nan": (lambda p: ["train", "mlp", "--set", "dropout=nan"], "dropout=nan"),
    "width=1e9": (lambda p: ["train", "mlp", "--set", "width=1000000000"], "width=1000000000"),
    "width=5e6 (memory)": (lambda p: ["train", "mlp", "--set", "width=5000000"], "more than the"),
    "lenet c1=0": (lambda p: ["train", "lenet", "--set", "c1=0"], "c1=0"),
    # data options
    "crop_pad=-1": (lambda p: ["train", "resnet", "--set", "crop_pad=-1"], "crop_pad=-1"),
    "image_size=-3": (lambda p: ["train", "lenet", "--set", "image_size=-3"], "image_size=-3"),
    "image_size=100000": (lambda p: ["train", "lenet", "--set", "image_size=100000"], "image_size=100000"),
    "image_size=4096 (memory)": (lambda p: ["train", "lenet", "--set", "image_size=4096"], "more than the"),
    "--target on embedded data": (lambda p: ["train", "mlp", "--target", "y"], "is an embedded dataset"),
    "heads not dividing dim": (lambda p: ["train", "gpt", "--set", "heads=5"], "heads"),
    "min_n > max_n": (lambda p: ["train", "fasttext", "--set", "min_n=7"], "min_n=7"),
    "elites >= population": (lambda p: ["train", "ga_search", "--set", "elites=9"], "elites=9"),
    "rotate=720": (lambda p: ["train", "resnet", "--set", "rotate=720"], "rotate=720"),
    "window=-1": (lambda p: ["train", "lstm", "--set", "window=-1"], "window=-1"),
    # command-line flags
    "--seed -1": (lambda p: ["train", "mlp", "--seed", "-1"], "--seed -1"),
    "--seed 2^32": (lambda p: ["train", "mlp", "--seed", "4294967296"], "--seed 4294967296"),
    "--max-time 0": (lambda p: ["train", "mlp", "--max-time", "0"], "--max-time 0"),
    "--max-time -3": (lambda p: ["train", "mlp", "--max-time", "-3"], "--max-time -3"),
    "--max-time nan": (lambda p: ["train", "mlp", "--max-time", "nan"], "--max-time nan"),
    "--max-time inf": (lambda p: ["train", "mlp", "--max-time", "inf"], "--max-time inf"),
    "--strategy fsdp": (lambda p: ["train", "mlp", "--strategy", "fsdp"], "would be pickled"),
    "--strategy deepspeed": (lambda p: ["train", "mlp", "--strategy", "deepspeed"], "would be pickled"),
    "--accelerator tpu (no backend)": (lambda p: ["train", "mlp", "--accelerator", "tpu"], "torch_xla"),
    "--devices 0": (lambda p: ["train", "mlp", "--devices", "0", "--accelerator", "cpu"], "--devices"),
    "--episodes 0": (lambda p: ["eval", p.mlp, "--episodes", "0"], "--episodes 0"),
    "sample -n 1e9": (lambda p: ["sample", p.mlp, "-n", "1000000000"], "-n 1000000000"),
    "sample -n 0": (lambda p: ["sample", p.mlp, "-n", "0"], "-n 0"),
    "sample --seed -1": (lambda p: ["sample", p.mlp, "--seed", "-1"], "--seed -1"),
    # output paths, checked before the work
    "train --out under a file": (lambda p: ["train", "mlp", "--out", p.file / "run"], "is a file"),
    "train --out is a file": (lambda p: ["train", "mlp", "--out", p.file], "is a file"),
    "train --out read-only": (lambda p: ["train", "mlp", "--out", "/proc/deepatlas-run"], "cannot write"),
    "predict --out under a file": (lambda p: ["predict", p.mlp, "x.csv", "--out", p.file / "p.csv"], "is a file"),
    "predict --out read-only": (lambda p: ["predict", p.mlp, "x.csv", "--out", "/proc/p.csv"], "cannot write"),
    "predict --plot under a file": (lambda p: ["predict", p.mlp, "x.csv", "--plot", p.file / "a.png"], "is a file"),
    "sample --out under a file": (lambda p: ["sample", p.mlp, "--out", p.file / "s.png"], "is a file"),
    "sample --out read-only": (lambda p: ["sample", p.mlp, "--out", "/proc/s.png"], "cannot write"),
    "bench --json under a file": (lambda p: ["bench", "mlp", "--json", p.file / "b.json"], "is a file"),
    "bench --json read-only": (lambda p: ["bench", "mlp", "--json", "/proc/b.json"], "cannot write"),
    "compare --json under a file": (lambda p: ["compare", "mlp", "perceptron", "--json", p.file / "c.json"],
                                    "is a file"),
    "compare --chart read-only": (lambda p: ["compare", "mlp", "perceptron", "--chart", "/proc/c.png"], "cannot write"),
    # crafted run folders
    "resume: another entry's config": (lambda p: ["train", "--resume", p.run("other", _set_name("perceptron"))],
                                       "model.width: unknown setting"),
    "resume: another config's checkpoint": (lambda p: ["train", "--resume", p.run("wider", _set("model", "width", 32))],
                                            "does not match the run's config"),
    "resume: config without a name": (lambda p: ["train", "--resume", p.run("noname", _drop("name"))], "no entry name"),
    "resume: seed abc": (lambda p: ["train", "--resume", p.run("seedabc", _top("seed", "abc"))], "seed 'abc'"),
    "resume: lr -1 in config": (lambda p: ["train", "--resume", p.run("lr", _set("train", "lr", -1))], "train.lr=-1"),
    "resume: locked by a live run": (lambda p: ["train", "--resume", p.locked()], "in use by another run"),
    "train --out locked by a live run": (lambda p: ["train", "mlp", "--out", p.locked()], "in use by another run"),
    "train --out holds a run": (lambda p: ["train", "mlp", "--out", p.run("existing")], "already exists"),
    "eval: width 1e9 in config": (lambda p: ["eval", p.run("w1e9", _set("model", "width", 10**9))],
                                  "model.width=1000000000"),
    "eval: width -5 in config": (lambda p: ["eval", p.run("wm5", _set("model", "width", -5))], "model.width=-5"),
    "eval: width 5e6 in config (memory)": (lambda p: ["eval", p.run("w5e6", _set("model", "width", 5_000_000))],
                                           "more than the"),
    "eval: width 'abc' in config": (lambda p: ["eval", p.run("wabc", _set("model", "width", "abc"))],
                                    "expected an integer"),
    "eval: config is a list": (lambda p: ["eval", p.run("list", lambda c: [c])], "expected a JSON object"),
    "eval: unknown model key": (lambda p: ["eval", p.run("key", _set("model", "wdth", 3))], "unknown setting"),
    "eval: options window -1": (lambda p: ["eval", p.run("opt", _set("options", "window", -1))], "window=-1"),
    "compare: garbage metrics.json": (lambda p: ["compare", "perceptron", "mlp", "--out", _garbage_compare(p)],
                                      "not a deepatlas run's metrics"),
}


def _set_name(name):
    return lambda config: {**config, "name": name}


def _top(key, value):
    return lambda config: {**config, key: value}


def _garbage_compare(p: Paths) -> Path:
    """A compare folder where the perceptron's run (same settings, same key) holds a garbage metrics.json."""
    from deepatlas.tools.compare import _run_key
    entry = deepatlas.get("perceptron")
    model_over, settings = deepatlas.api.settings_for(entry, {})
    folder = p.root / "cmp" / f"perceptron-{_run_key('perceptron', settings, model_over, 0)}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"test": 3')
    return p.root / "cmp"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line(case, refused, mlp_run, tmp_path):
    make, message = CASES[case]
    (tmp_path / "made").mkdir()
    paths = Paths(tmp_path / "made", mlp_run)
    refused(*make(paths), message=message, watch=[paths.root, mlp_run])


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_a_time_budget_stop_resumes_bit_for_bit(tmp_path):
    """Stopped by --max-time inside epochs (many times: each resume has a budget of one step), the run ends with
    the weights, optimizer state and step count of the run that never stopped."""
    settings = {"epochs": "3"}
    whole = deepatlas.train("mlp", seed=5, overrides=settings, out=tmp_path / "whole")
    cut = deepatlas.train("mlp", seed=5, overrides=settings, out=tmp_path / "cut", max_time=1e-9)
    assert cut["status"] == "stopped: time budget reached" and cut["steps"] == 1
    stops = 1
    while cut["status"].startswith("stopped: time") and stops < 6:  # stops at steps 2..6, inside epoch 1
        cut = deepatlas.train(resume=tmp_path / "cut", max_time=1e-9)
        stops += 1
    loop = load_file(str(tmp_path / "cut" / "checkpoint.safetensors"))
    assert cut["steps"] == 6 and cut["epochs"] == 0 and len(loop) > 0
    cut = deepatlas.train(resume=tmp_path / "cut")
    assert cut["status"] == "completed" and cut["steps"] == whole["steps"] and cut["epochs"] == whole["epochs"]
    for name in ("model.safetensors", "checkpoint.safetensors"):
        assert _same_weights(tmp_path / "whole" / name, tmp_path / "cut" / name), name
    assert cut["test"] == whole["test"]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    from deepatlas.engine import loop

    def broken(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loop, "evaluate_loader", broken)  # Ctrl-C at once, inside the first epoch's validation
    with pytest.raises(KeyboardInterrupt):
        deepatlas.train("mlp", overrides={"epochs": "1"})
    assert list(tmp_path.iterdir()) == []  # not even runs/


def test_a_stale_lock_is_taken_over_with_a_notice(tmp_path, capsys):
    run = tmp_path / "run"
    deepatlas.train("mlp", overrides={"epochs": "2"}, out=run, max_time=1e-9)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    (run / "checkpoint.safetensors.tmp").write_bytes(b"half a file")
    result = deepatlas.train(resume=run)
    assert result["status"] == "completed" and "taking over the lock" in capsys.readouterr().err
    assert not (run / ".lock").exists() and not list(run.glob("*.tmp"))


def _train_process(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "deepatlas.cli", "train", "mlp", "--seed", "3", "--set", "epochs=12",
                             "--out", str(run), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_runs_on_one_folder_cannot_corrupt_it(tmp_path, cli_run):
    run = tmp_path / "run"
    first = _train_process(run, "--set", "epochs=60")
    deadline = time.time() + 120
    while not list(tmp_path.glob("*/.lock")) and time.time() < deadline:  # the first holds the (hidden) folder
        time.sleep(0.02)
    code, _, err = cli_run("train", "mlp", "--seed", "4", "--out", run)
    assert code == 2 and "in use by another run" in err and f"pid {first.pid}" in err, err
    assert first.wait(timeout=300) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 3 and not (run / ".lock").exists()
    steps = [int(r["step"]) for r in csv.DictReader((run / "log.csv").open()) if r["name"] == "train/step_loss"]
    assert steps == list(range(1, len(steps) + 1))  # one run's log, no duplicated rows


def _resume_process(run: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deepatlas.cli", "train", "--resume", str(run)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _next_checkpoint(run: Path, proc: subprocess.Popen, seen: int) -> int:
    """Wait until `proc` writes a checkpoint newer than `seen` (mtime ns); return its mtime."""
    checkpoint = run / "checkpoint.safetensors"
    while proc.poll() is None:
        if checkpoint.exists() and checkpoint.stat().st_mtime_ns != seen:
            return checkpoint.stat().st_mtime_ns
        time.sleep(0.002)
    return seen


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_runs_resume_exactly(sig, tmp_path):
    """Killed three times (SIGKILL: no chance to react; SIGINT: Ctrl-C) at random instants after a checkpoint
    (inside an epoch, or inside the next checkpoint's write), resumed each time: the weights equal those of the
    run that was never killed, and no temporary file or lock is left."""
    import random
    rng = random.Random(int(sig))
    whole = tmp_path / "whole"
    assert _train_process(whole).wait(timeout=300) == 0
    run, seen = tmp_path / "run", 0
    for kill in range(3):
        proc = _train_process(run) if kill == 0 else _resume_process(run)
        seen = _next_checkpoint(run, proc, seen)
        time.sleep(rng.uniform(0.0, 0.1))  # an epoch of this run takes about 0.1 s
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
        err = proc.stderr.read()
        assert code in (0, 130, -signal.SIGKILL), err[-1000:]
        assert b"Traceback" not in err and (code != 130 or b"--resume" in err), err[-1000:]
        seen = (run / "checkpoint.safetensors").stat().st_mtime_ns  # a Ctrl-C's own checkpoint included
    assert _resume_process(run).wait(timeout=300) == 0
    assert _same_weights(whole / "model.safetensors", run / "model.safetensors")
    assert not list(run.glob("*.tmp")) and not (run / ".lock").exists()


PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # protocol 2-5 opening bytes


def test_no_strategy_writes_a_pickle(tmp_path):
    """Every strategy that may be chosen leaves only pickle-free files; the others (fsdp, deepspeed) are refused
    (see CASES). A zip (torch.save's format) would start with PK."""
    from deepatlas.engine.loop import STRATEGIES
    for strategy in STRATEGIES:
        if strategy.startswith("ddp"):  # launched as processes: test_cli's DDP run greps its folder too
            continue
        run = tmp_path / strategy
        deepatlas.train("mlp", overrides={"epochs": "1"}, out=run, scaling=deepatlas.Scaling(strategy=strategy))
        for f in run.rglob("*"):
            head = f.read_bytes()[:2]
            assert head not in PICKLE_MAGIC and head != b"PK", f
