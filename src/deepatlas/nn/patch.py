"""Patch embedding: cut an image into non-overlapping p x p patches and project each to a vector."""
from __future__ import annotations

from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D) with N = (H/p)(W/p); a stride-p convolution is the per-patch linear map."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, H/p, W/p) -> (B, N, D)
