"""Classic CNNs: AlexNet's overlapping pooling, dropout and LRN; VGG's 3x3 stacks and their receptive
field; Inception's concatenated branches and its auxiliary classifier."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepatlas
from deepatlas import catalog
from deepatlas.models.vision.alexnet import LocalResponseNorm
from deepatlas.models.vision.inception import TABLE, InceptionModule, scaled
from deepatlas.models.vision.vgg import PRESETS, receptive_field


# ---- AlexNet ------------------------------------------------------------------------------

def test_alexnet_pooling_windows_overlap():
    model = deepatlas.create_model("alexnet")
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size > p.stride for p in pools)
    # one peak in the column shared by two neighbouring 3-wide windows (stride 2) is the max of both
    x = torch.zeros(1, 1, 3, 5)
    x[0, 0, 1, 2] = 1.0
    assert pools[0](x).flatten().tolist() == [1.0, 1.0]
    # whereas with non-overlapping 2x2 windows no pixel belongs to two outputs
    assert nn.MaxPool2d(2, 2)(x[..., :, :4]).sum().item() == 1.0


def test_alexnet_dropout_is_in_the_classifier_and_only_in_training():
    torch.manual_seed(0)
    model = deepatlas.create_model("alexnet")
    x = torch.randn(4, 1, 16, 16)
    model.train()
    assert torch.equal(model.features(x), model.features(x))  # no randomness in the convolutions
    assert not torch.allclose(model(x), model(x))  # dropout in FC6 and FC7
    model.eval()
    assert torch.equal(model(x), model(x))


def test_alexnet_local_response_normalization():
    torch.manual_seed(0)
    a = torch.randn(2, 12, 5, 5) * 30  # large activations, so the α Σ a² term matters
    ours = LocalResponseNorm(12, n=5, alpha=1e-4, beta=0.75, k=2.0)(a)
    # torch averages the n squares where the paper sums them: alpha_torch = n · alpha_paper
    reference = nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)(a)
    assert torch.allclose(ours, reference, atol=1e-6)
    # channel 0's window is channels 0..2 only (clipped at the edge): the paper's equation, directly
    expected = a[:, 0] / (2.0 + 1e-4 * (a[:, :3] ** 2).sum(1)) ** 0.75
    assert torch.allclose(ours[:, 0], expected, atol=1e-6)


def test_alexnet_lrn_option_changes_the_output():
    torch.manual_seed(0)
    with_lrn = deepatlas.create_model("alexnet", lrn=True).eval()
    without = deepatlas.create_model("alexnet", lrn=False).eval()
    without.load_state_dict(with_lrn.state_dict())  # same weights; LRN has none
    x = torch.randn(4, 1, 16, 16)
    assert sum(isinstance(m, LocalResponseNorm) for m in with_lrn.modules()) == 2
    assert not any(isinstance(m, LocalResponseNorm) for m in without.modules())
    assert not torch.allclose(with_lrn(x), without(x), atol=1e-4)


# ---- VGG ----------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,total", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_vgg_presets_stack_only_3x3_convolutions(depth, total):
    model = deepatlas.create_model("vgg", depth=depth, width=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == total  # + 3 fully connected layers = the preset's name
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in convs)
    per_stage = [sum(isinstance(m, nn.Conv2d) for m in stage.modules()) for stage in model.stages]
    assert tuple(per_stage) == PRESETS[depth]
    assert all(isinstance(stage[-1], nn.MaxPool2d) and stage[-1].kernel_size == 2 for stage in model.stages)
    widths = [[m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels for stage in model.stages]
    assert widths == [4, 8, 16, 32, 32]  # doubling per stage, capped at 8x like 64 ... 512, 512


@pytest.mark.parametrize("depth,stage,n_convs", [("vgg13", 0, 2), ("vgg16", 2, 3), ("vgg11", 0, 1)])
def test_vgg_stacked_3x3_convolutions_see_a_2L_plus_1_window(depth, stage, n_convs):
    """The gradient of one output pixel is nonzero exactly in a (2L+1)² input window: two 3x3 -> 5x5."""
    torch.manual_seed(0)
    model = deepatlas.create_model("vgg", depth=depth, width=8, batch_norm=False)
    stack = model.stages[stage][:-1]  # the stage's convolutions, without its pooling
    assert sum(isinstance(m, nn.Conv2d) for m in stack.modules()) == n_convs
    c_in = stack[0][0].in_channels
    x = torch.randn(8, c_in, 11, 11, requires_grad=True)
    stack(x)[:, :, 5, 5].sum().backward()
    reached = x.grad.abs().sum(dim=(0, 1)) > 0  # (11, 11)
    r = n_convs  # half-width of the window
    window = torch.zeros(11, 11, dtype=torch.bool)
    window[5 - r:6 + r, 5 - r:6 + r] = True
    assert torch.equal(reached, window), f"{2 * r + 1}x{2 * r + 1} expected"


def test_vgg_receptive_field_grows_to_the_known_values():
    assert receptive_field(PRESETS["vgg16"]) == [6, 16, 44, 100, 212]  # 212: the published VGG-16 value
    assert receptive_field(PRESETS["vgg19"])[-1] == 268
    assert receptive_field((2, 2)) == [6, 16]  # 5x5 after two 3x3 convolutions, one more for the pooling


# ---- Inception ----------------------------------------------------------------------------

def test_inception_module_concatenates_its_four_branches():
    torch.manual_seed(0)
    module = InceptionModule(8, c1=4, c3_reduce=3, c3=5, c5_reduce=2, c5=3, c_pool=6).eval()
    x = torch.randn(2, 8, 7, 7)
    y = module(x)
    assert y.shape == (2, 4 + 5 + 3 + 6, 7, 7) and module.out_channels == 18
    start = 0
    for branch, width in zip(module.branches(), (4, 5, 3, 6)):
        out = branch(x)
        assert out.shape == (2, width, 7, 7)
        assert torch.equal(y[:, start:start + width], out)  # each branch is its own channel slice
        start += width
    assert isinstance(module.branch_pool[0], nn.MaxPool2d)  # pooling branch: 3x3 max pool, then 1x1
    kernels = [[m.kernel_size for m in b.modules() if isinstance(m, nn.Conv2d)] for b in module.branches()]
    assert kernels == [[(1, 1)], [(1, 1), (3, 3)], [(1, 1), (5, 5)], [(1, 1)]]


def test_googlenet_modules_follow_the_papers_table():
    model = deepatlas.create_model("inception", width=0.5, modules=(2, 5, 2), aux_classifier=False)
    modules = [*model.stage3, *model.stage4, *model.stage5]
    rows = [row for stage in TABLE for row in stage]
    assert len(modules) == 9
    for module, (c1, _, c3, _, c5, c_pool) in zip(modules, rows):
        assert module.out_channels == sum(scaled(c, 0.5) for c in (c1, c3, c5, c_pool))
    assert modules[1].out_channels == 240  # 3b: 480 in the paper
    x = torch.randn(2, 1, 16, 16)
    assert model(x).shape == (2, 10)


def test_inception_auxiliary_loss_is_added_with_weight_0_3_in_training_only():
    torch.manual_seed(0)
    model = deepatlas.create_model("inception")
    objective = catalog.get("inception").objective(model)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    calls = []
    model.aux.register_forward_hook(lambda *args: calls.append(1))

    objective.eval()  # dropout off, so the check is exact
    scores, aux_scores = model(x, with_aux=True)
    loss, logs = objective.training_step((x, y))
    expected = F.cross_entropy(scores, y) + 0.3 * F.cross_entropy(aux_scores, y)
    assert torch.allclose(loss, expected) and "aux_loss" in logs

    objective.train()
    objective.zero_grad()
    objective.training_step((x, y))[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux.parameters())

    objective.eval()
    calls.clear()
    model(x)
    val = objective.validation_step((x, y))
    objective.predict(x)
    assert not calls  # the auxiliary head is discarded at evaluation
    assert torch.allclose(val["loss"], F.cross_entropy(model(x), y))

    plain = deepatlas.create_model("inception", aux_classifier=False)
    assert plain.aux is None
    loss, _ = catalog.get("inception").objective(plain).eval().training_step((x, y))
    assert torch.allclose(loss, F.cross_entropy(plain(x), y))


# ---- all three ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,sizes", [("alexnet", (16, 32)), ("vgg", (32, 64)), ("inception", (8, 16))])
def test_output_shapes(name, sizes):
    for size in sizes:
        for channels in (1, 3):
            model = deepatlas.create_model(name, in_channels=channels, image_size=size, n_classes=7).eval()
            assert model(torch.randn(3, channels, size, size)).shape == (3, 7)


def test_too_small_images_are_refused():
    with pytest.raises(deepatlas.DeepAtlasError, match="image_size"):  # the API's one line
        deepatlas.create_model("vgg", image_size=16)
    with pytest.raises(deepatlas.DeepAtlasError, match="image_size"):  # the API's one line
        deepatlas.create_model("alexnet", image_size=8)


@pytest.mark.parametrize("name,overrides", [
    ("alexnet", {"epochs": "4"}),
    ("vgg", {"epochs": "4", "width": "8", "dropout": "0.1", "lr": "3e-3"}),
    ("inception", {"epochs": "3"}),
])
def test_short_training_beats_chance(name, overrides, tmp_path):
    """A few epochs on digits (10 classes, chance 0.10) must already classify most test images."""
    result = deepatlas.train(name, out=tmp_path / name, overrides=overrides)
    assert result["test"]["accuracy"] > 0.6, result["test"]
