"""Two-dimensional toy densities whose log-density is known exactly: mode coverage and likelihood checks.

Every density but the checkerboard is an equal-weight mixture of isotropic Gaussians N(atom, σ²I):

    8gaussians   8 modes on a circle of radius 2, σ = 0.02 (the ring of Metz et al. 2017, arXiv:1611.02163)
    25gaussians  a 5×5 grid of modes at {-4, -2, 0, 2, 4}², σ = 0.05 (the grid of Lin et al. 2018, PacGAN)
    moons        sklearn's two half-circles, each sampled at 500 parameter values, σ = 0.1
    swissroll    the 2-D roll (t cos t, t sin t)/5, t = 1.5π(1 + 2u), u at 1,000 values, σ = 0.1

Sampling picks an atom uniformly and adds the noise, so the mixture *is* the generating density, and
log p(x) = logsumexp_k log N(x; atom_k, σ²I) − log K holds exactly. The checkerboard is uniform on the 8
dark squares of a 4×4 board on [−2, 2]² (log p = −log 8 there, −∞ elsewhere).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SIZES = {"train": 20_000, "val": 4_000, "test": 4_000}
SEEDS = {"train": 0, "val": 1, "test": 2}  # fixed: every run sees the same points


@dataclass(frozen=True)
class Density:
    name: str
    atoms: Tensor | None  # (K, 2) mixture centres; None for the checkerboard
    sigma: float

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n points (n, 2) and the index of the atom (or dark square) each came from (n,)."""
        if self.atoms is None:
            cell = torch.randint(8, (n,), generator=generator)
            corner = _dark_squares()[cell]
            return corner + torch.rand(n, 2, generator=generator), cell
        k = torch.randint(len(self.atoms), (n,), generator=generator)
        return self.atoms[k] + self.sigma * torch.randn(n, 2, generator=generator), k

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density (N,) at points x (N, 2)."""
        if self.atoms is None:
            inside = (x >= -2).all(-1) & (x < 2).all(-1) & ((torch.floor(x + 2).sum(-1) % 2) == 0)
            return torch.where(inside, torch.full_like(x[:, 0], -math.log(8)), torch.full_like(x[:, 0], -math.inf))
        atoms = self.atoms.to(x)
        sq = torch.cdist(x, atoms).square()  # (N, K)
        log_normal = -sq / (2 * self.sigma ** 2) - math.log(2 * math.pi * self.sigma ** 2)
        return torch.logsumexp(log_normal, -1) - math.log(len(atoms))

    @property
    def modes(self) -> Tensor | None:
        """The mixture's modes, where counting them makes sense (the Gaussian mixtures)."""
        return self.atoms if self.atoms is not None and len(self.atoms) <= 25 else None


def _dark_squares() -> Tensor:
    """Lower-left corners of the 8 dark squares of the 4×4 board on [-2, 2]²."""
    return torch.tensor([[i - 2.0, j - 2.0] for i in range(4) for j in range(4) if (i + j) % 2 == 0])


def density(name: str) -> Density:
    if name == "8gaussians":
        angle = torch.arange(8) * (2 * math.pi / 8)
        return Density(name, 2.0 * torch.stack([angle.cos(), angle.sin()], -1), 0.02)
    if name == "25gaussians":
        g = torch.arange(-4.0, 5.0, 2.0)
        return Density(name, torch.cartesian_prod(g, g), 0.05)
    if name == "moons":
        t = torch.linspace(0, math.pi, 500)
        upper = torch.stack([t.cos(), t.sin()], -1)
        lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], -1)
        return Density(name, torch.cat([upper, lower]), 0.1)
    if name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.linspace(0, 1, 1000))
        return Density(name, torch.stack([t * t.cos(), t * t.sin()], -1) / 5, 0.1)
    if name == "checkerboard":
        return Density(name, None, 0.0)
    raise KeyError(name)


NAMES = ("8gaussians", "25gaussians", "moons", "swissroll", "checkerboard")


def splits(name: str) -> dict[str, tuple[Tensor, Tensor]]:
    """The fixed train/val/test points of density `name`: {split: (x (n, 2), atom index (n,))}."""
    d = density(name)
    return {split: d.sample(n, torch.Generator().manual_seed(SEEDS[split])) for split, n in SIZES.items()}


def mode_scores(samples: Tensor, d: Density) -> dict[str, float]:
    """Mode coverage as in PacGAN (Lin et al. 2018): a sample is high quality when it lies within 3σ of its
    nearest mode; a mode is covered when at least 20 of 2,500 samples (0.8%) are high-quality samples of it."""
    modes = d.modes.to(samples)
    dist, nearest = torch.cdist(samples, modes).min(-1)
    good = dist <= 3 * d.sigma
    counts = torch.bincount(nearest[good], minlength=len(modes))
    return {"modes": float((counts >= 0.008 * len(samples)).sum()), "high_quality": good.float().mean().item()}
