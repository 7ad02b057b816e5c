"""The autoregressive generative models: "pixelcnn" (masked convolutions) and "wavenet" (causal dilated
convolutions over μ-law audio). Causality is checked exactly with autograd over every position."""
from deepatlas.tasks import get_task
import dataclasses
import math
from itertools import islice

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian
from torch.utils.data import DataLoader

from deepatlas import catalog, data
from deepatlas.data.audio import mu_law_decode, mu_law_encode
from deepatlas.models.generative import pixelcnn, wavenet


def dependencies(f, x: torch.Tensor) -> torch.Tensor:
    """|∂ f(x) / ∂ x| summed over the channel axes: (positions out, positions in) for f: (C, P) -> (C', P)."""
    J = jacobian(f, x)                                                # (C', P, C, P)
    return J.abs().sum((0, 2))                                        # (P, P)


# ---- pixelcnn ------------------------------------------------------------------------------

def raster_dependencies(layer, c_in: int, H: int, W: int) -> torch.Tensor:
    """Dependencies of a layer's output pixels on its input pixels, both in raster order: (H·W, H·W)."""
    x = torch.randn(c_in, H * W)
    return dependencies(lambda v: layer(v.view(1, c_in, H, W)).flatten(2)[0], x)


def left_neighbours(D: torch.Tensor, W: int) -> torch.Tensor:
    """D[p, p − 1] for every pixel p that has a left neighbour in its row."""
    p = torch.arange(len(D))
    p = p[p % W != 0]
    return D[p, p - 1]


@pytest.mark.parametrize("kind", ["A", "B"])
def test_pixelcnn_masked_convolution_is_causal(kind):
    torch.manual_seed(0)
    layer = pixelcnn.MaskedConv2d(4, 6, 5, 1, kind)
    torch.nn.init.normal_(layer.weight)
    D = raster_dependencies(layer, 4, 6, 6)                           # (36, 36)
    i, j = torch.meshgrid(torch.arange(36), torch.arange(36), indexing="ij")
    future = j >= i if kind == "A" else j > i                         # A: pixel i itself too; B: only after i
    assert (D[future] == 0).all()
    assert (D.diagonal() != 0).all() == (kind == "B")                 # B sees its centre, A never does
    assert (left_neighbours(D, 6) != 0).all()                         # every pixel sees the one on its left


@pytest.mark.parametrize("gated", [False, True])
def test_pixelcnn_network_output_depends_only_on_earlier_pixels(gated):
    torch.manual_seed(0)
    model = pixelcnn.PixelCNN(pixelcnn.Config(data_shape=[1, 6, 6], channels=8, layers=3, gated=gated))
    D = raster_dependencies(model, 1, 6, 6)                           # (36, 36) over the whole network
    i, j = torch.meshgrid(torch.arange(36), torch.arange(36), indexing="ij")
    assert (D[j >= i] == 0).all()                                     # output i sees no input ≥ i
    assert (D[0] == 0).all()                                          # the first pixel's logit is a constant
    assert (left_neighbours(D, 6) != 0).all()                         # ... and the rest do look back


@pytest.mark.parametrize("gated", [False, True])
def test_pixelcnn_blind_spot_only_in_the_masked_stack(gated):
    """With a field wide enough for the whole 6×6 image, the two-stack (gated) model sees every earlier pixel;
    the masked k×k stack misses those up-right of its kernel, e.g. (0, 3..5) from (1, 0), at any depth."""
    torch.manual_seed(0)
    model = pixelcnn.PixelCNN(pixelcnn.Config(data_shape=[1, 6, 6], channels=8, layers=4, gated=gated))
    D = raster_dependencies(model, 1, 6, 6)
    i, j = torch.meshgrid(torch.arange(36), torch.arange(36), indexing="ij")
    seen = D[j < i] != 0
    assert seen.all() == gated
    assert (D[6, 3:6] != 0).any() == gated                            # output (1, 0) and inputs (0, 3..5)


def test_pixelcnn_colour_channels_are_ordered_within_a_pixel():
    """RGB-like data: channel c of pixel i sees earlier pixels and channels < c of pixel i, in raster order."""
    torch.manual_seed(0)
    C, H, W = 3, 4, 4
    model = pixelcnn.PixelCNN(pixelcnn.Config(data_shape=[C, H, W], channels=12, layers=2, gated=True))
    x = torch.randn(C, H * W)
    J = jacobian(lambda v: model(v.view(1, C, H, W)).flatten(2)[0], x).abs()   # (C, P, C, P)
    order = torch.arange(H * W)[None] * C + torch.arange(C)[:, None]           # (C, P) sequence index of each
    later = order.flatten()[None, :] >= order.flatten()[:, None]               # (C·P, C·P): input at or after
    assert (J.reshape(C * H * W, C * H * W)[later] == 0).all()
    assert (J[1, 0, 0, 0] != 0) and (J[2, 0, 1, 0] != 0)              # G sees R, B sees G, of the same pixel


def test_pixelcnn_shapes_gates_and_samples():
    model = pixelcnn.PixelCNN(pixelcnn.Config(channels=8, layers=2, gated=True))
    assert model.hidden[0].vertical.weight.shape == (16, 8, 2, 3)      # [W_f; W_g] over the row above and this one
    assert model.hidden[0].horizontal.weight.shape == (16, 8, 1, 3)    # [W_f; W_g] along the current row
    x = (torch.rand(5, 1, 8, 8) > 0.5).float()
    assert model(x).shape == (5, 1, 8, 8)
    objective = pixelcnn.PixelCNNObjective(model).eval()
    s = objective.sample(4)
    assert s.shape == (4, 1, 8, 8) and set(s.unique().tolist()) <= {0.0, 1.0}


def test_pixelcnn_learns_below_the_independent_pixel_baseline():
    torch.manual_seed(0)
    entry = catalog.get("pixelcnn")
    ds = get_task("generation").load(entry.data)
    model = pixelcnn.PixelCNN(pixelcnn.Config(channels=32, layers=4))
    objective = pixelcnn.PixelCNNObjective(model)
    objective.prepare(ds)
    test = next(iter(DataLoader(ds.test, batch_size=len(ds.test))))
    with torch.no_grad():
        before = objective.summarize({k: v.item() for k, v in objective.measure(test).items()})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):                                                # four epochs: about 4 s
        for batch in DataLoader(ds.train, batch_size=32, shuffle=True):
            loss = objective.measure(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        after = objective.summarize({k: v.item() for k, v in objective.measure(test).items()})
    assert before["bpd_vs_baseline"] > 1.5                            # untrained: 1 bit/pixel vs ~0.57
    assert after["bpd_vs_baseline"] < 0.88, after


# ---- wavenet -------------------------------------------------------------------------------

def time_dependencies(model: wavenet.WaveNet, T: int) -> torch.Tensor:
    """(T, T): |∂ (r · logits_t) / ∂ one-hot input_s| for a random projection r of the logits."""
    torch.manual_seed(1)
    r = torch.randn(model.cfg.classes, 1)
    x = F.one_hot(torch.randint(0, model.cfg.classes, (T,)), model.cfg.classes).T.float()  # (classes, T)
    return dependencies(lambda v: (r * model(v[None])[0]).sum(0, keepdim=True), x)


@pytest.mark.parametrize("kernel_size, layers, blocks", [(2, 3, 2), (3, 2, 2)])
def test_wavenet_is_causal_and_sees_exactly_its_receptive_field(kernel_size, layers, blocks):
    torch.manual_seed(0)
    cfg = wavenet.Config(classes=32, residual_channels=8, gate_channels=8, skip_channels=8,
                         kernel_size=kernel_size, layers_per_block=layers, blocks=blocks)
    model = wavenet.WaveNet(cfg)
    rf = model.receptive_field
    assert rf == 1 + (kernel_size - 1) * (1 + blocks * (2 ** layers - 1))   # the stated formula
    T = 2 * rf + 5
    D = time_dependencies(model, T)                                   # (T, T)
    t, s = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    assert (D[s > t] == 0).all()                                      # the prediction made at t sees inputs ≤ t
    assert (D[s <= t - rf] == 0).all()                                # ... and none older than the field
    assert (D[(s <= t) & (s > t - rf)] != 0).all()                    # ... but every one inside it
    measured = int((D[-1] != 0).sum())                                # the span of the last output
    assert measured == rf


def test_mu_law_round_trip():
    x = torch.linspace(-1, 1, 20001)
    q = mu_law_encode(x)
    assert q.min() == 0 and q.max() == 255
    y = mu_law_decode(q)
    below, above = mu_law_decode((q - 1).clamp(0, 255)), mu_law_decode((q + 1).clamp(0, 255))
    assert ((below <= x) & (x <= above)).all()                        # within one quantization step either way
    assert (y - x).abs().max() < 0.025                                # the widest half-step, near ±1, is 0.022
    assert (y - x)[x.abs() < 0.01].abs().max() < 1e-3                 # μ-law is fine near silence
    classes = torch.arange(256)
    assert torch.equal(mu_law_encode(mu_law_decode(classes)), classes)


def test_wavenet_generation_with_queues_matches_the_parallel_pass():
    torch.manual_seed(0)
    cfg = wavenet.Config(classes=64, residual_channels=8, gate_channels=8, skip_channels=16, kernel_size=3,
                         layers_per_block=3, blocks=2)
    model = wavenet.WaveNet(cfg).eval()
    q, logits = model.generate(torch.tensor([32, 10, 50]), 120, keep_logits=True)   # (3, 120), (3, 64, 120)
    assert q.shape == (3, 120) and q[:, 0].tolist() == [32, 10, 50]
    torch.testing.assert_close(logits[:, :, :-1], model(q)[:, :, :-1], atol=1e-5, rtol=1e-5)
    objective = wavenet.WaveNetObjective(wavenet.WaveNet(dataclasses.replace(cfg, sample_seconds=0.01))).eval()
    waves = objective.sample(2)
    assert waves.shape == (2, 80) and waves.abs().max() <= 1


def test_wavenet_learns_below_the_unigram_baseline():
    torch.manual_seed(0)
    recipe = dataclasses.replace(catalog.get("wavenet").data, window=250)
    ds = get_task("generation").load(recipe)
    cfg = wavenet.Config(data_shape=[250], residual_channels=16, gate_channels=16, skip_channels=32,
                         layers_per_block=6, blocks=1)
    model = wavenet.WaveNet(cfg)
    objective = wavenet.WaveNetObjective(model)
    objective.prepare(ds)
    val = next(iter(DataLoader(ds.val, batch_size=64)))
    with torch.no_grad():
        before = objective.summarize({k: v.item() for k, v in objective.measure(val).items()})
    assert before["nll"] > 0.9 * math.log(256) and before["nll_vs_unigram"] > 0.95
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for batch in islice(DataLoader(ds.train, batch_size=8, shuffle=True), 150):   # 150 steps: about 5 s
        loss = objective.measure(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = objective.summarize({k: v.item() for k, v in objective.measure(val).items()})
    assert after["nll_vs_unigram"] < 0.85, after
