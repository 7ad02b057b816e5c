"""Restricted Boltzmann machine, trained with contrastive divergence.

P. Smolensky, 1986. "Information Processing in Dynamical Systems: Foundations of Harmony Theory." In
Parallel Distributed Processing, vol. 1, MIT Press. G. E. Hinton, 2002. "Training Products of Experts by
Minimizing Contrastive Divergence." Neural Computation 14(8), 1771-1800.

A Bernoulli-Bernoulli RBM is an energy-based model of binary visible units v (D) and binary hidden units
h (H) with weights only between the two layers (a bipartite graph, hence "restricted"):

    E(v, h) = −bᵀv − cᵀh − vᵀWh,      p(v, h) = exp(−E(v, h)) / Z

Summing out h gives the free energy, p(v) = exp(−F(v)) / Z:

    F(v) = −bᵀv − Σ_j softplus(c_j + (vᵀW)_j)

and no links within a layer make both conditionals factorize, so block Gibbs sampling alternates two
matrix products:

    p(h_j = 1 | v) = σ(c + Wᵀv)_j,      p(v_i = 1 | h) = σ(b + Wh)_i

The log-likelihood gradient is −∂F(v_data)/∂θ + E_model[∂F(v)/∂θ]; the model expectation is intractable.
Contrastive divergence CD-k (Hinton 2002) replaces it with v_model, k steps of block Gibbs sampling started
at the data. Here that is written as a surrogate loss, F(v_data) − F(v_model) with v_model detached, whose
autograd gradient for W is exactly −(<v p(h|v)ᵀ>_data − <v p(h|v)ᵀ>_model): the CD update with hidden
probabilities (Hinton's "Practical guide", 2010). `persistent` keeps the negative chains running across
updates instead of restarting them at the data (PCD, Tieleman 2008).

The surrogate's value means nothing (it is ≈ 0 whenever the chain barely moves), so the training loss the
loop logs takes its value from the reconstruction error and its gradient from the surrogate (see
`RBMObjective.measure`). Reconstruction error is the mean squared error between v and its mean-field
reconstruction p(v | h = p(h|v)) (the hidden means, not a sample: the metric is deterministic);
"untrained" is the same RBM at its initialization, whose parameters `prepare` freezes into buffers. As the
guide advises, the visible biases start at the log-odds of the training pixels' means, so the untrained
RBM already reconstructs every image as roughly the mean image: the bar (error ≤ 50% of it) asks for more
than the independent-pixel model. W starts as N(0, 0.1²), as in the MATLAB code of Hinton & Salakhutdinov
(2006) (the guide says 0.01). The pseudo-likelihood Σ_i log p(v_i | v_−i) = Σ_i log σ(F(v⁽ⁱ⁾) − F(v)),
with v⁽ⁱ⁾ v with bit i flipped, is exact and cheap for 64 pixels and is reported as `pseudo_nll` (nats per
pixel).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, MAX_SIZE, Paper, Positive, Range, Relation, Size, Train, register
from deepatlas.tasks.generative import Generative


@dataclass
class Config:
    data_shape: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [1, 8, 8])
    """one example's shape (set from the data); the visible layer has their product D units"""
    n_hidden: Size = 128
    """H, binary hidden units"""
    k: Size = 1
    """Gibbs steps of the negative phase: CD-k"""
    persistent: bool = False
    """persistent CD: the negative chains carry over between updates instead of restarting at the data"""
    chains: Size = 64
    """persistent CD: the number of fantasy chains"""
    gibbs_steps: Size = 500
    """`sample(n)`: Gibbs steps from random visibles before the last reconstruction is returned"""
    init_std: Positive = 0.1
    """W starts as N(0, init_std²) (Hinton & Salakhutdinov's rbm.m: 0.1), hidden biases at 0 (visible: `prepare`)"""


# ---- the RBM ------------------------------------------------------------------------------

def reconstruct(v: Tensor, W: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Mean-field reconstruction p(v | h = p(h|v)) of v (B, D) under parameters (W (D, H), b (D), c (H))."""
    return torch.sigmoid(b + torch.sigmoid(c + v @ W) @ W.T)  # (B, H) @ (H, D) -> (B, D)


class RBM(nn.Module):
    """A Bernoulli-Bernoulli RBM over D visible and H hidden units; `forward(v)` gives p(h|v) (the features
    a deep belief net stacks). Inputs are flat (B, D) or examples of shape `data_shape`."""

    def __init__(self, n_visible: int, n_hidden: int, init_std: float = 0.1, data_shape: list | None = None):
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_visible, n_hidden) * init_std)  # (D, H)
        self.b = nn.Parameter(torch.zeros(n_visible))                       # visible biases (D)
        self.c = nn.Parameter(torch.zeros(n_hidden))                        # hidden biases (H)
        self.data_shape = list(data_shape or [n_visible])

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """E(v, h) = −bᵀv − cᵀh − vᵀWh, per example: v (B, D), h (B, H) -> (B,)."""
        return -(v @ self.b) - (h @ self.c) - ((v @ self.W) * h).sum(-1)

    def free_energy(self, v: Tensor) -> Tensor:
        """F(v) = −log Σ_h exp(−E(v, h)) = −bᵀv − Σ_j softplus(c_j + (vᵀW)_j): (B, D) -> (B,)."""
        return -(v @ self.b) - F.softplus(self.c + v @ self.W).sum(-1)

    def p_h(self, v: Tensor) -> Tensor:
        """p(h = 1 | v) = σ(c + Wᵀv): (B, D) -> (B, H)."""
        return torch.sigmoid(self.c + v @ self.W)

    def p_v(self, h: Tensor) -> Tensor:
        """p(v = 1 | h) = σ(b + Wh): (B, H) -> (B, D)."""
        return torch.sigmoid(self.b + h @ self.W.T)

    @torch.no_grad()
    def gibbs(self, v: Tensor, steps: int) -> tuple[Tensor, Tensor]:
        """`steps` rounds of block Gibbs sampling v -> h ~ p(h|v) -> v ~ p(v|h) from v (B, D); returns the
        last visible sample and the probabilities p(v|h) it was drawn from, both (B, D)."""
        probs = v
        for _ in range(steps):
            h = torch.bernoulli(self.p_h(v))      # (B, H)
            probs = self.p_v(h)                   # (B, D)
            v = torch.bernoulli(probs)
        return v, probs

    def reconstruct(self, v: Tensor) -> Tensor:
        return reconstruct(v, self.W, self.b, self.c)

    def forward(self, v: Tensor) -> Tensor:
        return self.p_h(v.flatten(1))  # (B, D) -> (B, H)


def build(cfg: Config) -> RBM:
    rbm = RBM(math.prod(cfg.data_shape), cfg.n_hidden, cfg.init_std, cfg.data_shape)
    rbm.cfg = cfg  # the objective reads k, persistent CD and the sampler's length from it
    return rbm


def cd_loss(rbm: RBM, v: Tensor, k: int, start: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The CD-k surrogate mean F(v_data) − mean F(v_model): its gradient is the CD-k update (descending it
    raises p(v_data) and lowers p(v_model)). v_model: k Gibbs steps from `start` (the data unless given,
    e.g. persistent chains), detached. Returns (surrogate, v_model)."""
    v_model, _ = rbm.gibbs(v if start is None else start, k)   # no_grad: the chain is a constant
    return rbm.free_energy(v).mean() - rbm.free_energy(v_model).mean(), v_model


def pseudo_nll(rbm: RBM, v: Tensor) -> Tensor:
    """−(1/D) Σ_i log p(v_i | v_−i) per example, exactly: p(v_i | v_−i) = σ(F(v⁽ⁱ⁾) − F(v)), v (B, D) -> (B,)."""
    B, D = v.shape
    flip = torch.eye(D, device=v.device, dtype=v.dtype)              # (D, D): row i flips bit i
    flipped = (v[:, None, :] - flip).abs()                           # (B, D, D): v⁽ⁱ⁾ = |v − e_i| for binary v
    gap = rbm.free_energy(flipped.reshape(B * D, D)).view(B, D) - rbm.free_energy(v)[:, None]  # (B, D)
    return -F.logsigmoid(gap).mean(-1)


# ---- the objective ------------------------------------------------------------------------

class RBMObjective(Generative):
    """CD-k training; logs reconstruction error now and at initialization (buffers frozen by `prepare`)."""

    not_exported = "Gibbs sampling, a chain of passes between the visible and hidden units"

    def __init__(self, model: RBM):
        super().__init__(model)
        cfg = getattr(model, "cfg", Config())
        self.k, self.persistent, self.gibbs_steps = cfg.k, cfg.persistent, cfg.gibbs_steps
        # the RBM at its initialization, frozen in `prepare` and saved with the weights
        self.register_buffer("W0", model.W.detach().clone())
        self.register_buffer("b0", model.b.detach().clone())
        self.register_buffer("c0", model.c.detach().clone())
        self.register_buffer("fantasy", torch.zeros(cfg.chains, model.W.shape[0]), persistent=False)  # PCD chains (M, D)
        self.fantasy_started = False

    @torch.no_grad()
    def prepare(self, data) -> None:
        """Visible biases = log-odds of the training pixels' means (Laplace-smoothed), then freeze the
        initial parameters (before any training step) as the untrained reference."""
        x = torch.stack([data.train[i][0] for i in range(len(data.train))]).flatten(1)  # (N, D)
        p = (x.sum(0) + 1) / (len(x) + 2)
        rbm = self.model
        rbm.b.copy_((p / (1 - p)).log().to(rbm.b))
        for name, param in (("W0", rbm.W), ("b0", rbm.b), ("c0", rbm.c)):
            getattr(self, name).copy_(param)

    def measure(self, batch) -> dict[str, Tensor]:
        rbm = self.model
        v = batch[0].flatten(1)                                                        # (B, D)
        if self.persistent:
            if not self.fantasy_started:  # chains start at samples of the visible biases alone
                self.fantasy.copy_(torch.bernoulli(torch.sigmoid(rbm.b.detach()).expand_as(self.fantasy)))
                self.fantasy_started = True
            surrogate, v_model = cd_loss(rbm, v, self.k, start=self.fantasy)
            if self.training:
                self.fantasy.copy_(v_model)
        else:
            surrogate, v_model = cd_loss(rbm, v, self.k)
        with torch.no_grad():
            recon = (rbm.reconstruct(v) - v).pow(2).mean()
            untrained = (reconstruct(v, self.W0, self.b0, self.c0) - v).pow(2).mean()
            gap = rbm.free_energy(v).mean() - rbm.free_energy(v_model).mean()
        # value: the reconstruction error; gradient: exactly the CD-k surrogate's
        loss = recon + surrogate - surrogate.detach()
        logs = {"loss": loss, "recon_error": recon, "untrained_recon_error": untrained, "free_energy_gap": gap}
        if not self.training:
            with torch.no_grad():
                logs["pseudo_nll"] = pseudo_nll(rbm, v).mean()
        return logs

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        means["recon_vs_untrained"] = means["recon_error"] / max(means["untrained_recon_error"], 1e-12)
        return means

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """A Gibbs chain from uniform random visibles, `gibbs_steps` long; the last p(v|h), (n, *data_shape)."""
        rbm = self.model
        v = torch.bernoulli(torch.full((n, rbm.W.shape[0]), 0.5, device=rbm.W.device, dtype=rbm.W.dtype))
        _, probs = rbm.gibbs(v, self.gibbs_steps)                                      # (n, D)
        return probs.view(n, *rbm.data_shape)


register(Entry(
    name="rbm", title="Restricted Boltzmann machine (CD-k)", family="generative", year=2002,
    paper=Paper("P. Smolensky; G. E. Hinton", "Information Processing in Dynamical Systems: Foundations of Harmony "
                "Theory (1986); Training Products of Experts by Minimizing Contrastive Divergence",
                "Parallel Distributed Processing vol. 1, 1986; Neural Computation 14(8), 2002"),
    summary="A bipartite energy-based model of binary visible and hidden units with an analytic free energy and "
            "factorized conditionals, trained by contrastive divergence and sampled by block Gibbs sampling.",
    when_to_use="Teaching energy-based models, free energy and MCMC learning; unsupervised binary features; "
                "the building block of deep belief nets.",
    when_not="Modern image generation or density estimation: the partition function is intractable, CD-trained "
             "samples mix poorly; VAEs, autoregressive models or diffusion do better.",
    relations=[
        Relation("alternative_to", "vae", "energy-based, trained by contrastive divergence instead of a variational "
                 "bound"),
    ],
    config=Config, build=build, objective=RBMObjective, task="generation",
    train=Train(epochs=15, batch_size=16, lr=3e-2, schedule="cosine"),
    data=Data("digits", binarize=True),
    bar=Bar("recon_vs_untrained", 0.5, "min", 60),
    notes="init_std 0.1 rather than the practical guide's 0.01: from 0.01 a few hundred Adam steps pass before "
          "reconstructions move at all.",
))
