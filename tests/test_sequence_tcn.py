"""TCN: causal dilated convolutions, the receptive field it reports, weight norm, and learning."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deepatlas
from deepatlas.data.sequences import adding
from deepatlas.errors import DeepAtlasError
from deepatlas.models.sequence import tcn
from deepatlas.tasks.sequence import SequenceObjective


def small(**overrides) -> tcn.TCN:
    torch.manual_seed(0)
    cfg = {"in_features": 3, "n_outputs": 2, "per_step": True, "channels": 8, "levels": 3, "kernel_size": 3}
    return deepatlas.create_model("tcn", **{**cfg, **overrides}).double().eval()


def test_tcn_is_causal():
    """Changing the input at t' > t leaves every output at steps <= t bit for bit unchanged;
    changing it at t' = t changes the output at t."""
    model = small()
    x = torch.randn(4, 29, 3, dtype=torch.float64)             # T = the receptive field, 29
    out = model(x)                                              # (B, T, K)
    for t in (0, 9, 17, 27):
        later = x.clone()
        later[:, t + 1:] = torch.randn_like(later[:, t + 1:])
        assert torch.equal(model(later)[:, :t + 1], out[:, :t + 1])
        now = x.clone()
        now[:, t] += 1.0
        changed = model(now)
        assert torch.equal(changed[:, :t], out[:, :t])
        assert not torch.allclose(changed[:, t], out[:, t])


@pytest.mark.filterwarnings("ignore:.*longer than the receptive field:UserWarning")  # T > r on purpose
@pytest.mark.parametrize("kernel_size,levels", [(2, 1), (3, 3), (5, 2), (4, 4)])
def test_tcn_receptive_field_is_exactly_the_formula(kernel_size, levels):
    """The output at t depends on exactly the inputs t-r+1..t, with r = 1 + 2(k-1)(2^L - 1)."""
    model = small(kernel_size=kernel_size, levels=levels)
    r = 1 + 2 * (kernel_size - 1) * (2 ** levels - 1)
    assert model.receptive_field == r
    T = r + 12
    x = torch.randn(2, T, 3, dtype=torch.float64, requires_grad=True)
    for t in (T - 1, T - 5):
        (grad,) = torch.autograd.grad(model(x)[:, t].sum(), x)
        seen = grad.abs().sum((0, 2)) > 0                       # (T,): which input steps reach output t
        assert seen.sum() == r
        assert seen[t - r + 1:t + 1].all()                      # the r most recent steps, t itself included


def test_tcn_dilation_doubles_per_level_with_left_padding():
    model = small(levels=4, kernel_size=3)
    convs = [m for m in model.modules() if isinstance(m, tcn.CausalConv1d)]
    assert [c.dilation for c in convs] == [1, 1, 2, 2, 4, 4, 8, 8]
    assert [c.left_pad for c in convs] == [2, 2, 4, 4, 8, 8, 16, 16]


def test_tcn_uses_weight_norm_and_projection_shortcuts():
    model = small(in_features=3, channels=8, levels=2)
    conv = model.blocks[0].residual[0]
    names = {n for n, _ in conv.named_parameters()}
    assert {"g", "v"} <= names and "weight" not in names
    with torch.no_grad():  # w = g · v / ||v||: scaling v leaves the filter unchanged, g sets its norm
        w = conv.weight.clone()
        conv.v.mul_(3.0)
        assert torch.allclose(conv.weight, w)
        conv.g.fill_(2.0)
        assert torch.allclose(conv.weight.norm(dim=(1, 2)), torch.full((8,), 2.0, dtype=torch.float64))
    assert isinstance(model.blocks[0].shortcut, torch.nn.Conv1d)          # 3 -> 8 channels: 1x1 conv
    assert model.blocks[0].shortcut.kernel_size == (1,)
    assert isinstance(model.blocks[1].shortcut, torch.nn.Identity)        # 8 -> 8: identity


def test_tcn_shapes_many_to_one_and_many_to_many():
    x = torch.randn(5, 25, 3, dtype=torch.float64)
    assert small(per_step=True, n_outputs=4)(x).shape == (5, 25, 4)
    many_to_one = small(per_step=False, n_outputs=4)
    assert many_to_one(x).shape == (5, 4)
    # many-to-one reads the last step of the many-to-many network
    many_to_many = small(per_step=True, n_outputs=4)
    assert torch.allclose(many_to_many(x)[:, -1], many_to_one(x))


def test_tcn_warns_when_the_sequence_outgrows_its_receptive_field_and_checks_inputs():
    model = small(kernel_size=2, levels=2)                     # r = 1 + 2·1·3 = 7
    model(torch.randn(1, 7, 3, dtype=torch.float64))
    with pytest.warns(UserWarning, match="receptive field of 7"):
        model(torch.randn(1, 8, 3, dtype=torch.float64))
    with pytest.raises(DeepAtlasError, match="expected inputs"):
        model(torch.randn(1, 7, 4, dtype=torch.float64))
    with pytest.raises(DeepAtlasError):
        deepatlas.create_model("tcn", kernel_size=0)


def test_tcn_learns_the_adding_problem():
    """T=40 adding problem, a few hundred steps: far below the MSE 1/6 of always answering 1."""
    gen = np.random.default_rng(0)
    x, y = adding(40, 4096, gen)
    x_val, y_val = adding(40, 512, gen)
    torch.manual_seed(0)
    model = deepatlas.create_model("tcn", in_features=2, n_outputs=1, channels=24, levels=3, kernel_size=4)
    assert model.receptive_field >= 40
    objective = SequenceObjective(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(500):
        idx = torch.randint(0, len(x), (64,))
        loss, _ = objective.training_step((x[idx], y[idx]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    mse = objective.eval().validation_step((x_val, y_val))["mse"].item()
    baseline = F.mse_loss(torch.ones_like(y_val), y_val).item()  # ≈ 1/6
    assert mse < 0.2 * baseline


def test_info_reports_the_receptive_field(cli_run):
    code, out, _ = cli_run("info", "tcn")
    cfg = tcn.Config()
    expected = 1 + 2 * (cfg.kernel_size - 1) * (2 ** cfg.levels - 1)
    assert code == 0 and f"receptive field (default config): {expected} steps" in out
