"""Convolution blocks shared by the CNNs."""
from __future__ import annotations

from typing import Literal

from torch import nn

from deepatlas.nn.activations import Activation, activation


class ConvNormAct(nn.Sequential):
    """Conv2d -> BatchNorm -> activation, with 'same' padding for odd kernels; the CNNs' basic unit."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, norm: Literal["batch", "none"] = "batch", act: Activation | None = "relu"):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                             groups=groups, bias=norm == "none")]
        if norm == "batch":
            layers.append(nn.BatchNorm2d(out_channels))
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


class SeparableConv(nn.Sequential):
    """Depthwise separable convolution (Chollet 2017): a k x k filter per channel (groups = channels),
    then a 1x1 pointwise convolution that mixes channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                                   groups=in_channels, bias=False),  # depthwise: (C, 1, k, k)
                         nn.Conv2d(in_channels, out_channels, 1, bias=False))  # pointwise: (C_out, C, 1, 1)


def classifier_head(channels: int, n_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """Global average pooling -> dropout -> linear: (B, C, H, W) -> (B, K)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, n_classes))
