"""Autoencoder: a network that squeezes its input through a low-dimensional code and rebuilds it.

G. E. Hinton, R. R. Salakhutdinov, 2006. "Reducing the Dimensionality of Data with Neural Networks."
Science 313(5786), 504-507.

An encoder f maps an image x (D pixels) to a code z = f(x) of d ≪ D numbers, a decoder g maps the code
back to x̂ = g(z) with logistic (sigmoid) output units, and both are trained together to make x̂ close
to x. With linear layers and squared error this finds the same subspace as PCA; with non-linear layers
the code lies on a curved manifold, and the paper's point is that a deep autoencoder then reconstructs
far better than PCA with as many components:

    z = f(x) = W_L ∘ σ ∘ … ∘ σ ∘ W_1 x,     x̂ = sigmoid(g(z)),     min  Σ_pixels (x − x̂)²

The paper made the deep network trainable by greedy RBM pre-training, then fine-tuned it by back-
propagation with conjugate gradients. Here the whole network is trained from a random start with Adam and
ReLU hidden units, which reaches the same place on these small images (the `rbm` and `dbn` entries show
the pre-training). The bar compares with the paper's baseline, PCA with as many components as the code:
`prepare` fits it on the training split (torch SVD of the centred pixels) into buffers, evaluation reports
the per-pixel MSE of both and `mse_vs_pca` = mse / pca_mse (below 1 beats PCA).

The encoder and decoder bodies (`Encoder`, `Decoder`) are shared by the denoising autoencoder and the VAE.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from deepatlas.catalog import Bar, Data, Entry, MAX_SIZE, Paper, Range, Relation, Size, Train, register
from deepatlas.nn.activations import Activation, activation
from deepatlas.tasks import Objective


@dataclass
class Config:
    data_shape: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [1, 8, 8])
    """one example's shape (C, H, W) (set from the data)"""
    code_size: Size = 8
    """d, the size of the code between encoder and decoder (also the number of PCA components compared with)"""
    hidden: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [256, 128])
    """widths of the encoder's hidden layers, input side first; the decoder mirrors them"""
    activation: Activation = "relu"
    """hidden units' non-linearity (the paper's are logistic)"""
    loss: Literal["mse", "bce"] = "mse"
    """reconstruction loss: squared error, or cross-entropy of pixels in [0, 1] (the paper's for MNIST)"""


# ---- the bodies shared with the denoising autoencoder and the VAE -------------------------

def mlp(sizes: list[int], act: Activation) -> nn.Sequential:
    """Linear layers of widths sizes[0] -> … -> sizes[-1], the non-linearity between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers += [nn.Linear(a, b)] + ([activation(act)] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x (B, C, H, W) -> (B, out): the flattened pixels through the hidden layers to `out` linear units."""

    def __init__(self, data_shape: list, hidden: list[int], out: int, act: Activation):
        super().__init__()
        self.net = mlp([math.prod(data_shape), *hidden, out], act)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))                                         # (B, C·H·W) -> (B, out)


class Decoder(nn.Module):
    """z (B, d) -> logits (B, C, H, W): the mirror image of the encoder; sigmoid(logits) is the image."""

    def __init__(self, data_shape: list, hidden: list[int], code: int, act: Activation):
        super().__init__()
        self.shape = list(data_shape)
        self.net = mlp([code, *reversed(hidden), math.prod(data_shape)], act)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.shape)                              # (B, C·H·W) -> (B, C, H, W)


# ---- the autoencoder ----------------------------------------------------------------------

class Autoencoder(nn.Module):
    """f: x -> z (B, d) and g: z -> x̂ in [0, 1]. `cfg` needs data_shape, hidden, code_size and activation
    (the denoising autoencoder builds this network from its own Config)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.data_shape, cfg.hidden, cfg.code_size, cfg.activation)
        self.decoder = Decoder(cfg.data_shape, cfg.hidden, cfg.code_size, cfg.activation)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)                                                # (B, C, H, W) -> (B, d)

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder(z)                                                # (B, d) -> (B, C, H, W)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(z))                                 # logistic output units: x̂ in [0, 1]

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))                                    # x̂ = g(f(x))


def reconstruction_loss(logits: Tensor, x: Tensor, kind: str) -> Tensor:
    """Mean per-pixel loss of the decoder's logits against target images x in [0, 1]."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, x)
    return F.mse_loss(torch.sigmoid(logits), x)


def training_images(data) -> Tensor:
    """All training inputs of a `Splits` as one tensor (N, C, H, W)."""
    return next(iter(DataLoader(data.train, batch_size=len(data.train))))[0]


class AutoencoderObjective(Objective):
    """Reconstruct x; evaluation also puts the same images through the PCA fitted in `prepare`."""

    def __init__(self, model: Autoencoder):
        super().__init__(model)
        D, k = math.prod(model.cfg.data_shape), model.cfg.code_size
        self.register_buffer("pca_mean", torch.zeros(D))                      # (D,) the training pixels' mean
        self.register_buffer("pca_components", torch.zeros(k, D))             # (k, D) top-k principal axes

    def prepare(self, data):
        x = training_images(data).flatten(1).double()                         # (N, D)
        mean = x.mean(0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)            # rows of vh: principal axes
        k = min(self.model.cfg.code_size, vh.shape[0])
        self.pca_mean.copy_(mean.float())
        self.pca_components.zero_()[:k].copy_(vh[:k].float())

    def pca_reconstruct(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> its projection on the k principal axes, mean added back."""
        centred = x.flatten(1) - self.pca_mean                                # (B, D)
        codes = centred @ self.pca_components.T                               # (B, D) @ (D, k) -> (B, k)
        return (codes @ self.pca_components + self.pca_mean).view_as(x)       # (B, k) @ (k, D) -> (B, D)

    def measure(self, batch) -> dict[str, Tensor]:
        x = batch[0]                                                          # (B, C, H, W) in [0, 1]
        logits = self.model.decode_logits(self.model.encode(x))
        out = {"loss": reconstruction_loss(logits, x, self.model.cfg.loss),
               "mse": F.mse_loss(torch.sigmoid(logits), x)}
        if not self.training:
            out["pca_mse"] = F.mse_loss(self.pca_reconstruct(x), x)
        return out

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        if "pca_mse" in means:
            means["mse_vs_pca"] = means["mse"] / max(means["pca_mse"], 1e-12)
        return means


register(Entry(
    name="autoencoder", title="Deep autoencoder", family="generative", year=2006,
    paper=Paper("G. E. Hinton, R. R. Salakhutdinov", "Reducing the Dimensionality of Data with Neural Networks",
                "Science 313(5786), 2006"),
    summary="An encoder squeezes each input into a code of a few numbers and a decoder rebuilds the input from "
            "it; trained to reconstruct, the non-linear code keeps more than PCA with as many components.",
    when_to_use="Non-linear dimensionality reduction, compression, features learned without labels, anomaly "
                "scores from reconstruction error; a first step toward denoising and variational autoencoders.",
    when_not="Generating new data (the code space has no density to sample: use a VAE, GAN or diffusion model); "
             "when PCA's linear subspace is enough, PCA is exact and faster.",
    relations=[
        Relation("builds_on", "mlp", "an MLP trained to rebuild its input through a narrow code"),
    ],
    config=Config, build=Autoencoder, objective=AutoencoderObjective, task="generation",
    train=Train(epochs=100, batch_size=64, lr=3e-3, schedule="cosine"),
    data=Data("digits"),
    bar=Bar("mse_vs_pca", 1.0, "min", 90),
))
