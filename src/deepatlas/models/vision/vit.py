"""Vision Transformer (ViT).

A. Dosovitskiy, L. Beyer, A. Kolesnikov, D. Weissenborn, X. Zhai, T. Unterthiner, M. Dehghani,
M. Minderer, G. Heigold, S. Gelly, J. Uszkoreit, N. Houlsby, 2020. "An Image is Worth 16x16 Words:
Transformers for Image Recognition at Scale." ICLR 2021, arXiv:2010.11929.

No convolutions past the first linear map: the image is cut into P x P patches, each flattened
and projected to a D-dimensional token, a learned [class] token is prepended, learned position
embeddings are added, and a stack of standard pre-norm transformer encoder blocks lets every
token attend to every other. The class token's final state, layer-normed, goes to an MLP head.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos          E: (P^2 C, D), E_pos: (N+1, D)
    z'_l = MSA(LN(z_{l-1})) + z_{l-1},   z_l = MLP(LN(z'_l)) + z'_l      l = 1..L
    y = head(LN(z_L^0))

Self-attention treats tokens as a set: without E_pos the encoder is permutation-equivariant over
the patches (shuffle the patches and the output tokens shuffle the same way), so the position
embedding is the model's only knowledge of where a patch was. With few inductive biases, ViTs
need much data or strong augmentation and regularization; here small images (16 x 16, 4 x 4
patches), random shifts and rotations, weight decay and stochastic depth stand in for scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from deepatlas.catalog import (Bar, Count, Data, Entry, Paper, Positive, Probability, Range, Relation, Size, Train,
                              register)
from deepatlas.errors import DeepAtlasError
from deepatlas.models.language.transformer import Block
from deepatlas.nn.patch import PatchEmbed
from deepatlas.tasks.classification import Classification


@dataclass
class Config:
    in_channels: Size = 1
    """image channels (set from the data)"""
    image_size: Size = 16
    """input side length (set from the data); a multiple of patch_size"""
    n_classes: Size = 10
    """classes (set from the data)"""
    patch_size: Size = 4
    """side P of the square patches; the sequence has (image_size / P)^2 patch tokens"""
    dim: Size = 64
    """token width D"""
    depth: Count = 4
    """encoder blocks L"""
    heads: Size = 4
    """attention heads per block (dim must be divisible by heads)"""
    mlp_ratio: Positive = 2.0
    """hidden width of each block's MLP, as a multiple of dim"""
    dropout: Probability = 0.0
    """dropout on embeddings, attention weights and MLP outputs"""
    drop_path: Annotated[float, Range(0.0, 0.99)] = 0.1
    """stochastic depth rate of the last block (rising linearly from 0 at the first)"""
    pos_embed: bool = True
    """add learned position embeddings (off: the encoder cannot tell where a patch came from)"""
    head_hidden: Count = 64
    """tanh hidden units of an MLP head (the paper's pre-training head); 0: one linear layer (its fine-tuning head)"""

    def __post_init__(self):
        if self.dim % self.heads:
            raise DeepAtlasError(f"vit: dim {self.dim} must be divisible by heads {self.heads}")


class ViT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        n_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.patch_embed = PatchEmbed(cfg.in_channels, cfg.dim, cfg.patch_size)   # x_p E
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))                  # x_class
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, cfg.dim)) if cfg.pos_embed else None  # E_pos
        self.dropout = nn.Dropout(cfg.dropout)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth, device="cpu").tolist()  # numbers, also when built on meta
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, rate)
                                    for rate in rates)
        self.norm = nn.LayerNorm(cfg.dim)
        if cfg.head_hidden:
            self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.head_hidden), nn.Tanh(),
                                      nn.Linear(cfg.head_hidden, cfg.n_classes))
        else:
            self.head = nn.Linear(cfg.dim, cfg.n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Class token and position embeddings start as small noise (std 0.02, as in the reference code);
        linear maps keep PyTorch's default init, which trains faster on small data than the reference's
        std-0.02 weights."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1 + N, D): the encoder's final, layer-normed tokens, class token first."""
        z = self.patch_embed(x)                                  # (B, N, D)
        cls = self.cls_token.expand(z.shape[0], -1, -1)          # (B, 1, D)
        z = torch.cat([cls, z], dim=1)                           # (B, 1 + N, D)
        if self.pos_embed is not None:
            z = z + self.pos_embed                               # (B, 1 + N, D)
        z = self.dropout(z)
        for block in self.blocks:
            z = block(z)                                         # (B, 1 + N, D)
        return self.norm(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encode(x)[:, 0])                   # class token (B, D) -> (B, K)


register(Entry(
    name="vit", title="Vision Transformer (ViT)", family="vision", year=2020,
    paper=Paper("A. Dosovitskiy, L. Beyer, A. Kolesnikov, D. Weissenborn, X. Zhai, T. Unterthiner, M. Dehghani, "
                "M. Minderer, G. Heigold, S. Gelly, J. Uszkoreit, N. Houlsby",
                "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", "arXiv:2010.11929"),
    summary="Cut the image into patches, embed each as a token, add a class token and position embeddings, "
            "and run a plain transformer encoder: global attention from the first layer, no convolutions.",
    when_to_use="Large image datasets or a pretrained checkpoint to fine-tune; when global context matters; "
                "when images share a backbone with text or other token sequences.",
    when_not="Small datasets trained from scratch without heavy augmentation, where CNNs (ResNet, ConvNeXt) "
             "learn faster thanks to their locality and translation bias.",
    relations=[
        Relation("builds_on", "transformer", "a Transformer encoder over image patches instead of word tokens"),
        Relation("alternative_to", "resnet", "no convolutional prior: attention over all patches, wants more data or "
                 "augmentation"),
    ],
    config=Config, build=ViT, objective=Classification, task="image_classification",
    train=Train(epochs=40, batch_size=64, lr=2e-3, weight_decay=0.05),
    data=Data("digits", image_size=16, crop_pad=1, rotate=10.0),
    bar=Bar("accuracy", 0.95, "max", 120),
))
