"""Burgers' equation: the project's own pseudo-spectral solver, its Cole–Hopf reference, and the operator-learning
data of Li et al. 2021 (Fourier Neural Operator, arXiv:2010.08895, section 5.1).

The 1-D viscous Burgers equation on a periodic domain [0, L):

    u_t + u u_x = ν u_xx,        u(x, 0) = u0(x)

In Fourier space (û_k the coefficient of e^{i k x}, k = 2π n / L) it reads û_t = -ν k² û - (i k / 2) F[u²]_k: a stiff
linear part, diagonal, and a mildly nonlinear part. `solve` integrates the linear part exactly and the nonlinear part
by the fourth-order exponential time differencing Runge–Kutta scheme ETDRK4 (Cox & Matthews 2002), its coefficients
evaluated by contour integrals to avoid cancellation (Kassam & Trefethen 2005, SIAM J. Sci. Comput. 26). The
product u² is formed on the grid and its upper third of modes dropped (Orszag's 2/3 rule), so no alias enters.
The spatial mean (mode 0) is conserved exactly: its k is 0 in both parts.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

CONTOUR_POINTS = 32
"""points on the unit circle around each h·λ for the ETDRK4 coefficients (Kassam & Trefethen use 32)"""
CFL = 1.0
"""the default time step: dt · max|k u| ≤ CFL over the modes that advection dominates (RK4's stability reaches
2.8 on the imaginary axis; modes whose viscous decay ν k² exceeds |k u| are damped by the exact linear factor)"""


def _etdrk4_coefficients(lam: Tensor, h: float) -> tuple[Tensor, ...]:
    """ETDRK4's factors for the diagonal linear rates `lam` (K,) (real, ≤ 0) and step h (Kassam & Trefethen eq. 2.5
    with the φ-functions averaged over a circle of radius 1 around h·λ)."""
    hl = h * lam  # (K,)
    r = torch.exp(1j * math.pi * (torch.arange(1, CONTOUR_POINTS + 1, dtype=torch.float64) - 0.5) / CONTOUR_POINTS)
    z = hl[:, None].to(torch.complex128) + r.to(hl.device)[None, :]  # (K, M) points around each h·λ
    ez = torch.exp(z)
    q = h * ((torch.exp(z / 2) - 1) / z).mean(-1).real  # h φ1(hλ/2) / 2 · 2
    f1 = h * ((-4 - z + ez * (4 - 3 * z + z ** 2)) / z ** 3).mean(-1).real
    f2 = h * ((2 + z + ez * (-2 + z)) / z ** 3).mean(-1).real
    f3 = h * ((-4 - 3 * z - z ** 2 + ez * (4 - z)) / z ** 3).mean(-1).real
    return torch.exp(hl), torch.exp(hl / 2), q, f1, f2, f3


def solve(u0: Tensor, nu: float, t_end: float, length: float = 1.0, times: Tensor | None = None,
          dt: float | None = None) -> Tensor:
    """u(·, t_end) (B, N) of viscous Burgers from u0 (B, N) on the uniform periodic grid x_j = j·length/N of
    [0, length); or, with `times` (T,) increasing output times in [0, t_end], u at each of them (B, T, N).

    Batched over B (one FFT of the whole batch per stage), in float64 whatever u0's dtype (returned in u0's dtype,
    on u0's device). `dt`: the largest time step (default: a stable one from CFL and the data, see `CFL`); each
    interval between output times is cut into equal steps no longer than it."""
    if u0.dim() != 2:
        raise ValueError(f"u0 must be (B, N), got {tuple(u0.shape)}")
    dtype, device = u0.dtype, u0.device
    u = u0.to(torch.float64)
    n = u.shape[-1]
    k = 2 * math.pi / length * torch.arange(n // 2 + 1, dtype=torch.float64, device=device)  # (K,) wavenumbers
    keep = (torch.arange(n // 2 + 1, device=device) < n / 3).to(torch.float64)  # (K,) 2/3 rule on the product
    lam = -nu * k ** 2  # (K,) the exact linear rates
    nonlinear_factor = -0.5j * k * keep  # (K,)  -(i k / 2) F[u²], dealiased

    def nonlinear(v: Tensor) -> Tensor:  # v (B, K) complex -> (B, K)
        return nonlinear_factor * torch.fft.rfft(torch.fft.irfft(v, n=n) ** 2)

    if dt is None:
        umax = max(float(u.abs().max()), 1e-12)  # max|u| never grows (maximum principle)
        k_adv = min(float(k[keep > 0].max()), umax / nu if nu > 0 else math.inf)  # advection-dominated modes
        dt = CFL / (max(k_adv, 2 * math.pi / length) * umax)
    stops = [float(t_end)] if times is None else [float(t) for t in torch.as_tensor(times).flatten()]
    if any(b < a for a, b in zip(stops, stops[1:])) or (stops and stops[0] < 0):
        raise ValueError("times must be increasing and non-negative")
    v = torch.fft.rfft(u)  # (B, K)
    out, t = [], 0.0
    for stop in stops:
        span = stop - t
        steps = max(1, math.ceil(span / dt - 1e-9)) if span > 0 else 0
        if steps:
            e, e2, q, f1, f2, f3 = _etdrk4_coefficients(lam, span / steps)
            for _ in range(steps):
                nv = nonlinear(v)
                a = e2 * v + q * nv
                na = nonlinear(a)
                b = e2 * v + q * na
                nb = nonlinear(b)
                c = e2 * a + q * (2 * nb - nv)
                nc = nonlinear(c)
                v = e * v + f1 * nv + 2 * f2 * (na + nb) + f3 * nc
        t = stop
        out.append(torch.fft.irfft(v, n=n))
    if times is None:
        return out[0].to(dtype)
    return torch.stack(out, 1).to(dtype)  # (B, T, N)


def cole_hopf(x: Tensor, t: float, nu: float, points: int = 200) -> Tensor:
    """The exact solution of Burgers with u0 = -sin(π x) on the periodic [-1, 1) at time t > 0, at the points x.

    Cole–Hopf (u = -2ν φ_x/φ, φ solving the heat equation) gives (Basdevant et al. 1986, Computers & Fluids 14)
        u(x, t) = -∫ sin(π(x - η)) f(x - η) e^{-η²/4νt} dη / ∫ f(x - η) e^{-η²/4νt} dη,   f(y) = e^{-cos(π y)/2πν}
    With η = √(4νt) z both integrals are Gauss–Hermite quadratures in z; f's exponent is shifted by its maximum
    (1 / 2πν) so that small ν does not overflow."""
    z, w = np.polynomial.hermite.hermgauss(points)
    z = torch.as_tensor(z, dtype=torch.float64, device=x.device)
    w = torch.as_tensor(w, dtype=torch.float64, device=x.device)
    y = x.to(torch.float64)[..., None] - math.sqrt(4 * nu * t) * z  # (..., points) the points x - η
    log_f = (-torch.cos(math.pi * y) - 1) / (2 * math.pi * nu)  # log f(y) minus its maximum, ≤ 0
    weight = w * torch.exp(log_f)  # (..., points)
    u = -(torch.sin(math.pi * y) * weight).sum(-1) / weight.sum(-1)
    return u.to(x.dtype) if x.is_floating_point() else u
