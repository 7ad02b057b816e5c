"""Xception: depthwise separable convolutions with residual connections.

F. Chollet, 2017. "Xception: Deep Learning with Depthwise Separable Convolutions." CVPR 2017,
arXiv:1610.02357.

Inception modules factor a convolution into cross-channel (1x1) and spatial (3x3) parts over a
few channel groups. Xception takes the "extreme" version of that hypothesis: spatial and
cross-channel correlations can be mapped entirely separately, one spatial filter per channel
(depthwise) followed by a 1x1 convolution that mixes channels (pointwise), with no nonlinearity
between the two. A separable convolution costs C k^2 + C C' weights instead of C C' k^2.
Stacked in residual modules, these form three flows:

    entry:  conv 3x3 -> conv 3x3 -> modules [(ReLU), SepConv, ReLU, SepConv, MaxPool /2] + (1x1 conv stride 2, BN)
    middle: modules x <- x + [ReLU, SepConv] x 3                      (identity shortcut, fixed width)
    exit:   module  [ReLU, SepConv, ReLU, SepConv, MaxPool /2] + (1x1 conv stride 2, BN),
            then SepConv, ReLU, SepConv, ReLU, global average pool, linear

    SepConv_{C -> C'}(x) = W_pw * (W_dw ⊛ x),  W_dw: (C, 1, k, k) (one filter per channel),  W_pw: (C', C, 1, 1)

Every convolution is followed by batch norm. The paper's widths (32, 64 | 128, 256, 728 | 728 x 8
modules | 728, 1024 | 1536, 2048) on 299-pixel images shrink here to a few dozen channels, and
the flows keep their roles on 16-pixel digits:

    entry:   stem 16x16 (16, 32) -> module 8x8 (64) -> module 4x4 (96)
    middle:  2 modules at 4x4 (96)
    exit:    module (96, 128) -> 2x2, separable convs (160, 192), global pool -> 10 classes

At width 96 and k = 3, a separable convolution holds 96 * 9 + 96 * 96 = 10,080 weights where a
dense 3x3 convolution would hold 96 * 96 * 9 = 82,944: the saving that pays for Xception's depth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from torch import Tensor, nn

from deepatlas.catalog import (Bar, Count, Data, Entry, MAX_SIZE, Paper, Probability, Range, Relation, Size, Train,
                              register)
from deepatlas.errors import DeepAtlasError
from deepatlas.nn.conv import ConvNormAct, SeparableConv, classifier_head
from deepatlas.tasks.classification import Classification


@dataclass
class Config:
    in_channels: Size = 1
    """image channels (set from the data)"""
    image_size: Size = 16
    """input side length (set from the data)"""
    n_classes: Size = 10
    """classes (set from the data)"""
    stem: Annotated[tuple[int, ...], Range(1, MAX_SIZE)] = (16, 32)
    """channels of the two plain 3x3 convolutions at the start of the entry flow (the paper: 32, 64)"""
    stem_stride: Size = 1
    """stride of the first convolution (the paper: 2, for 299-pixel images)"""
    entry: Annotated[tuple[int, ...], Range(1, MAX_SIZE)] = (64, 96)
    """entry-flow residual modules, each halving H and W (the paper: 128, 256, 728)"""
    middle_blocks: Count = 2
    """middle-flow residual modules of three separable convolutions at width entry[-1] (the paper: 8)"""
    exit: Annotated[tuple[int, ...], Range(1, MAX_SIZE)] = (96, 128, 160, 192)
    """exit flow: the residual module's two separable convs, then the two final ones (728, 1024, 1536, 2048)"""
    kernel_size: Size = 3
    """side of the depthwise filters"""
    dropout: Probability = 0.0
    """dropout before the classifier"""

    def __post_init__(self):
        if len(self.stem) != 2 or len(self.exit) != 4 or not self.entry:
            raise DeepAtlasError("xception: stem takes 2 widths, exit 4, entry at least 1")
        if self.kernel_size % 2 == 0:
            raise DeepAtlasError("xception: kernel_size must be odd (a residual block keeps the size), "
                                 f"got {self.kernel_size}")


def sep_bn(c_in: int, c_out: int, k: int) -> nn.Sequential:
    """SeparableConv -> BN. No nonlinearity between its depthwise and pointwise parts (the paper found
    that any intermediate ReLU hurts)."""
    return nn.Sequential(SeparableConv(c_in, c_out, k), nn.BatchNorm2d(c_out))


class DownModule(nn.Module):
    """Entry/exit-flow module: [ReLU, SepConv, BN, ReLU, SepConv, BN, MaxPool 3x3 /2] + projection shortcut."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, k: int, relu_first: bool = True):
        super().__init__()
        self.residual = nn.Sequential(
            nn.ReLU() if relu_first else nn.Identity(),  # the first module follows a ReLU already
            sep_bn(c_in, c_mid, k), nn.ReLU(), sep_bn(c_mid, c_out, k),
            nn.MaxPool2d(3, stride=2, padding=1))
        # the shapes change (C_in -> C_out, H -> H/2): a strided 1x1 convolution with BN projects x
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)  # (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))


class MiddleModule(nn.Module):
    """Middle-flow module: x + [ReLU, SepConv, BN] x 3, identity shortcut."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.residual = nn.Sequential(*[nn.Sequential(nn.ReLU(), sep_bn(c, c, k)) for _ in range(3)])

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)  # (B, C, H, W)


class Xception(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        if len(cfg.stem) != 2 or len(cfg.exit) != 4 or not cfg.entry:
            raise ValueError("stem takes 2 widths, exit 4, entry at least 1")
        k = cfg.kernel_size
        # entry flow
        self.stem = nn.Sequential(ConvNormAct(cfg.in_channels, cfg.stem[0], 3, stride=cfg.stem_stride),
                                  ConvNormAct(cfg.stem[0], cfg.stem[1], 3))
        modules, c = [], cfg.stem[1]
        for i, w in enumerate(cfg.entry):
            modules.append(DownModule(c, w, w, k, relu_first=i > 0))
            c = w
        self.entry = nn.Sequential(*modules)
        # middle flow
        self.middle = nn.Sequential(*[MiddleModule(c, k) for _ in range(cfg.middle_blocks)])
        # exit flow
        e1, e2, e3, e4 = cfg.exit
        self.exit = nn.Sequential(
            DownModule(c, e1, e2, k),
            sep_bn(e2, e3, k), nn.ReLU(), sep_bn(e3, e4, k), nn.ReLU())
        self.head = classifier_head(e4, cfg.n_classes, cfg.dropout)
        # std = 1/sqrt(fan_in) keeps each separable conv's output at its input's scale (a depthwise filter has
        # only k*k inputs); torch's default init shrinks it ~9x per conv, and BN's running statistics lag behind
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)     # (B, stem[1], H/s, W/s)
        x = self.entry(x)    # (B, entry[-1], H / (s 2^len(entry)), ...)
        x = self.middle(x)   # same shape
        x = self.exit(x)     # (B, exit[3], H / (s 2^(len(entry)+1)), ...)
        return self.head(x)  # (B, K)


register(Entry(
    name="xception", title="Xception", family="vision", year=2017,
    paper=Paper("F. Chollet", "Xception: Deep Learning with Depthwise Separable Convolutions",
                "arXiv:1610.02357 (CVPR 2017)"),
    summary="Inception taken to the extreme: every convolution is depthwise separable (a spatial filter per "
            "channel, then a 1x1 channel mix), stacked in residual modules as entry, middle and exit flows.",
    when_to_use="Image classification and as a backbone (DeepLabv3+) when you want Inception-level accuracy "
                "with fewer parameters and a simple, uniform design; mobile-style compute budgets.",
    when_not="Hardware where depthwise convolutions are slow relative to dense ones; tiny images and datasets "
             "where a small ResNet is simpler and as accurate.",
    relations=[
        Relation("builds_on", "inception", "the extreme Inception: depthwise separable convolutions in place of its "
                 "branches"),
        Relation("uses", "resnet", "residual connections around its separable blocks"),
    ],
    config=Config, build=Xception, objective=Classification, task="image_classification",
    train=Train(epochs=12, batch_size=64, lr=3e-3, weight_decay=5e-4),
    data=Data("digits", image_size=16, crop_pad=1),
    bar=Bar("accuracy", 0.97, "max", 120),
))
