"""What every generative model is measured by: sample quality and likelihood.

    digits-FD      the Fréchet distance (Heusel et al. 2017, arXiv:1706.08500) between Gaussians fitted to a
                   fixed judge classifier's features of generated and of real held-out digits:
                   FD = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2(Σ₁^½ Σ₂ Σ₁^½)^½). The judge is a small CNN trained on the
                   digits train split with a fixed seed (`build_judge`); its weights ship with the package
                   (judge-digits.safetensors, next to this file; `python -m deepatlas.tasks.generative`
                   rebuilds them), so every machine measures with the same judge and nothing is written
                   outside the package. `fd_real_halves` is the FD between the two halves of the real set:
                   the yardstick of what sampling noise alone costs.
    class_entropy  entropy (nats, at most ln 10) of the judge's predicted classes over the samples, and
    class_coverage the number of classes the judge assigns to at least 2% of them (a fifth of a fair share).
    toy2d          modes covered and the high-quality fraction (data/toy2d.py), from 2,500 samples.
    bits/dim       NLL in bits per dimension, next to an independent-pixel baseline fitted on train.

A generative objective subclasses `Generative` and writes `sample(n)`; the engine's evaluation then calls
`sample_metrics(real)` with the whole held-out split and adds what fits the data.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import MAX_SIZE, Range, Size
from deepatlas.data import toy2d
from deepatlas.errors import DeepAtlasError
from deepatlas.nn.unet import UNet
from deepatlas.tasks import Objective, Task

SAMPLE_SEED = 1234
TOY2D_SAMPLES = 2500
JUDGE_FILE = Path(__file__).with_name("judge-digits.safetensors")
JUDGE_REBUILD = "python -m deepatlas.tasks.generative"


@contextmanager
def seeded(seed: int, device: torch.device):
    """Run a block on its own seeded random stream, leaving the caller's stream untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@dataclass
class DenoiserConfig:
    """The settings of the time-conditional U-Net (nn/unet.py) that the denoising models (ddpm, ncsn, score_sde)
    are built on; their Configs subclass it."""
    data_shape: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [1, 32, 32])
    """one image's shape (C, H, W), set from the data (any side: the U-Net pads to halve, then crops)"""
    channels: Size = 8
    """the U-Net's width at full resolution (Ho et al.: 128 on CIFAR-10)"""
    mults: Annotated[list[int], Range(1, 64)] = field(default_factory=lambda: [1, 2, 2])
    """width multiplier per resolution level, one level per halving (Ho et al.: 1, 2, 2, 2 on CIFAR-10)"""
    blocks: Size = 1
    """residual blocks per level on the way down (one more on the way up; Ho et al.: 2)"""
    groups: Size = 8
    """group-normalization groups (at most the channels)"""
    attention: bool = False
    """self-attention at the lowest resolution besides the middle (the middle always has one)"""


def denoiser(cfg: DenoiserConfig, out_channels: int, owner: str, dropout: float = 0.0) -> UNet:
    """The U-Net of `cfg` for its images (of any side: the U-Net pads what does not halve and crops back)."""
    if len(cfg.data_shape) != 3:
        raise DeepAtlasError(f"{owner}: data_shape {cfg.data_shape} is not an image's (C, H, W)")
    return UNet(cfg.data_shape[0], out_channels, cfg.channels, tuple(cfg.mults), cfg.blocks, cfg.groups, dropout,
                cfg.attention)


# ---- the judge ----------------------------------------------------------------------------

class Judge(nn.Module):
    """A small CNN on 8×8 digits in [0, 1]; its 64-wide penultimate layer gives the features."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
                                  nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 16, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def build_judge() -> Judge:
    """Train the digits judge from scratch (about 6 s): seed 0, Adam at 2e-3, 40 epochs of batches of 64 over
    the digits train split, each batch shifted by ±1 pixel. Deterministic: it trains with gradients on
    whatever context calls it, and on one intra-op thread, because a split over several threads sums in
    another order and lands on other weights (a different CPU instruction set can too, see the tests)."""
    from deepatlas.data import images, split_indices
    x, y, _ = images._digits()
    train, _, _ = split_indices(y)
    x, y = x[train], torch.as_tensor(y[train])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            generator = torch.Generator().manual_seed(0)
            with seeded(0, torch.device("cpu")):
                judge = Judge()
            opt = torch.optim.Adam(judge.parameters(), lr=2e-3)
            for _ in range(40):
                for idx in torch.randperm(len(x), generator=generator).split(64):
                    # a pixel shift of ±1 keeps the judge's features smooth over small distortions
                    dx, dy = torch.randint(-1, 2, (2,), generator=generator).tolist()
                    loss = F.cross_entropy(judge(x[idx].roll((dy, dx), (-2, -1))), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    return judge.eval()


def save_weights(model: nn.Module, path: Path, rebuild: str) -> Path:
    """Write a judge's weights (safetensors), noting the torch build, CPU and kernels that trained them and the
    command that rebuilds them in one metadata entry (one, so that a rebuild writes the same bytes)."""
    import json
    from safetensors.torch import save_file
    from deepatlas.cores import cpu_name
    build = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "cpu": cpu_name(), "threads": 1, "rebuild": rebuild}
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"build": json.dumps(build, sort_keys=True)})
    return path


def load_weights(model: nn.Module, path: Path, rebuild: str, what: str) -> nn.Module:
    """`model` with the shipped weights at `path`, frozen in eval mode; one line naming `rebuild` if missing."""
    from safetensors.torch import load_file
    if not path.is_file():
        raise DeepAtlasError(f"the {what} judge's weights are missing ({path}); rebuild them with `{rebuild}`")
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


def save_judge(model: Judge, path: Path = JUDGE_FILE) -> Path:
    return save_weights(model, path, JUDGE_REBUILD)


_JUDGE: Judge | None = None


def judge() -> Judge:
    """The digits judge, loaded once per process from the weights shipped with the package."""
    global _JUDGE
    if _JUDGE is None:
        _JUDGE = load_weights(Judge(), JUDGE_FILE, JUDGE_REBUILD, "digits")
    return _JUDGE


# ---- the scores ---------------------------------------------------------------------------

def frechet_distance(a: Tensor, b: Tensor) -> float:
    """FD between Gaussians fitted to feature sets a (N, D) and b (M, D), in float64."""
    a, b = a.double(), b.double()
    mu = a.mean(0) - b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(ca)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ cb @ root_a).clamp(min=0).sqrt().sum()  # tr((Σa^½ Σb Σa^½)^½)
    return float(mu @ mu + ca.trace() + cb.trace() - 2 * cross)


@torch.no_grad()
def judge_features(x: Tensor) -> tuple[Tensor, Tensor]:
    """(features (N, 64), class probabilities (N, 10)) of images (N, 1, H, W) in [0, 1], resized to 8×8."""
    from deepatlas.data.images import resize
    model = judge()
    x = resize(x.float().cpu(), 8).clamp(0, 1)
    features = model.body(x)
    return features, model.head(features).softmax(-1)


def judge_scores(fake: Tensor, probs: Tensor, true: Tensor, name: str) -> dict[str, float]:
    """From a judge's features of samples (with its class probabilities) and of real images: NAME_fd,
    fd_real_halves (the real images' two halves against each other), class_entropy of the predicted classes and
    class_coverage (classes given at least a fifth of a uniform share)."""
    classes = probs.shape[-1]
    half = len(true) // 2
    counts = torch.bincount(probs.argmax(-1), minlength=classes)
    share = counts.float() / len(probs)
    entropy = -(share * share.clamp(min=1e-12).log()).sum()
    return {f"{name}_fd": frechet_distance(fake, true), "fd_real_halves": frechet_distance(true[:half], true[half:]),
            "class_entropy": entropy.item(), "class_coverage": float((counts * 5 * classes >= len(probs)).sum())}


def digits_scores(samples: Tensor, real: Tensor) -> dict[str, float]:
    """digits_fd of samples against the real images, fd_real_halves, class_entropy and class_coverage."""
    return judge_scores(*judge_features(samples), judge_features(real)[0], "digits")


def bits_per_dim(nll_nats: Tensor, dims: int) -> Tensor:
    """Per-example NLL in nats -> bits per dimension."""
    return nll_nats / (dims * math.log(2))


def pixel_log_probs(train: Tensor, levels: int) -> Tensor:
    """The independent-pixel baseline: log p(level) per position, (levels, *shape), from the training
    examples' integer levels (N, *shape), with add-one smoothing."""
    counts = F.one_hot(train.long(), levels).sum(0).movedim(-1, 0).float() + 1
    return (counts / counts.sum(0, keepdim=True)).log()


def pixel_baseline_nll(x: Tensor, log_probs: Tensor) -> Tensor:
    """Per-example NLL (nats) of integer levels x (N, *shape) under the independent-pixel table."""
    table = log_probs.to(x.device).flatten(1).T  # (D, levels)
    return -table.gather(1, x.long().flatten(1).T).sum(0)


def image_scorer(spec: dict):
    """`scores(samples, real) -> {NAME_fd, ...}` of the judge for the run's embedded image set, or None."""
    if spec.get("kind") != "images":
        return None
    if spec.get("source") == "digits":
        return digits_scores
    if spec.get("source") == "glyphs":
        from deepatlas.tasks.glyphs_judge import glyphs_scores
        return glyphs_scores
    return None


class Generative(Objective):
    """A generative model's objective: `sample(n) -> n examples in the data's own space` (images in [0, 1],
    points, waves in [−1, 1]). `sample_metrics` scores a seeded batch of samples against real held-out data."""

    def sample(self, n: int) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample_metrics(self, real: Tensor) -> dict[str, float]:
        spec = getattr(self, "data_spec", {})  # the run's data spec: the engine sets it when it trains or loads
        kind, source = spec.get("kind"), spec.get("source")
        scores = image_scorer(spec)
        if scores is not None:
            with seeded(SAMPLE_SEED, real.device):
                return scores(self.sample(len(real)), real)
        if kind == "points" and toy2d.density(source).modes is not None:
            with seeded(SAMPLE_SEED, real.device):
                return toy2d.mode_scores(self.sample(TOY2D_SAMPLES).float(), toy2d.density(source))
        return {}


class GenerationTask(Task):
    def trivial(self, spec: dict, train, examples) -> tuple[str, dict[str, float]] | None:
        """On images that have a judge (digits, glyphs): `independent_pixels` of the training split (of the examples
        when `train` is None), scored as a model's samples are; None for other data."""
        from deepatlas.data.generative import independent_pixels
        scores = image_scorer(spec)
        if scores is None:
            return None
        real = examples.tensors[0]
        with seeded(SAMPLE_SEED, real.device):
            fake = independent_pixels((train if train is not None else examples).tensors[0], len(real))
        return "independent pixels, each drawn from its training values", scores(fake, real)


TASKS = [GenerationTask("generation", "deepatlas.data.generative", options=("image_size", "binarize", "window")),
         Task("image_translation", "deepatlas.data.unpaired", draws=True, options=("image_size",))]


if __name__ == "__main__":  # python -m deepatlas.tasks.generative: rebuild the shipped judge
    print(f"digits judge -> {save_judge(build_judge())}")
