"""AlexNet.

A. Krizhevsky, I. Sutskever, G. E. Hinton, 2012. "ImageNet Classification with Deep Convolutional
Neural Networks." Advances in Neural Information Processing Systems 25 (NeurIPS 2012).

LeNet's recipe made deep and fast enough to win ImageNet: five convolutions and three fully
connected layers, trained on GPUs. Four mechanisms carry the paper. Rectified linear units
f(x) = max(0, x) instead of tanh, which train several times faster. Overlapping max pooling: windows
of z = 3 pixels every s = 2 pixels (z > s), which lowered the error and overfitting a little.
Dropout (p = 0.5) on the first two fully connected layers, so no unit can rely on particular others.
Local response normalization, a lateral inhibition across the N channels at each position:

    b^i_{x,y} = a^i_{x,y} / (k + α Σ_{j = max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j_{x,y})²)^β,
    k = 2, n = 5, α = 1e-4, β = 0.75

    conv1 -> [LRN] -> pool 3/2 -> conv2 -> [LRN] -> pool 3/2 -> conv3 -> conv4 -> conv5 -> pool 3/2
          -> dropout -> FC6 -> dropout -> FC7 -> FC8

The paper's 224x224 input opens with an 11x11 stride-4 convolution and the network is split across
two GPUs; here a small image (16x16) opens with a 5x5 stride-1 convolution, widths are scaled down,
and the whole network is one tower. Pooling does not pad: 16 -> 7 -> 3 -> 1 (32 -> 15 -> 7 -> 3).
The paper's initialization (N(0, 0.01) weights, some biases 1) is an option; at this size it leaves
the signal too small for seven layers to learn quickly, so He initialization is the default.
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


@dataclass
class Config:
    in_channels: Size = 1
    """image channels (set from the data)"""
    image_size: Size = 16
    """input side length (set from the data)"""
    n_classes: Size = 10
    """classes (set from the data)"""
    channels: Annotated[tuple[int, ...], Range(1, MAX_SIZE)] = (32, 64, 96, 96, 64)
    """feature maps of conv1..conv5 (the paper: 96, 256, 384, 384, 256)"""
    kernel: Size = 5
    """side of conv1's filters (the paper: 11, stride 4, for 224x224 images)"""
    hidden: Size = 256
    """units of FC6 and FC7 (the paper: 4096)"""
    dropout: Probability = 0.5
    """dropout on the outputs of FC6 and FC7, as in the paper"""
    lrn: bool = True
    """local response normalization after conv1 and conv2"""
    lrn_size: Size = 5
    """n: channels each LRN sums over"""
    pool_kernel: Size = 3
    """z: side of the max-pooling windows"""
    pool_stride: Size = 2
    """s: stride of the max-pooling windows; z > s makes them overlap"""
    init: Literal["he", "paper"] = "he"
    """weights: He normal with zero biases, or the paper's N(0, 0.01) with biases 1 in conv2, conv4, conv5, FC6, FC7"""

    def __post_init__(self):
        if len(self.channels) != 5:
            raise DeepAtlasError(f"alexnet: channels takes five widths, one per convolution; got {len(self.channels)}")


class LocalResponseNorm(nn.Module):
    """The paper's LRN, written as its equation: each activation is divided by (k + α Σ a_j²)^β, the sum
    running over n neighbouring channels j at the same position. The window sum is a 1x1 convolution
    with a fixed band matrix M (M_ij = 1 when j is within the window of i); it equals
    torch.nn.LocalResponseNorm(n, alpha=n·α, beta, k) and runs about twice as fast on a CPU."""

    def __init__(self, channels: int, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        self.alpha, self.beta, self.k = alpha, beta, k
        i = torch.arange(channels)
        offset = i[None, :] - i[:, None]  # (C, C): j - i
        band = (offset >= -(n // 2)) & (offset <= (n - 1) // 2)
        self.register_buffer("band", band.float()[:, :, None, None], persistent=False)  # (C, C, 1, 1)

    def forward(self, a: Tensor) -> Tensor:
        window = F.conv2d(a * a, self.band)  # (B, C, H, W): Σ_j a_j² over each channel's window
        return a / (self.k + self.alpha * window) ** self.beta


def pooled(side: int, kernel: int, stride: int) -> int:
    """Side length after an unpadded max pooling."""
    return (side - kernel) // stride + 1


class AlexNet(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        if len(cfg.channels) != 5:
            raise ValueError(f"channels: AlexNet has five convolutions, got {len(cfg.channels)}")
        c1, c2, c3, c4, c5 = cfg.channels

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(cfg.pool_kernel, cfg.pool_stride)  # overlapping when kernel > stride

        def lrn(channels: int) -> nn.Module:
            return LocalResponseNorm(channels, cfg.lrn_size) if cfg.lrn else nn.Identity()

        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, c1, cfg.kernel, padding=cfg.kernel // 2), nn.ReLU(), lrn(c1), pool(),  # conv1
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), lrn(c2), pool(),                                  # conv2
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),                                                   # conv3
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),                                                   # conv4
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(), pool(),                                           # conv5
        )
        side = cfg.image_size
        for _ in range(3):
            side = pooled(side, cfg.pool_kernel, cfg.pool_stride)
        if side < 1:
            raise ValueError(f"image_size {cfg.image_size} is too small for three {cfg.pool_kernel}/"
                             f"{cfg.pool_stride} poolings; use at least {cfg.pool_kernel + 6 * cfg.pool_stride}")
        self.classifier = nn.Sequential(  # dropout zeroes each output of FC6 and FC7 with probability p
            nn.Flatten(),                                                                  # (B, c5 * side²)
            nn.Linear(c5 * side * side, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),  # FC6
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),         # FC7
            nn.Linear(cfg.hidden, cfg.n_classes),                                          # FC8
        )
        self.reset_parameters(cfg.init)

    def reset_parameters(self, init: str) -> None:
        """'paper': weights N(0, 0.01), biases 1 in conv2, conv4, conv5, FC6 and FC7 (this "accelerates the
        early stages of learning by providing the ReLUs with positive inputs"), 0 elsewhere.
        'he': He et al. (2015) normal weights, variance 2 / fan_in, and zero biases."""
        layers = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # conv1..conv5, FC6..FC8
        for i, layer in enumerate(layers):
            if init == "paper":
                nn.init.normal_(layer.weight, 0.0, 0.01)
                nn.init.constant_(layer.bias, 1.0 if i in (1, 3, 4, 5, 6) else 0.0)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, C, H, W) -> (B, c5, side, side) -> (B, K)


register(Entry(
    name="alexnet", title="AlexNet", family="vision", year=2012,
    paper=Paper("A. Krizhevsky, I. Sutskever, G. E. Hinton", "ImageNet Classification with Deep Convolutional "
                "Neural Networks", "NeurIPS 2012"),
    summary="Five convolutions and three fully connected layers with ReLU, overlapping max pooling, local "
            "response normalization and dropout: the network that started the deep learning era on ImageNet.",
    when_to_use="Teaching the jump from LeNet to deep CNNs; a simple, fast plain-CNN baseline on small images.",
    when_not="Anything where accuracy per parameter matters: its huge fully connected layers are wasteful, and "
             "VGG, Inception and above all ResNet are better at every size.",
    relations=[
        Relation("builds_on", "lenet", "a deeper, wider LeNet with ReLU, dropout, overlapping pooling and "
                 "augmentation"),
    ],
    config=Config, build=AlexNet, objective=Classification, task="image_classification",
    train=Train(epochs=30, batch_size=64, lr=1e-3, weight_decay=1e-4),
    data=Data("digits", image_size=16),
    bar=Bar("accuracy", 0.97, "max", 120),
))
