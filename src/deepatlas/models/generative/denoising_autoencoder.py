"""Denoising autoencoder: corrupt the input, reconstruct the clean one.

P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol, 2008. "Extracting and Composing Robust Features with
Denoising Autoencoders." ICML 2008 (Gaussian noise: P. Vincent et al., JMLR 11, 2010, "Stacked Denoising
Autoencoders").

A plain autoencoder with a wide code can learn the identity. The denoising autoencoder instead draws a
corrupted x̃ ~ q_D(x̃ | x), encodes x̃, and is trained to give back the CLEAN x, so the code must capture
the structure that lets the missing information be filled in (the paper's manifold view: learn to map
points pushed off the data manifold back onto it):

    masking noise   x̃ = x ⊙ m,  m_i ~ Bernoulli(1 − ν)      (a fraction ν of pixels forced to 0)
    Gaussian noise  x̃ = x + ε,  ε ~ N(0, σ² I)
    loss            L(x, g(f(x̃)))        (against x, never against x̃)

The network is the autoencoder's (autoencoder.py: MLP encoder, mirrored decoder, logistic outputs); the
paper's single hidden layer with tied weights is a special case. Corruption is drawn afresh at every
training step; at evaluation it is drawn from a generator seeded the same way at each call, so the
metrics are deterministic. `mse_vs_noisy` = MSE(x̂, x) / MSE(x̃, x): how much of the corruption's damage the
network undoes (1: none, 0: all of it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from deepatlas.catalog import Bar, Data, Entry, MAX_SIZE, NonNegative, Paper, Range, Relation, Size, Train, register
from deepatlas.models.generative.autoencoder import Autoencoder, reconstruction_loss
from deepatlas.nn.activations import Activation
from deepatlas.tasks import Objective

EVAL_SEED = 0


@dataclass
class Config:
    data_shape: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [1, 8, 8])
    """one example's shape (C, H, W) (set from the data)"""
    code_size: Size = 32
    """size of the code; denoising lets it be wide without learning the identity"""
    hidden: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [256, 128])
    """widths of the encoder's hidden layers, input side first; the decoder mirrors them"""
    activation: Activation = "relu"
    """hidden units' non-linearity (the paper's are logistic)"""
    corruption: Literal["masking", "gaussian"] = "masking"
    """q_D: masking noise (a fraction of pixels set to 0) or additive isotropic Gaussian noise"""
    level: NonNegative = 0.25
    """the corruption's strength: ν, the fraction of pixels masked, or σ, the Gaussian noise's std"""
    loss: Literal["mse", "bce"] = "mse"
    """reconstruction loss against the clean input: squared error, or cross-entropy of pixels in [0, 1]"""


def corrupt(x: Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> Tensor:
    """x̃ ~ q_D(x̃ | x), elementwise: masking keeps each value with probability 1 − ν, Gaussian adds σ·ε."""
    if kind == "masking":
        keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= level
        return x * keep                                                       # m ~ Bernoulli(1 − ν)
    return x + level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class DenoisingObjective(Objective):
    """Encode a corrupted copy, reconstruct the clean input; report both the reconstruction's and the
    corrupted input's MSE to the clean image."""

    def corrupted(self, x: Tensor) -> Tensor:
        cfg = self.model.cfg
        generator = None
        if not self.training:  # evaluation: the same corruption at every call
            generator = torch.Generator(device=x.device).manual_seed(EVAL_SEED)
        return corrupt(x, cfg.corruption, cfg.level, generator)

    def measure(self, batch) -> dict[str, Tensor]:
        x = batch[0]                                                          # (B, C, H, W) clean, in [0, 1]
        noisy = self.corrupted(x)                                             # x̃
        logits = self.model.decode_logits(self.model.encode(noisy))           # g(f(x̃)) before the sigmoid
        return {"loss": reconstruction_loss(logits, x, self.model.cfg.loss),  # against the CLEAN x
                "mse": F.mse_loss(torch.sigmoid(logits), x),
                "noisy_mse": F.mse_loss(noisy, x)}

    def denoise(self, noisy: Tensor) -> Tensor:
        return self.model(noisy)                                              # x̂ = g(f(x̃)) in [0, 1]

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        if "noisy_mse" in means:
            means["mse_vs_noisy"] = means["mse"] / max(means["noisy_mse"], 1e-12)
        return means


register(Entry(
    name="denoising_autoencoder", title="Denoising autoencoder", family="generative", year=2008,
    paper=Paper("P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol",
                "Extracting and Composing Robust Features with Denoising Autoencoders", "ICML 2008"),
    summary="An autoencoder fed a corrupted input (masked pixels or Gaussian noise) and trained to give back the "
            "clean one, so its code must capture the data's structure rather than copy the input.",
    when_to_use="Removing noise or filling in missing values in data like the training set; robust features "
                "without labels (the pre-training of stacked denoising autoencoders); a code wider than PCA's "
                "that still does not learn the identity.",
    when_not="Sampling new data (use a VAE, GAN or diffusion model, which is denoising at every noise level); "
             "noise unlike the training corruption; plain compression, where a bottleneck autoencoder suffices.",
    relations=[
        Relation("variant_of", "autoencoder", "rebuilds the clean input from a corrupted copy"),
    ],
    config=Config, build=Autoencoder, objective=DenoisingObjective, task="generation",
    train=Train(epochs=100, batch_size=64, lr=3e-3, schedule="cosine"),
    data=Data("digits"),
    bar=Bar("mse_vs_noisy", 0.4, "min", 90),
    more_bars=[Bar("mse_vs_noisy", 0.4, "min", 90, overrides={"corruption": "gaussian", "level": "0.3"})],
))
