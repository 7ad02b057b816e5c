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

Embedded datasets (operator learning, u0 -> u(·, T); the task "operator", deepatlas.tasks.operator):
    burgers           ν = 0.1, T = 1 on [0, 1) (Li et al.'s setting). Initial conditions from the Gaussian random
                      field N(0, 625 (-Δ + 25 I)^-2) on the periodic domain, drawn in Fourier space (`grf`); each is
                      solved at HIGH_RES = 1024 points (float32, a relative error near 2e-6 against float64 with a
                      4× smaller step) and subsampled, every 8th point, to the training resolution 128. Splits
                      1000 / 100 / 200, each from its own seed. The validation and test splits also carry the same
                      fields at FINE = 512 points (every 2nd point of the same solution), where the same weights are
                      scored again (rel_l2_512: the discretization-invariance claim of the paper).
    burgers-N         the same at training resolution N (a power of 2 from 16 to 1024)
    burgers-N-NU      ... and viscosity NU (e.g. burgers-256-0.05; a smaller ν steepens the fronts)
Generated in seconds in memory (cached for the process), nothing written to disk.

Users' data: `--data fields.npz` holding the input fields as `x` (or `a`) and the output fields as `y` (or `u`), each
(n, N) or (n, N, channels) on a uniform grid of one period, n ≥ 3 samples, split 60/20/20 (seed 0). Each channel is
standardized with the training part's mean and std for the network; predictions and errors are in the file's own
units. `predict RUN u0.npz` reads `x` (or `a`) at any resolution and gives the predicted field of each sample.
"""
from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError

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
          dt: float | None = None, cfl: float = CFL, precision: torch.dtype = torch.float64) -> Tensor:
    """u(·, t_end) (B, N) of viscous Burgers from u0 (B, N) on the uniform periodic grid x_j = j·length/N of
    [0, length); or, with `times` (T,) increasing output times in [0, t_end], u at each of them (B, T, N).

    Batched over B (one FFT of the whole batch per stage), computed in `precision` (float64 by default; float32
    halves the time at a relative error near 1e-6) whatever u0's dtype, returned in u0's dtype on u0's device.
    `dt`: the largest time step (default: a stable one, `cfl` / max|k u| over the modes advection dominates, see
    `CFL`); each interval between output times is cut into equal steps no longer than it."""
    if u0.dim() != 2:
        raise ValueError(f"u0 must be (B, N), got {tuple(u0.shape)}")
    dtype, device = u0.dtype, u0.device
    u = u0.to(precision)
    n = u.shape[-1]
    k = 2 * math.pi / length * torch.arange(n // 2 + 1, dtype=torch.float64, device=device)  # (K,) wavenumbers
    keep = (torch.arange(n // 2 + 1, device=device) < n / 3).to(torch.float64)  # (K,) 2/3 rule on the product
    lam = -nu * k ** 2  # (K,) the exact linear rates
    nonlinear_factor = (-0.5j * k * keep).to(torch.fft.rfft(u[:1, :2]).dtype)  # (K,) -(i k / 2) F[u²], dealiased

    def nonlinear(v: Tensor) -> Tensor:  # v (B, K) complex -> (B, K)
        return nonlinear_factor * torch.fft.rfft(torch.fft.irfft(v, n=n) ** 2)

    if dt is None:
        umax = max(float(u.abs().max()), 1e-12)  # max|u| never grows (maximum principle)
        k_adv = min(float(k[keep > 0].max()), umax / nu if nu > 0 else math.inf)  # advection-dominated modes
        dt = cfl / (max(k_adv, 2 * math.pi / length) * umax)
    stops = [float(t_end)] if times is None else [float(t) for t in torch.as_tensor(times).flatten()]
    if any(b < a for a, b in zip(stops, stops[1:])) or (stops and stops[0] < 0):
        raise ValueError("times must be increasing and non-negative")
    v = torch.fft.rfft(u)  # (B, K)
    out, t = [], 0.0
    for stop in stops:
        span = stop - t
        steps = max(1, math.ceil(span / dt - 1e-9)) if span > 0 else 0
        if steps:
            e, e2, q, f1, f2, f3 = (c.to(precision) for c in _etdrk4_coefficients(lam, span / steps))
            for _ in range(steps):
                nv = nonlinear(v)
                half = e2 * v  # the linear part over h/2, shared by a and b
                a = half + q * nv
                na = nonlinear(a)
                b = half + q * na
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


# ---- the Gaussian random field of initial conditions -----------------------------------------------

GRF_SCALE, GRF_SHIFT, GRF_POWER = 625.0, 25.0, 2.0
"""the covariance 625 (-Δ + 25 I)^-2 of Li et al. (sec. 5.1)"""


def grf_variance(n: int, length: float = 1.0) -> Tensor:
    """The variance λ_k = 625 / ((2πk/L)² + 25)² (float64, (n // 2 + 1,)) of the field's component along each
    orthonormal Fourier mode k = 0 .. n/2 (the eigenvalues of the covariance operator: -Δ e_k = (2πk/L)² e_k)."""
    k = 2 * math.pi / length * torch.arange(n // 2 + 1, dtype=torch.float64)
    return GRF_SCALE / (k ** 2 + GRF_SHIFT) ** GRF_POWER


def grf(count: int, n: int, generator: torch.Generator, length: float = 1.0) -> Tensor:
    """`count` samples (count, n) float64 of the mean-0 Gaussian field with covariance 625 (-Δ + 25 I)^-2 on the
    periodic [0, length), at n grid points: u = Σ_k √λ_k ξ_k e_k (Karhunen–Loève) with ξ_k ~ N(0, 1) along the
    orthonormal basis 1/√L, √(2/L) cos, √(2/L) sin, drawn as the rfft coefficients c_k = √(λ_k / 2L) (ξ + iξ') of
    u(x) = Σ_k c_k e^{2πikx/L} (c_0 = √(λ_0/L) ξ real; the Nyquist mode left out so the field stays real-symmetric)."""
    lam = grf_variance(n, length)  # (K,)
    xi = torch.randn(count, n // 2 + 1, 2, generator=generator, dtype=torch.float64)  # (count, K, re/im)
    c = torch.complex(xi[..., 0], xi[..., 1]) * torch.sqrt(lam / (2 * length))  # (count, K)
    c[:, 0] = xi[:, 0, 0] * math.sqrt(lam[0] / length)
    if n % 2 == 0:
        c[:, -1] = 0
    return torch.fft.irfft(c, n=n) * n  # irfft divides by n: this gives Σ_k c_k e^{ikx}


# ---- the embedded operator-learning sets ------------------------------------------------------------

NU, T_END, RESOLUTION, HIGH_RES, FINE = 0.1, 1.0, 128, 1024, 512
SIZES = {"train": 1000, "val": 100, "test": 200}
SEEDS = {"train": 0, "val": 1, "test": 2}  # fixed: every run sees the same fields
EMBEDDED = ["burgers"]
NAME = re.compile(r"burgers(?:-(\d+)(?:-([0-9.eE+-]+))?)?")
MIN_SAMPLES = 3


@dataclass
class FieldSet(Dataset):
    """Input fields `a` (n, N, C_in) and output fields `u` (n, N, C_out), float32; optionally the same samples at a
    finer grid (`a_fine`, `u_fine`, (n, FINE, C)), given with each item: (a, u) or (a, u, a_fine, u_fine)."""
    a: Tensor
    u: Tensor
    a_fine: Tensor | None = None
    u_fine: Tensor | None = None

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int):
        if self.a_fine is None:
            return self.a[i], self.u[i]
        return self.a[i], self.u[i], self.a_fine[i], self.u_fine[i]


class FieldData(Splits):
    @property
    def dims(self) -> dict:
        return {"in_channels": self.spec["in_channels"], "out_channels": self.spec["out_channels"]}


def parse_name(name: str) -> tuple[int, float] | None:
    """(resolution, ν) of `burgers`, `burgers-N` or `burgers-N-NU`; None for another name."""
    m = NAME.fullmatch(name)
    if m is None:
        return None
    resolution = int(m.group(1)) if m.group(1) else RESOLUTION
    try:
        nu = float(m.group(2)) if m.group(2) else NU
    except ValueError:
        nu = -1.0
    if resolution < 16 or resolution > HIGH_RES or HIGH_RES % resolution:
        raise DeepAtlasError(f"{name}: the resolution must be a power of 2 from 16 to {HIGH_RES} (the solver's grid "
                             f"is subsampled)")
    if not (0 < nu <= 10):
        raise DeepAtlasError(f"{name}: the viscosity must be a number above 0 and at most 10 (burgers-N-NU)")
    return resolution, nu


@cache
def simulate(split: str, nu: float = NU) -> tuple[Tensor, Tensor]:
    """One split's initial fields and solutions at HIGH_RES points: (u0, u(T)) each (n, HIGH_RES) float64."""
    generator = torch.Generator().manual_seed(SEEDS[split])
    u0 = grf(SIZES[split], HIGH_RES, generator)
    return u0, solve(u0, nu, T_END, cfl=2.0, precision=torch.float32)


def _channels(field: Tensor) -> Tensor:
    return field.to(torch.float32)[..., None]  # (n, N) -> (n, N, 1)


def _standardization(a: Tensor, u: Tensor) -> dict:
    """Per-channel means and stds of the training part's inputs and outputs (for the network's scale only)."""
    return {"a_mean": a.mean((0, 1)).tolist(), "a_std": a.std((0, 1)).clamp_min(1e-8).tolist(),
            "u_mean": u.mean((0, 1)).tolist(), "u_std": u.std((0, 1)).clamp_min(1e-8).tolist()}


def embedded(name: str) -> FieldData:
    resolution, nu = parse_name(name)
    every = HIGH_RES // resolution
    parts = {}
    for split in SIZES:
        u0, uT = simulate(split, nu)
        a, u = _channels(u0[:, ::every]), _channels(uT[:, ::every])
        fine = split != "train" and resolution < FINE
        parts[split] = FieldSet(a, u, *((_channels(u0[:, ::HIGH_RES // FINE]), _channels(uT[:, ::HIGH_RES // FINE]))
                                        if fine else ()))
    spec = {"source": name, "kind": "embedded", "equation": "burgers", "nu": nu, "t_end": T_END, "length": 1.0,
            "resolution": resolution, "fine": FINE if resolution < FINE else None, "in_channels": 1,
            "out_channels": 1, **_standardization(parts["train"].a, parts["train"].u)}
    return FieldData(parts["train"], parts["val"], parts["test"], spec)


# ---- users' .npz files --------------------------------------------------------------------------------

def _array(arrays, names: tuple[str, ...], path: Path, what: str) -> Tensor | None:
    found = [n for n in names if n in arrays.files]
    if not found:
        return None
    raw = arrays[found[0]]
    if raw.dtype.kind not in "fiu" or raw.ndim not in (2, 3):
        raise DeepAtlasError(f"{path}: `{found[0]}` ({what}) must be numbers of shape (n, N) or (n, N, channels), "
                             f"got {raw.dtype} {raw.shape}")
    field = torch.as_tensor(np.asarray(raw, dtype=np.float32))
    field = field[..., None] if field.ndim == 2 else field
    if field.shape[1] < 2 or field.shape[2] < 1:
        raise DeepAtlasError(f"{path}: `{found[0]}` ({what}) needs at least 2 grid points and 1 channel, got "
                             f"{tuple(raw.shape)}")
    if not torch.isfinite(field).all():
        raise DeepAtlasError(f"{path}: `{found[0]}` ({what}) holds NaN or infinite values")
    return field


def read_fields(path: str | Path, need_outputs: bool = True) -> tuple[Tensor, Tensor | None]:
    """(inputs (n, N, C_in), outputs (n, N, C_out) or None) of a user's .npz; one line naming the file if not."""
    path = Path(path)
    if not path.is_file():
        raise DeepAtlasError(f"{path}: no such file (give an .npz with input fields `x` and output fields `y`)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if not hasattr(arrays, "files"):
                raise DeepAtlasError(f"{path}: a single array; operator data is an .npz with input fields `x` (or "
                                     f"`a`) and output fields `y` (or `u`)")
            a = _array(arrays, ("x", "a"), path, "input fields")
            u = _array(arrays, ("y", "u"), path, "output fields")
            names = list(arrays.files)
    except DeepAtlasError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DeepAtlasError(f"{path}: not a readable NumPy .npz archive ({first})") from None
    if a is None or (need_outputs and u is None):
        wanted = "input fields `x` (or `a`)" + (" and output fields `y` (or `u`)" if need_outputs else "")
        raise DeepAtlasError(f"{path}: needs {wanted}; it holds {', '.join(names) or 'nothing'}")
    if u is not None and u.shape[:2] != a.shape[:2]:
        raise DeepAtlasError(f"{path}: inputs {tuple(a.shape)} and outputs {tuple(u.shape)} differ in samples or "
                             f"grid points (they must be (n, N[, channels]) on the same grid)")
    return a, u


def users(path: Path) -> FieldData:
    a, u = read_fields(path)
    if len(a) < MIN_SAMPLES:
        raise DeepAtlasError(f"{path}: {len(a)} samples; a 60/20/20 train/val/test split needs at least {MIN_SAMPLES}")
    parts = split_indices(np.arange(len(a)), str(path), "samples")  # every sample its own class: a plain split
    sets = [FieldSet(a[torch.as_tensor(p)], u[torch.as_tensor(p)]) for p in parts]
    spec = {"source": str(path), "kind": "file", "resolution": a.shape[1], "fine": None,
            "in_channels": a.shape[2], "out_channels": u.shape[2], **_standardization(sets[0].a, sets[0].u)}
    return FieldData(*sets, spec)


def _check_channels(spec: dict, a: Tensor, u: Tensor | None, path) -> None:
    if a.shape[2] != spec["in_channels"] or (u is not None and u.shape[2] != spec["out_channels"]):
        got = f"{a.shape[2]} input" + ("" if u is None else f" and {u.shape[2]} output")
        raise DeepAtlasError(f"{path}: {got} channels; this run maps {spec['in_channels']} input channels to "
                             f"{spec['out_channels']} output channels")


# ---- the data module's functions ----------------------------------------------------------------------

def load(source: str) -> FieldData:
    """An embedded dataset by name, or a user's .npz file (see the module's docstring)."""
    if Path(source).exists():
        return users(Path(source))
    if parse_name(source) is None:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a file, nor one of {', '.join(EMBEDDED)} (burgers-N and "
                             f"burgers-N-NU name other resolutions and viscosities)")
    return embedded(source)


def load_for(options, target: str | None = None) -> FieldData:
    return load(options.data)


def read_labeled(spec: dict, path: str) -> Dataset:
    """A user's .npz with inputs and outputs, at any resolution, to evaluate a run on (`eval --data`)."""
    a, u = read_fields(path)
    _check_channels(spec, a, u, path)
    return FieldSet(a, u)


@torch.no_grad()
def predict(objective, spec: dict, inputs) -> list[dict]:
    """The predicted output field of each sample of an .npz's input fields `x` (or `a`), at the file's resolution,
    in the training data's units: [{"input": "FILE[i]", "predicted": values (N,) or (N, channels) as lists}]."""
    path = Path(str(inputs))
    a, _ = read_fields(path, need_outputs=False)
    _check_channels(spec, a, None, path)
    device = next(objective.parameters()).device
    was = objective.training
    objective.eval()
    out = objective(a.to(device)).cpu()  # (n, N, C_out)
    objective.train(was)
    out = out[..., 0] if spec["out_channels"] == 1 else out
    return [{"input": f"{path.name}[{i}]", "predicted": [round(v, 6) for v in row.flatten().tolist()]
             if out.ndim == 2 else [[round(v, 6) for v in point] for point in row.tolist()],
             "grid_points": a.shape[1]} for i, row in enumerate(out)]


def relative_l2(prediction: Tensor, truth: Tensor) -> Tensor:
    """||pred - true|| / ||true|| of each sample (B,), the norms over the grid and the channels (Li et al.'s metric;
    on a uniform grid the grid spacing cancels in the ratio)."""
    error = (prediction - truth).flatten(1).norm(dim=1)
    return error / truth.flatten(1).norm(dim=1).clamp_min(1e-12)


def baseline(spec: dict, train: Dataset | None, examples: Dataset) -> tuple[str, dict[str, float]]:
    """The best, on the training part, of three trivial predictors: the training part's mean output field
    (interpolated to the examples' grid), and where inputs and outputs have the same channels, the input held still
    (u(T) = u0) and the input's spatial mean everywhere (the one quantity Burgers conserves: on `burgers` everything
    else decays, so this one is hard to beat, rel_l2 0.033 on the test split). Scored on `examples`: rel_l2, mse."""
    fitted = train if train is not None else examples

    def mean_field(n: int) -> Tensor:  # the training mean field at n grid points (periodic linear interpolation)
        mean = fitted.u.mean(0)  # (N0, C)
        position = torch.arange(n, dtype=torch.float32) * (len(mean) / n)
        left = position.floor().long()
        w = (position - left)[:, None]
        return mean[left % len(mean)] * (1 - w) + mean[(left + 1) % len(mean)] * w

    candidates = {"the training mean output field": lambda s: mean_field(s.u.shape[1]).expand_as(s.u)}
    if spec["in_channels"] == spec["out_channels"]:
        candidates["the input field held still (u(T) = u0)"] = lambda s: s.a
        candidates["the input's spatial mean everywhere (Burgers conserves it)"] = \
            lambda s: s.a.mean(1, keepdim=True).expand_as(s.u)
    chosen = min(candidates, key=lambda k: float(relative_l2(candidates[k](fitted), fitted.u).mean()))
    guess = candidates[chosen](examples)
    return chosen, {"rel_l2": float(relative_l2(guess, examples.u).mean()),
                    "mse": float((guess - examples.u).square().mean())}


@torch.no_grad()
def plot_predictions(objective, spec: dict, dataset: Dataset, path: Path, samples: int = 4) -> None:
    """predictions.png: for the first few samples of `dataset` (the test split), the input field, the true output
    and the prediction (the first channel of each), with each sample's relative L2 error."""
    from deepatlas.data.draw import _pyplot
    a, u = dataset.a[:samples], dataset.u[:samples]
    device = next(objective.parameters()).device
    was = objective.training
    objective.eval()
    pred = objective(a.to(device)).cpu()
    objective.train(was)
    errors = relative_l2(pred, u)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(a), figsize=(3.6 * len(a), 3.2), squeeze=False)
    x = torch.arange(a.shape[1]) / a.shape[1] * spec.get("length", 1.0)
    for i, ax in enumerate(axes[0]):
        ax.plot(x, a[i, :, 0], color="tab:gray", lw=1, label="input")
        ax.plot(x, u[i, :, 0], color="tab:blue", lw=2, label="truth")
        ax.plot(x, pred[i, :, 0], color="tab:red", lw=1.2, ls="--", label="prediction")
        ax.set(title=f"sample {i}: rel. L2 {float(errors[i]):.3g}", xlabel="x")
        ax.title.set_fontsize(9)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{type(objective.model).__name__} on {Path(spec['source']).name} (test samples)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
