"""The "cyclegan" entry: the generators' and PatchGANs' shapes, a patch logit that sees only its receptive field, the
least-squares, cycle and identity losses against their formulas, the history of 50 fakes, updates that move one
pair of players only, unpaired loading that never pairs an example with its own counterpart, a short learning test,
and `predict` / `sample` through the CLI."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from deepatlas import catalog
from deepatlas.data import unpaired
from deepatlas.errors import DeepAtlasError
from deepatlas.models.generative.cyclegan import (Config, CycleConsistent, CycleGAN, Generator, History,
                                                  PatchDiscriminator, ResidualBlock, cycle_loss, identity_loss,
                                                  lsgan_d_loss, lsgan_g_loss)


def _objective(**kw) -> CycleConsistent:
    torch.manual_seed(0)
    return CycleConsistent(CycleGAN(Config(**{"width": 4, "blocks": 1, **kw})))


def test_shapes_and_the_papers_layers():
    obj = _objective(channels_a=1, channels_b=3, blocks=2)
    m = obj.model
    assert m.channels == 3  # grey A enters replicated
    a, b = torch.rand(2, 1, 32, 32), torch.rand(2, 3, 32, 32)
    assert m.gen_ab(m.enter(a)).shape == (2, 3, 32, 32) and m.gen_ab(m.enter(a)).abs().max() <= 1  # tanh
    fake_b, fake_a = m.translate(a), m.translate(b, reverse=True)
    assert fake_b.shape == (2, 3, 32, 32) and fake_a.shape == (2, 1, 32, 32)  # grey domain: channels averaged
    assert 0 <= fake_b.min() and fake_b.max() <= 1
    assert m.disc_b(m.enter(b)).shape == (2, 1, 14, 14)  # a map of patch logits, not one logit: 32 -> 16 -> 15 -> 14
    assert obj.infer(a).shape == (2, 3, 32, 32)
    layers = list(m.gen_ab.net)
    assert isinstance(layers[0], nn.ReflectionPad2d) and layers[1].kernel_size == (7, 7)  # c7s1-k
    assert isinstance(layers[-1], nn.Tanh) and layers[-2].kernel_size == (7, 7)  # c7s1-3, tanh
    assert sum(isinstance(l, nn.Conv2d) and l.stride == (2, 2) for l in layers) == 2  # d2k, d4k
    assert sum(isinstance(l, nn.ConvTranspose2d) for l in layers) == 2  # u2k, uk
    assert sum(isinstance(l, ResidualBlock) for l in layers) == 2
    assert any(isinstance(l, nn.InstanceNorm2d) for l in layers) and not any(
        isinstance(l, nn.BatchNorm2d) for l in m.modules())
    d = list(m.disc_a.net)
    assert isinstance(d[1], nn.LeakyReLU) and d[1].negative_slope == 0.2  # no norm on the first layer
    assert PatchDiscriminator(3, 4, 3).receptive_field == 70  # the paper's 70×70 PatchGAN
    assert PatchDiscriminator(3, 4, 1).receptive_field == 16
    assert Generator(3, 4, 1)(torch.rand(1, 3, 30, 30)).shape == (1, 3, 30, 30)  # padded to halve twice, cropped


def test_a_patch_logit_sees_only_its_receptive_field():
    """Each logit's convolutions see a receptive_field-wide window; instance norm adds only each channel's mean and
    variance over the whole map, which a far pixel moves a little: with the norms taken out, the logit is local."""
    torch.manual_seed(0)
    d = PatchDiscriminator(3, 4, 2)  # receptive field 34, on a 96×96 input
    x = torch.randn(1, 3, 96, 96, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x)[0, 0, 0, 0], x)
    near, far = grad[..., :34, :34].abs().mean(), grad[..., 40:, 40:].abs().mean()  # per pixel
    assert far < 0.1 * near  # through the norms' statistics only
    for i, layer in enumerate(d.net):
        if isinstance(layer, nn.InstanceNorm2d):
            d.net[i] = nn.Identity()
    out = d(x)  # (1, 1, 22, 22)
    (grad,) = torch.autograd.grad(out[0, 0, 0, 0], x)
    rows, cols = grad.abs().sum((0, 1)).nonzero(as_tuple=True)
    assert rows.max() < d.receptive_field and cols.max() < d.receptive_field  # padding trims the first patch
    moved = x.detach().clone()
    moved[..., 80:, 80:] += 5.0  # far from the first patch
    with torch.no_grad():
        changed = d(moved) != out.detach()
    assert not changed[0, 0, 0, 0] and changed[0, 0, -1, -1]  # the near patch moved, the far one did not


def test_least_squares_losses_match_their_formulas():
    real, fake = torch.tensor([[0.9, 1.3], [0.2, -0.4]]), torch.tensor([[0.1, -0.5], [0.8, 0.0]])
    want_d = 0.5 * (((real - 1) ** 2).mean() + (fake ** 2).mean())
    torch.testing.assert_close(lsgan_d_loss(real, fake), want_d)
    torch.testing.assert_close(lsgan_g_loss(fake), ((fake - 1) ** 2).mean())
    assert lsgan_d_loss(torch.ones(4), torch.zeros(4)) == 0 and lsgan_g_loss(torch.ones(4)) == 0  # optima
    # unlike the log loss, the square does not saturate: a fake scored far on the real side still gets a gradient
    logit = torch.tensor([5.0], requires_grad=True)
    (g,) = torch.autograd.grad(lsgan_g_loss(logit), logit)
    assert g.item() == pytest.approx(2 * (5.0 - 1))


def test_cycle_and_identity_losses_and_the_generators_objective():
    a, b, ra, rb = (torch.rand(2, 3, 8, 8) for _ in range(4))
    torch.testing.assert_close(cycle_loss(a, ra, b, rb), (ra - a).abs().mean() + (rb - b).abs().mean())
    torch.testing.assert_close(identity_loss(a, ra, b, rb), (ra - a).abs().mean() + (rb - b).abs().mean())
    obj = _objective(channels_a=3, channels_b=3)
    assert obj.model.cfg.lambda_cycle == 10 and obj.model.cfg.lambda_identity == 0.5  # the paper's λ, λ_id
    m = obj.model
    a, b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    loss, parts = obj.generator_losses(a, b)
    G, Fn = m.gen_ab, m.gen_ba
    adv = ((m.disc_b(G(a)) - 1) ** 2).mean() + ((m.disc_a(Fn(b)) - 1) ** 2).mean()
    cyc = (Fn(G(a)) - a).abs().mean() + (G(Fn(b)) - b).abs().mean()
    idt = (Fn(a) - a).abs().mean() + (G(b) - b).abs().mean()
    torch.testing.assert_close(parts["cycle"], cyc)
    torch.testing.assert_close(parts["identity"], idt)
    torch.testing.assert_close(loss, adv + 10 * cyc + 0.5 * 10 * idt)
    off = _objective(channels_a=3, channels_b=3, lambda_identity=0.0)
    loss_off, parts_off = off.generator_losses(a, b)
    torch.testing.assert_close(loss_off, parts_off["g_adv"] + 10 * parts_off["cycle"])


def test_history_shows_a_past_image_half_the_time_and_holds_at_most_50():
    torch.manual_seed(0)
    history = History(50)
    shown_past, new_shown, seen = 0, 0, 0
    for step in range(200):
        fakes = torch.arange(step * 8, step * 8 + 8).float().view(8, 1, 1, 1)  # each image its own number
        out = history(fakes)
        assert out.shape == fakes.shape and len(history.images) <= 50
        if step >= 7:  # the pool is full (50 images after 7 batches of 8)
            past = out.flatten() < step * 8
            shown_past += int(past.sum())
            seen += 8
            stored = {float(t) for t in history.images}
            # every new image is stored, whether it was shown or it took a shown past image's place
            assert sum(v in stored for v in fakes.flatten().tolist()) >= int(past.sum())
            new_shown += int((~past).sum())
    share = shown_past / seen
    assert abs(share - 0.5) < 3 * math.sqrt(0.25 / seen), share  # probability ½
    assert len(history.images) == 50
    assert torch.equal(History(0)(fakes), fakes)  # pool_size 0: the latest fakes only


def test_each_optimize_call_moves_one_pair_only():
    obj = _objective(channels_a=1, channels_b=3).train()
    groups = obj.optimizer_groups()
    assert set(groups) == {"generators", "discriminators"}
    optimizers = {k: torch.optim.Adam(g, lr=1e-2) for k, g in groups.items()}
    m = obj.model
    players = {"generators": [m.gen_ab, m.gen_ba], "discriminators": [m.disc_a, m.disc_b]}

    def snapshot():
        return {k: [p.detach().clone() for net in nets for p in net.parameters()] for k, nets in players.items()}

    calls = []

    def optimize(name, loss):
        before = snapshot()
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        after = snapshot()
        other = "generators" if name == "discriminators" else "discriminators"
        assert all(torch.equal(x, y) for x, y in zip(before[other], after[other])), f"{name} step moved {other}"
        assert any(not torch.equal(x, y) for x, y in zip(before[name], after[name]))
        calls.append(name)

    batch = (torch.rand(4, 1, 16, 16), torch.zeros(4, dtype=torch.long), torch.rand(4, 3, 16, 16),
             torch.zeros(4, dtype=torch.long))
    loss, logs = obj.training_step(batch, optimize)
    assert calls == ["generators", "discriminators"] and torch.isfinite(loss)
    assert {"g_loss", "g_adv", "cycle", "identity", "d_loss"} <= set(logs)
    assert len(obj.history_a.images) == 4 and len(obj.history_b.images) == 4  # the fakes went into the histories


def test_unpaired_loading_never_pairs_an_example_with_its_counterpart():
    data = unpaired.load_for(catalog.Data(data="glyphs>glyphs-m"))
    assert data.dims == {"channels_a": 1, "channels_b": 3}
    train = data.train
    # glyphs and glyphs-m share examples and split: train.a[i] and train.b[i] are one character drawn twice
    assert torch.equal(train.y_a, train.y_b)
    torch.manual_seed(0)
    batches = list(DataLoader(train, batch_size=500, shuffle=True))[:4]
    same_class = torch.cat([y_a == y_b for _, y_a, _, y_b in batches]).float().mean().item()
    assert same_class < 0.06  # chance is 1/36 ≈ 0.028; paired loading would give 1
    torch.manual_seed(0)
    first = [int(train.b_index(0)) for _ in range(200)]
    assert len(set(first)) > 150  # example 0 of A meets a different b almost every time
    held = data.test
    assert [held.b_index(i) for i in range(5)] == [held.b_index(i) for i in range(5)]  # fixed for evaluation
    with pytest.raises(DeepAtlasError):
        unpaired.load_for(catalog.Data(data="glyphs"))


def _folder(root, sizes=((24, 24), (40, 20)), n=12):
    for domain, size, mode in (("A", sizes[0], "L"), ("B", sizes[1], "RGB")):
        (root / domain).mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(n):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / domain / f"{i}.png")
    return root


def test_a_folder_with_a_and_b_is_two_domains(tmp_path):
    root = _folder(tmp_path / "pair")
    data = unpaired.load_for(catalog.Data(data=str(root)))
    a, _, b, _ = data.train[0]
    assert a.shape == (1, 24, 24) and b.shape == (3, 24, 24)  # B resized to A's size
    assert data.spec["domains"] is None and len(data.train) + len(data.val) + len(data.test) == 12
    (tmp_path / "flat").mkdir()
    with pytest.raises(DeepAtlasError, match="A/ and B/"):
        unpaired.load_for(catalog.Data(data=str(tmp_path / "flat")))


def test_the_shipped_judges_read_glyphs_m_and_tell_the_domains_apart():
    import json

    from safetensors import safe_open

    from deepatlas.tasks import domain_judges
    for path in (domain_judges.GLYPHS_M_FILE, domain_judges.DOMAIN_FILE):
        assert path.stat().st_size < 1_000_000
        with safe_open(str(path), "pt") as f:
            assert json.loads(f.metadata()["build"])["rebuild"] == domain_judges.REBUILD
    data = unpaired.load_for(catalog.Data(data="glyphs>glyphs-m"))
    grey, colour = data.test.a[:600], data.test.b[:600]
    read = domain_judges.class_probs("glyphs-m", colour).argmax(-1).eq(data.test.y_b[:600]).float().mean()
    assert read > 0.85  # 91.2% on the whole test split
    assert (domain_judges.in_domain_b(colour) > 0.5).float().mean() > 0.95
    assert (domain_judges.in_domain_b(grey) < 0.5).float().mean() > 0.95
    assert not domain_judges.judged(["glyphs", "digits"]) and domain_judges.judged(["glyphs-m", "glyphs"])


def test_cyclegan_learns_to_reconstruct():
    """About 150 steps of a tiny CycleGAN on glyphs ↔ glyphs-m: the cycle F(G(a)) reconstructs a far better than
    at the start and than the best input-blind reconstruction (the training mean image)."""
    data = unpaired.load_for(catalog.Data(data="glyphs>glyphs-m"))
    obj = _objective(channels_a=1, channels_b=3, width=8, blocks=1)
    obj.data_spec = data.spec
    optimizers = {k: torch.optim.Adam(g, lr=2e-3, betas=(0.5, 0.999)) for k, g in obj.optimizer_groups().items()}

    def optimize(name, loss):
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()

    val = next(iter(DataLoader(data.val, batch_size=200)))
    mean_image = data.train.a.mean(0, keepdim=True)
    blind = (val[0] - mean_image).abs().mean().item()
    before = obj.eval().validation_step(val)["cycle_l1"].item()
    torch.manual_seed(0)
    loader = DataLoader(data.train, batch_size=8, shuffle=True)
    for step, batch in enumerate(loader):
        obj.train().training_step(batch, optimize)
        if step == 150:
            break
    after = obj.eval().validation_step(val)
    assert after["cycle_l1"] < 0.4 * before and after["cycle_l1"] < 0.5 * blind, (before, blind, after)
    assert {"content_ab", "domain_ab", "content_ba", "domain_ba"} <= set(after)  # the judges score glyphs runs


def test_predict_and_sample_through_the_cli(cli_run, tmp_path):
    root = _folder(tmp_path / "pair", sizes=((16, 16), (16, 16)))
    run = tmp_path / "run"
    code, _, err = cli_run("train", "cyclegan", "--data", root, "--max-time", "3", "--set", "width=4",
                           "--set", "blocks=1", "--set", "epochs=2", "--out", run)
    assert code == 0, err[-2000:]
    picture = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 36), dtype=np.uint8), "L").save(picture)
    code, out, err = cli_run("predict", run, picture)
    assert code == 0, err[-2000:]
    written = tmp_path / "in.to-B.png"
    with Image.open(written) as img:
        assert img.size == (36, 20) and img.mode == "RGB"  # the input's pixel size, B's channels
    code, out, err = cli_run("predict", run, written, "--reverse", "--out", tmp_path / "back.png")
    assert code == 0, err[-2000:]
    with Image.open(tmp_path / "back.png") as img:
        assert img.size == (36, 20) and img.mode == "L"
    code, out, err = cli_run("sample", run, "-n", "2", "--out", tmp_path / "grid.png")
    assert code == 0, err[-2000:]
    assert (tmp_path / "grid.png").exists()
