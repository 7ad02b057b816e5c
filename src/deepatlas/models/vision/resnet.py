"""ResNet: deep residual networks, original and pre-activation.

K. He, X. Zhang, S. Ren, J. Sun, 2015. "Deep Residual Learning for Image Recognition."
arXiv:1512.03385. K. He, X. Zhang, S. Ren, J. Sun, 2016. "Identity Mappings in Deep Residual
Networks." arXiv:1603.05027.

Instead of asking a stack of layers to fit a mapping H(x), each block fits the residual
F(x) = H(x) - x and adds its input back through a shortcut. Doing nothing is then the easy
default (F = 0), so a deeper network is never harder to optimize than a shallower one, and
gradients reach early layers through the shortcuts. Where a block changes the shape (more
channels, stride 2), the shortcut is a projection W_s x: a strided 1x1 convolution with BN.

    original (v1):        y = ReLU(F(x) + W_s x),   F = BN(conv(ReLU(BN(conv(x)))))
    pre-activation (v2):  y = F(x) + W_s x,         F = conv(ReLU(BN(conv(ReLU(BN(x))))))

v2 moves BN and ReLU before each convolution, so with identity shortcuts the signal travels
x_L = x_l + sum_i F(x_i) from any block to any deeper one untouched. Basic blocks are two 3x3
convolutions; bottleneck blocks are 1x1 (reduce) -> 3x3 -> 1x1 (expand 4x). The CIFAR-style
presets (resnet20/32/56: 3 stages of n basic blocks at widths 16, 32, 64, a 3x3 stem) suit small
images; the ImageNet presets (resnet18/34/50: 4 stages at widths 64..512) add the 7x7 stride-2
stem and max-pool when the images are at least 64 pixels wide.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Positive, Relation, Size, Train, register
from deepatlas.nn.conv import classifier_head
from deepatlas.tasks.classification import Classification

Depth = Literal["resnet20", "resnet32", "resnet56", "resnet18", "resnet34", "resnet50"]

# preset -> (block, blocks per stage, base width of each stage); a bottleneck stage outputs 4x its width
PRESETS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]] = {
    "resnet20": ("basic", (3, 3, 3), (16, 32, 64)),
    "resnet32": ("basic", (5, 5, 5), (16, 32, 64)),
    "resnet56": ("basic", (9, 9, 9), (16, 32, 64)),
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512)),
}


@dataclass
class Config:
    in_channels: Size = 1
    """image channels (set from the data)"""
    image_size: Size = 16
    """input side length (set from the data)"""
    n_classes: Size = 10
    """classes (set from the data)"""
    depth: Depth = "resnet20"
    """preset: resnet20/32/56 (CIFAR-style, basic blocks), resnet18/34 (basic), resnet50 (bottleneck)"""
    width: Positive = 1.0
    """width multiplier on every stage's channels"""
    preact: bool = False
    """pre-activation blocks (He et al. 2016): BN -> ReLU -> conv, nothing after the addition"""


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)  # BN follows: no bias


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; the first may stride. `self.residual` is F, `self.shortcut` is W_s (or identity)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1, preact: bool = False):
        super().__init__()
        c_out = width * self.expansion
        self.preact = preact
        if preact:  # BN -> ReLU -> conv, twice; the first BN-ReLU sits in self.pre (shared with a projection)
            self.pre = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU())
            self.residual = nn.Sequential(conv3x3(c_in, width, stride), nn.BatchNorm2d(width), nn.ReLU(),
                                          conv3x3(width, c_out))
        else:  # conv -> BN -> ReLU -> conv -> BN
            self.residual = nn.Sequential(conv3x3(c_in, width, stride), nn.BatchNorm2d(width), nn.ReLU(),
                                          conv3x3(width, c_out), nn.BatchNorm2d(c_out))
        self.shortcut = make_shortcut(c_in, c_out, stride, preact)

    def forward(self, x: Tensor) -> Tensor:
        return residual_forward(self, x)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (may stride) -> 1x1 expand to 4x width: cheaper than two 3x3s at 4x width."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1, preact: bool = False):
        super().__init__()
        c_out = width * self.expansion
        self.preact = preact
        # the stride sits on the 3x3 (as in most re-implementations); the 2015 paper put it on the first 1x1
        if preact:
            self.pre = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU())
            self.residual = nn.Sequential(
                conv1x1(c_in, width), nn.BatchNorm2d(width), nn.ReLU(),
                conv3x3(width, width, stride), nn.BatchNorm2d(width), nn.ReLU(),
                conv1x1(width, c_out))
        else:
            self.residual = nn.Sequential(
                conv1x1(c_in, width), nn.BatchNorm2d(width), nn.ReLU(),
                conv3x3(width, width, stride), nn.BatchNorm2d(width), nn.ReLU(),
                conv1x1(width, c_out), nn.BatchNorm2d(c_out))
        self.shortcut = make_shortcut(c_in, c_out, stride, preact)

    def forward(self, x: Tensor) -> Tensor:
        return residual_forward(self, x)


def make_shortcut(c_in: int, c_out: int, stride: int, preact: bool) -> nn.Module:
    """Identity when the shape is kept; otherwise the projection W_s: strided 1x1 conv (+ BN in v1;
    in v2 the next block's BN normalizes, so the paper's code leaves it out)."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    if preact:
        return conv1x1(c_in, c_out, stride)
    return nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))


def residual_forward(block: BasicBlock | Bottleneck, x: Tensor) -> Tensor:
    """y = ReLU(F(x) + W_s x) (v1), or y = F(x') + W_s x with x' = ReLU(BN(x)) (v2)."""
    if not block.preact:
        return (block.residual(x) + block.shortcut(x)).relu()         # (B, C_out, H/s, W/s)
    h = block.pre(x)                                                   # (B, C_in, H, W)
    skip = x if isinstance(block.shortcut, nn.Identity) else block.shortcut(h)  # a projection sees x' too
    return block.residual(h) + skip                                    # (B, C_out, H/s, W/s)


class ResNet(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        kind, blocks, widths = PRESETS[cfg.depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        widths = [max(1, round(w * cfg.width)) for w in widths]
        stem_width = widths[0]
        if cfg.image_size >= 64 and len(widths) == 4:  # ImageNet stem: /4 before the first stage
            self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, stem_width, 7, 2, padding=3, bias=False),
                                      nn.BatchNorm2d(stem_width), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1))
        elif cfg.preact:  # v2 CIFAR stem: a bare conv, the first block's BN-ReLU follows it
            self.stem = conv3x3(cfg.in_channels, stem_width)
        else:
            self.stem = nn.Sequential(conv3x3(cfg.in_channels, stem_width), nn.BatchNorm2d(stem_width), nn.ReLU())

        layers, c, self.stage_channels = [], stem_width, []
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1  # each stage after the first halves H and W
                layers.append(block(c, w, stride, cfg.preact))
                c = w * block.expansion
            self.stage_channels.append(c)
        self.stages = nn.Sequential(*layers)
        self.stage_ends = [sum(blocks[:i + 1]) for i in range(len(blocks))]  # block count at each stage's end
        # v2 ends with the BN-ReLU that no block applied to the last sum
        self.final = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()) if cfg.preact else nn.Identity()
        self.head = classifier_head(c, cfg.n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He initialization, as in the paper
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """Every stage's output, finest first: the backbone of dense predictors (detection, segmentation).
        With the ImageNet stem their strides are 4, 8, 16, 32; with the small-image stem 1, 2, 4 (channels in
        `stage_channels`). Pre-activation stages are returned before the final BN-ReLU."""
        x, maps = self.stem(x), []
        for i, block in enumerate(self.stages, start=1):
            x = block(x)
            if i in self.stage_ends:
                maps.append(x)             # (B, stage_channels[k], H / stride_k, W / stride_k)
        return maps

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)                   # (B, C_0, H, W), or (B, C_0, H/4, W/4) with the ImageNet stem
        x = self.final(self.stages(x))     # (B, C_last, H / 2^(stages-1), W / 2^(stages-1))
        return self.head(x)                # (B, K)


def backbone(in_channels: int, depth: Depth = "resnet18", width: float = 1.0, stages: int | None = None) -> ResNet:
    """A ResNet as the feature extractor of a dense predictor (detection, segmentation): the ImageNet stem
    (strides 4, 8, 16, 32 at any image size), no classifier, and only the first `stages` stages (all by default).
    Read it with `feature_maps`."""
    net = ResNet(Config(in_channels=in_channels, image_size=64, n_classes=1, depth=depth, width=width))
    net.head = nn.Identity()
    if stages is not None:  # deeper stages would go unused
        net.stages = net.stages[:net.stage_ends[stages - 1]]
    return net


register(Entry(
    name="resnet", title="ResNet (residual network)", family="vision", year=2015,
    paper=Paper("K. He, X. Zhang, S. Ren, J. Sun", "Deep Residual Learning for Image Recognition "
                "(and Identity Mappings in Deep Residual Networks, arXiv:1603.05027)", "arXiv:1512.03385"),
    summary="Stacks of residual blocks y = F(x) + x with batch norm: the shortcut makes the identity the "
            "default, so networks of 20 to 150+ layers train as easily as shallow ones.",
    when_to_use="The default CNN backbone for image classification and as a feature extractor for detection "
                "and segmentation; strong, well-understood, fast on any hardware.",
    when_not="Very small inputs or datasets where LeNet suffices; when global context matters more than local "
             "texture and data is plentiful (ViT); tiny compute budgets (depthwise-separable nets).",
    relations=[
        Relation("builds_on", "vgg", "identity shortcuts let a VGG-style stack of 3x3 convolutions grow far deeper"),
        Relation("alternative_to", "inception", "depth by residual blocks where Inception widens by branches"),
    ],
    config=Config, build=ResNet, objective=Classification, task="image_classification",
    train=Train(epochs=15, batch_size=64, lr=3e-3, weight_decay=5e-4),
    data=Data("digits", image_size=16, crop_pad=1, rotate=10),
    bar=Bar("accuracy", 0.98, "max", 120),
))
