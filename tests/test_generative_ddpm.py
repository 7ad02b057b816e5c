"""The "ddpm" entry: the forward process's closed form against its chain, the posterior against Bayes' rule,
the cosine schedule against its definition, DDIM's two limits (η = 1 is the ancestral step, η = 0 ignores the
noise), improved DDPM's variances and bound, our steps beside diffusers' schedulers, the U-Net's shapes and
time conditioning, EMA, a short learning test and the sampling CLI."""
import math

import pytest
import torch

import deepatlas
from deepatlas.models.generative import ddpm
from deepatlas.models.generative.ddpm import (DDPM, Config, Diffusion, Schedule, cosine_alpha_bar, cosine_betas,
                                               discretized_gaussian_nll, linear_betas, model_log_variance, normal_kl,
                                               posterior, predict_x0, q_sample, spaced, vlb_terms)
from deepatlas.nn.ema import EMA
from deepatlas.nn.unet import Attention, UNet


def _objective(**kw) -> Diffusion:
    torch.manual_seed(0)
    cfg = dict(data_shape=[1, 8, 8], channels=8, mults=[1, 2], timesteps=100)
    return Diffusion(DDPM(Config(**{**cfg, **kw}))).eval()


@pytest.mark.parametrize("t", [0, 40, 400, 999])
def test_closed_form_q_equals_t_steps_of_the_chain(t):
    s = Schedule(linear_betas(1000, 1e-4, 0.02))
    x0 = torch.tensor([0.8, -0.3, 0.0], dtype=torch.float64).repeat(40_000, 1)  # 40k chains from three points
    generator = torch.Generator().manual_seed(t)
    x = x0.clone()
    for step in range(t + 1):  # q(x_s | x_{s−1}) = N(√(1 − β_s) x_{s−1}, β_s)
        beta = s.beta[step]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    abar = s.abar[t]
    torch.testing.assert_close(x.mean(0), abar.sqrt() * x0[0], atol=0.015, rtol=0)
    torch.testing.assert_close(x.var(0), (1 - abar).expand(3), atol=0.03 * (1 - abar).item() + 1e-4, rtol=0)
    closed = q_sample(s, x0[:, :, None, None], torch.full((len(x0),), t), torch.randn(x0.shape, generator=generator,
                                                                                         dtype=x0.dtype)[:, :, None, None])
    torch.testing.assert_close(closed.mean(0).flatten(), x.mean(0), atol=0.02, rtol=0)  # the same moments
    torch.testing.assert_close(closed.var(0).flatten(), x.var(0), atol=0.03 * (1 - abar).item() + 1e-4, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_is_bayes_rule_of_the_forward_process(schedule):
    betas = linear_betas(1000, 1e-4, 0.02) if schedule == "linear" else cosine_betas(1000)
    s = Schedule(betas)
    i = torch.tensor([1, 10, 500, 998])
    x0, xt = torch.randn(4, 1, 1, 1, dtype=torch.float64), torch.randn(4, 1, 1, 1, dtype=torch.float64)
    mean, var = posterior(s, x0, xt, i)
    # q(x_{t−1} | x_0) q(x_t | x_{t−1}), completed to a square: precision and mean of the product of Gaussians
    beta, abar_prev = betas[i].view(-1, 1, 1, 1), torch.cumprod(1 - betas, 0)[i - 1].view(-1, 1, 1, 1)
    precision = (1 - beta) / beta + 1 / (1 - abar_prev)
    want_mean = ((1 - beta).sqrt() / beta * xt + abar_prev.sqrt() / (1 - abar_prev) * x0) / precision
    torch.testing.assert_close(mean, want_mean)
    torch.testing.assert_close(var, 1 / precision)


def test_cosine_schedule_alpha_bar_is_the_papers_definition():
    T = 1000
    abar = torch.cumprod(1 - cosine_betas(T), 0)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    s = 0.008
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    unclipped = cosine_betas(T) < 0.999
    torch.testing.assert_close(abar[unclipped], f[unclipped], rtol=1e-10, atol=1e-12)
    assert unclipped[:-1].all()  # only the very last β reaches the 0.999 cap
    torch.testing.assert_close(cosine_alpha_bar(torch.tensor([0.0]), T), torch.tensor([1.0]))
    # the linear schedule is pure noise (ᾱ < 1e-3) for its last 15% of steps, where the cosine one still keeps 5% of the signal
    assert torch.cumprod(1 - linear_betas(T, 1e-4, 0.02), 0)[850] < 1e-3 < 0.05 < abar[850]


def test_respacing_keeps_the_alpha_bars_of_the_kept_steps():
    betas = linear_betas(1000, 1e-4, 0.02)
    ts = spaced(1000, 50)
    assert ts.tolist() == list(range(0, 1000, 20))
    full, sub = Schedule(betas), Schedule(betas, ts)
    torch.testing.assert_close(sub.abar, full.abar[ts])
    torch.testing.assert_close(torch.cumprod(1 - sub.beta, 0), sub.abar)  # β′ = 1 − ᾱ_k/ᾱ_{k−1}
    with pytest.raises(ValueError):
        spaced(1000, 1001)


def test_ddim_with_eta_one_is_the_ancestral_step_and_eta_zero_ignores_the_noise():
    obj = _objective(clip=False, timesteps=1000)
    s = Schedule(ddpm.make_betas(obj.model.cfg), spaced(1000, 50))
    x, out = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    zero, z1, z2 = torch.zeros_like(x), torch.randn_like(x), torch.randn_like(x)
    for k in (1, 20, 49):
        # same mean, and the same spread (the noise's coefficient) as the respaced ancestral step: β̃′
        torch.testing.assert_close(obj.step(s, x, k, out, zero, "ddim", 1.0), obj.step(s, x, k, out, zero, "ancestral", 1.0),
                                   atol=1e-5, rtol=1e-5)
        spread_ddim = obj.step(s, x, k, out, z1, "ddim", 1.0) - obj.step(s, x, k, out, zero, "ddim", 1.0)
        spread_anc = obj.step(s, x, k, out, z1, "ancestral", 1.0) - obj.step(s, x, k, out, zero, "ancestral", 1.0)
        torch.testing.assert_close(spread_ddim, spread_anc, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(spread_anc, s.post_var[k].sqrt().float() * z1)
        # η = 0: deterministic whatever noise is handed to it; the ancestral step is not
        assert torch.equal(obj.step(s, x, k, out, z1, "ddim", 0.0), obj.step(s, x, k, out, z2, "ddim", 0.0))
        assert not torch.allclose(obj.step(s, x, k, out, z1, "ancestral", 0.0), obj.step(s, x, k, out, z2, "ancestral", 0.0))
    # whole chains: η = 0 from one x_T is one image whatever the seed of the noise draws
    with torch.no_grad():
        torch.manual_seed(1)
        a = obj.sample(3, steps=10, sampler="ddim", eta=0.0)
        torch.manual_seed(1)
        b = obj.sample(3, steps=10, sampler="ddim", eta=0.0)
    assert torch.equal(a, b)


def test_learned_variance_interpolates_between_beta_and_beta_tilde_and_the_bound():
    s = Schedule(cosine_betas(1000))
    i = torch.tensor([3, 300, 900])
    like = torch.zeros(3, 1, 2, 2)
    torch.testing.assert_close(model_log_variance(s, i, torch.ones_like(like), like), s.at("beta", i, like).log().expand_as(like))
    torch.testing.assert_close(model_log_variance(s, i, -torch.ones_like(like), like), s.at("post_log_var", i, like).expand_as(like))
    # KL of a Gaussian to itself is 0, and matches the closed form on a known pair
    assert normal_kl(torch.tensor(0.3), torch.tensor(-1.0), torch.tensor(0.3), torch.tensor(-1.0)).abs() < 1e-7
    want = math.log(2 / 1) + (1 + (1 - 0) ** 2) / (2 * 4) - 0.5  # KL(N(1, 1) || N(0, 4))
    torch.testing.assert_close(normal_kl(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(math.log(4))),
                               torch.tensor(want))
    # the decoder's bins: a narrow Gaussian on a bin centre puts almost all its mass in the bin
    x = torch.tensor([-1.0, 0.0 + 1 / 255, 1.0])
    assert discretized_gaussian_nll(x, x, torch.full((3,), math.log(1e-6))).max() < 1e-3
    # with the true ε the bound's KL terms vanish (t > 0) and the model's variance β̃
    x0, noise = torch.rand(3, 1, 4, 4) * 2 - 1, torch.randn(3, 1, 4, 4)
    xt = q_sample(s, x0, i, noise)
    assert vlb_terms(s, x0, xt, i, noise, None).abs().max() < 1e-4
    assert (vlb_terms(s, x0, xt, i, noise + 0.1, None) > 1e-5).all()


def test_hybrid_loss_trains_the_variance_and_not_the_mean_through_the_bound():
    obj = _objective(learn_sigma=True, hybrid_lambda=1.0).train()
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    out = obj.model.net(x0, torch.zeros(4))
    assert out.shape == (4, 2, 8, 8)  # ε and v
    logs = obj.losses(x0, obj.model.net, torch.Generator().manual_seed(0))
    assert set(logs) == {"loss", "l_simple", "l_vlb"}
    # the gradient of L_vlb alone reaches the network only through v: ε's half of the output layer gets none
    obj.zero_grad()
    logs["l_vlb"].backward()
    weight = obj.model.net.out[-1].weight.grad  # (2C, ch, 3, 3): rows 0..C−1 make ε, C..2C−1 make v
    assert weight[:1].abs().max() == 0 and weight[1:].abs().max() > 0


def _in_float64(scheduler):
    scheduler.betas = scheduler.betas.double()
    scheduler.alphas = 1 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, 0)
    return scheduler


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noising_and_steps_equal_diffusers_schedulers(schedule):
    diffusers = pytest.importorskip("diffusers")
    name = {"linear": "linear", "cosine": "squaredcos_cap_v2"}[schedule]
    obj = _objective(timesteps=1000, noise_schedule=schedule)
    s = obj.model.schedule
    x0, noise = torch.rand(5, 1, 8, 8) * 2 - 1, torch.randn(5, 1, 8, 8)
    t = torch.tensor([0, 1, 250, 700, 999])
    # diffusers keeps its schedule in float32, where 1 − ᾱ near t = 0 loses digits to cancellation (its steps there
    # land up to 5e-5 from the exact float64 ones); with its arrays in float64 the formulas agree to 1e-5
    theirs = _in_float64(diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name))
    torch.testing.assert_close(q_sample(s, x0, t, noise), theirs.add_noise(x0, noise, t).float(), atol=1e-5, rtol=1e-5)
    # the ancestral step (fixed small variance β̃, x̂_0 clipped) for one model output and one noise draw
    x, out = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    for k in (999, 500, 10, 1, 0):
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
        want = theirs.step(out, k, x, generator=torch.Generator().manual_seed(k)).prev_sample.float()
        torch.testing.assert_close(obj.step(s, x, k, out, z, "ancestral", 0.0), want, atol=1e-5, rtol=1e-5)
    # DDIM at 50 steps, η = 0 and η = 1 (its variance noise handed over)
    ddim = _in_float64(diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=name))
    ddim.set_timesteps(50)
    sub = Schedule(ddpm.make_betas(obj.model.cfg), spaced(1000, 50))
    assert sorted(ddim.timesteps.tolist()) == sub.ts.tolist()
    for k in (49, 30, 1, 0):
        t = int(sub.ts[k])
        z = torch.randn_like(x)
        for eta in (0.0, 1.0):
            want = ddim.step(out, t, x, eta=eta, variance_noise=z).prev_sample.float()
            torch.testing.assert_close(obj.step(sub, x, k, out, z, "ddim", eta), want, atol=1e-5, rtol=1e-5)


def test_unet_shapes_time_conditioning_and_attention_at_the_lowest_resolution():
    torch.manual_seed(0)
    net = UNet(3, 6, channels=8, mults=(1, 2, 2), blocks=2)
    x = torch.randn(2, 3, 16, 16)
    out = net(x, torch.tensor([5.0, 500.0]))
    assert out.shape == (2, 6, 16, 16)
    # the noise level changes the output: the same image at two times gives two outputs
    assert not torch.allclose(net(x[:1], torch.tensor([5.0])), net(x[:1], torch.tensor([500.0])))
    # attention only at the lowest (4×4) level: hook its inputs
    sizes = []
    hooks = [m.register_forward_hook(lambda m, a, o: sizes.append(a[0].shape[-1]))
             for m in net.modules() if isinstance(m, Attention)]
    net(x, torch.tensor([1.0, 2.0]))
    for h in hooks:
        h.remove()
    assert sizes and set(sizes) == {4}


def test_ema_follows_the_weights_with_its_decay():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
        start = ema.net.weight.clone()
    for _ in range(20):
        ema.update(net)
    assert not ema.net.weight.requires_grad
    assert (ema.net.weight - 1).abs().max() < (start - 1).abs().max() * 1e-4
    assert ema.updates.item() == 20


def test_sampling_shapes_samplers_and_trajectory():
    obj = _objective()
    x = obj.sample(5, steps=4, sampler="ancestral")
    assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    images, frames = obj.sample(3, steps=30, sampler="ddim", trajectory=True)
    assert images.shape == (3, 1, 8, 8) and frames.shape[1:] == (3, 1, 8, 8) and 15 <= len(frames) <= 21
    torch.testing.assert_close(frames[-1], images)
    with pytest.raises(ValueError):
        obj.sample(2, sampler="pc")
    with pytest.raises(ValueError):
        obj.sample(2, steps=101)


def test_learns_digits_and_the_sampling_cli(tmp_path, cli_run):
    """~25 s of training on 8×8 digits: samples move from noise to digit-like (digits-FD of noise is ~290, of the
    untrained model's samples far above), and the CLI writes the grid, each PNG and the trajectory GIF. Samples are
    scored on the test split only: the validation split's loss picked the epoch, and scoring it too would double the
    sampling cost."""
    run = tmp_path / "run"
    result = deepatlas.train("ddpm", overrides={"data": "digits", "channels": "16", "mults": "1,2", "timesteps": "200",
                                                "epochs": "20", "batch_size": "32", "lr": "2e-3", "ema_decay": "0.99", "sample_steps": "20"},
                             max_time=60, out=run)
    fd = result["test"]["digits_fd"]
    assert fd < 60, fd
    assert "l_simple" in result["val"] and "digits_fd" not in result["val"]
    code, out, err = cli_run("sample", run, "-n", "9", "--steps", "10", "--sampler", "ancestral", "--trajectory")
    assert code == 0, err
    assert (run / "samples.png").exists() and len(list((run / "samples").glob("sample-*.png"))) == 9
    assert (run / "samples-trajectory.gif").exists()
    code, out, err = cli_run("sample", run, "--sampler", "pc")
    assert code == 2 and "ddim or ancestral" in err


def test_images_the_unet_cannot_halve_are_padded_and_cropped_back():
    """A user's 25×25 faces: the U-Net halves twice, so it pads to 28 by repeating the edges and crops back; the
    padding must not leak: the output's pixels depend on the input's pixels only, and samples keep the data's size."""
    model = DDPM(Config(data_shape=[1, 25, 25], channels=8, timesteps=20))
    x = torch.rand(2, 1, 25, 25, requires_grad=True)
    out = model.net(x, torch.full((1,), 5.0))
    assert out.shape == (2, 1, 25, 25)
    out[0, 0, 24, 24].backward()  # the corner next to the padding still sees its neighbourhood
    assert x.grad[0, 0, 22:, 22:].abs().sum() > 0 and x.grad[1].abs().sum() == 0
    assert Diffusion(model).eval().sample(3, steps=5).shape == (3, 1, 25, 25)
    net = DDPM(Config(data_shape=[1, 24, 28], channels=8)).net
    assert net(torch.zeros(1, 1, 24, 28), torch.zeros(1)).shape == (1, 1, 24, 28)
