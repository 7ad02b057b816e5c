"""The time-conditional U-Net of diffusion and score models (ddpm, ncsn, score_sde).

Ho, Jain & Abbeel 2020 (arXiv:2006.11239, appendix B) built it from PixelCNN++'s U-Net: a Wide-ResNet
encoder and decoder joined by skip connections, group normalization in place of weight normalization, the
noise level t fed to every residual block as a sinusoidal (Transformer) embedding passed through an MLP,
and self-attention at the lowest resolution (16×16 of 32×32 in the paper; the middle of the network here).
The layout is diffusers' `UNet2DModel` layout, so the benchmark can compare the two at one configuration:

    in conv 3×3 (C -> ch)
    down:  per level l (channels ch·mult[l]): `blocks` ResBlocks (+ attention at the lowest level),
           then a stride-2 3×3 convolution, except after the last level
    middle: ResBlock, attention, ResBlock
    up:    per level, lowest first: `blocks` + 1 ResBlocks, each reading the concatenation of the running
           map and one saved skip map, then nearest ×2 upsampling and a 3×3 convolution, except at the top
    out:   GroupNorm, SiLU, conv 3×3 (ch -> out_channels)

Sides that do not halve len(mults) − 1 times (a user's 25×25 images) are padded at the bottom and right by
repeating the edge pixels up to the next multiple, and the output is cropped back: the model trains and samples
at the data's own size, the padding the same in both.

`time` is a float tensor (B,): the discrete step t (ddpm), or log σ (ncsn), or a continuous t (score_sde):
the embedding only needs distinct noise levels to map to distinct vectors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) -> (B, dim): [sin(t·ω_k), cos(t·ω_k)] with ω_k = max_period^(−k/(dim/2)), k = 0 .. dim/2 − 1, the
    Transformer's positional encoding with the noise level as the position."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """x + f(x, t): GroupNorm, SiLU, conv; add the projected time embedding per channel; GroupNorm, SiLU,
    dropout, conv. A 1×1 convolution matches the skip path when the channels change."""

    def __init__(self, c_in: int, c_out: int, emb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(emb, c_out)
        self.norm2, self.conv2 = _norm(c_out, groups), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                  # (B, c_out, H, W)
        h = h + self.time(F.silu(emb))[:, :, None, None]       # the noise level, per channel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """x + proj(softmax(QKᵀ/√d) V) over the H·W positions, one head, after a GroupNorm."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)                   # (B, HW, C)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)                      # (B, HW, C)
        return x + self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """(x (B, C, H, W), time (B,)) -> (B, out_channels, H, W), H and W any size (padded to halve, cropped back)."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 32, mults: tuple = (1, 2, 2),
                 blocks: int = 1, groups: int = 8, dropout: float = 0.0, attention: bool = True):
        super().__init__()
        emb = 4 * channels
        self.channels, self.multiple = channels, 2 ** (len(mults) - 1)
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in mults]
        lowest = len(mults) - 1
        self.down, skips, c = nn.ModuleList(), [channels], channels
        for level, width in enumerate(widths):
            for _ in range(blocks):
                self.down.append(ResBlock(c, width, emb, groups, dropout))
                c = width
                skips.append(c)
                if level == lowest and attention:
                    self.down.append(Attention(c, groups))
            if level != lowest:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.middle = nn.ModuleList([ResBlock(c, c, emb, groups, dropout), Attention(c, groups),
                                     ResBlock(c, c, emb, groups, dropout)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), width, emb, groups, dropout))
                c = width
                if level == lowest and attention:
                    self.up.append(Attention(c, groups))
            if level != 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
        self.out = nn.Sequential(_norm(c, groups), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1))
        # channels-last weights and inputs: the convolutions run about 10% faster (oneDNN on CPU, tensor cores on GPU)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        emb = self.time_mlp(timestep_embedding(time.expand(len(x)), self.channels))  # (B, 4·ch)
        height, width = x.shape[-2:]
        pad = (0, -width % self.multiple, 0, -height % self.multiple)
        x = (F.pad(x, pad, mode="replicate") if any(pad) else x).contiguous(memory_format=torch.channels_last)
        h = self.inp(x)
        saved = [h]
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
                saved.append(h)
            elif isinstance(layer, Attention):
                h = saved[-1] = layer(h)            # the attended map is the one the skip carries
            else:
                h = layer(h)                        # stride-2 downsampling
                saved.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, saved.pop()], dim=1), emb)
            elif isinstance(layer, Attention):
                h = layer(h)
            else:
                h = layer(h)                        # upsampling
        return self.out(h)[..., :height, :width]
