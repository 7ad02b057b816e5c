"""Group equivariant convolutional network (G-CNN) on the group p4.

T. S. Cohen, M. Welling, 2016. "Group Equivariant Convolutional Networks." ICML 2016, arXiv:1602.07576.

An ordinary convolution is equivariant to translations: shift the image and the feature maps
shift. A G-convolution is equivariant to a larger group G, here p4 = translations and the four
rotations by 90 degrees: rotate the image by 90 degrees and every feature map rotates spatially
AND its rotation axis shifts cyclically by one. A feature map is a function on p4, stored as
(B, C, 4, H, W): one plane per rotation r. Filters are shared over rotations as CNN filters are
shared over positions, so the network need not learn each orientation of a stroke separately.

    lifting   Z2 -> p4:  [f * psi]_r(x)  = sum_c  f_c    correlated with rot^r psi_c
    group     p4 -> p4:  [f * psi]_r(x)  = sum_{c,s} f_{c,s} correlated with rot^r psi_{c, s-r}

i.e. the output plane r uses the filter rotated spatially by r quarter turns and shifted by r
along its input rotation axis. All four rotated filters are stacked into one filter bank and
applied as a single conv2d. Batch norm shares its statistics over the rotation axis (one mean
and variance per channel, as for positions), pooling over the rotation axis ("group pooling")
gives rotation-invariant maps, and global spatial pooling then a linear layer classify.

`group="z2"` is the plain CNN the paper compares against: the same depth and recipe, each
group convolution replaced by an ordinary convolution with channels widened so that it has at
least as many parameters (twice the channels: a p4 -> p4 filter holds 4x the weights of a Z2
filter, and 2 x 2 = 4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, MAX_SIZE, Paper, Probability, Range, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.classification import Classification

ROTATIONS = 4  # |rotations of p4|: 0, 90, 180, 270 degrees


@dataclass
class Config:
    in_channels: Size = 1
    """image channels (set from the data)"""
    image_size: Size = 16
    """input side length (set from the data)"""
    n_classes: Size = 10
    """classes (set from the data)"""
    channels: Annotated[tuple[int, ...], Range(1, MAX_SIZE)] = (8, 16, 16, 32)
    """output channels of each convolution (per rotation, for p4)"""
    pool_after: Annotated[tuple[int, ...], Range(0, MAX_SIZE)] = (1, 2)
    """indices of the convolutions followed by 2x2 max pooling (exactly equivariant on even sides)"""
    kernel_size: Size = 3
    """filter side (odd, so that a quarter turn maps the filter grid to itself)"""
    group: Literal["p4", "z2"] = "p4"
    """p4: group convolutions; z2: the plain CNN baseline (ordinary convs, channels x2)"""
    group_pool: Literal["max", "mean"] = "max"
    """how the rotation axis is pooled to rotation-invariant features"""
    dropout: Probability = 0.0
    """dropout before the linear classifier"""

    def __post_init__(self):
        if not self.channels:
            raise DeepAtlasError("gcnn: channels takes at least one width")


def rotate_planes(x: Tensor, r: int = 1) -> Tensor:
    """The action of a rotation by r quarter turns on a p4 feature map (B, C, 4, H, W): rotate each
    plane spatially and cyclically shift the rotation axis by r."""
    return torch.roll(torch.rot90(x, r, dims=(-2, -1)), r, dims=2)


class LiftingConv(nn.Module):
    """Z2 -> p4: the same filter correlated at its 4 rotations. (B, C_in, H, W) -> (B, C_out, 4, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def filter_bank(self) -> Tensor:
        w = self.weight                                                       # (C_out, C_in, k, k)
        bank = torch.stack([torch.rot90(w, r, dims=(-2, -1)) for r in range(ROTATIONS)], 1)  # (C_out, 4, C_in, k, k)
        return bank.flatten(0, 1)                                             # (C_out*4, C_in, k, k)

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        y = F.conv2d(x, self.filter_bank(), padding=self.weight.shape[-1] // 2)  # (B, C_out*4, H, W)
        return y.view(B, -1, ROTATIONS, H, W)                                 # (B, C_out, 4, H, W)


class GroupConv(nn.Module):
    """p4 -> p4: output plane r uses the filter rotated by r and rolled by r along its input rotation
    axis. (B, C_in, 4, H, W) -> (B, C_out, 4, H, W), run as one conv2d over C_in*4 input planes."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, ROTATIONS, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def filter_bank(self) -> Tensor:
        w = self.weight                                                       # (C_out, C_in, 4, k, k)
        # psi_r[c, s] = rot^r psi[c, s - r]: roll the input rotation axis by r, turn the plane by r
        bank = torch.stack([torch.rot90(torch.roll(w, r, dims=2), r, dims=(-2, -1))
                            for r in range(ROTATIONS)], 1)                    # (C_out, 4, C_in, 4, k, k)
        return bank.flatten(2, 3).flatten(0, 1)                               # (C_out*4, C_in*4, k, k)

    def forward(self, x: Tensor) -> Tensor:
        B, C, R, H, W = x.shape
        y = F.conv2d(x.reshape(B, C * R, H, W), self.filter_bank(),
                     padding=self.weight.shape[-1] // 2)                      # (B, C_out*4, H, W)
        return y.view(B, -1, ROTATIONS, H, W)                                 # (B, C_out, 4, H, W)


class P4Block(nn.Sequential):
    """Group conv -> batch norm with one mean/variance per channel over (B, 4, H, W) -> ReLU
    [-> 2x2 spatial max pooling]. BatchNorm3d on (B, C, 4, H, W) is exactly that sharing."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, lifting: bool, pool: bool):
        conv = LiftingConv if lifting else GroupConv
        layers: list[nn.Module] = [conv(in_channels, out_channels, kernel_size), nn.BatchNorm3d(out_channels),
                                   nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool3d((1, 2, 2)))  # pools positions only, never the rotation axis
        super().__init__(*layers)


class Z2Block(nn.Sequential):
    """The baseline's ordinary conv -> batch norm -> ReLU [-> 2x2 max pooling] on (B, C, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, pool: bool):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                             bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class GCNN(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {cfg.kernel_size}")
        self.cfg = cfg
        widen = 2 if cfg.group == "z2" else 1
        widths = [cfg.in_channels] + [c * widen for c in cfg.channels]
        blocks = []
        for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
            pool = i in cfg.pool_after
            if cfg.group == "p4":
                blocks.append(P4Block(c_in, c_out, cfg.kernel_size, lifting=i == 0, pool=pool))
            else:
                blocks.append(Z2Block(c_in, c_out, cfg.kernel_size, pool=pool))
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(widths[-1], cfg.n_classes)

    def group_pool(self, x: Tensor) -> Tensor:
        """(B, C, 4, H, W) -> (B, C, H, W): invariant to the rotation axis's cyclic shifts."""
        return x.amax(2) if self.cfg.group_pool == "max" else x.mean(2)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)                         # p4: (B, C, 4, H', W'); z2: (B, 2C, H', W')
        if self.cfg.group == "p4":
            x = self.group_pool(x)               # (B, C, H', W'), rotating the input now only rotates these
        x = x.mean(dim=(-2, -1))                 # (B, C): global average pooling, rotation-invariant
        return self.classifier(self.dropout(x))  # (B, K)


register(Entry(
    name="gcnn", title="Group equivariant CNN (p4)", family="vision", year=2016,
    paper=Paper("T. S. Cohen, M. Welling", "Group Equivariant Convolutional Networks", "arXiv:1602.07576"),
    summary="Convolutions over the group of translations and 90-degree rotations: rotating the input "
            "rotates and cyclically shifts every feature map, so filters are shared across orientations "
            "and group pooling makes the prediction invariant to quarter turns.",
    when_to_use="Images with no preferred orientation (microscopy, aerial and satellite views, histology, "
                "rotated digits), especially with little data: the symmetry is built in rather than learned.",
    when_not="Upright natural images, where orientation carries meaning (6 vs 9) and a plain CNN or ViT is "
             "cheaper: a p4 layer costs 4x the compute of a Z2 layer with the same channels.",
    offers=["invariance"],  # to quarter turns of the input, by construction
    relations=[
        Relation("builds_on", "lenet", "lifts convolution to rotations: feature maps over the p4 group, equivariant "
                 "by construction"),
        Relation("alternative_to", "resnet", "rotation invariance built in rather than learned from rotated training "
                 "images"),
    ],
    config=Config, build=GCNN, objective=Classification, task="image_classification",
    train=Train(epochs=30, batch_size=32, lr=3e-3, weight_decay=1e-4),
    data=Data("rotated-digits", image_size=16),
    bar=Bar("accuracy", 0.93, "max", 180),
))
