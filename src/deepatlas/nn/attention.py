"""Multi-head scaled dot-product attention, the transformer layer, and sinusoidal positions.

A. Vaswani et al., 2017. "Attention Is All You Need." arXiv:1706.03762.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V,   heads computed in parallel and concatenated,

where the mask M is 0 where a query may look and -inf where it may not (padding keys; future keys
under the causal mask). One `Block` serves every transformer in the atlas: ViT and GPT-2 put the
layer norm before each sublayer (pre-norm, x + f(LN(x))), the original transformer and BERT after
it (post-norm, LN(x + f(x))); a decoder block adds cross-attention over the encoder's output.
The kernel is torch's scaled_dot_product_attention, which picks a fused implementation per device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.nn.regularization import DropPath

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


def padding_mask(keep: Tensor) -> Tensor:
    """(B, S) bool, True at real tokens -> an attention mask (B, 1, 1, S): no query looks at padding."""
    return keep[:, None, None, :]


def causal_mask(length: int, device=None) -> Tensor:
    """(T, T) bool, True on and below the diagonal: position t looks at positions <= t only."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same): (length, dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]                           # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (d/2,)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


class MultiHeadAttention(nn.Module):
    """Self-attention (memory=None) or cross-attention: queries from x, keys and values from memory.

    One (3C, C) projection holds W_Q, W_K, W_V stacked, so self-attention is one matmul."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """x (B, T, C), memory (B, S, C) or None; mask bool, True = may attend, broadcastable to (B, heads, T, S)."""
        B, T, C = x.shape
        hs = C // self.heads
        if memory is None:
            q, k, v = self.qkv(x).view(B, T, 3, self.heads, hs).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
        else:
            w_q, w_kv = self.qkv.weight.split([C, 2 * C])
            b_q, b_kv = self.qkv.bias.split([C, 2 * C]) if self.qkv.bias is not None else (None, None)
            q = F.linear(x, w_q, b_q).view(B, T, self.heads, hs).transpose(1, 2)         # (B, nh, T, hs)
            k, v = F.linear(memory, w_kv, b_kv).view(B, -1, 2, self.heads, hs).permute(2, 0, 3, 1, 4)  # (B, nh, S, hs)
        if causal and mask is not None:  # SDPA takes one or the other: fold the causal mask into the given one
            mask, causal = mask & causal_mask(T, x.device), False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    """One transformer layer: self-attention, cross-attention over `memory` (if `cross`), then an MLP.

    Pre-norm (`norm_first`, GPT-2 and ViT): x + f(LN(x)). Post-norm (Vaswani et al., BERT):
    LN(x + f(x)). Each sublayer's output goes through dropout (and stochastic depth) before the sum.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 drop_path: float = 0.0, norm_first: bool = True, cross: bool = False,
                 activation: str = "gelu", eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        if cross:
            self.norm_cross = nn.LayerNorm(dim, eps=eps)
            self.cross_attn = MultiHeadAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def _residual(self, x: Tensor, norm: nn.LayerNorm, sublayer) -> Tensor:
        if self.norm_first:
            return x + self.drop_path(self.drop(sublayer(norm(x))))
        return norm(x + self.drop_path(self.drop(sublayer(x))))

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False,
                memory: Tensor | None = None, memory_mask: Tensor | None = None) -> Tensor:
        """x (B, T, C); mask/causal for self-attention; memory (B, S, C) and memory_mask for cross-attention."""
        x = self._residual(x, self.norm1, lambda h: self.attn(h, mask=mask, causal=causal))
        if memory is not None:
            x = self._residual(x, self.norm_cross, lambda h: self.cross_attn(h, memory, mask=memory_mask))
        return self._residual(x, self.norm2, self.mlp)  # (B, T, C)
