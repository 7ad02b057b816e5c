"""FCN: fully convolutional networks for semantic segmentation (FCN-32s, -16s, -8s and -4s).

J. Long, E. Shelhamer, T. Darrell, 2015. "Fully Convolutional Networks for Semantic Segmentation."
CVPR 2015, arXiv:1411.4038.

A classification network becomes a dense predictor once it has no fully connected layer: every layer
is a convolution, so it takes any input size and outputs a coarse map of class scores (stride 32).
Transposed convolutions ("deconvolution", initialized to bilinear interpolation) upsample the scores
back to the input's size, and skip connections sum in scores predicted from earlier, finer stages,
so deep coarse semantics meet shallow fine appearance:

    FCN-32s:  y = up8(up2(up2(s32)))                             s_k = 1x1 conv scores of the stride-k map
    FCN-16s:  y = up8(up2(up2(s32) + s16))                        (the paper's 32s/16s upsample the fused
    FCN-8s:   y = up8(up2(up2(s32) + s16) + s8)                    scores once by 32 or 16; here the same
    FCN-4s:   y = up4(up2(up2(up2(s32) + s16) + s8) + s4)          three layers serve all three variants)
Upsampling by a factor f (stride f) with the bilinear kernel w[a, b] = (1 - |a - c| / f)(1 - |b - c| / f)
(c the kernel's centre) is exact linear interpolation between the coarse samples.

Backbone: the vision family's ResNet (He et al. 2015) in place of the paper's VGG-16, through
`ResNet.feature_maps` (ImageNet stem: strides 4, 8, 16, 32; a 64x64 image gives a 2x2 stride-32 map); its
global-pool + linear classifier is dropped (the paper "convolutionalizes" VGG's fc6/fc7 instead; a ResNet
has only one linear layer, which becomes the 1x1 stride-32 score layer). Alignment: every stride-2 layer of
this ResNet is padded so that output pixel i sits over input pixel 2i, hence a stride-s pixel i over input
pixel s*i. The paper's Caffe nets pad the input by 100 pixels and crop the upsampled maps at computed
offsets; here an upsampling kernel of odd size 2f - 1 (the paper's `upsample_filt` for an odd size) centred
on its middle tap puts coarse pixel i exactly on fine pixel f*i, so the crop always starts at 0 and only
trims the far end: the output has the input's size for any size, odd included.

The default is FCN-4s (`skips=3`): one more skip of the same kind, from the stride-4 stage (the paper's
section 4.2 continues fusing lower layers and stops at 8s for diminishing returns on 500x500 PASCAL images).
On 64x64 scenes a stride-8 map is 8x8 and objects are 10-25 pixels wide, too coarse for their outlines
(the entry's notes give the measurements). `skips=2` is the paper's FCN-8s, `skips=0` FCN-32s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Positive, Probability, Range, Relation, Size, Train, register
from deepatlas.models.vision import resnet
from deepatlas.tasks.detection import Segmentation


@dataclass
class Config:
    in_channels: Size = 3
    """image channels (set from the data)"""
    image_size: Size = 64
    """input side length (set from the data); the network itself takes any size"""
    n_classes: Size = 5
    """classes including background (set from the data)"""
    depth: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    """backbone preset (four stages, ImageNet stem: strides 4, 8, 16, 32)"""
    width: Positive = 0.5
    """width multiplier on the backbone's channels"""
    skips: Annotated[int, Range(0, 3)] = 3
    """skip fusions: 0 = FCN-32s, 1 = FCN-16s (+ stride 16), 2 = FCN-8s (+ 16 and 8), 3 = FCN-4s (+ 16, 8 and 4)"""
    learn_final_upsample: bool = False
    """learn the last upsampling (x8, or x4 for FCN-4s) too; the paper keeps it fixed to bilinear interpolation"""
    dropout: Probability = 0.1
    """dropout on the stride-32 features before their score layer (the paper's fc6/fc7 dropout)"""


def bilinear_kernel(factor: int) -> Tensor:
    """(2f - 1, 2f - 1) kernel of bilinear interpolation by `factor` f: w[a, b] = (1 - |a - c| / f)(1 - |b - c| / f),
    c = f - 1 the centre tap (weight 1): a transposed convolution with it, stride f and padding f - 1 puts coarse
    pixel i on fine pixel f*i and fills the f - 1 pixels between two samples linearly."""
    taps = 1 - (torch.arange(2 * factor - 1, dtype=torch.float32) - (factor - 1)).abs() / factor  # (2f - 1,)
    return taps[:, None] * taps[None, :]                                                          # (2f - 1, 2f - 1)


class Upsample(nn.Module):
    """Transposed convolution K -> K by `factor`, initialized to bilinear interpolation of each channel alone
    (weight[k, k] = bilinear kernel, weight[k, j != k] = 0); learned unless `learn` is False (then a buffer).

    forward(x (B, K, h, w), size (H, W)) -> (B, K, H, W) for any H <= f*h, W <= f*w: the last coarse row and
    column are repeated once (replicate padding, so the far edge extrapolates flat instead of fading to 0),
    the transposed convolution gives f*h + 1 rows with row f*i over coarse row i, and the crop keeps the
    first H rows (and W columns)."""

    def __init__(self, channels: int, factor: int, learn: bool = True):
        super().__init__()
        self.factor = factor
        weight = torch.zeros(channels, channels, 2 * factor - 1, 2 * factor - 1)             # (K_in, K_out, k, k)
        weight[range(channels), range(channels)] = bilinear_kernel(factor)                   # diagonal: per channel
        if learn:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        f = self.factor
        x = F.pad(x, (0, 1, 0, 1), mode="replicate")                                  # (B, K, h + 1, w + 1)
        y = F.conv_transpose2d(x, self.weight.to(x.dtype), stride=f, padding=f - 1)  # (B, K, f*h + 1, f*w + 1)
        return y[..., : size[0], : size[1]]                                           # crop: (B, K, H, W)


class FCN(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.skips = cfg.skips
        K = cfg.n_classes
        self.backbone = resnet.backbone(cfg.in_channels, cfg.depth, cfg.width)  # no fully connected layer anywhere
        c4, c8, c16, c32 = self.backbone.stage_channels
        self.final_stride = 4 if cfg.skips == 3 else 8
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.score32 = nn.Conv2d(c32, K, 1)                        # score_fr: scores at stride 32
        self.score16 = nn.Conv2d(c16, K, 1)                        # score_pool4: stride 16
        self.score8 = nn.Conv2d(c8, K, 1)                          # score_pool3: stride 8
        self.score4 = nn.Conv2d(c4, K, 1) if cfg.skips == 3 else None  # FCN-4s only: stride 4
        for layer in [m for m in (self.score16, self.score8, self.score4) if m is not None]:
            nn.init.zeros_(layer.weight)  # the paper zero-initializes the skip scores: a skip net starts as its parent
            nn.init.zeros_(layer.bias)
        self.up32 = Upsample(K, 2)                                 # upscore2: x2, learned from bilinear
        self.up16 = Upsample(K, 2)                                 # upscore_pool4: x2, learned from bilinear
        self.up8 = Upsample(K, 2) if cfg.skips == 3 else None      # FCN-4s only: x2 to stride 4
        self.up_final = Upsample(K, self.final_stride, learn=cfg.learn_final_upsample)  # upscore8: fixed bilinear

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        f4, f8, f16, f32 = self.backbone.feature_maps(x)           # (B, c_s, ceil(H/s), ceil(W/s)), s = 4, 8, 16, 32
        s = self.score32(self.dropout(f32))                        # (B, K, H/32, W/32)
        s = self.up32(s, f16.shape[-2:])                           # (B, K, H/16, W/16)
        if self.skips >= 1:
            s = s + self.score16(f16)                              # fuse by summation (FCN-16s)
        s = self.up16(s, f8.shape[-2:])                            # (B, K, H/8, W/8)
        if self.skips >= 2:
            s = s + self.score8(f8)                                # fuse by summation (FCN-8s)
        if self.skips >= 3:
            s = self.up8(s, f4.shape[-2:]) + self.score4(f4)       # (B, K, H/4, W/4) (FCN-4s)
        return self.up_final(s, (H, W))                            # (B, K, H, W): the input's size


register(Entry(
    name="fcn", title="FCN (fully convolutional network)", family="segmentation", year=2015,
    paper=Paper("J. Long, E. Shelhamer, T. Darrell", "Fully Convolutional Networks for Semantic Segmentation",
                "arXiv:1411.4038"),
    summary="A classification CNN with its fully connected layers turned into convolutions predicts a coarse "
            "score map for any input size; bilinear-initialized transposed convolutions upsample it and sum in "
            "scores from finer stages (skips) for per-pixel labels.",
    when_to_use="Semantic segmentation with a pretrained or reusable classification backbone; the simplest "
                "dense predictor to start from; inputs of varying size.",
    when_not="When boundaries must be precise or objects are tiny (a U-Net's full decoder or dilated networks "
             "recover detail better); when instances must be told apart (instance segmentation).",
    relations=[
        Relation("uses", "resnet", "a ResNet classifier made fully convolutional is its encoder"),
        Relation("alternative_to", "unet", "a coarse score map upsampled with a few skips, where U-Net decodes "
                 "symmetrically"),
    ],
    config=Config, build=FCN, objective=Segmentation, task="segmentation",
    train=Train(epochs=30, batch_size=16, lr=3e-3, weight_decay=1e-4),
    data=Data("shapes", flip=True),
    bar=Bar("miou", 0.75, "max", 300),
    notes="On 64x64 scenes FCN-8s plateaus near 0.67 mIoU (an oracle that samples the true masks at stride 8 "
          "and upsamples bilinearly scores 0.65; at stride 4, 0.87), below the 0.75 bar, while FCN-4s (skips=3, "
          "the default) reaches it.",
))
