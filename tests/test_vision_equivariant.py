"""Equivariant vision: the G-CNN's p4 equivariance and invariance, the ViT's patch-permutation
equivariance without position embeddings; shapes; short learning runs of "gcnn" and "vit".

Equivariance is checked in float64, so that the 1e-5 tolerance measures the architecture and not
float32 round-off (float32 errors here are about 5e-6)."""
import pytest
import torch
import torch.nn.functional as F

import deepatlas
from deepatlas.data import images
from deepatlas.models.vision.gcnn import GroupConv, LiftingConv, rotate_planes


def rot(x: torch.Tensor, r: int = 1) -> torch.Tensor:
    """Rotate images or feature planes by r quarter turns (the last two dims)."""
    return torch.rot90(x, r, dims=(-2, -1))


# ---- gcnn: p4 equivariance ----------------------------------------------------------------

def test_lifting_conv_rotates_and_shifts_its_rotation_axis():
    torch.manual_seed(0)
    layer = LiftingConv(3, 5).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (2, 5, 4, 9, 9)
    for r in range(1, 4):
        assert torch.allclose(layer(rot(x, r)), rotate_planes(y, r), atol=1e-5)
    assert not torch.allclose(layer(rot(x)), rot(y), atol=1e-2), "a spatial rotation alone is not the action"


def test_group_conv_is_p4_equivariant():
    torch.manual_seed(0)
    layer = GroupConv(3, 5).double()
    f = torch.randn(2, 3, 4, 9, 9, dtype=torch.float64)  # a random feature map on p4
    y = layer(f)
    assert y.shape == (2, 5, 4, 9, 9)
    for r in range(1, 4):
        assert torch.allclose(layer(rotate_planes(f, r)), rotate_planes(y, r), atol=1e-5)
    # the roll along the input rotation axis is needed: rotating the filter planes alone breaks it
    rotate_only = RotateOnlyConv(3, 5).double()
    rotate_only.weight.data.copy_(layer.weight)
    assert not torch.allclose(rotate_only(rotate_planes(f)), rotate_planes(rotate_only(f)), atol=1e-2)


class RotateOnlyConv(GroupConv):
    """A wrong p4 -> p4 layer: filters turned spatially but not rolled along their rotation axis."""

    def filter_bank(self) -> torch.Tensor:
        return torch.stack([rot(self.weight, r) for r in range(4)], 1).flatten(2, 3).flatten(0, 1)


def trained_like_gcnn(**overrides) -> torch.nn.Module:
    """A default gcnn whose batch norms hold non-trivial affine parameters and running statistics."""
    torch.manual_seed(0)
    model = deepatlas.create_model("gcnn", **overrides).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        model.train()
        for _ in range(3):
            model(torch.randn(16, 1, 16, 16, dtype=torch.float64) * 2 + 0.3)  # update the running statistics
    return model.eval()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_every_gcnn_feature_map_is_equivariant_and_logits_invariant(mode):
    model = trained_like_gcnn()
    model.train(mode == "train")  # in training, batch statistics shared over the rotation axis keep it
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    h, h_rot = x, rot(x)
    for block in model.blocks:
        h, h_rot = block(h), block(h_rot)
        assert h.dim() == 5 and h.shape[2] == 4
        assert torch.allclose(h_rot, rotate_planes(h), atol=1e-5)
    logits = model(x)
    for r in range(1, 4):
        assert torch.allclose(model(rot(x, r)), logits, atol=1e-5)


def test_plain_cnn_baseline_is_not_rotation_invariant():
    model = trained_like_gcnn(group="z2")
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    assert (model(rot(x)) - model(x)).abs().max() > 1e-3


def test_plain_cnn_baseline_has_at_least_as_many_parameters():
    count = lambda m: sum(p.numel() for p in m.parameters())
    for channels in [(8, 8, 16, 16), (4, 6, 10), (6, 12, 12, 24, 24)]:
        p4 = deepatlas.create_model("gcnn", channels=channels, pool_after=())
        z2 = deepatlas.create_model("gcnn", channels=channels, pool_after=(), group="z2")
        assert count(p4) <= count(z2) <= 1.2 * count(p4)


def test_gcnn_shapes():
    model = deepatlas.create_model("gcnn", channels=(4, 6, 8), pool_after=(0, 2), n_classes=7).eval()
    x = torch.randn(3, 1, 16, 16)
    sides = []
    for block in model.blocks:
        x = block(x)
        sides.append(x.shape[-1])
        assert x.shape[:3] == (3, block[0].weight.shape[0], 4)
    assert sides == [8, 8, 4]
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 7)
    z2 = deepatlas.create_model("gcnn", channels=(4, 6, 8), group="z2", n_classes=7)
    assert z2(torch.randn(3, 1, 16, 16)).shape == (3, 7)
    with pytest.raises(deepatlas.DeepAtlasError):  # the API's one line
        deepatlas.create_model("gcnn", kernel_size=4)


def test_gcnn_learns_rotated_digits():
    """A small p4 net, a few epochs of Adam on the rotated digits at their native 12 x 12."""
    torch.manual_seed(0)
    data = images.load("rotated-digits", 12)
    (x, y), (x_test, y_test) = data.train.tensors, data.test.tensors
    model = deepatlas.create_model("gcnn", image_size=12, channels=(6, 6, 12), pool_after=(1, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for idx in torch.randperm(len(x)).split(32):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        accuracy = (model.eval()(x_test).argmax(-1) == y_test).float().mean().item()
    assert accuracy > 0.6  # chance is 0.10


# ---- vit: permutation equivariance without position embeddings -----------------------------

def patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C, p, p), patches in row-major order (as PatchEmbed emits tokens)."""
    B, C, H, W = x.shape
    return x.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C, p, p)


def image(patch_seq: torch.Tensor, side: int) -> torch.Tensor:
    """(B, N, C, p, p) -> (B, C, H, W), the inverse of `patches`."""
    B, N, C, p, _ = patch_seq.shape
    return patch_seq.view(B, side // p, side // p, C, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, C, side, side)


@pytest.mark.parametrize("pos_embed", [False, True])
def test_vit_patch_permutation(pos_embed):
    torch.manual_seed(0)
    model = deepatlas.create_model("vit", pos_embed=pos_embed).double().eval()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    perm = torch.randperm(16)  # 16 patches of 4 x 4
    shuffled = image(patches(x, 4)[:, perm], 16)
    assert torch.equal(image(patches(x, 4), 16), x)
    tokens, tokens_shuffled = model.encode(x), model.encode(shuffled)  # (B, 1 + N, D)
    if not pos_embed:  # a set model: patch tokens follow the patches, the class token does not move
        assert torch.allclose(tokens_shuffled[:, 1:], tokens[:, 1:][:, perm], atol=1e-5)
        assert torch.allclose(tokens_shuffled[:, 0], tokens[:, 0], atol=1e-5)
    else:  # position embeddings tell the encoder where each patch was
        assert (tokens_shuffled[:, 1:] - tokens[:, 1:][:, perm]).abs().max() > 1e-3


def test_vit_shapes():
    model = deepatlas.create_model("vit", image_size=16, patch_size=2, dim=32, heads=2, depth=2, n_classes=5,
                                   in_channels=3).eval()
    x = torch.randn(3, 3, 16, 16)
    assert model.patch_embed(x).shape == (3, 64, 32)
    assert model.encode(x).shape == (3, 65, 32)
    assert model.pos_embed.shape == (1, 65, 32)
    assert model(x).shape == (3, 5)
    assert deepatlas.create_model("vit", head_hidden=0, pos_embed=False)(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    with pytest.raises(deepatlas.DeepAtlasError):  # the API's one line
        deepatlas.create_model("vit", image_size=16, patch_size=3)


def test_vit_learns_digits(tmp_path):
    result = deepatlas.train("vit", out=tmp_path / "vit",
                             overrides={"epochs": "8", "depth": "2", "dim": "32", "head_hidden": "0",
                                        "crop_pad": "0", "rotate": "0", "lr": "3e-3"})
    assert result["test"]["accuracy"] > 0.6  # chance is 0.10
