"""latent_ode (Rubanova, Chen & Duvenaud 2019) and the irregular data and task: shapes, the ODE-RNN's state between
observations is our odeint of its ODE, masks hide what they mask, the batch's union of stamps changes no series'
encoding, the KL term's closed form, learning, users' CSV files, recommend --need irregular-times."""
import math

import numpy as np
import pytest
import torch

import deepatlas
from deepatlas.data import irregular as ir
from deepatlas.errors import DeepAtlasError
from deepatlas.models.dynamics.latent_ode import Config, LatentODE, kl_standard_normal
from deepatlas.nn.ode import odeint
from deepatlas.tasks.irregular import IrregularObjective

SMALL = dict(latent=4, hidden=16, ode_width=32)


def batch_of(n: int = 8, split: str = "val"):
    data = ir.oscillators(n, ir.SEEDS[split])
    return ir.SeriesSet.collate([data[i] for i in range(n)])


def test_collate_lays_series_on_the_union_of_their_stamps():
    data = ir.oscillators(5, 0)
    values, times, observed, interp, extrap = ir.SeriesSet.collate([data[i] for i in range(5)])
    assert values.shape == observed.shape == interp.shape == extrap.shape == (5, len(times), 1)
    assert bool((times[1:] > times[:-1]).all())
    assert observed.sum((1, 2)).tolist() == [ir.N_OBS] * 5 and extrap.sum((1, 2)).tolist() == [ir.N_EXTRAP] * 5
    for b in range(5):  # each point sits at its own stamp with its own value
        at = torch.searchsorted(times, data.times[b])
        assert torch.equal(values[b, at, 0], data.values[b, :, 0])
    assert bool((times[(extrap.sum((0, 2)) > 0)] > ir.OBS_END).all())


def test_shapes_and_samples():
    model = LatentODE(Config(**SMALL))
    values, times, observed, interp, extrap = batch_of(6)
    assert model(values, times, observed).shape == values.shape
    assert model(values, times, observed, samples=3).shape == (3, *values.shape)
    mu, sigma = model.encode(values, times, observed)
    assert mu.shape == sigma.shape == (6, 4) and bool((sigma > 0).all())
    query = torch.linspace(0.3, 9.0, 11)  # any query times, past the data's too
    assert model.decode(mu, query).shape == (6, 11, 1)
    logs = model.elbo(values, times, observed, observed)
    assert logs["loss"].dim() == 0 and torch.isfinite(logs["loss"])


def test_encoder_state_between_observations_is_odeint_of_its_ode():
    """The defining mechanism: going backward, the state just before stamp t_i's update is the state after t_{i+1}'s
    update carried by dh/dt = g(h) from t_{i+1} to t_i (our odeint, the encoder's solver); where a series has no
    observation at t_i, its state after t_i is that same solution, untouched by the GRU."""
    torch.manual_seed(0)
    model = LatentODE(Config(**SMALL, encoder_method="rk4", step_size=0.05))
    values, times, observed, _, _ = batch_of(4)
    with torch.no_grad():
        h0, before, after = model.encoder(values, times, observed, keep=True)
        seen = observed[..., 0] > 0                                      # (B, T)
        started = seen.flip(1).cumsum(1).flip(1) - seen.long() > 0       # (B, T) an observation after t_i
        for i in range(len(times) - 1):
            solved = odeint(model.encoder.dynamics, after[:, i + 1], times[[i + 1, i]], method="rk4", step_size=0.05)[-1]
            torch.testing.assert_close(before[started[:, i], i], solved[started[:, i]])
        assert not before[~started].any()                                # before its last observation: h = 0
        unseen = observed[..., 0] == 0                                   # (B, T)
        torch.testing.assert_close(after[unseen], before[unseen])
        assert not torch.allclose(after[~unseen], before[~unseen])
        if times[0] > 0:  # then on to the time origin, where q(z0 | x) is read
            origin = odeint(model.encoder.dynamics, after[:, 0], torch.stack([times[0], torch.tensor(0.0)]),
                            method="rk4", step_size=0.05)[-1]
            torch.testing.assert_close(h0, origin)
        else:
            torch.testing.assert_close(h0, after[:, 0])


def test_unobserved_and_padded_values_change_neither_encoding_nor_loss():
    torch.manual_seed(0)
    model = LatentODE(Config(**SMALL))
    values, times, observed, interp, extrap = batch_of(6)
    target = observed + interp
    noise = 100 * torch.randn_like(values)
    changed = torch.where(observed > 0, values, noise)              # every value the encoder must not read
    mu, sigma = model.encode(values, times, observed)
    mu2, sigma2 = model.encode(changed, times, observed)
    assert torch.equal(mu, mu2) and torch.equal(sigma, sigma2)
    hidden_from_loss = torch.where(target > 0, values, noise)      # values neither read nor scored
    torch.manual_seed(1)
    loss = model.elbo(values, times, observed, target)["loss"]
    torch.manual_seed(1)
    assert torch.equal(loss, model.elbo(hidden_from_loss, times, observed, target)["loss"])
    # padding: a series padded with more empty slots collates to the same batch
    data = ir.oscillators(3, 5)
    padded = ir.SeriesSet(torch.cat([data.times, 99 * torch.ones(3, 4)], 1),
                          torch.cat([data.values, 7 * torch.ones(3, 4, 1)], 1),
                          torch.cat([data.present, torch.ones(3, 4, 1, dtype=torch.bool)], 1),
                          torch.cat([data.role, torch.full((3, 4), ir.PAD)], 1))
    for a, b in zip(ir.SeriesSet.collate([data[i] for i in range(3)]), ir.SeriesSet.collate([padded[i] for i in range(3)])):
        assert torch.equal(a, b)


def test_a_series_encodes_alike_alone_and_in_a_batch():
    """The union of stamps adds stamps where a series has no observation: its state only flows through them
    (to the solver's tolerance)."""
    torch.manual_seed(0)
    model = LatentODE(Config(**SMALL, encoder_method="dopri5", rtol=1e-7, atol=1e-8)).double()
    data = ir.oscillators(5, 3)
    batch = [x.double() if x.is_floating_point() else x for x in ir.SeriesSet.collate([data[i] for i in range(5)])]
    alone = [x.double() if x.is_floating_point() else x for x in ir.SeriesSet.collate([data[2]])]
    with torch.no_grad():
        mu_batch = model.encode(batch[0], batch[1], batch[2])[0][2]
        mu_alone = model.encode(alone[0], alone[1], alone[2])[0][0]
    torch.testing.assert_close(mu_batch, mu_alone, rtol=1e-5, atol=1e-6)


def test_kl_term_against_the_closed_form():
    torch.manual_seed(0)
    mu, sigma = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    q = torch.distributions.Normal(mu, sigma)
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(kl_standard_normal(mu, sigma), expected)
    assert torch.allclose(kl_standard_normal(torch.zeros(2, 3), torch.ones(2, 3)), torch.zeros(2))
    # and by Monte Carlo: E_q[log q(z) - log p(z)]
    z = q.sample((200_000,))
    estimate = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(estimate, expected, rtol=0.05, atol=0.02)


def test_adjoint_gives_the_same_gradients():
    torch.manual_seed(0)
    values, times, observed, interp, _ = batch_of(3)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = LatentODE(Config(**SMALL, adjoint=adjoint, rtol=1e-6, atol=1e-7)).double()
        torch.manual_seed(1)
        loss = model.elbo(values.double(), times.double(), observed.double(), (observed + interp).double())["loss"]
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.dynamics.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-4)


def coarse_oscillators(n: int, seed: int) -> ir.SeriesSet:
    """Like the embedded set on a coarser grid (step 0.25 on [0, 5]: 21 stamps, 8 observed, 5 held out) and a
    narrower frequency range: a learning test in seconds."""
    rng = np.random.default_rng(seed)
    grid = np.arange(21) * 0.25
    stamps = np.sort(np.argsort(rng.random((n, 21)), 1)[:, :13], 1)
    role = np.where(rng.random((n, 13)).argsort(1) < 8, ir.OBSERVED, ir.INTERP)
    t = grid[stamps]
    amp, omega, phase = rng.uniform(0.5, 1.5, (n, 1)), rng.uniform(1.0, 1.5, (n, 1)), rng.uniform(0, 6.3, (n, 1))
    values = torch.tensor(amp * np.cos(omega * t + phase), dtype=torch.float32)[..., None]
    return ir.SeriesSet(torch.tensor(t, dtype=torch.float32), values, torch.ones_like(values, dtype=torch.bool),
                        torch.tensor(role))


def test_learns_to_interpolate_beyond_the_series_mean():
    """A short training run (seconds): the held-out points of unseen series, from the posterior mean, beat each
    series' observed mean (the trivial baseline) clearly (measured: mse 0.074 against the mean's 0.63)."""
    torch.manual_seed(0)
    objective = IrregularObjective(LatentODE(Config(**SMALL, kl_warmup=30, step_size=0.25)))
    train = coarse_oscillators(500, 0)
    optimizer = torch.optim.Adam(objective.parameters(), lr=2e-2)
    loader = torch.utils.data.DataLoader(train, batch_size=100, shuffle=True, collate_fn=ir.SeriesSet.collate)
    for _ in range(12):
        for batch in loader:
            loss, _ = objective.training_step(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test = coarse_oscillators(200, 1)
    values, times, observed, interp, _ = ir.SeriesSet.collate([test[i] for i in range(200)])
    objective.eval()
    logs = objective.validation_step((values, times, observed, interp, interp))
    series_mean = (values * observed).sum(1, keepdim=True) / observed.sum(1, keepdim=True)
    mean_mse = float(((series_mean - values).square() * interp).sum() / interp.sum())
    assert float(logs["mse"]) < 0.25 * mean_mse, (float(logs["mse"]), mean_mse, float(logs["gru_mse"]))


def users_csv(path, n: int = 24, seed: int = 0):
    """Damped oscillators in other units: times in hours from an offset, values around 100, random real stamps."""
    rng = np.random.default_rng(seed)
    lines = ["patient,hours,temp,pulse"]
    for s in range(n):
        t = np.sort(rng.uniform(0, 48, rng.integers(8, 15))) + 1000
        w, phase = rng.uniform(0.1, 0.3), rng.uniform(0, 6)
        for k, tk in enumerate(t):
            pulse = "" if k == 3 else f"{70 + 5 * math.sin(w * tk):.3f}"
            lines.append(f"p{s},{tk:.3f},{37 + math.cos(w * tk + phase):.3f},{pulse}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_users_csv_trains_evaluates_and_predicts(tmp_path):
    path = users_csv(tmp_path / "vitals.csv")
    data = ir.load(str(path))
    assert data.dims == {"in_features": 2} and data.spec["columns"] == ["temp", "pulse"]
    assert len(data.train) + len(data.val) + len(data.test) == 24
    result = deepatlas.train("latent_ode", data=str(path), out=tmp_path / "run",
                             overrides={"epochs": 2, "batch_size": 8, "latent": 4, "hidden": 8, "ode_width": 16})
    assert math.isfinite(result["test"]["mse"]) and "mse_vs_gru" in result["test"]
    assert (tmp_path / "run" / "predictions.png").exists()
    assert "mse" in deepatlas.evaluate(tmp_path / "run", data=str(path))
    query = tmp_path / "two.csv"
    query.write_text("patient,hours,temp,pulse\nq,500,37.2,71\nq,503.5,36.8,\nq,510,37.0,69\n")
    rows = deepatlas.predict(tmp_path / "run", str(query)).rows
    assert len(rows) == 1 and rows[0]["input"] == "q"
    times = np.array(rows[0]["times"])
    assert times[0] == pytest.approx(500) and times[-1] == pytest.approx(515, rel=1e-4)  # its span and half past it
    values, std = np.array(rows[0]["values"]), np.array(rows[0]["std"])
    assert values.shape == std.shape == (ir.PREDICT_POINTS, 2) and (std >= 0).all()
    assert 20 < values[:, 0].mean() < 60 and 40 < values[:, 1].mean() < 100  # in the file's units


@pytest.mark.parametrize("text, says", [
    ("series,time\na,1\n", ":1: expected a header row"),
    ("series,time,x\na,1,2\na,2\n", ":3: 2 cells, expected 3"),
    ("series,time,x\na,1,2\na,two,3\n", ":3: column 'time' holds 'two', not a number"),
    ("series,time,x\na,1,2\na,2,abc\n", ":3: column 'x' holds 'abc', not a number"),
    ("series,time,x\na,1,2\na,,3\n", ":3: column 'time' holds '', not a number"),
    ("series,time,x\na,1,2\na,1,3\n", ":3: series 'a' has time 1 twice"),
    ("series,time,x\na,1,inf\n", ":2: column 'x' holds 'inf', not a finite number"),
    ("series,time,x\n,1,2\n", ":2: no series id"),
])
def test_bad_csv_is_one_line_naming_file_and_line(tmp_path, text, says):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DeepAtlasError) as err:
        ir.load(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and says in message, message


def test_recommend_ranks_latent_ode_first_for_irregular_times():
    from deepatlas.tools.recommend import recommend
    answer = recommend("sequence", "forecast", needs=("irregular-times",))
    assert answer["ranked"][0]["name"] == "latent_ode"
    assert all(e["why"] == "does not offer irregular-times" for e in answer["excluded"])
