from pathlib import Path

import pytest
import torch

import deepatlas
from deepatlas import cli


@pytest.fixture
def cli_run(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    def run(*argv):
        code = cli.run([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture
def refused(cli_run, tmp_path, monkeypatch):
    """`refused(*argv, message=..., watch=(folders...))`: run the CLI from a fresh working directory and assert the
    bad input is refused as the issue asks: exit 2, one `error:` line on stderr, no traceback, and no new file in
    the working directory nor in `watch` (a run folder it was pointed at)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)

    def check(*argv, message: str = "", watch=()):
        roots = [cwd, *map(Path, watch)]
        before = [_files(r) for r in roots]
        code, out, err = cli_run(*argv)
        assert code == 2, (argv, code, out[-500:], err[-2000:])
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert message in err, (argv, err)
        for root, seen in zip(roots, before):
            assert _files(root) == seen, (argv, "left", sorted(map(str, _files(root) - seen)))
        return err
    return check


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory):
    """One short trained mlp run shared by the read-only tests (eval, predict, load)."""
    out = tmp_path_factory.mktemp("runs") / "mlp"
    deepatlas.train("mlp", out=out, overrides={"epochs": "3"})
    return out


def fit_steps(model: torch.nn.Module, loss_fn, steps: int, lr: float = 1e-2) -> list[float]:
    """Plain Adam on a fixed batch; returns the loss after each step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def learn_digits(objective, steps: int = 400, batch: int = 64, lr: float = 2e-3) -> dict[str, float]:
    """Train a generative objective with manual steps on the 8×8 digits for `steps` seeded batches; returns its
    held-out validation loss and its samples' digits FD (seeded) before and after."""
    from deepatlas.catalog import Data
    from deepatlas.data.generative import load_for
    from deepatlas.tasks.generative import digits_scores, seeded

    data = load_for(Data("digits"))
    x = torch.stack([data.train[i][0] for i in range(len(data.train))])
    real = torch.stack([data.test[i][0] for i in range(len(data.test))])
    opt = torch.optim.Adam(objective.optimizer_groups()["model"], lr=lr)

    def optimize(name, loss):
        opt.zero_grad()
        loss.backward()
        opt.step()

    def measure(when: str) -> dict[str, float]:
        objective.eval()
        with seeded(0, torch.device("cpu")):
            fd = digits_scores(objective.sample(len(real)), real)["digits_fd"]
        return {f"{when}_loss": objective.validation_step((real,))["loss"].item(), f"{when}_fd": fd}

    before = measure("before")
    generator = torch.Generator().manual_seed(0)
    objective.train()
    for _ in range(steps):
        objective.training_step((x[torch.randint(len(x), (batch,), generator=generator)],), optimize)
    return {**before, **measure("after")}
