"""ConvNeXt: a pure convolutional network modernized with the design choices of vision transformers.

Z. Liu, H. Mao, C.-Y. Wu, C. Feichtenhofer, T. Darrell, S. Xie, 2022. "A ConvNet for the 2020s."
arXiv:2201.03545.

Starting from a ResNet, the paper adopts one transformer idea at a time and keeps what helps:
a "patchify" stem (a k x k convolution with stride k, like ViT's patch embedding), large 7x7
depthwise convolutions (spatial mixing one channel at a time, as self-attention mixes per head),
an inverted bottleneck (expand 4x, then project back, like a transformer's MLP), fewer
normalizations and activations (one LayerNorm, one GELU per block), and separate downsampling
layers between stages. Layer scale and stochastic depth keep deep stacks stable.

    block:   x <- x + DropPath(gamma * W_2 GELU(W_1 LN(DWConv_7x7(x))))   W_1: C -> 4C, W_2: 4C -> C
    stage i: [downsample: LN + 2x2 conv stride 2] -> depths[i] blocks at width dims[i]

The paper's ConvNeXt-T has four stages (3, 3, 9, 3) of widths (96, 192, 384, 768) and a 4x4 stem
on 224-pixel images; the default here is a three-stage miniature for 16-pixel digits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, MAX_SIZE, NonNegative, Paper, Range, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.nn.regularization import DropPath, LayerScale
from deepatlas.tasks.classification import Classification


@dataclass
class Config:
    in_channels: Size = 1
    """image channels (set from the data)"""
    image_size: Size = 16
    """input side length (set from the data)"""
    n_classes: Size = 10
    """classes (set from the data)"""
    stem_size: Size = 2
    """patchify stem: a k x k convolution with stride k (the paper: 4)"""
    dims: Annotated[tuple[int, ...], Range(1, MAX_SIZE)] = (32, 64, 128)
    """channels of each stage (the paper's ConvNeXt-T: 96, 192, 384, 768)"""
    depths: Annotated[tuple[int, ...], Range(0, MAX_SIZE)] = (2, 2, 2)
    """blocks in each stage (ConvNeXt-T: 3, 3, 9, 3)"""
    kernel_size: Size = 7
    """side of the depthwise convolution"""
    expansion: Size = 4
    """inverted bottleneck: hidden width = expansion * channels"""
    layer_scale_init: NonNegative = 1e-6
    """initial gamma of the per-channel layer scale (0: no layer scale)"""
    drop_path: Annotated[float, Range(0.0, 0.99)] = 0.0
    """stochastic depth: drop rate of the last block, rising linearly from 0 at the first"""

    def __post_init__(self):
        if not self.dims or len(self.dims) != len(self.depths):
            raise DeepAtlasError(f"convnext: dims {self.dims} and depths {self.depths} must have one entry per stage")
        if self.kernel_size % 2 == 0:
            raise DeepAtlasError("convnext: kernel_size must be odd (a residual block keeps the size), "
                                 f"got {self.kernel_size}")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, at every pixel: what nn.LayerNorm(C) does
    to the last axis, written for channels-first maps (used by the stem and the downsampling layers)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)                               # (B, 1, H, W)
        var = (x - mean).pow(2).mean(1, keepdim=True)                # (B, 1, H, W), biased as in LayerNorm
        x = (x - mean) / torch.sqrt(var + self.eps)                  # (B, C, H, W)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class Block(nn.Module):
    """Depthwise 7x7 -> LN -> 1x1 expand 4x -> GELU -> 1x1 project -> layer scale -> drop path -> + x.
    The 1x1 convolutions are Linear layers on channels-last maps, as in the paper's code."""

    def __init__(self, dim: int, kernel_size: int = 7, expansion: int = 4, layer_scale_init: float = 1e-6,
                 drop_path: float = 0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)  # one filter per channel
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.expand = nn.Linear(dim, expansion * dim)    # W_1
        self.act = nn.GELU()
        self.project = nn.Linear(expansion * dim, dim)   # W_2
        self.scale = LayerScale(dim, layer_scale_init) if layer_scale_init > 0 else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)                        # (B, C, H, W) -> (B, H, W, C)
        h = self.project(self.act(self.expand(self.norm(h))))         # (B, H, W, 4C) -> (B, H, W, C)
        h = self.scale(h).permute(0, 3, 1, 2)                         # (B, H, W, C) -> (B, C, H, W)
        return x + self.drop_path(h)


class ConvNeXt(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        if len(cfg.dims) != len(cfg.depths):
            raise ValueError(f"dims {cfg.dims} and depths {cfg.depths} must have one entry per stage")
        if cfg.image_size % (cfg.stem_size * 2 ** (len(cfg.dims) - 1)):
            raise ValueError(f"image_size {cfg.image_size} must be divisible by stem_size * 2^(stages - 1) = "
                             f"{cfg.stem_size * 2 ** (len(cfg.dims) - 1)}")
        # stem: non-overlapping k x k patches, each mapped to dims[0] channels, then LN
        self.downsample = nn.ModuleList([nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.dims[0], cfg.stem_size, stride=cfg.stem_size), LayerNorm2d(cfg.dims[0]))])
        for c_in, c_out in zip(cfg.dims, cfg.dims[1:]):  # separate downsampling layers: LN, then 2x2 conv stride 2
            self.downsample.append(nn.Sequential(LayerNorm2d(c_in), nn.Conv2d(c_in, c_out, 2, stride=2)))
        rates = torch.linspace(0, cfg.drop_path, sum(cfg.depths), device="cpu").tolist()  # grows with depth
        self.stages, i = nn.ModuleList(), 0
        for dim, depth in zip(cfg.dims, cfg.depths):
            self.stages.append(nn.Sequential(*[Block(dim, cfg.kernel_size, cfg.expansion, cfg.layer_scale_init,
                                                     rates[i + j]) for j in range(depth)]))
            i += depth
        self.norm = nn.LayerNorm(cfg.dims[-1], eps=1e-6)
        self.head = nn.Linear(cfg.dims[-1], cfg.n_classes)
        self.apply(_init)

    def forward(self, x: Tensor) -> Tensor:
        for down, stage in zip(self.downsample, self.stages):
            x = stage(down(x))               # (B, dims[i], H / (k 2^i), W / (k 2^i))
        x = self.norm(x.mean(dim=(2, 3)))    # global average pool -> LN: (B, dims[-1])
        return self.head(x)                  # (B, K)


def _init(m: nn.Module) -> None:
    """The paper's initialization: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


register(Entry(
    name="convnext", title="ConvNeXt", family="vision", year=2022,
    paper=Paper("Z. Liu, H. Mao, C.-Y. Wu, C. Feichtenhofer, T. Darrell, S. Xie", "A ConvNet for the 2020s",
                "arXiv:2201.03545"),
    summary="A ResNet rebuilt with transformer-era choices (patchify stem, 7x7 depthwise convolutions, inverted "
            "bottleneck, LayerNorm, GELU, layer scale, stochastic depth): a pure CNN that matches Swin/ViT.",
    when_to_use="A modern convolutional backbone for classification, detection and segmentation, especially "
                "at large scale or with strong augmentation; when you want ViT-level accuracy with convolution's "
                "locality and arbitrary input sizes.",
    when_not="Tiny datasets and short training runs, where its weak inductive bias per layer and long schedules "
             "lose to a BN ResNet; very low-latency settings (depthwise convs are memory-bound).",
    relations=[
        Relation("builds_on", "resnet", "ResNet modernized with ViT-era design: 7x7 depthwise kernels, LayerNorm, "
                 "inverted bottlenecks"),
        Relation("alternative_to", "vit", "a pure convolutional network matching what Transformers brought to vision"),
    ],
    config=Config, build=ConvNeXt, objective=Classification, task="image_classification",
    train=Train(epochs=20, batch_size=32, lr=2e-3, weight_decay=0.05),
    data=Data("digits", image_size=16, crop_pad=1),
    bar=Bar("accuracy", 0.97, "max", 120),
))
