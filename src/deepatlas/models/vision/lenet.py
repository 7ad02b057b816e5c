"""LeNet-5.

Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, 1998. "Gradient-Based Learning Applied to Document
Recognition." Proceedings of the IEEE 86(11), 2278-2324.

The convolutional network in its classic form: small learned filters shared across the image
(weight sharing gives translation equivariance), each convolution followed by subsampling
(average pooling) that trades resolution for invariance, squashing tanh units, and fully
connected layers on top.

    C1 conv 5x5 -> S2 avg-pool 2 -> C3 conv 5x5 -> S4 avg-pool 2 -> F5 -> F6 -> output

The paper's input is 32x32 with valid convolutions; here the first convolution pads to keep the
size, so 16x16 digits give 16 -> 8 -> 4 (after C3 and S4) maps; ReLU and max pooling are options.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Relation, Size, Train, register
from deepatlas.nn.activations import Activation, activation
from deepatlas.tasks.classification import Classification


@dataclass
class Config:
    in_channels: Size = 1
    """image channels (set from the data)"""
    image_size: Size = 16
    """input side length (set from the data)"""
    n_classes: Size = 10
    """classes (set from the data)"""
    c1: Size = 6
    """feature maps of the first convolution (C1)"""
    c3: Size = 16
    """feature maps of the second convolution (C3)"""
    f5: Size = 120
    """units of the first fully connected layer"""
    f6: Size = 84
    """units of the second fully connected layer"""
    activation: Activation = "tanh"
    """the paper's squashing function is a scaled tanh"""
    pool: Literal["avg", "max"] = "avg"
    """subsampling: the paper averages (with a learned gain); max is the modern choice"""


class LeNet(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        pool = nn.AvgPool2d if cfg.pool == "avg" else nn.MaxPool2d
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.c1, 5, padding=2), activation(cfg.activation), pool(2),  # C1, S2
            nn.Conv2d(cfg.c1, cfg.c3, 5, padding=2), activation(cfg.activation), pool(2),           # C3, S4
        )
        side = cfg.image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cfg.c3 * side * side, cfg.f5), activation(cfg.activation),       # F5
            nn.Linear(cfg.f5, cfg.f6), activation(cfg.activation), nn.Linear(cfg.f6, cfg.n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, C, H, W) -> (B, c3, H/4, W/4) -> (B, K)


register(Entry(
    name="lenet", title="LeNet-5", family="vision", year=1998,
    paper=Paper("Y. LeCun, L. Bottou, Y. Bengio, P. Haffner", "Gradient-Based Learning Applied to Document "
                "Recognition", "Proceedings of the IEEE 86(11), 1998"),
    summary="Two convolution + subsampling stages and a fully connected classifier: the first CNN trained "
            "end to end by back-propagation.",
    when_to_use="Small grey images (digits, glyphs, small sensors); teaching convolution and pooling; a fast baseline.",
    when_not="Natural images at modern resolutions, where deeper residual networks or ViTs win by far.",
    relations=[
        Relation("builds_on", "mlp", "replaces dense layers by shared convolutional filters and subsampling: fewer "
                 "weights, shift tolerance"),
    ],
    config=Config, build=LeNet, objective=Classification, task="image_classification",
    train=Train(epochs=30, batch_size=64, lr=3e-3, weight_decay=1e-4),
    data=Data("digits", image_size=16),
    bar=Bar("accuracy", 0.97, "max", 120),
))
