"""Deep belief net: greedy layer-wise RBM pre-training, then supervised fine-tuning.

G. E. Hinton, S. Osindero, Y.-W. Teh, 2006. "A Fast Learning Algorithm for Deep Belief Nets." Neural
Computation 18(7), 1527-1554.

A stack of restricted Boltzmann machines (rbm.py) is learned one layer at a time: the first RBM models the
pixels, then its hidden probabilities p(h¹|v) become the "data" of the next RBM, and so on. Each new layer
improves a variational lower bound on the log-likelihood of the data (the paper's complementary-prior
argument), and, more usefully in practice, leaves weights that make a good starting point for back-propagation:

    v -> h¹ = σ(c¹ + W¹ᵀv) -> h² = σ(c² + W²ᵀh¹) -> ... -> softmax(U h^L + d)

Here each RBM is trained with CD-k (rbm.cd_loss) on the previous layer's hidden probabilities; the grey digit
values in [0, 1] are the first RBM's visible probabilities, as the paper did with MNIST. The recognition
weights and hidden biases (W^l, c^l) then initialize a sigmoid MLP, a softmax layer is added on top, and
the whole net is fine-tuned with cross-entropy by back-propagation (the discriminative fine-tuning the paper
mentions and later work made standard; the paper's own fine-tuning is the generative up-down algorithm with
a top-level associative memory over the labels, not done here).

The greedy pre-training is the run's first phases, one per RBM (`rbm1`, `rbm2`, ...), each trained by the
engine's loop with the entry's `pretrain` settings, under the run's `--max-time`, with its own checkpoint, log
and curves. `--set pretrain.epochs=0` skips them and fine-tunes the same MLP from PyTorch's random
initialization: the ablation. Pre-training helps most where labels are few (the entry's notes give the
measurements).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from deepatlas.catalog import Bar, Data, Entry, MAX_SIZE, Paper, Positive, Range, Relation, Size, Train, register
from deepatlas.models.generative.rbm import RBM, cd_loss
from deepatlas.protocols import Phase
from deepatlas.tasks.classification import Classification


@dataclass
class Config:
    data_shape: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [1, 8, 8])
    """one example's shape (set from the data): the first RBM has their product visible units"""
    n_classes: Size = 10
    """classes of the softmax output layer (set from the data)"""
    hidden: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [256, 128])
    """hidden units of each RBM of the stack, bottom first (--set hidden=256,128)"""
    k: Size = 1
    """Gibbs steps of each CD update: CD-k"""
    init_std: Positive = 0.1
    """each RBM's W starts as N(0, init_std²) (as in Hinton & Salakhutdinov's code)"""


class DBN(nn.Module):
    """The fine-tuned network: a sigmoid MLP whose layers the RBMs initialize, and a softmax output layer.
    `forward(x)` gives class scores (B, n_classes)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        sizes = [math.prod(cfg.data_shape), *cfg.hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))  # h = σ(c + Wᵀv)
        self.out = nn.Linear(sizes[-1], cfg.n_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)                        # (B, D)
        for layer in self.layers:
            h = torch.sigmoid(layer(h))         # (B, H_l): p(h^l = 1 | h^{l-1}) of the l-th RBM
        return self.out(h)                      # (B, n_classes)


class LayerRBM(nn.Module):
    """One pre-training phase: the l-th RBM of the stack, trained by CD-k (rbm.cd_loss) on the hidden probabilities
    that the RBMs below it, trained in the phases before, give for each batch of inputs."""

    def __init__(self, rbm: RBM, below: list[RBM], k: int):
        super().__init__()
        self.rbm, self.k = rbm, k
        self.below = tuple(below)  # trained already, frozen here (a tuple: not this phase's parameters)

    def visible(self, x: Tensor) -> Tensor:
        """Inputs (B, ...) -> this RBM's data (B, D_l): p(h^{l-1} | ...) up the stack below it."""
        v = x.flatten(1)
        with torch.no_grad():
            for rbm in self.below:
                v = rbm.p_h(v)
        return v

    @torch.no_grad()
    def start_from(self, x: Tensor) -> None:
        """Visible biases at the log-odds of the mean of its data (Hinton's practical guide)."""
        p = self.visible(x.to(self.rbm.b)).mean(0).clamp(1e-3, 1 - 1e-3)
        self.rbm.b.copy_((p / (1 - p)).log())

    def training_step(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        surrogate, _ = cd_loss(self.rbm, self.visible(batch[0]), self.k)
        return surrogate, {"cd_loss": surrogate.detach()}

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        v = self.visible(batch[0])
        recon = (self.rbm.reconstruct(v) - v).pow(2).mean()    # mean-field reconstruction error of its data
        return {"loss": recon, "recon": recon}


class DBNObjective(Classification):
    """Cross-entropy fine-tuning (Classification) after the greedy RBM pre-training phases. After `phases`,
    `rbms` holds the RBMs those phases train."""

    def __init__(self, model: DBN):
        super().__init__(model)
        self.rbms: list[RBM] = []

    def phases(self, data) -> list[Phase]:
        """One phase per layer, bottom first: RBM l learns from the ones below it, then its recognition weights and
        hidden biases (W^l, c^l) become the MLP's l-th layer."""
        cfg, param = self.model.cfg, self.model.out.weight
        x_train, x_val = (torch.stack([d[i][0] for i in range(len(d))]).to(param) for d in (data.train, data.val))
        self.rbms = [RBM(layer.in_features, layer.out_features, cfg.init_std).to(param) for layer in self.model.layers]
        phases = []
        for i, (rbm, layer) in enumerate(zip(self.rbms, self.model.layers)):
            step = LayerRBM(rbm, self.rbms[:i], cfg.k)
            phases.append(Phase(f"rbm{i + 1}", step, TensorDataset(x_train), TensorDataset(x_val), ("recon", "min"),
                                settings="pretrain", start=partial(step.start_from, x_train),
                                finish=partial(initialize, layer, rbm)))
        return phases


@torch.no_grad()
def initialize(layer: nn.Linear, rbm: RBM) -> None:
    """The MLP's layer from the RBM: nn.Linear keeps (out, in), W is (D, H), so weight = Wᵀ and bias = c."""
    layer.weight.copy_(rbm.W.T)
    layer.bias.copy_(rbm.c)


register(Entry(
    name="dbn", title="Deep belief net (greedy RBM pre-training + fine-tuning)", family="generative", year=2006,
    paper=Paper("G. E. Hinton, S. Osindero, Y.-W. Teh", "A Fast Learning Algorithm for Deep Belief Nets",
                "Neural Computation 18(7), 2006"),
    summary="A stack of RBMs trained greedily one layer at a time, each on the hidden probabilities of the one "
            "below, whose weights then initialize a sigmoid network fine-tuned by back-propagation.",
    when_to_use="Teaching unsupervised pre-training and the 2006 deep-learning revival; a classifier for small "
                "binary or [0, 1] data with few labels, where pre-training on the inputs helps.",
    when_not="Anything with modern tooling: ReLU networks with good initialization and normalization train "
             "from scratch as well or better, and CNNs win on images.",
    relations=[
        Relation("builds_on", "rbm", "a stack of RBMs trained greedily layer by layer, then fine-tuned"),
        Relation("alternative_to", "autoencoder", "a generative stack where the autoencoder only reconstructs"),
    ],
    config=Config, build=DBN, objective=DBNObjective, task="generation",
    train=Train(epochs=30, batch_size=32, lr=3e-3, schedule="cosine"),
    phases={"pretrain": Train(epochs=10, batch_size=16, lr=0.03, schedule="cosine")},  # each RBM: CD-1, Adam
    data=Data("digits"),
    bar=Bar("accuracy", 0.95, "max", 120),
    notes="Fine-tuned on the first 100 labelled training digits for 30 epochs (the RBMs saw all training "
          "images, unlabelled), test accuracy is 0.833 pre-trained vs 0.592 from random weights (seed 0; "
          "tests/test_generative_rbm.py). With all labels and the default recipe the gap is small (0.972 vs "
          "0.953 in a plain 30-epoch loop, seed 0).",
))
