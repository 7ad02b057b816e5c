"""The FD judge for glyphs (data/glyphs.py): a small CNN's penultimate features, as the digits judge is for digits.

The judge is trained on the glyphs train split with a fixed seed on one thread (`build_judge`); its weights ship
with the package (judge-glyphs.safetensors, next to this file; `python -m deepatlas.tasks.glyphs_judge` rebuilds
them and prints the calibration). `glyphs_scores` gives glyphs_fd (the Fréchet distance of
tasks/generative.py between the judge's features of samples and of real images) and the same yardsticks as
digits. `calibration` measures what an FD means here: random halves of the real test split (many halvings),
real train against test, and uniform noise; the goal is 3× the halves' mean plus two standard deviations.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.tasks.generative import frechet_distance, judge_scores, load_weights, save_weights, seeded

JUDGE_FILE = Path(__file__).with_name("judge-glyphs.safetensors")
JUDGE_REBUILD = "python -m deepatlas.tasks.glyphs_judge"
N_CLASSES = 36
FEATURES = 64


class GlyphJudge(nn.Module):
    """Three conv-pool stages on 32×32 greyscale glyphs in [0, 1]; the 64-wide penultimate layer gives features."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # (B, 16, 16, 16)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 32, 8, 8)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 64, 4, 4)
            nn.Flatten(), nn.Linear(64 * 16, FEATURES), nn.ReLU())         # (B, 64)
        self.head = nn.Linear(FEATURES, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _splits(name: str = "glyphs") -> dict[str, tuple[Tensor, Tensor]]:
    from deepatlas.data import glyphs
    x, y, _, parts, _ = glyphs.load(name)
    y = torch.as_tensor(y)
    return {s: (x[i], y[i]) for s, i in zip(("train", "val", "test"), parts)}


def build_judge(epochs: int = 8) -> GlyphJudge:
    """Train the judge from scratch: seed 0, Adam at 2e-3, `epochs` over the glyphs train split in batches of
    64, each batch shifted by up to ±1 pixel; one intra-op thread, so the weights are the same on every run."""
    x, y = _splits()["train"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            generator = torch.Generator().manual_seed(0)
            with seeded(0, torch.device("cpu")):
                judge = GlyphJudge()
            opt = torch.optim.Adam(judge.parameters(), lr=2e-3)
            for _ in range(epochs):
                for idx in torch.randperm(len(x), generator=generator).split(64):
                    dx, dy = torch.randint(-1, 2, (2,), generator=generator).tolist()
                    loss = F.cross_entropy(judge(x[idx].roll((dy, dx), (-2, -1))), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    return judge.eval()


def save_judge(model: GlyphJudge, path: Path = JUDGE_FILE) -> Path:
    return save_weights(model, path, JUDGE_REBUILD)


_JUDGE: GlyphJudge | None = None


def judge() -> GlyphJudge:
    """The glyphs judge, loaded once per process from the weights shipped with the package."""
    global _JUDGE
    if _JUDGE is None:
        _JUDGE = load_weights(GlyphJudge(), JUDGE_FILE, JUDGE_REBUILD, "glyphs")
    return _JUDGE


@torch.no_grad()
def judge_features(x: Tensor) -> tuple[Tensor, Tensor]:
    """(features (N, 64), class probabilities (N, 36)) of images (N, C, H, W) in [0, 1]: colour is averaged to
    grey and the size resized to 32×32."""
    from deepatlas.data.images import resize
    model = judge()
    x = x.float().cpu().mean(1, keepdim=True)
    x = resize(x, 32).clamp(0, 1) if x.shape[-1] != 32 else x
    features = torch.cat([model.body(chunk) for chunk in x.split(1024)])
    return features, model.head(features).softmax(-1)


def glyphs_scores(samples: Tensor, real: Tensor) -> dict[str, float]:
    """glyphs_fd of samples against the real images, fd_real_halves, class_entropy and class_coverage."""
    return judge_scores(*judge_features(samples), judge_features(real)[0], "glyphs")


def calibration(halvings: int = 200) -> dict[str, float]:
    """What an FD is worth on glyphs: the judge's test accuracy; FD between random halves of the real test split
    (mean and standard deviation over `halvings`, seed 0); a test-sized draw of real train against test; uniform
    noise against test; and the goal, 3 × the halves' mean + 2 standard deviations."""
    parts = _splits()
    test_x, test_y = parts["test"]
    real, probs = judge_features(test_x)
    generator = torch.Generator().manual_seed(0)
    halves = []
    for _ in range(halvings):
        order = torch.randperm(len(real), generator=generator)
        halves.append(frechet_distance(real[order[: len(real) // 2]], real[order[len(real) // 2:]]))
    halves = torch.tensor(halves)
    train_x = parts["train"][0][torch.randperm(len(parts["train"][0]), generator=generator)[: len(real)]]
    noise = torch.rand(test_x.shape, generator=generator)
    mean, std = halves.mean().item(), halves.std().item()
    return {"test_accuracy": probs.argmax(-1).eq(test_y).float().mean().item(), "halves_mean": mean,
            "halves_std": std, "train_vs_test": frechet_distance(judge_features(train_x)[0], real),
            "noise": frechet_distance(judge_features(noise)[0], real), "goal": 3 * mean + 2 * std}


if __name__ == "__main__":  # python -m deepatlas.tasks.glyphs_judge: rebuild the shipped judge and calibrate
    import time
    start = time.perf_counter()
    print(f"glyphs judge -> {save_judge(build_judge())} in {time.perf_counter() - start:.1f} s")
    print(json.dumps(calibration(), indent=1))
