"""VGG.

K. Simonyan, A. Zisserman, 2014. "Very Deep Convolutional Networks for Large-Scale Image
Recognition." arXiv:1409.1556 (ICLR 2015).

Depth as the one design variable: every convolution is 3x3 with stride 1 and padding 1, stacked
into five stages separated by 2x2 max pooling (stride 2), the channels doubling from stage to stage
(64, 128, 256, 512, 512 in the paper), then three fully connected layers with dropout. A stack of
L 3x3 convolutions sees a (2L+1) x (2L+1) window, like one large filter, with fewer weights and a
ReLU between each:

    receptive field of L stacked 3x3 convolutions = 2L + 1      (two: 5x5, three: 7x7)
    weights, C channels in and out: L · 3²C²  vs  (2L+1)²C²     (three: 27C² vs 49C²)

The depth presets are the paper's configurations A, B, D and E, with these convolutions per stage:

    vgg11: 1 1 2 2 2    vgg13: 2 2 2 2 2    vgg16: 2 2 3 3 3    vgg19: 2 2 4 4 4

Through the poolings the windows keep growing: one unit after vgg16's last stage sees 212x212
input pixels (`receptive_field`). Here the widths are scaled by `width` (the first stage's channels)
and FC6/FC7 by `hidden`; five poolings need an input of at least 32x32 pixels (digits are upscaled).
Batch normalization (Ioffe & Szegedy 2015) is on by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Probability, Relation, Size, Train, register
from deepatlas.nn.conv import ConvNormAct
from deepatlas.tasks.classification import Classification

PRESETS: dict[str, tuple[int, ...]] = {
    "vgg11": (1, 1, 2, 2, 2),  # configuration A
    "vgg13": (2, 2, 2, 2, 2),  # configuration B
    "vgg16": (2, 2, 3, 3, 3),  # configuration D
    "vgg19": (2, 2, 4, 4, 4),  # configuration E
}


@dataclass
class Config:
    in_channels: Size = 1
    """image channels (set from the data)"""
    image_size: Size = 32
    """input side length (set from the data); at least 32 for the five poolings"""
    n_classes: Size = 10
    """classes (set from the data)"""
    depth: Literal["vgg11", "vgg13", "vgg16", "vgg19"] = "vgg11"
    """the paper's configuration: 3x3 convolutions per stage (A, B, D, E)"""
    width: Size = 16
    """channels of the first stage; each next stage doubles them, up to 8x (the paper: 64 up to 512)"""
    hidden: Size = 128
    """units of FC6 and FC7 (the paper: 4096)"""
    dropout: Probability = 0.5
    """dropout on the outputs of FC6 and FC7, as in the paper"""
    batch_norm: bool = True
    """batch normalization after each convolution (Ioffe & Szegedy 2015, not in the paper)"""


def receptive_field(counts: tuple[int, ...]) -> list[int]:
    """Side of the input window one unit sees after each stage. With j the stride so far ("jump"), a
    3x3 convolution widens the window by 2j, a 2x2 pooling by j and then doubles j. vgg16: 212."""
    side, jump, out = 1, 1, []
    for count in counts:
        side += 2 * jump * count  # `count` 3x3 convolutions
        side += jump              # 2x2 max pooling, stride 2
        jump *= 2
        out.append(side)
    return out


def stage_channels(width: int, stages: int) -> list[int]:
    """Channels per stage: doubling, capped at 8x the first (64, 128, 256, 512, 512 for width 64)."""
    return [width * min(2 ** i, 8) for i in range(stages)]


class VGG(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        counts = PRESETS[cfg.depth]
        side = cfg.image_size // 2 ** len(counts)
        if side < 1:
            raise ValueError(f"image_size {cfg.image_size} is too small for {len(counts)} 2x2 poolings; use >= 32")
        norm = "batch" if cfg.batch_norm else "none"
        stages, c_in = [], cfg.in_channels
        for count, c_out in zip(counts, stage_channels(cfg.width, len(counts))):
            convs = []
            for _ in range(count):  # `count` stacked 3x3 convolutions: a (2·count+1)² receptive field
                convs.append(ConvNormAct(c_in, c_out, 3, norm=norm))  # (B, c_in, H, W) -> (B, c_out, H, W)
                c_in = c_out
            stages.append(nn.Sequential(*convs, nn.MaxPool2d(2, 2)))  # H, W -> H/2, W/2
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Sequential(  # dropout on the outputs of FC6 and FC7
            nn.Flatten(),                                                                 # (B, c5 * side²)
            nn.Linear(c_in * side * side, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),  # FC6
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),         # FC7
            nn.Linear(cfg.hidden, cfg.n_classes),                                         # FC8
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.stages(x))  # (B, C, H, W) -> (B, 8·width, H/32, W/32) -> (B, K)


register(Entry(
    name="vgg", title="VGG", family="vision", year=2014,
    paper=Paper("K. Simonyan, A. Zisserman", "Very Deep Convolutional Networks for Large-Scale Image "
                "Recognition", "arXiv:1409.1556"),
    summary="Stages of stacked 3x3 convolutions separated by 2x2 max pooling, channels doubling per stage, "
            "11 to 19 layers deep: showed that depth built from the smallest filters wins.",
    when_to_use="A uniform, easy-to-read plain CNN; feature extraction and perceptual losses (style transfer), "
                "where its simple hierarchy of features is well understood.",
    when_not="When compute or parameters are limited: ResNet and ConvNeXt are more accurate for far less, "
             "and plain stacks past ~20 layers stop training well without residual connections.",
    relations=[
        Relation("builds_on", "alexnet", "only 3x3 convolutions, stacked deeper in uniform blocks"),
        Relation("alternative_to", "inception", "simpler and heavier: depth by plain stacks instead of multi-branch "
                 "modules"),
    ],
    config=Config, build=VGG, objective=Classification, task="image_classification",
    train=Train(epochs=20, batch_size=64, lr=2e-3, weight_decay=1e-4),
    data=Data("digits", image_size=32),
    bar=Bar("accuracy", 0.97, "max", 120),
    notes="Without batch normalization this recipe reaches about 0.87 validation accuracy on digits in 20 epochs, "
          "with it 0.99.",
))
