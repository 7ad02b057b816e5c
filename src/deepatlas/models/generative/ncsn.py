"""NCSN: a noise-conditional score network sampled by annealed Langevin dynamics.

Y. Song, S. Ermon, 2019. "Generative Modeling by Estimating Gradients of the Data Distribution." NeurIPS 2019,
arXiv:1907.05600. Refinements from Y. Song, S. Ermon, 2020. "Improved Techniques for Training Score-Based
Generative Models" (NCSNv2), arXiv:2006.09011.

A model need not give a density to sample from it: the score ∇_x log p(x) is enough, because Langevin dynamics
x ← x + (α/2)·∇_x log p(x) + √α·z, z ~ N(0, I), draws from p as α → 0 and the steps → ∞. Scores learnt from data
alone fail where the data are not (most of image space) and cannot move mass between separated modes. The paper
perturbs the data with Gaussian noise at a geometric sequence of scales σ_1 > σ_2 > … > σ_L,
σ_i = σ_1·(σ_L/σ_1)^((i−1)/(L−1)), and trains one network s_θ(x, σ) for all of them:

    large σ fills the space and joins the modes; small σ is close to the data.

Training is denoising score matching (Vincent 2011): the score of the perturbation kernel N(x̃; x, σ²I) is
−(x̃ − x)/σ², and regressing on it recovers ∇ log q_σ(x̃) of the perturbed data. Each level is weighted by
λ(σ) = σ², which makes every level's loss about the same size (‖σ·s_θ‖ ≈ √D for all σ):

    ℓ(θ) = 1/L Σ_i ½ σ_i² E_{x, x̃}‖ s_θ(x̃, σ_i) + (x̃ − x)/σ_i² ‖²  =  E_{i, x, z} ½‖ σ_i·s_θ(x + σ_i z, σ_i) + z ‖²   (eq. 5–6)

Sampling is annealed Langevin dynamics (Algorithm 1): from uniform noise, T Langevin steps at each level in turn,
from σ_1 down to σ_L, each level with the step α_i = ε·σ_i²/σ_L² (the step shrinks with the noise so that the
signal-to-noise ratio of each update stays constant), each level starting where the last one stopped.

Choices here, each a config field: the network is the shared time-conditional U-Net of nn/unet.py (the paper used a
RefineNet with conditional instance normalization) conditioned on log σ, and its output is divided by σ
(NCSNv2's technique 3: ‖s(x̃, σ)‖ ∝ 1/σ is then the network's default, not something it must learn); the weights
sampled with are an exponential moving average (NCSNv2's technique 5); and after the last level one denoising step
x ← x + σ_L²·s_θ(x, σ_L) (Tweedie's formula, the posterior mean E[x | x̃]; NCSNv2, Jolicoeur-Martineau et al. 2020)
removes the noise of level L that the Langevin chain leaves in, off with `denoise=false`. Images are modelled in
[0, 1] as in the paper.

Recipe and cost. Scoring the samples (glyphs_fd) draws 1,800 of them at L·T + 1 network passes each, so sampling
uses T = 3 (31 passes; the paper's 1,000 would take hours on a CPU) with a step ε = 1.6e-3 fitted to so few steps.
Samples are scored once, on the test split: the averaged weights' DSM loss on the validation split picks the epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Range, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.nn.ema import EMA
from deepatlas.tasks.generative import DenoiserConfig, Generative, denoiser

Positive = Annotated[float, Range(0.0, 1e6, exclusive_low=True)]


@dataclass
class Config(DenoiserConfig):
    levels: Size = 10
    """L, the number of noise levels σ_1 > … > σ_L"""
    sigma_max: Positive = 1.0
    """σ_1, the largest noise scale (NCSNv2: about the largest distance between two training images)"""
    sigma_min: Positive = 0.01
    """σ_L, the smallest noise scale"""
    scale_by_sigma: bool = True
    """s_θ(x, σ) = U-Net(x, log σ)/σ (NCSNv2's technique 3); false: the U-Net's output is the score itself"""
    steps_per_level: Size = 3
    """T, Langevin steps at each noise level while sampling (the paper: 100)"""
    step_lr: Positive = 1.6e-3
    """ε: the step at level i is α_i = ε·σ_i²/σ_L² (the paper: 2e-5 with T = 100; few steps want larger ones)"""
    denoise: bool = True
    """a last step x + σ_L²·s_θ(x, σ_L) (Tweedie's posterior mean) after the Langevin chain"""
    ema: Annotated[float, Range(0.0, 1.0)] = 0.995
    """decay of the weights' moving average that samples and validates (0: sample with the trained weights)"""


def sigmas(cfg: Config) -> Tensor:
    """(L,) the geometric sequence σ_i = σ_1·(σ_L/σ_1)^((i−1)/(L−1)), largest first: a constant ratio σ_{i+1}/σ_i."""
    if cfg.levels == 1:
        return torch.tensor([cfg.sigma_max])
    return torch.logspace(math.log10(cfg.sigma_max), math.log10(cfg.sigma_min), cfg.levels)


class NCSN(nn.Module):
    """s_θ(x, σ) (B, C, H, W): the noise-conditional score network, a U-Net conditioned on log σ, and the moving
    average of its weights (`ema.net`) that sampling uses."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        if not cfg.sigma_max > cfg.sigma_min:
            raise DeepAtlasError("ncsn: sigma_max must be larger than sigma_min")
        self.net = denoiser(cfg, cfg.data_shape[0], "ncsn")
        self.ema = EMA(self.net, cfg.ema)
        self.register_buffer("sigmas", sigmas(cfg), persistent=False)  # (L,) σ_1 > … > σ_L

    def score(self, x: Tensor, sigma: Tensor, average: bool = False) -> Tensor:
        """s_θ(x, σ) for x (B, C, H, W) and σ (B,) or a 0-d tensor; `average`: with the moving-average weights."""
        net = self.ema.net if average and self.cfg.ema > 0 else self.net
        sigma = sigma.expand(len(x))
        out = net(x, sigma.log())                                        # (B, C, H, W), conditioned on log σ
        return out / sigma[:, None, None, None] if self.cfg.scale_by_sigma else out

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.score(x, sigma)


def dsm_loss(score_fn, x: Tensor, sigma: Tensor, z: Tensor | None = None) -> Tensor:
    """Denoising score matching weighted by λ(σ) = σ² (eq. 5–6), per example (B,):
    ½‖σ·s(x̃, σ) + z‖² summed over dimensions, with x̃ = x + σz, so that σ²·‖s + (x̃ − x)/σ²‖² = ‖σs + z‖².
    `sigma` (B,) one level per example; `z` the noise (drawn when None)."""
    z = torch.randn_like(x) if z is None else z
    s = sigma.view(-1, *[1] * (x.dim() - 1))                             # (B, 1, 1, 1)
    perturbed = x + s * z                                                # x̃ ~ N(x, σ²I)
    return 0.5 * (s * score_fn(perturbed, sigma) + z).flatten(1).square().sum(1)


@torch.no_grad()
def annealed_langevin(score_fn, x: Tensor, sigmas: Tensor, steps: int, step_lr: float, denoise: bool = True,
                      frames: list | None = None, every: int = 1) -> Tensor:
    """Algorithm 1: for each σ_i, largest first, T = `steps` updates x ← x + (α_i/2)·s(x, σ_i) + √α_i·z with
    α_i = ε·σ_i²/σ_L²; then, if `denoise`, x + σ_L²·s(x, σ_L). `frames` collects x every `every` updates."""
    last = sigmas[-1]
    k = 0
    for sigma in sigmas:
        alpha = step_lr * (sigma / last) ** 2                            # α_i = ε σ_i² / σ_L²
        for _ in range(steps):
            x = x + 0.5 * alpha * score_fn(x, sigma) + alpha.sqrt() * torch.randn_like(x)
            k += 1
            if frames is not None and k % every == 0:
                frames.append(x)
    if denoise:
        x = x + last ** 2 * score_fn(x, last)                            # E[x | x̃] by Tweedie's formula
    return x


class ScoreMatching(Generative):
    """Denoising score matching over all L levels (a level per example) with manual steps, so that the moving
    average follows each update; `sample` runs annealed Langevin dynamics with the averaged weights."""

    manual_optimization = True
    sample_metrics_per_epoch = False  # the averaged weights' DSM loss picks the epoch; sampling scores the test split
    samplers = ("langevin",)
    not_exported = "annealed Langevin dynamics (L·T network passes per sample)"
    CHUNK = 600
    FRAMES = 20

    def optimizer_groups(self) -> dict:
        return {"model": [{"params": list(self.model.net.parameters())}]}

    def loss(self, x: Tensor, average: bool = False) -> Tensor:
        """The batch mean of the DSM loss, each example at a level drawn uniformly from the L."""
        sig = self.model.sigmas
        sigma = sig[torch.randint(len(sig), (len(x),), device=x.device)]  # (B,)
        return dsm_loss(lambda y, s: self.model.score(y, s, average), x, sigma).mean()

    def training_step(self, batch, optimize):
        loss = self.loss(batch[0])
        optimize("model", loss)
        self.model.ema.update(self.model.net)                            # θ̄ ← d·θ̄ + (1 − d)·θ
        return loss.detach(), {"loss": loss.detach()}

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        """The DSM loss of the averaged weights on held-out images, levels and noise seeded (the same every epoch)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return {"loss": self.loss(batch[0], average=True)}

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, sampler: str | None = None, trajectory: bool = False):
        """n images (n, C, H, W) in [0, 1] by annealed Langevin dynamics from uniform noise (`steps`: T per level);
        with `trajectory`, also ~20 frames (F, n, C, H, W) of the chain, clamped to [0, 1]."""
        if sampler not in (None, *self.samplers):
            raise DeepAtlasError(f"ncsn samples with {', '.join(self.samplers)}, not {sampler!r}")
        cfg = self.model.cfg
        steps = steps or cfg.steps_per_level
        every = max(1, math.ceil(cfg.levels * steps / self.FRAMES))
        device = self.model.sigmas.device
        out, frames = [], []
        for start in range(0, n, self.CHUNK):
            m = min(self.CHUNK, n - start)
            x = torch.rand(m, *cfg.data_shape, device=device)            # the paper starts from uniform noise
            chunk_frames = [x] if trajectory else None
            x = annealed_langevin(lambda y, s: self.model.score(y, s, average=True), x, self.model.sigmas, steps,
                                  cfg.step_lr, cfg.denoise, chunk_frames, every)
            out.append(x.clamp(0, 1))
            if trajectory:
                if not torch.equal(chunk_frames[-1], x):
                    chunk_frames.append(x)                               # the last frame is the sample
                frames.append(torch.stack(chunk_frames).clamp(0, 1))     # (F, m, C, H, W)
        samples = torch.cat(out)
        return (samples, torch.cat(frames, dim=1)) if trajectory else samples


register(Entry(
    name="ncsn", title="Noise-Conditional Score Network (annealed Langevin dynamics)", family="generative", year=2019,
    paper=Paper("Y. Song, S. Ermon", "Generative Modeling by Estimating Gradients of the Data Distribution",
                "arXiv:1907.05600"),
    summary="One network learns the score ∇ log p of the data perturbed at a geometric ladder of noise scales, by "
            "denoising score matching weighted by σ²; samples come from annealed Langevin dynamics, a few noisy "
            "gradient steps at each scale from the largest to the smallest.",
    when_to_use="Sample quality without an adversary or a likelihood model; learning the score-based view that "
                "diffusion models and score SDEs build on; denoising (the score is a denoiser by Tweedie's formula).",
    when_not="Fast sampling (L·T network passes per sample: use a GAN or a VAE); exact likelihoods (score_sde's "
             "probability-flow ODE, pixelcnn); when ddpm's or score_sde's better-tuned noise schedules are at hand.",
    relations=[
        Relation("alternative_to", "gan", "follows a learnt score instead of fooling a discriminator: no mode "
                                          "collapse, many passes per sample"),
        Relation("alternative_to", "ddpm", "the same denoising objective over noise levels, sampled by Langevin "
                                           "steps instead of ddpm's reverse chain"),
        Relation("alternative_to", "score_sde", "a discrete ladder of noise scales that score_sde makes a continuous "
                                                "SDE with better samplers"),
    ],
    config=Config, build=NCSN, objective=ScoreMatching, task="generation",
    train=Train(epochs=40, batch_size=32, lr=2e-3),
    data=Data("glyphs"),
    bar=Bar("glyphs_fd", 259.0, "min", 300),
    notes="Not at its bar. Measured on the project's CPU, one thread on a core of its own (the other core ran "
          "another bench): a network pass of the 8-wide U-Net costs about 1 ms per 32×32 image, a training step "
          "of 32 about 0.12 s. `deepatlas bench ncsn`: 13 epochs, about 2,200 steps in 300 s, test glyphs_fd "
          "2,459 (goal 259; uniform noise 12,689), 468 s with the scoring; two later benches 2,783 (13 epochs) and, "
          "with the channels-last U-Net, 2,914 (15 epochs), then 2,774 (17 epochs and 50 steps of the 18th, which "
          "the loop now validates): runs spread by a few hundred. The samples are blobs of ink and thin "
          "strokes, few legible characters. What moved it: the first recipe (batches of 64, EMA 0.999, ε = 4e-4, "
          "one long engine epoch to score once) reached 3,626; batches of 32 for the whole budget 3,489; the "
          "Langevin step, fitted on those weights (600 validation samples): ε = 4e-4, 8e-4, 1.6e-3, 3.2e-3, "
          "6.4e-3 at T = 3 gave 3,603, 2,895, 2,454, 3,549, 4,804, and T = 6 gave 2,870, 2,379, 3,341, 5,206 at "
          "4e-4 to 3.2e-3 (T = 10 at 1.6e-3: 4,994): the best ε·T is about 5e-3, so the recipe takes T = 3 at "
          "1.6e-3, half the passes of T = 6 for the same FD. Without the final Tweedie denoising step: 3,602 "
          "against 3,603. NCSNv2's σ_1 (technique 1: the largest distance between training images, 19.9 on glyphs) "
          "with more levels spends the budget on scales the sampler barely needs: σ_1 = 5, L = 20, T = 2 scored "
          "8,345 (14 epochs). Tests use the exact scores of Gaussians and of a two-mode mixture (weights 0.8/0.2 "
          "recovered within 0.04, one scale alone leaves them near 0.5) and a 400-step learning test on 8×8 "
          "digits. params 135,346 count the EMA copy (67,673 trained).",
))
