"""Judges of image translation between glyphs and glyphs-m (data/glyphs.py): what CycleGAN's bars are measured by.

    content  a translation keeps the character when the target domain's judge reads its class: the glyphs judge
             (tasks/glyphs_judge.py) for translations to glyphs, and here a glyphs-m judge, the same three conv-pool
             stages on colour input, trained on the glyphs-m train split (judge-glyphs-m.safetensors).
    domain   a translation is in the target domain when a domain classifier, a small CNN trained on the train
             splits of both (glyphs replicated to three channels: label 0; glyphs-m: label 1), says so
             (judge-domain-glyphs.safetensors).

Both are trained from a fixed seed on one thread and their weights ship next to this file;
`python -m deepatlas.tasks.domain_judges` rebuilds them and prints their test accuracy and calibration (what
each says of the untranslated images, of uniform noise). `translation_scores` gives the batch means a CycleGAN's
validation reports.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.tasks.generative import load_weights, save_weights, seeded

GLYPHS_M_FILE = Path(__file__).with_name("judge-glyphs-m.safetensors")
DOMAIN_FILE = Path(__file__).with_name("judge-domain-glyphs.safetensors")
REBUILD = "python -m deepatlas.tasks.domain_judges"
DOMAINS = ("glyphs", "glyphs-m")
"""the pair the domain classifier tells apart: its output is the probability of the second"""


class ColourGlyphJudge(nn.Module):
    """The glyphs judge's three conv-pool stages on (B, 3, 32, 32) colour glyphs in [0, 1]: 36 class logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # (B, 16, 16, 16)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 32, 8, 8)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 64, 4, 4)
            nn.Flatten(), nn.Linear(64 * 16, 64), nn.ReLU())               # (B, 64)
        self.head = nn.Linear(64, 36)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class DomainJudge(nn.Module):
    """(B, 3, 32, 32) in [0, 1] -> (B,) logit of "glyphs-m": two strided convolutions and a global average."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),            # (B, 8, 16, 16)
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),           # (B, 16, 8, 8)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))       # (B, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, 0]


def _colour(x: Tensor) -> Tensor:
    """(B, 1 or 3, H, W) -> (B, 3, 32, 32): grey replicated, other sizes resized."""
    from deepatlas.data.images import resize
    x = x.float().cpu()
    x = resize(x, 32).clamp(0, 1) if x.shape[-1] != 32 or x.shape[-2] != 32 else x
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _train(model: nn.Module, x: Tensor, y: Tensor, epochs: int, loss_fn) -> nn.Module:
    """Adam at 2e-3 over (x, y) in batches of 64, each shifted by up to ±1 pixel; seed 0, one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            generator = torch.Generator().manual_seed(0)
            opt = torch.optim.Adam(model.parameters(), lr=2e-3)
            for _ in range(epochs):
                for idx in torch.randperm(len(x), generator=generator).split(64):
                    dx, dy = torch.randint(-1, 2, (2,), generator=generator).tolist()
                    loss = loss_fn(model(x[idx].roll((dy, dx), (-2, -1))), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _splits(name: str) -> dict[str, tuple[Tensor, Tensor]]:
    from deepatlas.tasks.glyphs_judge import _splits as glyph_splits
    return glyph_splits(name)


def build_glyphs_m_judge(epochs: int = 10) -> ColourGlyphJudge:
    """The glyphs-m judge from scratch: seed 0, `epochs` over the glyphs-m train split."""
    x, y = _splits("glyphs-m")["train"]
    with seeded(0, torch.device("cpu")):
        model = ColourGlyphJudge()
    return _train(model, x, y, epochs, F.cross_entropy)


def build_domain_judge(epochs: int = 2) -> DomainJudge:
    """The domain classifier from scratch: seed 0, `epochs` over both train splits (glyphs 0, glyphs-m 1)."""
    grey, colour = _splits("glyphs")["train"][0], _splits("glyphs-m")["train"][0]
    x = torch.cat([_colour(grey), colour])
    y = torch.cat([torch.zeros(len(grey)), torch.ones(len(colour))])
    with seeded(0, torch.device("cpu")):
        model = DomainJudge()
    return _train(model, x, y, epochs, F.binary_cross_entropy_with_logits)


_LOADED: dict[str, nn.Module] = {}


def glyphs_m_judge() -> ColourGlyphJudge:
    if "glyphs-m" not in _LOADED:
        _LOADED["glyphs-m"] = load_weights(ColourGlyphJudge(), GLYPHS_M_FILE, REBUILD, "glyphs-m")
    return _LOADED["glyphs-m"]


def domain_judge() -> DomainJudge:
    if "domain" not in _LOADED:
        _LOADED["domain"] = load_weights(DomainJudge(), DOMAIN_FILE, REBUILD, "glyphs/glyphs-m domain")
    return _LOADED["domain"]


@torch.no_grad()
def judge_features(domain: str, x: Tensor) -> tuple[Tensor, Tensor]:
    """(features (B, 64), class probabilities (B, 36)) of images (B, C, H, W) in [0, 1] by the judge of `domain`."""
    if domain == "glyphs":
        from deepatlas.tasks.glyphs_judge import judge_features as glyphs_features
        return glyphs_features(x)
    if domain == "glyphs-m":
        model = glyphs_m_judge()
        features = model.body(_colour(x))
        return features, model.head(features).softmax(-1)
    raise ValueError(f"no judge for domain {domain!r}")


def class_probs(domain: str, x: Tensor) -> Tensor:
    """(B, 36) class probabilities of images (B, C, H, W) in [0, 1] by the judge of `domain`."""
    return judge_features(domain, x)[1]


@torch.no_grad()
def in_domain_b(x: Tensor) -> Tensor:
    """(B,) probability that images (B, C, H, W) in [0, 1] are glyphs-m rather than glyphs."""
    return torch.sigmoid(domain_judge()(_colour(x)))


def judged(domains) -> bool:
    """Whether the judges here score translations between `domains` (A, B): glyphs and glyphs-m, either way."""
    return domains is not None and len(domains) == 2 and set(domains) == set(DOMAINS)


@torch.no_grad()
def translation_scores(domains: list[str], fake_b: Tensor, y_a: Tensor, fake_a: Tensor, y_b: Tensor
                       ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """For a batch of translations between `domains` (A, B), glyphs and glyphs-m: batch means content_ab (the B
    judge reads G(a) as a's class), domain_ab (the domain classifier calls G(a) B), content_ba and domain_ba; and
    the judges' features of G(a) and F(b) ("ab", "ba"), for a Fréchet distance to the real images over the split."""
    a, b = domains
    p_b = in_domain_b(fake_b) if b == DOMAINS[1] else 1 - in_domain_b(fake_b)       # P(G(a) is in B)
    p_a = in_domain_b(fake_a) if a == DOMAINS[1] else 1 - in_domain_b(fake_a)       # P(F(b) is in A)
    (feat_ab, probs_ab), (feat_ba, probs_ba) = judge_features(b, fake_b), judge_features(a, fake_a)
    return ({"content_ab": probs_ab.argmax(-1).eq(y_a.cpu()).float().mean(), "domain_ab": (p_b > 0.5).float().mean(),
             "content_ba": probs_ba.argmax(-1).eq(y_b.cpu()).float().mean(), "domain_ba": (p_a > 0.5).float().mean()},
            {"ab": feat_ab, "ba": feat_ba})


def calibration() -> dict[str, float]:
    """Test accuracy of both judges, and what they say of untranslated images and of noise: the glyphs-m judge on
    plain glyphs (replicated), the domain classifier on test glyphs, test glyphs-m and uniform noise (share called
    glyphs-m); and the FD yardsticks of fd_ab (glyphs-m judge features): two random halves of the glyphs-m test
    split, the glyphs test split copied as its translation, and uniform noise, each against the glyphs-m test split."""
    from deepatlas.tasks.generative import frechet_distance
    grey, y = _splits("glyphs")["test"]
    colour, y_m = _splits("glyphs-m")["test"]
    noise = torch.rand(colour.shape, generator=torch.Generator().manual_seed(0))
    real = judge_features("glyphs-m", colour)[0]
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    halves = frechet_distance(real[order[: len(real) // 2]], real[order[len(real) // 2:]])
    return {"fd_ab_real_halves": halves, "fd_ab_identity_copy": frechet_distance(judge_features("glyphs-m", grey)[0], real),
            "fd_ab_noise": frechet_distance(judge_features("glyphs-m", noise)[0], real),
            "glyphs_m_judge_test_accuracy": class_probs("glyphs-m", colour).argmax(-1).eq(y_m).float().mean().item(),
            "glyphs_m_judge_on_plain_glyphs": class_probs("glyphs-m", grey).argmax(-1).eq(y).float().mean().item(),
            "glyphs_judge_on_glyphs_m": class_probs("glyphs", colour).argmax(-1).eq(y_m).float().mean().item(),
            "domain_test_accuracy": 0.5 * ((in_domain_b(colour) > 0.5).float().mean().item()
                                           + (in_domain_b(grey) <= 0.5).float().mean().item()),
            "domain_noise_called_glyphs_m": (in_domain_b(noise) > 0.5).float().mean().item()}


if __name__ == "__main__":  # python -m deepatlas.tasks.domain_judges: rebuild both judges and calibrate
    import time
    for build, path in ((build_glyphs_m_judge, GLYPHS_M_FILE), (build_domain_judge, DOMAIN_FILE)):
        start = time.perf_counter()
        print(f"{path.name} <- {build.__name__} in ", end="", flush=True)
        save_weights(build(), path, REBUILD)
        print(f"{time.perf_counter() - start:.1f} s")
    print(json.dumps(calibration(), indent=1))
