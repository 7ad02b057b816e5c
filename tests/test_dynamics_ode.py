"""Our ODE solvers (deepatlas.nn.ode): accuracy against closed forms and scipy, step-size control, the adjoint's
gradients and memory, and equivalence with torchdiffeq (dev extra)."""
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from deepatlas.nn.ode import Counted, odeint, odeint_adjoint

SPIRAL = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)  # Chen et al.'s spiral matrix


def linear(t, y):
    return y @ SPIRAL.T


def cubic(t, y):
    return (y ** 3) @ SPIRAL.T


class Field(torch.nn.Module):
    def __init__(self, width=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2)).double()

    def forward(self, t, y):
        return self.net(y) * (1 + 0.1 * torch.sin(t))  # time enters too


def _exact(y0, t):
    return torch.stack([y0 @ torch.linalg.matrix_exp(SPIRAL * s).T for s in t])


@pytest.mark.parametrize("tol", [1e-4, 1e-7, 1e-10])
def test_dopri5_meets_its_tolerance_on_a_linear_ode_with_a_closed_form(tol):
    y0 = torch.tensor([[2.0, 0.0], [0.5, -1.0]], dtype=torch.float64)
    t = torch.linspace(0, 10, 41, dtype=torch.float64)
    error = (odeint(linear, y0, t, rtol=tol, atol=tol) - _exact(y0, t)).abs().max().item()
    assert error < 100 * tol  # global error of a locally controlled method: a few orders of the local tolerance
    loose = (odeint(linear, y0, t, rtol=tol * 1e3, atol=tol * 1e3) - _exact(y0, t)).abs().max().item()
    assert error < loose  # a tighter tolerance gives a more accurate solution


def test_dopri5_matches_scipys_rk45_on_the_cubic_spiral_and_runs_backward_in_time():
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    t = torch.linspace(0, 25, 101, dtype=torch.float64)
    ours = odeint(cubic, y0, t, rtol=1e-9, atol=1e-10)
    theirs = solve_ivp(lambda s, y: (y ** 3) @ SPIRAL.T.numpy(), (0, 25), y0[0].numpy(), t_eval=t.numpy(),
                       method="RK45", rtol=1e-12, atol=1e-12).y.T
    assert np.abs(ours[:, 0].numpy() - theirs).max() < 1e-6
    back = odeint(cubic, ours[-1], t.flip(0), rtol=1e-9, atol=1e-10).flip(0)
    assert (back - ours).abs().max() < 1e-5


def test_fixed_steps_take_the_stated_steps_and_converge_at_their_order():
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    errors = {}
    for method, per_step in (("euler", 1), ("rk4", 4)):
        for h in (0.1, 0.05):
            f = Counted(linear)
            ys = odeint(f, y0, t, method=method, step_size=h)
            assert f.nfe == per_step * round(2 / h)
            errors[method, h] = (ys - _exact(y0, t)).abs().max().item()
    assert 1.7 < errors["euler", 0.1] / errors["euler", 0.05] < 2.3      # first order: halving h halves the error
    assert 13 < errors["rk4", 0.1] / errors["rk4", 0.05] < 19           # fourth order: 16 times smaller


def test_the_step_controller_takes_smaller_steps_where_the_ode_is_stiffer():
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    nfe = {}
    for rate in (1.0, 300.0):  # y' = -rate (y - cos t): the stiffer one relaxes fast onto cos t
        f = Counted(lambda s, y, r=rate: -r * (y - torch.cos(s)))
        y = odeint(f, torch.ones(1, dtype=torch.float64), t, rtol=1e-6, atol=1e-8)[-1]
        exact_r = (rate ** 2 * np.cos(2) + rate * np.sin(2)) / (1 + rate ** 2)  # the attractor, after the transient
        if rate > 1:
            assert abs(y.item() - exact_r) < 1e-5
        nfe[rate] = f.nfe
    assert nfe[300.0] > 5 * nfe[1.0]


def test_adjoint_gradients_equal_backpropagation_through_the_solver():
    field = Field()
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 6, dtype=torch.float64)
    weights = torch.randn(6, 2, 2, dtype=torch.float64)
    grads = []
    for solve in (odeint, odeint_adjoint):
        ys = solve(field, y0, t, rtol=1e-10, atol=1e-10)
        grads.append(torch.autograd.grad((ys * weights).sum(), (y0, *field.parameters())))
    for direct, adjoint in zip(*grads):
        assert (direct - adjoint).abs().max() < 1e-4


def _saved_bytes(solve, length: float) -> int:
    """Bytes the autograd graph keeps for backward after one solve over [0, length] (saved-tensor hooks)."""
    saved = []

    def pack(x):
        saved.append(x.numel() * x.element_size())
        return x

    field = Field()
    y0 = torch.ones(64, 2, dtype=torch.float64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        solve(field, y0, torch.tensor([0.0, length], dtype=torch.float64), rtol=1e-6, atol=1e-8)
    return sum(saved)


def test_the_adjoints_memory_stays_flat_as_the_interval_grows_where_backpropagation_grows():
    direct = [_saved_bytes(odeint, length) for length in (2.0, 20.0)]
    adjoint = [_saved_bytes(odeint_adjoint, length) for length in (2.0, 20.0)]
    assert direct[1] > 3 * direct[0]          # more steps, more saved activations
    assert adjoint[0] == adjoint[1] < direct[0]


def test_counted_counts_forward_and_backward_evaluations():
    field = Counted(Field())
    y0 = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    ys = odeint_adjoint(field, y0, torch.linspace(0, 1, 3, dtype=torch.float64), rtol=1e-6, atol=1e-8)
    forward = field.reset()
    ys.sum().backward()
    backward = field.reset()
    assert forward > 0 and backward > 0 and field.nfe == 0
    assert y0.grad is not None and all(p.grad is not None for p in field.parameters())


def test_float32_and_any_state_shape_work():
    y0 = torch.randn(4, 3, 2)  # float32, a (4, 3, 2) state
    ys = odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-6)
    assert ys.shape == (2, 4, 3, 2) and ys.dtype == torch.float32
    assert (ys[1] - y0 * np.exp(-1)).abs().max() < 1e-4


def test_bad_arguments_are_refused():
    y0 = torch.zeros(2)
    with pytest.raises(ValueError, match="method 'rk45'"):
        odeint(linear, y0, torch.tensor([0.0, 1.0]), method="rk45")
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        odeint(linear, y0, torch.tensor([0.0, 1.0, 0.5]))


# ---- equivalence with torchdiffeq ----------------------------------------------------------------------------

@pytest.mark.parametrize("method,options", [("dopri5", {"rtol": 1e-7, "atol": 1e-9}), ("rk4", {"step_size": 0.01})])
def test_solutions_nfe_and_gradients_equal_torchdiffeqs(method, options):
    import torchdiffeq  # the dev extra: equivalence runs in CI, never skipped
    field = Field(seed=1)
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    theirs_options = {"rtol": options.get("rtol", 1e-7), "atol": options.get("atol", 1e-9)}
    if method == "rk4":
        theirs_options["options"] = {"step_size": options["step_size"]}
    results = []
    for solve in (odeint, odeint_adjoint):
        counted = Counted(field)
        ours = solve(counted, y0, t, method=method, **options)
        ours_nfe = counted.reset()
        theirs = getattr(torchdiffeq, solve.__name__)(counted, y0, t, method=method, **theirs_options)
        theirs_nfe = counted.reset()
        assert (ours - theirs).abs().max() < 1e-6
        if method == "dopri5":
            assert ours_nfe == theirs_nfe  # the same steps, accepted and rejected
        for a, b in zip(torch.autograd.grad(ours.sum(), (y0, *field.parameters())),
                        torch.autograd.grad(theirs.sum(), (y0, *field.parameters()))):
            assert (a - b).abs().max() < 1e-6
        results.append(ours)
    assert (results[0] - results[1]).abs().max() == 0  # the adjoint's forward pass is the plain solve


def test_the_adjoint_gives_the_times_their_gradients():
    """dL/dt_i = ∂L/∂y(t_i) · f(t_i, y_i) at a requested time; for an autonomous field, shifting every time by the
    same amount changes nothing, so the times' gradients sum to zero (t_0's is minus the rest)."""
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64, requires_grad=True)
    ys = odeint_adjoint(linear, y0, t, rtol=1e-10, atol=1e-12)
    weights = torch.tensor([[[0.0, 0.0]], [[1.0, -2.0]], [[0.5, 3.0]]], dtype=torch.float64)
    (ys * weights).sum().backward()
    with torch.no_grad():
        expected = [(linear(None, ys[i]) * weights[i]).sum().item() for i in (1, 2)]
    assert t.grad[1:].tolist() == pytest.approx(expected, abs=1e-8)
    assert t.grad.sum().item() == pytest.approx(0.0, abs=1e-7)
