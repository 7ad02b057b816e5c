"""Residual CNNs: ResNet's shortcuts, Xception's separable convolutions, ConvNeXt's blocks."""
import pytest
import torch
from torch import nn

import deepatlas
from deepatlas.models.vision import convnext, resnet, xception
from deepatlas.nn.conv import SeparableConv
from deepatlas.nn.regularization import DropPath


def zero_last_layer(residual: nn.Sequential) -> None:
    """Make a residual branch output exactly zero: zero its last BN's affine (v1) or its last conv (v2)."""
    last = [m for m in residual.modules() if isinstance(m, (nn.BatchNorm2d, nn.Conv2d))][-1]
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()


def randomize_bn_stats(module: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode BN is not close to the identity by accident."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


# ---- ResNet: a block with F = 0 is exactly its shortcut ---------------------------------------

BLOCKS = [(block, preact) for block in (resnet.BasicBlock, resnet.Bottleneck) for preact in (False, True)]


@pytest.mark.parametrize("block_cls,preact", BLOCKS)
def test_resnet_block_with_zero_residual_is_the_identity(block_cls, preact):
    torch.manual_seed(0)
    c = 8 * block_cls.expansion
    block = block_cls(c, 8, stride=1, preact=preact)
    assert isinstance(block.shortcut, nn.Identity)
    randomize_bn_stats(block)
    zero_last_layer(block.residual)
    block.eval()
    x = torch.randn(4, c, 6, 6)
    if preact:  # y = x + F(x'): the identity path is clean, negative inputs included
        assert torch.equal(block(x), x)
    else:  # y = ReLU(x + F(x)): identity on the non-negative maps a v1 block receives (a ReLU's output)
        assert torch.equal(block(x.relu()), x.relu())
        assert not torch.equal(block(x), x)  # the ReLU after the addition clips negatives: v2's point


@pytest.mark.parametrize("block_cls,preact", BLOCKS)
def test_resnet_block_with_zero_residual_is_the_projection(block_cls, preact):
    torch.manual_seed(0)
    block = block_cls(8, 16, stride=2, preact=preact)
    conv = block.shortcut if preact else block.shortcut[0]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert preact or isinstance(block.shortcut[1], nn.BatchNorm2d)  # v1 projection: 1x1 conv + BN
    randomize_bn_stats(block)
    zero_last_layer(block.residual)
    block.eval()
    x = torch.randn(4, 8, 6, 6)
    out = block(x)
    assert out.shape == (4, 16 * block_cls.expansion, 3, 3)
    expected = block.shortcut(block.pre(x)) if preact else block.shortcut(x).relu()
    assert torch.equal(out, expected)


def test_resnet_presets_use_the_papers_blocks():
    for depth, n_blocks, kind in (("resnet20", 9, resnet.BasicBlock), ("resnet34", 16, resnet.BasicBlock),
                                  ("resnet50", 16, resnet.Bottleneck)):
        model = deepatlas.create_model("resnet", depth=depth, width=0.25)
        blocks = list(model.stages)
        assert len(blocks) == n_blocks and all(isinstance(b, kind) for b in blocks)
        # one projection per stage change (and for a bottleneck's first block, whose width grows 4x)
        projections = sum(not isinstance(b.shortcut, nn.Identity) for b in blocks)
        assert projections == len(resnet.PRESETS[depth][1]) - (kind is resnet.BasicBlock)


# ---- depthwise convolutions: one k x k filter per channel -------------------------------------

def test_xception_separable_convs_have_one_filter_per_channel():
    model = deepatlas.create_model("xception")
    seps = [m for m in model.modules() if isinstance(m, SeparableConv)]
    assert len(seps) >= 10
    for sep in seps:
        depthwise, pointwise = sep
        c, c_out, k = depthwise.in_channels, pointwise.out_channels, depthwise.kernel_size[0]
        assert depthwise.groups == c and depthwise.weight.shape == (c, 1, k, k)
        assert sum(p.numel() for p in sep.parameters()) == c * k * k + c * c_out  # vs c * c_out * k * k dense
    # all the 3x3 spatial filtering after the stem is depthwise: no dense k x k convolution past it
    dense = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and m.groups == 1]
    assert dense == [model.stem[0][0], model.stem[1][0]]


def test_convnext_depthwise_conv_has_one_filter_per_channel():
    model = deepatlas.create_model("convnext")
    blocks = [m for m in model.modules() if isinstance(m, convnext.Block)]
    assert len(blocks) == sum(convnext.Config().depths)
    for block in blocks:
        dw = block.dwconv
        c, k = dw.in_channels, dw.kernel_size[0]
        assert k == 7 and dw.groups == c == dw.out_channels
        assert sum(p.numel() for p in dw.parameters()) == c * k * k + c  # weights + bias
    # numerically: perturbing input channel 3 changes output channel 3 only
    dw = blocks[0].dwconv
    x = torch.randn(2, dw.in_channels, 8, 8)
    bumped = x.clone()
    bumped[:, 3] += torch.randn(2, 8, 8)
    changed = (dw(bumped) - dw(x)).abs().amax(dim=(0, 2, 3)) > 0  # (C,)
    assert changed.nonzero().flatten().tolist() == [3]


def test_xception_modules_are_residual():
    """Zeroing the last BN of a module's branch leaves exactly its shortcut: identity in the middle
    flow, the strided 1x1 projection (+ BN) where the shape changes."""
    torch.manual_seed(0)
    model = deepatlas.create_model("xception").eval()
    randomize_bn_stats(model)
    middle, down = model.middle[0], model.entry[1]
    assert isinstance(middle, xception.MiddleModule) and isinstance(down, xception.DownModule)
    zero_last_layer(middle.residual)
    zero_last_layer(down.residual)
    x = torch.randn(2, middle.residual[0][1][0][0].in_channels, 4, 4)
    assert torch.equal(middle(x), x)
    x = torch.randn(2, down.shortcut[0].in_channels, 8, 8)
    assert down.shortcut[0].stride == (2, 2) and torch.equal(down(x), down.shortcut(x))


# ---- ConvNeXt: layer scale and stochastic depth -----------------------------------------------

def test_convnext_block_with_small_layer_scale_is_nearly_the_identity():
    torch.manual_seed(0)
    x = torch.randn(4, 32, 8, 8)
    small = convnext.Block(32, layer_scale_init=1e-6).eval()
    big = convnext.Block(32, layer_scale_init=1.0).eval()
    big.load_state_dict({**small.state_dict(), "scale.gamma": torch.ones(32)})
    assert (small(x) - x).abs().max() < 1e-5
    assert (big(x) - x).abs().max() > 1e-2  # the same branch unscaled does change x
    model = deepatlas.create_model("convnext").eval()  # so is every stage of the default model at init
    h = model.downsample[0](torch.randn(2, 1, 16, 16))
    assert (model.stages[0](h) - h).abs().max() < 1e-4


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_training():
    torch.manual_seed(0)
    drop = DropPath(0.5)
    x = torch.randn(2000, 3, 4, 4) + 5.0  # no zeros by chance
    assert torch.equal(drop.eval()(x), x)
    y = drop.train()(x)
    kept = (y != 0).flatten(1)  # (B, 3*4*4)
    assert (kept.all(1) | ~kept.any(1)).all()  # each sample is kept whole or dropped whole
    survivors = kept.all(1)
    assert 0.4 < survivors.float().mean() < 0.6
    assert torch.allclose(y[survivors], x[survivors] * 2)  # survivors scaled by 1 / (1 - p)
    # in a ConvNeXt block a dropped sample skips the branch: its output is exactly its input
    block = convnext.Block(8, layer_scale_init=1.0, drop_path=0.5).train()
    x = torch.randn(64, 8, 4, 4)
    same = (block(x) == x).flatten(1).all(1)
    assert 10 < same.sum() < 54
    assert torch.equal(block.eval()(x), block(x))  # eval: deterministic, nothing dropped


# ---- shapes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,size,overrides", [
    ("resnet", 16, {}),
    ("resnet", 16, {"preact": True, "width": 0.5}),
    ("resnet", 32, {"depth": "resnet50", "width": 0.25}),
    ("resnet", 64, {"depth": "resnet18", "width": 0.25, "preact": True}),  # ImageNet stem: 64 -> 16 -> ... -> 2
    ("xception", 16, {}),
    ("xception", 32, {"stem_stride": 2, "entry": (16, 24, 32), "exit": (32, 32, 48, 48)}),
    ("convnext", 16, {}),
    ("convnext", 32, {"stem_size": 4, "dims": (8, 16, 24, 32), "depths": (1, 1, 2, 1), "drop_path": 0.1}),
])
def test_output_shapes(name, size, overrides):
    model = deepatlas.create_model(name, in_channels=3, image_size=size, n_classes=7, **overrides)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_stage_shapes():
    x = torch.randn(2, 1, 16, 16)
    res = deepatlas.create_model("resnet")
    assert res.stages(res.stem(x)).shape == (2, 64, 4, 4)  # 16 -> 16 -> 8 -> 4, widths 16, 32, 64
    xc = deepatlas.create_model("xception")
    h = xc.entry(xc.stem(x))
    assert h.shape == (2, 96, 4, 4) and xc.middle(h).shape == h.shape and xc.exit(h).shape == (2, 192, 2, 2)
    cn = deepatlas.create_model("convnext")
    for i, (down, stage) in enumerate(zip(cn.downsample, cn.stages)):
        x = stage(down(x))
        assert x.shape == (2, (32, 64, 128)[i], 8 >> i, 8 >> i)
    with pytest.raises(deepatlas.DeepAtlasError, match="divisible"):  # the API's one line
        deepatlas.create_model("convnext", image_size=12)


# ---- a few seconds of training beat chance by far ---------------------------------------------

SMALL = {  # narrow, shallow versions that train in seconds on 16x16 digits
    "resnet": {"width": "0.5", "epochs": "4"},
    "xception": {"stem": "8,16", "entry": "16,32", "middle_blocks": "1", "exit": "32,32,48,48", "epochs": "3"},
    "convnext": {"dims": "16,32,64", "depths": "1,1,1", "epochs": "4", "lr": "4e-3"},
}


@pytest.mark.parametrize("name", ["resnet", "xception", "convnext"])
def test_short_training_beats_chance(name, tmp_path):
    result = deepatlas.train(name, out=tmp_path / name, overrides=SMALL[name])
    assert result["test"]["accuracy"] > 0.6  # chance is 0.10


def test_resnet_feature_maps_are_the_stage_outputs():
    from deepatlas.models.vision.resnet import Config, ResNet
    net = ResNet(Config(in_channels=3, image_size=64, depth="resnet18", width=0.25)).eval()
    x = torch.randn(2, 3, 64, 64)
    maps = net.feature_maps(x)
    assert [m.shape[1:] for m in maps] == [(16, 16, 16), (32, 8, 8), (64, 4, 4), (128, 2, 2)]
    assert [m.shape[1] for m in maps] == net.stage_channels
    assert torch.allclose(maps[-1], net.stages(net.stem(x)))
