"""Glyphs: seeded 32×32 characters (digits and capital letters, 36 classes), and glyphs-m over photographs.

    glyphs    each of the 36 characters is drawn once, large, in the font that ships inside Pillow
              (`ImageFont.load_default(size=...)`, a scalable FreeType font), at four stroke widths; every
              example then picks a stroke width and one random affine map (scale, rotation, shear, shift)
              that `grid_sample` applies to the whole batch at once. Greyscale (N, 1, 32, 32) in [0, 1],
              white ink on black, 250 examples per class, split 60/20/20 by `split_indices` (seed 0).
    glyphs-m  the same examples (same labels, same split) blended over random 32×32 crops of colour
              photographs, as MNIST-M was built from MNIST (Ganin et al. 2016, arXiv:1505.07818):
              out = |crop − glyph| per channel, so ink inverts the photo under it. (N, 3, 32, 32): the
              unpaired second domain for image-to-image translation. The photos are scikit-learn's two
              (china, flower) plus scikit-image's astronaut, coffee, chelsea and rocket when scikit-image is
              installed; the spec names the ones used.

Nothing is downloaded or cached: the whole set is drawn again on each load (about a second).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
NAMES = ("glyphs", "glyphs-m")
SIZE = 32
PER_CLASS = 250
SEED = 0
CANVAS = 96          # the high-resolution canvas each character is drawn on once
FONT_SIZE = 64
STROKES = (0, 1, 2, 3)  # stroke widths (canvas pixels) drawn around the font's own outline
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def templates() -> Tensor:
    """(S, 36, CANVAS, CANVAS) in [0, 1]: every character at every stroke width, centred on its ink."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default(size=FONT_SIZE)
    out = np.zeros((len(STROKES), len(CHARACTERS), CANVAS, CANVAS), dtype=np.float32)
    for s, stroke in enumerate(STROKES):
        for c, char in enumerate(CHARACTERS):
            image = Image.new("L", (CANVAS, CANVAS), 0)
            # anchor "mm": the text's middle sits on the canvas centre, whatever the glyph's metrics
            ImageDraw.Draw(image).text((CANVAS / 2, CANVAS / 2), char, fill=255, font=font, anchor="mm",
                                       stroke_width=stroke, stroke_fill=255)
            out[s, c] = np.asarray(image, dtype=np.float32) / 255
    return torch.from_numpy(out)


def _affines(n: int, rng: np.random.Generator) -> Tensor:
    """(n, 2, 3) maps from output to template coordinates (`affine_grid`'s convention, both in [−1, 1])."""
    scale = rng.uniform(0.75, 1.15, n)             # the glyph's height relative to the 32-pixel frame
    angle = np.deg2rad(rng.uniform(-15, 15, n))
    shear = rng.uniform(-0.25, 0.25, n)
    shift = rng.uniform(-0.12, 0.12, (n, 2))       # in half-frames: up to about 2 pixels
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)           # (n, 2, 2)
    shr = np.stack([np.stack([np.ones(n), shear], -1), np.stack([np.zeros(n), np.ones(n)], -1)], -2)
    # a template of FONT_SIZE on CANVAS maps to a glyph of about 0.8 frame height at scale 1
    zoom = (FONT_SIZE / CANVAS) / (0.8 * scale)
    forward = rot @ shr                                                                    # glyph -> frame
    inverse = np.linalg.inv(forward) * zoom[:, None, None]                                 # frame -> template
    offset = -(inverse @ shift[..., None])                                                 # (n, 2, 1)
    return torch.from_numpy(np.concatenate([inverse, offset], -1)).float()


def render(labels: np.ndarray, seed: int = SEED) -> Tensor:
    """(N, 1, SIZE, SIZE) glyphs for class labels (N,), each with a random stroke width and affine map."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    stroke = rng.integers(0, len(STROKES), n)
    theta = _affines(n, rng)
    source = templates()[stroke, labels].unsqueeze(1)                                      # (N, 1, CANVAS, CANVAS)
    # render at 2× and average down: anti-aliased edges at any scale
    grid = F.affine_grid(theta, [n, 1, 2 * SIZE, 2 * SIZE], align_corners=False)           # (N, 2S, 2S, 2)
    x = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(x, 2).clamp(0, 1)


def photos() -> tuple[list[np.ndarray], list[str]]:
    """The colour photographs (H, W, 3) uint8 that ship with scikit-learn and scikit-image (both dependencies, so
    glyphs-m is the same everywhere)."""
    import skimage.data
    from sklearn.datasets import load_sample_images
    found = load_sample_images()
    images, names = list(found.images), [n.rsplit("/", 1)[-1] for n in found.filenames]
    for name in SKIMAGE_PHOTOS:
        images.append(np.asarray(getattr(skimage.data, name)())[..., :3])
        names.append(f"skimage.{name}")
    return images, names


def blend(glyphs: Tensor, seed: int = SEED) -> tuple[Tensor, list[str]]:
    """glyphs (N, 1, S, S) -> (N, 3, S, S): |crop − glyph| over a random crop of a random photo (MNIST-M)."""
    rng = np.random.default_rng(seed + 1)
    images, names = photos()
    n, s = len(glyphs), glyphs.shape[-1]
    which = rng.integers(0, len(images), n)
    crops = torch.empty(n, 3, s, s)
    offsets = np.arange(s)
    for p, photo in enumerate(images):  # one gather per photo (six at most): crops of every example drawn from it
        idx = np.flatnonzero(which == p)
        top = rng.integers(0, photo.shape[0] - s + 1, len(idx))
        left = rng.integers(0, photo.shape[1] - s + 1, len(idx))
        rows = (top[:, None] + offsets)[:, :, None]                                           # (n_p, S, 1)
        cols = (left[:, None] + offsets)[:, None, :]                                          # (n_p, 1, S)
        patch = torch.from_numpy(photo[rows, cols].astype(np.float32) / 255)                  # (n_p, S, S, 3)
        crops[torch.from_numpy(idx)] = patch.permute(0, 3, 1, 2)                              # (n_p, 3, S, S)
    return (crops - glyphs).abs(), names


def load(name: str = "glyphs") -> tuple[Tensor, np.ndarray, list[str], tuple, dict]:
    """(x, labels, class names, (train, val, test) indices, extra spec) for `glyphs` or `glyphs-m`."""
    from deepatlas.data import split_indices
    labels = np.repeat(np.arange(len(CHARACTERS)), PER_CLASS)
    x = render(labels)
    extra = {}
    if name == "glyphs-m":
        x, used = blend(x)
        extra["photos"] = used
    return x, labels, list(CHARACTERS), split_indices(labels, name, "images"), extra


if __name__ == "__main__":  # python -m deepatlas.data.glyphs: time the generation
    import time
    for n in NAMES:
        start = time.perf_counter()
        x, *_ = load(n)
        print(f"{n}: {tuple(x.shape)} in {time.perf_counter() - start:.2f} s, mean {x.mean():.3f}")
