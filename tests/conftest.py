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
