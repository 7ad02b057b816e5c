"""The "stylegan" entry: shapes; the mapping network; AdaIN and weight demodulation against their formulas; noise that
changes only fine detail and coarse styles that change the global shape; style mixing that swaps w exactly at the
crossover layer; R1 against its analytic gradient; truncation; path length; G_ema, the weight average that samples; a
short learning test on glyphs; and `deepatlas sample --mix`."""
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from deepatlas.models.generative import stylegan as sg
from deepatlas.models.generative.stylegan import Config, StyleAdversarial, StyleGAN

TINY = dict(latent=16, w_dim=16, mapping_layers=2, width=4, max_width=16)


def _objective(**kw) -> StyleAdversarial:
    torch.manual_seed(0)
    return StyleAdversarial(StyleGAN(Config(**{**TINY, **kw})))


@pytest.mark.parametrize("modulation", ["adain", "demod"])
@pytest.mark.parametrize("shape", [[1, 32, 32], [3, 16, 16], [1, 8, 8]])
def test_shapes(shape, modulation):
    obj = _objective(data_shape=shape, modulation=modulation)
    m = obj.model
    sides = [2 ** k for k in range(2, int(math.log2(shape[-1])) + 1)]
    assert m.n_layers == 2 * len(sides) and m.synthesis.layer_sides() == [s for s in sides for _ in range(2)]
    assert m.synthesis.const.shape == (1, sg.channels(m.cfg, 4), 4, 4)  # the learned constant input
    z = torch.randn(5, 16)
    w = m.mapping(z)
    assert w.shape == (5, 16)
    x = m.synthesis(w[:, None].expand(-1, m.n_layers, -1))
    assert x.shape == (5, *shape) and torch.isfinite(x).all()
    assert m.discriminator(x).shape == (5,)
    s = obj.eval().sample(7)
    assert s.shape == (7, *shape) and s.min() >= 0 and s.max() <= 1
    assert obj.mix(3).shape == (7, 4, *shape)  # figure 3: 1 + 3·2 rows, 1 + 3 columns


def test_other_sides_are_synthesized_at_the_next_power_of_two_and_resized():
    """A user's 25×25 or 12×20 images: the networks work at 32 (8 for 4×4), the samples come out at the data's
    size, and the discriminator judges the data's size."""
    for shape, side in (([1, 25, 25], 32), ([3, 12, 20], 32), ([1, 4, 4], 8)):
        m = StyleGAN(Config(data_shape=shape, **TINY))
        assert m.synthesis.resolutions[-1] == side and m.synthesis.layer_sides()[-1] == side
        x = m(torch.randn(3, m.cfg.latent))
        assert x.shape == (3, *shape) and torch.isfinite(x).all()
        assert m.discriminator(x).shape == (3,)


def test_mapping_network_normalizes_z_and_is_an_mlp():
    m = _objective(mapping_layers=3).model
    assert len(m.mapping.layers) == 3 and all(isinstance(l, sg.EqualLinear) for l in m.mapping.layers)
    z = torch.randn(6, 16)
    torch.testing.assert_close(m.mapping(z), m.mapping(3.7 * z))  # z / rms(z): only z's direction counts
    w = m.mapping(z)
    assert w.shape == (6, 16) and w.std(0).mean() > 0.1  # different z, different w
    # the mapping network learns 100× slower: its effective weight is lr_mul · W / sqrt(fan_in)
    layer = m.mapping.layers[0]
    assert layer.lr_mul == 0.01 and layer.weight.std() > 50


def test_adain_sets_each_feature_maps_mean_and_std_to_the_style():
    torch.manual_seed(0)
    cfg = Config(**TINY, modulation="adain")
    layer = sg.StyledConv(4, 6, cfg, upsample=True)
    x, w = torch.randn(3, 4, 8, 8), torch.randn(3, 16)
    y = layer(x, w, torch.randn(3, 1, 16, 16))
    y_s, y_b = layer.affine(w).chunk(2, 1)
    assert y.shape == (3, 6, 16, 16)
    torch.testing.assert_close(y.mean((2, 3)), y_b, atol=1e-4, rtol=1e-4)  # AdaIN: mean y_b, std |y_s|
    torch.testing.assert_close(y.var((2, 3), unbiased=False).sqrt(), y_s.abs(), atol=1e-3, rtol=1e-3)


def test_demodulated_convolution_equals_the_per_sample_modulated_weights():
    """StyleGAN2 (1)–(3): w'_ijk = s_i w_ijk, w''_ijk = w'_ijk / sqrt(Σ_i,k w'_ijk² + ε), one convolution per sample."""
    torch.manual_seed(0)
    cfg = Config(**TINY, modulation="demod", noise=False)
    layer = sg.StyledConv(5, 7, cfg, upsample=False)
    with torch.no_grad():
        layer.bias.normal_()
    x, w = torch.randn(3, 5, 8, 8), torch.randn(3, 16)
    s = layer.affine(w)                                                         # (B, C_in)
    weight = layer.conv.weight * layer.conv.scale                               # (C_out, C_in, 3, 3)
    expected = []
    for b in range(3):
        w1 = weight * s[b][None, :, None, None]                                   # modulate
        w2 = w1 / (w1.square().sum((1, 2, 3), keepdim=True) + 1e-8).sqrt()       # demodulate
        expected.append(F.conv2d(x[b:b + 1], w2, padding=1))
    expected = sg.lrelu(torch.cat(expected) + layer.bias[None, :, None, None])
    torch.testing.assert_close(layer(x, w, None), expected, atol=1e-5, rtol=1e-5)
    # demodulation restores unit variance: unit-variance inputs give unit-variance outputs whatever the style's scale
    # (bias 0: the output is lrelu(y)·√2 of y ~ N(0, 1), whose mean square is (1 + 0.2²) = 1.04)
    with torch.no_grad():
        layer.bias.zero_()
        for scale in (0.1, 10.0):  # the affine's weights scaled: styles s far from 1 (and zero padding at the rim)
            layer.affine.weight.mul_(scale)
            y = layer(torch.randn(64, 5, 32, 32), w[:1].expand(64, -1), None)
            layer.affine.weight.div_(scale)
            assert 0.9 < y.square().mean() < 1.2, scale


def _band_energy(d: torch.Tensor, radius: float) -> tuple[float, float]:
    """Energy of images d (B, C, H, W) at spatial frequencies below and above `radius` (cycles per image)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(d), dim=(-2, -1)).abs().square().sum((0, 1))  # (H, W)
    h = d.shape[-1]
    f = torch.arange(h) - h // 2
    r = (f[:, None].square() + f[None].square()).sqrt()
    return spectrum[r <= radius].sum().item(), spectrum[r > radius].sum().item()


@pytest.fixture(scope="module")
def noisy():
    """A 32×32 generator whose noise inputs all have strength 0.1 (they start at 0), two sets of w's, two noises."""
    obj = _objective(width=8, max_width=32)
    with torch.no_grad():
        for layer in obj.model.synthesis.layers:
            layer.noise.strength.fill_(0.1)
    torch.manual_seed(1)
    m = obj.model
    w1, w2 = m.mapping(torch.randn(32, 16)), m.mapping(torch.randn(32, 16))
    return obj, w1, w2, m.synthesis.make_noise(32, w1), m.synthesis.make_noise(32, w1)


@torch.no_grad()
def test_noise_changes_fine_detail_and_coarse_styles_the_global_shape(noisy):
    obj, w1, w2, n1, n2 = noisy
    m, L = obj.model, obj.model.n_layers
    coarse = sg.style_levels(m.synthesis.layer_sides())["coarse"]
    assert coarse == [0, 1, 2, 3]
    ws1 = w1[:, None].expand(-1, L, -1)
    ws_coarse = ws1.clone()
    ws_coarse[:, coarse] = w2[:, None]                                # only the coarse layers' style changed
    base = m.synthesis(ws1, n1)
    by_noise = m.synthesis(ws1, n2) - base                            # resampled noise, same styles
    by_coarse = m.synthesis(ws_coarse, n1) - base                     # coarse styles from w2, same noise
    by_w = m.synthesis(w2[:, None].expand(-1, L, -1), n1) - base      # every style from w2
    low_noise, high_noise = _band_energy(by_noise, 4)
    low_coarse, _ = _band_energy(by_coarse, 4)
    low_w, high_w = _band_energy(by_w, 4)
    # the noise's change lies at high frequencies (above 4 cycles per image) far more than a change of w's does
    # (measured: 0.53 of its energy against 0.28, seeds 0 and 1)
    noise_share, w_share = high_noise / (low_noise + high_noise), high_w / (low_w + high_w)
    assert noise_share > 1.5 * w_share, (noise_share, w_share)
    # coarse styles move the low frequencies (the overall shape) much more than noise does (measured: 10–20×)
    assert low_coarse > 5 * low_noise, (low_coarse, low_noise)


def test_style_mixing_swaps_w_exactly_at_the_crossover_layer():
    obj = _objective()
    m, L = obj.model, obj.model.n_layers
    seen = {}
    hooks = [layer.affine.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, inp[0].detach()))
             for i, layer in enumerate(m.synthesis.layers)]
    w1, w2 = torch.randn(4, 16), torch.randn(4, 16)
    for k in range(1, L):
        m.synthesis(sg.mix_styles(w1, w2, k, L))
        assert all(torch.equal(seen[i], w1 if i < k else w2) for i in range(L)), k
    # training: with p = 1 every batch mixes, at a crossover in 1..L−1 drawn afresh; with p = 0 none does
    obj.model.cfg.style_mixing = 1.0
    crossovers = set()
    for _ in range(40):
        ws, k = obj.draw_styles(4, w1)
        crossovers.add(k)
        assert torch.equal(ws[:, :k], ws[:, :1].expand(-1, k, -1))
        assert torch.equal(ws[:, k:], ws[:, k:k + 1].expand(-1, L - k, -1))
        assert not torch.equal(ws[:, k - 1], ws[:, k])
    assert crossovers == set(range(1, L))
    obj.model.cfg.style_mixing = 0.0
    ws, k = obj.draw_styles(4, w1)
    assert k == L and torch.equal(ws, ws[:, :1].expand(-1, L, -1))
    # and a training step does call the synthesis with mixed styles
    obj.model.cfg.style_mixing = 1.0
    torch.manual_seed(3)
    optimize = lambda name, loss: None  # noqa: E731 — only the forward is watched
    obj.training_step((torch.rand(4, 1, 32, 32),), optimize)
    per_layer = torch.stack([seen[i] for i in range(L)])  # (L, B, w_dim), D's and G's steps share one fake
    changes = [i for i in range(1, L) if not torch.equal(per_layer[i], per_layer[i - 1])]
    assert len(changes) == 1
    for h in hooks:
        h.remove()


def test_r1_penalty_equals_the_analytic_gradient_norm():
    """D(x) = c Σ x²: ∇_x D = 2c x, R1 = E‖2c x‖² = 4c² E‖x‖², dR1/dc = 8c E‖x‖² (through create_graph)."""
    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Parameter(torch.tensor(0.7))

        def forward(self, x):
            return self.c * x.square().flatten(1).sum(1)

    d, x = Quadratic(), torch.randn(5, 1, 4, 4)
    logits, r1 = sg.r1_penalty(d, x)
    norms = x.square().flatten(1).sum(1)
    torch.testing.assert_close(logits, 0.7 * norms)
    torch.testing.assert_close(r1, 4 * 0.49 * norms.mean())
    (grad,) = torch.autograd.grad(r1, d.c)
    torch.testing.assert_close(grad, 8 * 0.7 * norms.mean())


def test_r1_is_lazy_and_scaled():
    obj = _objective(r1_gamma=2.0, r1_every=3)
    losses = []
    optimize = lambda name, loss: losses.append((name, loss.item()))  # noqa: E731
    logs = [obj.training_step((torch.rand(8, 1, 32, 32),), optimize)[1] for _ in range(6)]
    assert ["r1" in l for l in logs] == [True, False, False, True, False, False]
    d_losses = [v for name, v in losses if name == "discriminator"]
    expected = logs[0]["d_loss"] + 2.0 / 2 * logs[0]["r1"] * 3  # + (γ/2) R1 × r1_every
    torch.testing.assert_close(d_losses[0], expected.item(), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_truncation_psi_0_is_the_average_image_and_psi_1_no_truncation():
    obj = _objective()
    m = obj.model
    g = m.sampler()  # G_ema samples, truncated towards the w_avg tracked in training
    m.w_avg.copy_(torch.randn(16))
    z = torch.randn(5, 16)
    noise = [n.expand(5, -1, -1, -1) for n in g.synthesis.make_noise(1, z)]
    average = g.synthesis(m.w_avg.expand(5, m.n_layers, -1), noise)
    torch.testing.assert_close(m(z, psi=0.0, noise=noise), average)
    w = g.mapping(z)
    torch.testing.assert_close(m(z, psi=1.0, noise=noise), g.synthesis(w[:, None].expand(-1, m.n_layers, -1), noise))
    half = m(z, psi=0.5, noise=noise)
    truncated = m.w_avg + 0.5 * (w - m.w_avg)  # w' = w_avg + ψ (w − w_avg)
    torch.testing.assert_close(half, g.synthesis(truncated[:, None].expand(-1, m.n_layers, -1), noise))


def test_w_avg_is_the_moving_average_of_w_over_training():
    obj = _objective(style_mixing=0.0, w_avg_beta=0.9)
    m = obj.model
    seen = []
    hook = m.mapping.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().mean(0)))
    torch.manual_seed(4)
    obj.training_step((torch.rand(8, 1, 32, 32),), lambda name, loss: None)
    hook.remove()
    torch.testing.assert_close(m.w_avg, 0.1 * seen[0])  # from 0: (1 − β) · mean(w)


def test_slerp_and_path_lengths():
    a, b = torch.randn(4, 16), torch.randn(4, 16)
    torch.testing.assert_close(sg.slerp(a, b, torch.zeros(4, 1)), F.normalize(a, dim=-1))
    torch.testing.assert_close(sg.slerp(a, b, torch.ones(4, 1)), F.normalize(b, dim=-1))
    assert torch.allclose(sg.slerp(a, b, torch.rand(4, 1)).norm(dim=-1), torch.ones(4), atol=1e-5)  # on the sphere
    obj = _objective().eval()
    pixels = lambda x: (x.flatten(1), None)  # noqa: E731 — features: the pixels themselves
    d = obj.path_lengths(pixels, "w", n=32)
    assert d.shape == (32,) and (d > 0).all() and torch.isfinite(d).all()
    # a generator that ignores w has zero path length (the sampling generator, G_ema, is the one measured)
    with torch.no_grad():
        for layer in obj.model.sampler().synthesis.layers:
            layer.affine.weight.zero_()
    assert obj.path_lengths(pixels, "z", n=8).abs().max() < 1e-3
    assert sg.StyleAdversarial.trimmed_mean(torch.cat([torch.ones(98), torch.tensor([1e6, -1e6])]).double()) == 1.0


def test_g_ema_averages_mapping_and_synthesis_and_is_what_samples():
    """G_ema: θ̄ ← d·θ̄ + (1 − d)·θ over the mapping and synthesis weights after each step of G (d warmed up
    as min(d, (1 + n) / (10 + n))); G's optimizer does not hold the copies; sampling, mixing and PPL use it."""
    obj = _objective(ema_decay=0.5)
    m = obj.model
    g_ema = m.sampler()
    assert g_ema is m.ema.net and not any(p.requires_grad for p in g_ema.parameters())
    names = {n for n, _ in m.named_parameters()}
    assert {f"ema.net.{n}" for n, _ in m.generator().named_parameters()} <= names  # saved with the model
    stepped = {id(p) for group in obj.optimizer_groups()["generator"] for p in group["params"]}
    assert stepped == {id(p) for p in m.generator().parameters()}  # G's own weights, not the average's
    optimizers = {k: torch.optim.Adam(g, lr=1e-2, betas=(0.0, 0.99)) for k, g in obj.optimizer_groups().items()}

    def optimize(name, loss):
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    expected = [p.detach().clone() for p in m.generator().parameters()]
    for n in range(1, 4):
        obj.training_step((torch.rand(8, 1, 32, 32),), optimize)
        d = min(0.5, (1 + n) / (10 + n))
        expected = [e.lerp(p.detach(), 1 - d) for e, p in zip(expected, m.generator().parameters())]
    for avg, e, p in zip(g_ema.parameters(), expected, m.generator().parameters()):
        torch.testing.assert_close(avg, e)
    assert not torch.equal(g_ema.synthesis.const, m.synthesis.const)  # the average lags the trained weights
    # the samples are G_ema's: changing G leaves them, changing G_ema changes them
    obj.eval()

    def draw():
        torch.manual_seed(5)
        return obj.sample(4), obj.mix(2), obj.path_lengths(lambda x: (x.flatten(1), None), "w", n=8)

    before = draw()
    with torch.no_grad():
        m.synthesis.const.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, draw()))
    with torch.no_grad():
        g_ema.synthesis.const.add_(1.0)
    assert not any(torch.equal(a, b) for a, b in zip(before, draw()))
    # ema_decay 0: no copy, G itself samples
    plain = _objective(ema_decay=0.0).model
    assert plain.ema is None and plain.sampler().synthesis is plain.synthesis
    assert not any(n.startswith("ema.") for n, _ in plain.named_parameters())


@torch.no_grad()
def test_mix_grid_is_figure_3():
    obj = _objective().eval()
    m = obj.model.sampler()  # G_ema's mapping and synthesis
    torch.manual_seed(7)
    grid = obj.mix(3)
    assert grid.shape == (7, 4, 1, 32, 32) and grid[0, 0].abs().max() == 0
    torch.manual_seed(7)  # the same draws again: sources A, sources B, then the grid's one noise
    w_a, w_b = m.mapping(obj.noise(6, grid)), m.mapping(obj.noise(3, grid))
    noise = m.synthesis.make_noise(1, grid)
    levels = sg.style_levels(m.synthesis.layer_sides())

    def image(ws):
        return obj.to_data(m.synthesis(ws[None], [n for n in noise]))[0]

    L = obj.model.n_layers
    for c in range(3):
        torch.testing.assert_close(grid[0, 1 + c], image(w_b[c].expand(L, -1)), atol=1e-5, rtol=1e-5)
    for r, level in enumerate(["coarse", "coarse", "middle", "middle", "fine", "fine"]):
        torch.testing.assert_close(grid[1 + r, 0], image(w_a[r].expand(L, -1)), atol=1e-5, rtol=1e-5)
        ws = w_a[r].expand(L, -1).clone()
        ws[levels[level]] = w_b[2]
        torch.testing.assert_close(grid[1 + r, 3], image(ws), atol=1e-5, rtol=1e-5)


def test_stylegan_learns_glyphs():
    """A tiny StyleGAN trained for 150 steps on glyphs moves its samples' mean ink to the data's (mostly black: the
    start's outputs are grey) and lowers the FD of its samples; a generator that does not learn does neither."""
    from deepatlas.tasks.glyphs_judge import _splits, glyphs_scores
    parts = _splits()
    x, real = parts["train"][0], parts["test"][0][:600]
    obj = _objective(width=4, max_width=16, latent=32, w_dim=32, modulation="demod", r1_gamma=0.05)
    optimizers = {k: torch.optim.Adam(g, lr=5e-3, betas=(0.0, 0.99)) for k, g in obj.optimizer_groups().items()}

    def optimize(name, loss):
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    def measured() -> tuple[float, float]:
        torch.manual_seed(1)
        samples = obj.eval().sample(600)
        return glyphs_scores(samples, real)["glyphs_fd"], (samples.mean() - real.mean()).abs().item()

    fd_before, ink_before = measured()
    obj.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        obj.training_step((x[torch.randint(len(x), (32,), generator=generator)],), optimize)
    fd_after, ink_after = measured()
    assert ink_after < 0.4 * ink_before, (ink_before, ink_after)  # measured: 0.287 -> 0.070
    assert fd_after < 0.9 * fd_before, (fd_before, fd_after)  # measured: 11,429 -> 8,946


STEPS = 150


def test_sample_mix_via_the_cli(tmp_path, cli_run):
    run = tmp_path / "run"
    code, out, err = cli_run("train", "stylegan", "--max-time", "3", "--out", run, "--set", "width=4",
                             "--set", "max_width=8", "--set", "latent=8", "--set", "w_dim=8",
                             "--set", "mapping_layers=1", "--set", "epochs=1")
    assert code == 0, err[-2000:]
    code, out, err = cli_run("sample", run, "--mix", "-n", "3")
    assert code == 0 and "3 style-mixing columns" in out, err
    width, height = Image.open(run / "mixing.png").size
    assert width * 7 == height * 4  # 1 + 3 columns, 1 + 6 rows of equal cells
    code, out, _ = cli_run("sample", run, "-n", "4", "--out", tmp_path / "s.png")
    assert code == 0 and Image.open(tmp_path / "s.png").size == (width // 2, width // 2)  # 2 × 2 cells
    code, _, err = cli_run("sample", run, "--mix", "--interpolate")
    assert code == 2 and "choose one" in err
    import json
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert {"glyphs_fd", "ppl_w", "ppl_z", "ppl_ratio"} <= set(test)
    assert test["ppl_ratio"] == pytest.approx(test["ppl_w"] / test["ppl_z"])


def test_a_users_folder_of_another_size_trains_keeps_the_latest_and_samples_at_its_size(tmp_path, cli_run):
    """A user's 20×20 images have no judge and D's loss does not rank generators: the latest weights are kept
    (not the first epoch's), and the samples come back at 20×20, as a grid and as one PNG each."""
    import json

    import numpy as np
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    code, out, err = cli_run("train", "stylegan", "--data", folder, "--out", run, "--set", "width=4",
                             "--set", "max_width=8", "--set", "latent=8", "--set", "w_dim=8",
                             "--set", "mapping_layers=1", "--set", "epochs=4")
    assert code == 0, err[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["best_epoch"] == 4
    code, out, err = cli_run("sample", run, "-n", "5")
    assert code == 0, err
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"sample-{i}.png" for i in range(5)]
    assert Image.open(run / "samples" / "sample-0.png").size == (20, 20)
