"""Stochastic depth and layer scale, used by residual networks (ConvNeXt, ViT, ...)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016, arXiv:1603.09382): in training, drop a sample's whole
    residual branch with probability p and scale survivors by 1/(1-p); identity at eval."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= self.p  # (B, 1, ...)
        return x * keep.to(x.dtype) / (1 - self.p)


class LayerScale(nn.Module):
    """Per-channel learnable scale on a residual branch, initialised small (Touvron et al. 2021,
    arXiv:2103.17239). `channel_dim` is 1 for (B, C, H, W) maps and -1 for (B, N, C) tokens."""

    def __init__(self, channels: int, init: float = 1e-6, channel_dim: int = -1):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), init))
        self.channel_dim = channel_dim

    def forward(self, x: Tensor) -> Tensor:
        if self.channel_dim == 1:
            return x * self.gamma[:, None, None]
        return x * self.gamma
