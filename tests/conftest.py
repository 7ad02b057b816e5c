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
