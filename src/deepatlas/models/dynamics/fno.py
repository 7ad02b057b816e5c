"""FNO: the Fourier neural operator.

Z. Li, N. Kovachki, K. Azizzadenesheli, B. Liu, K. Bhattacharya, A. Stuart, A. Anandkumar, 2021. "Fourier Neural
Operator for Parametric Partial Differential Equations." ICLR 2021, arXiv:2010.08895.

A neural operator learns a map between functions (an initial condition to the solution at a later time) rather than
between vectors of a fixed size. Each layer adds to a pointwise linear map a global convolution, the kernel integral
∫ κ(x - y) v(y) dy, computed in Fourier space where it is a product: the FFT of the field, a learned complex matrix
applied to each of the lowest k_max modes (the higher ones dropped), the inverse FFT. The weights live on
frequencies, not on grid points, so the same weights run on any grid: trained at 128 points, evaluated at 512.

    v_0(x) = P(a(x), x)                                             lifting: a pointwise linear map to `width` channels
    v_{t+1}(x) = σ( W v_t(x) + F^-1( R_φ · F(v_t) )(x) )            (eq. 2 with the Fourier kernel, eq. 4)
    (R_φ · F(v))_k = R_k F(v)_k  for |k| < k_max, 0 beyond          R_k ∈ C^{width × width}, one per kept mode
    u(x) = Q(v_T(x))                                                 projection: pointwise, width -> 128 -> out

σ is GELU, as in the authors' code, and the last Fourier layer has none (Q begins with its own). The grid
coordinate x joins the input channels before P (sec. 5: "the input is (a(x), x)"). On a periodic domain nothing is
padded; the FFT is real (rfft), so the modes kept are k = 0 .. k_max - 1 and their conjugates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.operator import OperatorObjective


@dataclass
class Config:
    in_channels: Size = 1
    """input field channels (set from the data)"""
    out_channels: Size = 1
    """output field channels (set from the data)"""
    width: Size = 64
    """channels of every Fourier layer, d_v (the paper's Burgers: 64)"""
    modes: Size = 16
    """Fourier modes kept in each layer, k_max (the paper's Burgers: 16); at most N // 2 + 1 act on an N-point grid"""
    layers: Size = 4
    """Fourier layers (the paper: 4)"""
    projection: Size = 128
    """hidden units of the projection Q (the paper: 128)"""
    grid: bool = True
    """append the grid coordinate x ∈ [0, 1) to the input channels (the paper does)"""


class SpectralConv(nn.Module):
    """The Fourier kernel integral F^-1(R · F(v)): rfft over the grid, a complex (C_in, C_out) matrix on each of the
    lowest `modes` modes, the rest set to 0, irfft back to the input's own N points.

    R is kept as real and imaginary parts (C_in, C_out, modes, 2) so that it saves and optimizes as plain real
    tensors; initialized uniform in [0, 1/(C_in C_out)) in both parts, as the authors' code does."""

    def __init__(self, c_in: int, c_out: int, modes: int):
        super().__init__()
        self.modes = modes
        self.weight = nn.Parameter(torch.rand(c_in, c_out, modes, 2) / (c_in * c_out))  # R_k, real and imaginary

    def forward(self, v: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            return self.as_matrices(v)
        n = v.shape[-1]                                                   # v (B, C_in, N)
        spectrum = torch.fft.rfft(v)                                      # (B, C_in, N // 2 + 1) complex
        kept = min(self.modes, spectrum.shape[-1])
        r = torch.view_as_complex(self.weight[:, :, :kept])               # (C_in, C_out, kept)
        mixed = torch.einsum("bik,iok->bok", spectrum[..., :kept], r)     # (B, C_out, kept): R_k F(v)_k per mode
        out = torch.zeros(v.shape[0], r.shape[1], n // 2 + 1, dtype=mixed.dtype, device=v.device)
        out[..., :kept] = mixed                                           # modes ≥ k_max dropped
        return torch.fft.irfft(out, n=n)                                  # (B, C_out, N) back on the input's grid

    def as_matrices(self, v: Tensor) -> Tensor:
        """The same layer in real arithmetic, for ONNX (which has no FFT here): the kept modes' DFT as a (N, kept)
        product with cosines and sines, the complex product by parts, and the inverse of the kept modes (weights 1
        for k = 0 and the Nyquist mode, 2 for the others, whose conjugates rfft leaves implicit)."""
        n = v.shape[-1]                                                   # v (B, C_in, N)
        kept = min(self.modes, n // 2 + 1)
        angle = 2 * math.pi * torch.arange(kept, device=v.device, dtype=v.dtype)[:, None] * \
            torch.arange(n, device=v.device, dtype=v.dtype)[None, :] / n  # (kept, N) 2πkx/N
        cos, sin = angle.cos(), angle.sin()
        real, imag = v @ cos.T, -(v @ sin.T)                              # (B, C_in, kept): F(v)_k = Σ_x v e^{-2πikx/N}
        wr, wi = self.weight[:, :, :kept, 0], self.weight[:, :, :kept, 1]  # (C_in, C_out, kept)
        out_r = torch.einsum("bik,iok->bok", real, wr) - torch.einsum("bik,iok->bok", imag, wi)
        out_i = torch.einsum("bik,iok->bok", real, wi) + torch.einsum("bik,iok->bok", imag, wr)
        weight = torch.full((kept,), 2.0, device=v.device, dtype=v.dtype)
        weight[0] = 1.0
        if n % 2 == 0 and kept == n // 2 + 1:
            weight[-1] = 1.0
        return ((out_r * weight) @ cos - (out_i * weight) @ sin) / n     # (B, C_out, N)

    def kernel(self, n: int) -> Tensor:
        """The equivalent convolution kernel κ (C_in, C_out, n) on an n-point grid: F^-1 of R (zero beyond k_max),
        so that this layer is y_o[x] = Σ_i Σ_m κ_io[m] v_i[x - m mod n] (for tests and for reading)."""
        r = torch.zeros(*self.weight.shape[:2], n // 2 + 1, dtype=torch.complex64 if self.weight.dtype ==
                        torch.float32 else torch.complex128, device=self.weight.device)
        kept = min(self.modes, n // 2 + 1)
        r[..., :kept] = torch.view_as_complex(self.weight[:, :, :kept])
        return torch.fft.irfft(r, n=n)


class FourierLayer(nn.Module):
    """v -> σ(W v + K v): the pointwise linear path W (a 1×1 convolution, with its bias) beside the spectral one."""

    def __init__(self, width: int, modes: int, activation: bool):
        super().__init__()
        self.spectral = SpectralConv(width, width, modes)
        self.pointwise = nn.Conv1d(width, width, 1)                       # W: the same linear map at every point
        self.activation = activation

    def forward(self, v: Tensor) -> Tensor:                               # v (B, width, N)
        v = self.spectral(v) + self.pointwise(v)
        return F.gelu(v) if self.activation else v


class FNO(nn.Module):
    """Fields a (B, N, C_in) -> (B, N, C_out) on the same N-point periodic grid, for any N."""

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.layers < 1:
            raise DeepAtlasError("fno: layers must be at least 1")
        self.grid = cfg.grid
        self.lift = nn.Linear(cfg.in_channels + int(cfg.grid), cfg.width)                    # P
        self.layers = nn.ModuleList(FourierLayer(cfg.width, cfg.modes, activation=i < cfg.layers - 1)
                                    for i in range(cfg.layers))
        self.project = nn.Sequential(nn.Linear(cfg.width, cfg.projection), nn.GELU(),         # Q
                                     nn.Linear(cfg.projection, cfg.out_channels))

    def forward(self, a: Tensor) -> Tensor:
        if self.grid:
            n = a.shape[1]
            x = torch.arange(n, dtype=a.dtype, device=a.device) / n                           # (N,) in [0, 1)
            a = torch.cat([a, x[None, :, None].expand(a.shape[0], n, 1)], -1)                # (B, N, C_in + 1)
        v = self.lift(a).transpose(1, 2)                                  # (B, width, N)
        for layer in self.layers:
            v = layer(v)                                                  # (B, width, N)
        return self.project(v.transpose(1, 2))                            # (B, N, C_out)


register(Entry(
    name="fno", title="FNO (Fourier neural operator)", family="dynamics", year=2021,
    paper=Paper("Z. Li, N. Kovachki, K. Azizzadenesheli, B. Liu, K. Bhattacharya, A. Stuart, A. Anandkumar",
                "Fourier Neural Operator for Parametric Partial Differential Equations", "arXiv:2010.08895"),
    summary="Learns a map between functions: each layer adds a pointwise linear map to a global convolution done "
            "in Fourier space (FFT, a learned complex matrix on each of the lowest modes, inverse FFT), so the same "
            "weights run on any grid.",
    when_to_use="Surrogates of a PDE's solution operator (initial condition or coefficient field to the solution) "
                "learned from solved examples, on regular grids, where thousands of fast evaluations are needed or "
                "the grid changes between training and use.",
    when_not="A single solution without example data (a physics-informed network); irregular meshes or complex "
             "geometry (graph or geometry-aware operators); non-periodic fields without padding; solutions with "
             "sharp features beyond the kept modes.",
    relations=[
        Relation("alternative_to", "unet", "a global convolution on Fourier modes, not local filters on one grid: "
                 "the weights run at any resolution"),
        Relation("builds_on", "lenet", "learns convolution kernels too, global ones, parametrized by their lowest "
                 "Fourier modes"),
    ],
    config=Config, build=FNO, objective=OperatorObjective, task="operator",
    train=Train(epochs=50, batch_size=20, lr=1e-3, weight_decay=1e-4, schedule="cosine"),
    data=Data("burgers"),
    bar=Bar("rel_l2", 0.02, "min", 300),
    more_bars=[Bar("resolution_ratio", 1.5, "min", 300)],
    notes="Measured at one thread on the 2-core CPU, contended (other jobs shared the core): the paper's network "
          "(width 64, 16 modes, 4 layers, 550k parameters), its relative L2 loss, AdamW lr 1e-3, weight decay 1e-4, "
          "batch 20, cosine schedule, 50 epochs: burgers test rel_l2 0.0064 in 135 s of training (the data, 1,300 "
          "fields solved at 1,024 points, about 6 s more); the same weights at 512 points 0.0064 (resolution_ratio "
          "0.996). `deepatlas bench fno`: both bars from one run, 194 s wall (data, training and evaluation, "
          "contended). The best trivial predictor, u0's spatial mean everywhere (conserved; at ν = 0.1 the rest "
          "decays by T = 1), scores 0.033; the input held still 2.1. Width 32 for 20 epochs: 0.016 in 28 s. Li et al. "
          "train 500 epochs on fields subsampled from 8,192 points.",
))
