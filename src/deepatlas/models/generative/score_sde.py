"""Score SDE: score-based generative modelling through stochastic differential equations.

Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, 2021. "Score-Based Generative Modeling
through Stochastic Differential Equations." ICLR 2021, arXiv:2011.13456.

NCSN's ladder of noise scales and DDPM's Markov chain become two discretizations of one continuous process: a
forward SDE that diffuses the data x(0) ~ p_0 into a simple prior x(1) ~ p_1,

    dx = f(x, t) dt + g(t) dw,                                                                      (eq. 5)

and its reverse in time (Anderson 1982), which only needs the score ∇_x log p_t(x) of the marginals:

    dx = [f(x, t) − g(t)²∇_x log p_t(x)] dt + g(t) dw̄.                                              (eq. 6)

Two SDEs (`sde`), each with a closed-form Gaussian perturbation kernel p_0t(x(t) | x(0)) = N(m(t)·x(0), s(t)²I):
    VE (variance exploding, NCSN's limit): f = 0, g = σ(t)·√(2 log(σ_max/σ_min)), σ(t) = σ_min(σ_max/σ_min)^t;
        m = 1 and s(t) = σ(t) when x(0) is the data perturbed by σ_min (as the paper's code has it); prior N(0, σ_max²I).
    VP (variance preserving, DDPM's limit): f = −½β(t)x, g = √β(t), β(t) = β_min + t(β_max − β_min);
        m(t) = exp(−½∫_0^t β) = exp(−¼t²(β_max − β_min) − ½tβ_min), s(t)² = 1 − m(t)²; prior N(0, I).

The score network s_θ(x, t) is trained by continuous-time denoising score matching (eq. 7) with t ~ U(ε, 1) and
λ(t) = s(t)², where the kernel's score is −z/s(t) for x(t) = m(t)x(0) + s(t)z, so the loss is ½‖s(t)·s_θ + z‖².

Samplers (`sample(sampler=...)`):
    pc   predictor–corrector (Algorithm 1): N steps back from t = 1; each an Euler–Maruyama step of the reverse SDE
         (the predictor) then M Langevin steps at the new time (the corrector) with step size 2α(r‖z‖/‖s_θ‖)²,
         r the signal-to-noise ratio (`snr`), α = 1 for VE and exp(−β(t)/N) ≈ 1 − β(t)/N for VP (Algorithms 4, 5); the last
         step returns its mean, without noise.
    ode  the probability flow ODE (eq. 13), a deterministic process with the same marginals p_t:
             dx/dt = f(x, t) − ½g(t)²s_θ(x, t),
         solved from t = 1 to ε with our solvers (nn/ode.py).
Exact likelihood by the same ODE (appendix D.2): log p_0(x(0)) = log p_1(x(1)) + ∫_0^1 ∇·f̃(x(t), t) dt, where f̃ is
the ODE's field; the divergence is the Skilling–Hutchinson estimate εᵀ(∂f̃/∂x)ε, ε Rademacher, drawn once per solve
(one vector-Jacobian product per evaluation), solved with dopri5. Bits per dimension count the data's quantization:
pixels in K levels are dequantized uniformly, y = (k + u)/K with u ~ U(0, 1), the model reads 2y − 1, so
log p(y) = log p_model(2y − 1) + D log 2 and −log₂ P(k) ≤ −log₂ p(y) + D log₂ K.

Choices: the network is the shared time-conditional U-Net (nn/unet.py) conditioned on log σ(t) (VE) or 999·t (VP),
with its output divided by s(t) (the paper's code: `scale_by_sigma` for VE, the noise-prediction form for VP); the
weights that sample are an exponential moving average; images are modelled in [−1, 1] for both SDEs (the paper's
VE models read [0, 1]: the σ's here are twice as large for the same effect); the likelihood of x is that of
x(ε) = x (the process starts at t = ε as the sampler ends there).

Recipe and cost, as ncsn's: scoring draws 1,800 samples, so the pc sampler takes N = 15 predictor steps with one
corrector step each (29 passes; the paper: 1,000 and 2,000); samples and likelihoods are scored once, on the test
split, and the averaged weights' DSM loss on the validation split picks the epoch. Bits/dim are a second bar, against pixelcnn on the
same binarized glyphs (its Bernoulli pixels are the one quantization both models share): there the data are
dequantized at K = 2 levels, and the ODE likelihood, an adaptive solve with a vector-Jacobian product per evaluation,
runs on the first 128 images of the split (`likelihood_examples`), dequantization noise and probe seeded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, MAX_SIZE, Paper, Range, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.nn.ema import EMA
from deepatlas.nn.ode import Counted, odeint
from deepatlas.tasks.generative import DenoiserConfig, Generative, bits_per_dim, denoiser

Positive = Annotated[float, Range(0.0, 1e6, exclusive_low=True)]


@dataclass
class Config(DenoiserConfig):
    sde: Literal["ve", "vp"] = "vp"
    """the forward process: variance exploding (NCSN's limit) or variance preserving (DDPM's limit)"""
    sigma_min: Positive = 0.02
    """VE: σ_min (images in [−1, 1])"""
    sigma_max: Positive = 40.0
    """VE: σ_max, about the largest distance between two training images (NCSNv2's rule)"""
    beta_min: Positive = 0.1
    """VP: β(0)"""
    beta_max: Positive = 20.0
    """VP: β(1)"""
    t_eps: Annotated[float, Range(0.0, 0.5, exclusive_low=True)] = 1e-3
    """ε: training draws t ~ U(ε, 1), sampling and likelihoods stop at t = ε (the paper: 1e-5 VE, 1e-3 VP)"""
    sample_steps: Size = 15
    """N, predictor steps of the pc sampler; fixed rk4 steps of the ode sampler are N/4 (4 evaluations each)"""
    corrector_steps: Annotated[int, Range(0, 100)] = 1
    """M, Langevin corrector steps after each predictor step (0: the predictor alone)"""
    snr: Positive = 0.16
    """r, the corrector's signal-to-noise ratio (the paper: 0.16 for VE on CIFAR-10)"""
    ode_method: Literal["rk4", "euler", "dopri5"] = "rk4"
    """the ode sampler's solver (rk4/euler: fixed steps; dopri5: adaptive at `likelihood_tol`)"""
    likelihood_examples: Annotated[int, Range(0, MAX_SIZE)] = 0
    """bits/dim by the probability flow ODE on this many examples of each evaluated split (the first ones); 0: off"""
    likelihood_tol: Positive = 1e-3
    """dopri5's relative and absolute tolerance for the likelihood solve (the paper: 1e-5)"""
    dequantize: bool = False
    """train on uniformly dequantized pixels (k + u)/K, the density bits/dim measure (off: the pixels as they are)"""
    levels: Annotated[int, Range(0, 65536)] = 0
    """K, quantization levels of the pixels for dequantization and bits/dim (0: 2 if the data are binary, else 256)"""
    ema: Annotated[float, Range(0.0, 1.0)] = 0.995
    """decay of the weights' moving average that samples, validates and gives likelihoods (0: the trained weights)"""


# ---- the SDEs ---------------------------------------------------------------------------------------------

class VESDE:
    """dx = √(d[σ²]/dt) dw with σ(t) = σ_min(σ_max/σ_min)^t: f = 0, g(t) = σ(t)√(2 log(σ_max/σ_min))."""

    def __init__(self, sigma_min: float, sigma_max: float):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * self.log_ratio)

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(m(t), s(t)) of p_0t = N(m·x(0), s²I), x(0) the data perturbed by σ_min: (1, σ(t))."""
        return torch.ones_like(t), self.sigma(t)

    def prior_sample(self, shape, device) -> Tensor:
        return self.sigma_max * torch.randn(shape, device=device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; 0, σ_max²I) per example (B,)."""
        d = x[0].numel()
        return -0.5 * x.flatten(1).square().sum(1) / self.sigma_max ** 2 - d * math.log(self.sigma_max) \
            - 0.5 * d * math.log(2 * math.pi)

    def corrector_alpha(self, t: Tensor, n: int) -> Tensor:
        return torch.ones_like(t)

    def condition(self, t: Tensor) -> Tensor:
        """What the network reads for t: log σ(t)."""
        return self.sigma(t).log()


class VPSDE:
    """dx = −½β(t)x dt + √β(t) dw with β(t) = β_min + t(β_max − β_min)."""

    def __init__(self, beta_min: float, beta_max: float):
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -0.5 * _bcast(self.beta(t), x) * x

    def diffusion(self, t: Tensor) -> Tensor:
        return self.beta(t).sqrt()

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(m(t), s(t)): m = exp(−¼t²(β_max − β_min) − ½tβ_min), s = √(1 − m²)."""
        log_mean = -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return log_mean.exp(), (-torch.expm1(2 * log_mean)).sqrt()

    def prior_sample(self, shape, device) -> Tensor:
        return torch.randn(shape, device=device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        d = x[0].numel()
        return -0.5 * x.flatten(1).square().sum(1) - 0.5 * d * math.log(2 * math.pi)

    def corrector_alpha(self, t: Tensor, n: int) -> Tensor:
        """Algorithm 5's α_i = 1 − β_i of the discretized chain, β_i = β(t)/N, as exp(−β(t)/N): the same for large N
        and still positive for the few steps of a CPU budget (1 − 20/N < 0 for N < 20)."""
        return torch.exp(-self.beta(t) / n)

    def condition(self, t: Tensor) -> Tensor:
        return 999 * t


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """(B,) or 0-d -> broadcastable against x (B, ...)."""
    return v.reshape(-1, *[1] * (x.dim() - 1)) if v.dim() else v


def make_sde(cfg: Config) -> VESDE | VPSDE:
    return VESDE(cfg.sigma_min, cfg.sigma_max) if cfg.sde == "ve" else VPSDE(cfg.beta_min, cfg.beta_max)


# ---- the score network ------------------------------------------------------------------------------------

class ScoreSDE(nn.Module):
    """s_θ(x, t) (B, C, H, W) = U-Net(x, c(t)) / s(t) for images in [−1, 1] and t (B,) or 0-d, with the moving
    average of its weights (`ema.net`) that samples and gives likelihoods."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        if cfg.sde == "ve" and not cfg.sigma_max > cfg.sigma_min:
            raise DeepAtlasError("score_sde: sigma_max must be larger than sigma_min")
        self.sde = make_sde(cfg)
        self.net = denoiser(cfg, cfg.data_shape[0], "score_sde")
        self.ema = EMA(self.net, cfg.ema)

    def score(self, x: Tensor, t: Tensor, average: bool = False) -> Tensor:
        net = self.ema.net if average and self.cfg.ema > 0 else self.net
        t = t.expand(len(x))
        _, std = self.sde.marginal(t)                                   # (B,)
        return net(x, self.sde.condition(t)) / _bcast(std, x)           # (B, C, H, W)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.score(x, t)


def dsm_loss(score_fn, sde, x: Tensor, t: Tensor, z: Tensor | None = None) -> Tensor:
    """Continuous-time denoising score matching with λ(t) = s(t)² (eq. 7), per example (B,): ½‖s(t)·s_θ(x(t), t) + z‖²
    summed over dimensions, x(t) = m(t)·x + s(t)·z drawn from the perturbation kernel."""
    z = torch.randn_like(x) if z is None else z
    mean, std = sde.marginal(t)
    xt = _bcast(mean, x) * x + _bcast(std, x) * z
    return 0.5 * (_bcast(std, x) * score_fn(xt, t) + z).flatten(1).square().sum(1)


# ---- samplers and likelihood ------------------------------------------------------------------------------

@torch.no_grad()
def pc_sample(score_fn, sde, x: Tensor, steps: int, corrector_steps: int, snr: float, t_eps: float,
              frames: list | None = None, every: int = 1) -> Tensor:
    """Algorithm 1 from x ~ p_1: per time t_i (N of them from 1 to ε), the reverse-SDE Euler–Maruyama predictor
    x ← x − [f − g²s_θ]Δt + g√Δt·z, then `corrector_steps` Langevin steps x ← x + η s_θ + √(2η)·z with
    η = 2α(r‖z‖/‖s_θ‖)². The last predictor step returns its mean (no noise)."""
    times = torch.linspace(1.0, t_eps, steps, device=x.device)
    dt = (1.0 - t_eps) / steps
    for i, t in enumerate(times):
        g = sde.diffusion(t)
        mean = x - (sde.drift(x, t) - g ** 2 * score_fn(x, t)) * dt       # reverse drift, a step back in time
        x = mean + g * math.sqrt(dt) * torch.randn_like(x) if i < steps - 1 else mean
        t_next = times[i + 1] if i < steps - 1 else None
        for _ in range(corrector_steps if t_next is not None else 0):
            s = score_fn(x, t_next)
            z = torch.randn_like(x)
            ratio = z.flatten(1).norm(dim=1) / s.flatten(1).norm(dim=1)   # (B,) ‖z‖/‖s‖ per example
            eta = _bcast(2 * sde.corrector_alpha(t_next, steps) * (snr * ratio) ** 2, x)
            x = x + eta * s + (2 * eta).sqrt() * z
        if frames is not None and (i + 1) % every == 0:
            frames.append(x)
    return x


def flow_field(score_fn, sde):
    """The probability flow ODE's field f̃(x, t) = f(x, t) − ½g(t)²s_θ(x, t) (eq. 13)."""
    def field(t: Tensor, x: Tensor) -> Tensor:
        return sde.drift(x, t) - 0.5 * sde.diffusion(t) ** 2 * score_fn(x, t)
    return field


@torch.no_grad()
def ode_sample(score_fn, sde, x: Tensor, t_eps: float, method: str, steps: int, tol: float,
               frames: list | None = None, n_frames: int = 0) -> Tensor:
    """x(ε) from x(1) ~ p_1 by the probability flow ODE solved backward in time."""
    times = torch.linspace(1.0, t_eps, max(n_frames, 1) + 1, device=x.device, dtype=x.dtype)
    step = (1.0 - t_eps) / steps
    path = odeint(flow_field(score_fn, sde), x, times, method=method, rtol=tol, atol=tol, step_size=step)
    if frames is not None:
        frames.extend(path[1:])
    return path[-1]


class _Augmented(nn.Module):
    """d/dt [x, ∫div] = [f̃(x, t), εᵀ(∂f̃/∂x)ε]: the ODE and its Skilling–Hutchinson divergence, ε fixed per solve."""

    def __init__(self, field, eps: Tensor):
        super().__init__()
        self.field, self.eps = field, eps

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        x = state[:, :-1].reshape(self.eps.shape).detach().requires_grad_(True)   # (B, C, H, W)
        with torch.enable_grad():
            dx = self.field(t, x)
            e_jac = torch.autograd.grad(dx, x, self.eps)[0]                          # εᵀ ∂f̃/∂x
        div = (e_jac * self.eps).flatten(1).sum(1)                                   # (B,)
        return torch.cat([dx.detach().flatten(1), div[:, None]], 1)                  # (B, D + 1)


def ode_log_prob(score_fn, sde, x: Tensor, t_eps: float, tol: float, eps: Tensor | None = None) -> tuple[Tensor, int]:
    """log p_ε(x) (B,) of x (B, C, H, W) in model space by the probability flow ODE from t = ε to 1:
    log p_1(x(1)) + ∫ div f̃ dt, the divergence by Hutchinson's estimator (Rademacher ε, fixed). Also the NFE."""
    eps = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1 if eps is None else eps
    f = Counted(_Augmented(flow_field(score_fn, sde), eps))
    state = torch.cat([x.flatten(1), x.new_zeros(len(x), 1)], 1)                  # (B, D + 1)
    times = torch.tensor([t_eps, 1.0], dtype=x.dtype, device=x.device)
    end = odeint(f, state, times, method="dopri5", rtol=tol, atol=tol)[-1]
    z, integral = end[:, :-1].reshape(x.shape), end[:, -1]
    return sde.prior_log_prob(z) + integral, f.nfe


class ContinuousScoreMatching(Generative):
    """Continuous-time DSM with manual steps (the moving average follows each update); samples by the pc sampler
    or the probability flow ODE; bits/dim by the ODE on the first `likelihood_examples` of an evaluated split."""

    manual_optimization = True
    sample_metrics_per_epoch = False  # the averaged weights' DSM loss picks the epoch; sampling scores the test split
    samplers = ("pc", "ode")
    not_exported = "solving the reverse-time SDE or the probability flow ODE (many network passes per sample)"
    CHUNK = 600
    FRAMES = 20

    def optimizer_groups(self) -> dict:
        return {"model": [{"params": list(self.model.net.parameters())}]}

    def to_model(self, x: Tensor) -> Tensor:
        return 2 * x - 1                                                # [0, 1] -> [−1, 1]

    def levels(self) -> int:
        """K, the pixels' quantization levels: the config's, else 2 for binary data and 256 otherwise."""
        if self.model.cfg.levels:
            return self.model.cfg.levels
        return 2 if getattr(self, "data_spec", {}).get("binary") else 256

    def dequantize(self, x: Tensor) -> Tensor:
        """Pixels in [0, 1] quantized to K levels k, then y = (k + u)/K, u ~ U(0, 1): the density the bits/dim bound."""
        k = self.levels()
        return ((x * (k - 1)).round() + torch.rand_like(x)) / k

    def loss(self, x: Tensor, average: bool = False) -> Tensor:
        t = self.model.cfg.t_eps + (1 - self.model.cfg.t_eps) * torch.rand(len(x), device=x.device)  # t ~ U(ε, 1)
        return dsm_loss(lambda y, s: self.model.score(y, s, average), self.model.sde, x, t).mean()

    def training_step(self, batch, optimize):
        x = self.to_model(self.dequantize(batch[0]) if self.model.cfg.dequantize else batch[0])
        loss = self.loss(x)
        optimize("model", loss)
        self.model.ema.update(self.model.net)
        return loss.detach(), {"loss": loss.detach()}

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        """The DSM loss of the averaged weights on held-out images (times and noise seeded)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return {"loss": self.loss(self.to_model(batch[0]), average=True)}

    @torch.no_grad()
    def sample_metrics(self, real: Tensor) -> dict[str, float]:
        """The family's sample scores, and bits/dim by the ODE on the split's first `likelihood_examples` images."""
        scores = super().sample_metrics(real)
        n = self.model.cfg.likelihood_examples
        if n:
            nll, nfe = self.nll_bits(real[:n])
            scores.update(bpd=nll.mean().item(), likelihood_nfe=float(nfe))
        return scores

    @torch.no_grad()
    def nll_bits(self, x: Tensor, seed: int = 0) -> tuple[Tensor, int]:
        """Bits/dim (B,) of images x in [0, 1] at K levels: −log₂ P(k)/D ≤ −[log p_model(2y − 1) + D log 2]/(D ln 2)
        + log₂ K for the dequantized y; dequantization and Hutchinson's probe seeded."""
        cfg, d = self.model.cfg, x[0].numel()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            y = self.dequantize(x)
            logp, nfe = ode_log_prob(lambda v, t: self.model.score(v, t, average=True), self.model.sde,
                                     self.to_model(y), cfg.t_eps, cfg.likelihood_tol)
        log_p_y = logp + d * math.log(2)                                   # the change of variables y -> 2y − 1
        return bits_per_dim(-log_p_y, d) + math.log2(self.levels()), nfe

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, sampler: str | None = None, trajectory: bool = False):
        """n images (n, C, H, W) in [0, 1] from the prior at t = 1 by `sampler` ("pc", the default, or "ode"),
        `steps` predictor steps (pc) or fixed solver steps × 4 (ode rk4) as `sample_steps`; with `trajectory`, also
        ~20 frames (F, n, C, H, W) of the way, clamped to [0, 1]."""
        sampler = sampler or self.samplers[0]
        if sampler not in self.samplers:
            raise DeepAtlasError(f"score_sde samples with {' or '.join(self.samplers)}, not {sampler!r}")
        cfg, sde = self.model.cfg, self.model.sde
        steps = steps or cfg.sample_steps
        device = next(self.model.parameters()).device
        score = lambda v, t: self.model.score(v, t, average=True)
        out, frames = [], []
        for start in range(0, n, self.CHUNK):
            m = min(self.CHUNK, n - start)
            x = sde.prior_sample((m, *cfg.data_shape), device)
            chunk = [x] if trajectory else None
            if sampler == "pc":
                x = pc_sample(score, sde, x, steps, cfg.corrector_steps, cfg.snr, cfg.t_eps, chunk,
                              max(1, math.ceil(steps / self.FRAMES)))
            else:
                solver_steps = steps if cfg.ode_method == "euler" else max(1, steps // 4)
                x = ode_sample(score, sde, x, cfg.t_eps, cfg.ode_method, solver_steps, cfg.likelihood_tol, chunk,
                               self.FRAMES if trajectory else 0)
            out.append(((x + 1) / 2).clamp(0, 1))
            if trajectory:
                if not torch.equal(chunk[-1], x):
                    chunk.append(x)                                      # the last frame is the sample
                frames.append(((torch.stack(chunk) + 1) / 2).clamp(0, 1))  # (F, m, C, H, W)
        samples = torch.cat(out)
        return (samples, torch.cat(frames, dim=1)) if trajectory else samples


register(Entry(
    name="score_sde", title="Score SDE (predictor–corrector sampling, probability flow likelihoods)", family="generative",
    year=2021,
    paper=Paper("Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole",
                "Score-Based Generative Modeling through Stochastic Differential Equations", "arXiv:2011.13456"),
    summary="Data diffuse into noise along a stochastic differential equation (variance exploding or preserving); "
            "a network learns the score of every marginal by continuous-time denoising score matching, and samples "
            "come from the reverse-time SDE (predictor–corrector) or from the deterministic probability flow ODE, "
            "which also gives exact likelihoods.",
    when_to_use="Sample quality with a choice of samplers (stochastic or deterministic, steps traded for quality); "
                "exact likelihoods (bits/dim) and deterministic encodings from a diffusion model; one framework "
                "that holds ncsn and ddpm as its two discretizations.",
    when_not="Fast sampling or cheap likelihoods (tens to hundreds of network passes per sample, an ODE solve with a "
             "divergence per likelihood: a GAN or a VAE samples in one pass, pixelcnn's likelihood is one pass); "
             "binary data, where a discrete model (pixelcnn) fits the bits directly.",
    relations=[
        Relation("builds_on", "ncsn", "ncsn's noise scales become the variance exploding SDE, annealed Langevin the "
                                      "corrector"),
        Relation("builds_on", "ddpm", "ddpm's chain becomes the variance preserving SDE, its ancestral sampling a "
                                      "predictor"),
        Relation("alternative_to", "pixelcnn", "exact likelihoods by an ODE solve instead of a product of pixel "
                                               "conditionals"),
    ],
    config=Config, build=ScoreSDE, objective=ContinuousScoreMatching, task="generation",
    train=Train(epochs=40, batch_size=32, lr=2e-3),
    data=Data("glyphs"),
    bar=Bar("glyphs_fd", 259.0, "min", 300),
    more_bars=[
        Bar("bpd", 0.0, "min", 300, overrides={"binarize": "true", "dequantize": "true", "likelihood_examples": "128"},
            over={"entry": "pixelcnn", "data": "glyphs", "binarize": "true"}),
    ],
    notes="Not at its bars. Measured on the project's CPU, one thread on a core of its own (the other core ran "
          "another bench): about 1 ms per 32×32 image and network pass of the 8-wide U-Net, 0.12 s per training "
          "step of 32. `deepatlas bench score_sde`: VP, 12 epochs, about 2,100 steps in 300 s, test glyphs_fd "
          "5,154 (goal 259; uniform noise 12,689), 438 s with the scoring (later benches: 5,076, 5,115 and 5,057); the "
          "samples are noisy blobs and some "
          "all-white squares, no legible characters. The first recipe (batches of 64, EMA 0.999, one long engine "
          "epoch to score once) reached 8,169 on the validation split. Samplers on the 5,075 weights of a 300 s run "
          "(600 validation samples): pc with N = 15 and one corrector step at snr 0.16 4,966 (the default), at snr "
          "0.08 5,145, at 0.32 5,259; the predictor alone 5,287 (N = 15) and 6,615 (N = 30); pc N = 30 with the "
          "corrector 7,428; the probability flow ODE (rk4, 20 passes) 8,938. Bits/dim on binarized glyphs in "
          "the same bench, 300 s of training each: score_sde (VP, K = 2 dequantization, the first 128 test "
          "images, dopri5 at 1e-3) 0.374 against pixelcnn's 0.0967 on the whole test split (the first recipe: "
          "0.529 against 0.106): the discrete autoregressive model is about four times better on binary pixels, "
          "where a continuous density must put its mass in flat 1/2-wide bins.",
))
