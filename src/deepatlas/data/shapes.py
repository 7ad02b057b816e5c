"""Shapes: procedurally generated RGB scenes for detection and segmentation, with every label exact.

Each scene is 1–6 objects (circle, square, triangle, cross) of random colour, size, position and
orientation, drawn in order over a textured background (a smooth two-colour gradient, low-frequency
blotches and pixel noise). Later objects occlude earlier ones, so an object's instance mask is its
visible part; a placement that would hide more than half of an earlier object (or leave it fewer than
12 pixels) is redrawn, a few times, and otherwise skipped, so every annotated object is plainly
visible and nothing visible is unannotated. Boxes are the tight boxes of the visible masks,
(x1, y1, x2, y2) in pixels with x2/y2 exclusive (max index + 1).

Scenes are drawn for all images of a split at once: each object slot is one batch of masks computed
from coordinate grids. Each split has its own fixed seed, whatever the run's seed.

Names: `shapes` (1,000 / 250 / 250 train/val/test images) and `shapes-N` (N training images, 1 to
20,000; the validation and test scenes stay the same). Sizes: S×S with S = `image_size` (64 by default).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from deepatlas.errors import DeepAtlasError

CLASSES = ["circle", "square", "triangle", "cross"]
DEFAULT_SIZE = 64
MAX_OBJECTS = 6
COUNTS = {"train": 1000, "val": 250, "test": 250}
MAX_TRAIN = 20_000
"""the most training images `shapes-N` generates (0.98 GB of float32 at 64x64)"""
MAX_PIXELS = 2**28
"""the most pixels all splits together may have (N + 500 images of side S): 3.2 GB of float32 RGB"""
SEEDS = {"train": 7001, "val": 7002, "test": 7003}  # fixed per split: the run's seed never changes the data
MIN_VISIBLE = 0.5  # an earlier object must keep at least this fraction of its own area visible...
MIN_PIXELS = 12  # ...and at least this many pixels
TRIES = 4  # draws per object slot before the slot is left empty
RADIUS = (0.08, 0.17)  # an object's radius as a fraction of the image side
REACH = 1.3  # the farthest any shape reaches from its centre, in radii (the triangle's circumradius)


@dataclass
class Scenes:
    """A batch of N scenes of side S, with up to MAX_OBJECTS object slots each."""
    images: Tensor
    """(N, 3, S, S) float in [0, 1]"""
    owner: Tensor
    """(N, S, S) int8: the object slot visible at each pixel, -1 for background"""
    labels: Tensor
    """(N, MAX_OBJECTS) long: each slot's class index into CLASSES, -1 where the slot is empty"""
    boxes: Tensor
    """(N, MAX_OBJECTS, 4) float: tight (x1, y1, x2, y2) of each slot's visible mask; zeros where empty"""

    def __len__(self) -> int:
        return len(self.images)

    def instance_masks(self) -> Tensor:
        """(N, MAX_OBJECTS, S, S) bool: the visible part of each slot (all False where empty)."""
        return self.owner[:, None] == torch.arange(MAX_OBJECTS, dtype=self.owner.dtype)[None, :, None, None]

    def semantic(self) -> Tensor:
        """(N, S, S) long: 0 background, class + 1 where an object is visible."""
        slot = self.owner.long().clamp(min=0)  # (N, S, S)
        cls = self.labels.gather(1, slot.flatten(1)).view_as(slot)  # (N, S, S): class of the visible slot
        return torch.where(self.owner >= 0, cls + 1, 0)

    def targets(self) -> list[dict[str, Tensor]]:
        """Per scene: {"boxes": (n, 4) float, "labels": (n,) long, "masks": (n, S, S) uint8}, in drawing order."""
        present = self.labels >= 0  # (N, MAX_OBJECTS)
        counts = present.sum(1).tolist()
        boxes = self.boxes[present].split(counts)  # each (n, 4)
        labels = self.labels[present].split(counts)  # each (n,)
        masks = self.instance_masks()[present].to(torch.uint8).split(counts)  # each (n, S, S)
        return [{"boxes": b, "labels": c, "masks": m} for b, c, m in zip(boxes, labels, masks)]


# ---- shapes as masks from coordinate grids --------------------------------------------------

def shape_masks(kind: Tensor, cx: Tensor, cy: Tensor, r: Tensor, angle: Tensor, size: int) -> Tensor:
    """(M,) class indices, centres, radii (pixels) and angles -> (M, S, S) bool masks (pixel centres inside).

    Every shape is a test on the object's own rotated coordinates (u, v):
        circle    u² + v² ≤ r²
        square    max(|u|, |v|) ≤ 0.8 r
        triangle  max_j n_j·(u, v) ≤ R/2 (equilateral, circumradius R = 1.3 r, edge normals n_j 120° apart)
        cross     two bars of half-length r and half-width 0.35 r
    """
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    out = torch.zeros(len(kind), size, size, dtype=torch.bool)
    for k in range(len(CLASSES)):  # one batch per class: each scene computes only its own shape
        idx = (kind == k).nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        dx = centres[None, None, :] - cx[idx, None, None]  # (m, 1, S)
        dy = centres[None, :, None] - cy[idx, None, None]  # (m, S, 1)
        cos, sin = angle[idx].cos()[:, None, None], angle[idx].sin()[:, None, None]
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # (m, S, S): coordinates in the object's frame
        rad = r[idx, None, None]  # (m, 1, 1)
        if CLASSES[k] == "circle":
            inside = u * u + v * v <= rad * rad
        elif CLASSES[k] == "square":
            inside = torch.maximum(u.abs(), v.abs()) <= 0.8 * rad
        elif CLASSES[k] == "triangle":
            normals = torch.tensor([math.pi / 2 + 2 * math.pi * j / 3 for j in range(3)])  # (3,)
            reach = u[..., None] * normals.cos() + v[..., None] * normals.sin()  # (m, S, S, 3)
            inside = reach.amax(-1) <= REACH * rad / 2  # inradius = circumradius / 2
        else:  # cross
            long_u, long_v = u.abs() <= rad, v.abs() <= rad
            thin_u, thin_v = u.abs() <= 0.35 * rad, v.abs() <= 0.35 * rad
            inside = (long_u & thin_v) | (thin_u & long_v)
        out[idx] = inside
    return out


def tight_boxes(masks: Tensor) -> Tensor:
    """(..., H, W) bool masks -> (..., 4) float (x1, y1, x2, y2), x2/y2 exclusive; zeros for empty masks."""
    rows, cols = masks.any(-1), masks.any(-2)  # (..., H), (..., W)
    h, w = rows.shape[-1], cols.shape[-1]
    y1, x1 = rows.byte().argmax(-1), cols.byte().argmax(-1)  # first True
    y2, x2 = h - rows.flip(-1).byte().argmax(-1), w - cols.flip(-1).byte().argmax(-1)  # last True + 1
    boxes = torch.stack([x1, y1, x2, y2], -1).float()
    return torch.where(rows.any(-1)[..., None], boxes, 0.0)


def owner_boxes(owner: Tensor) -> Tensor:
    """(N, S, S) slot map (-1 background) -> (N, MAX_OBJECTS, 4) tight boxes of each slot, zeros where empty:
    the least and greatest x and y of each slot's pixels, gathered by scatter-min/max."""
    n, h, w = owner.shape
    index = (owner.long() + 1).flatten(1)  # (N, S·S): 0 is background
    xs = torch.arange(w).repeat(h).expand(n, -1)  # (N, S·S)
    ys = torch.arange(h).repeat_interleave(w).expand(n, -1)
    big = torch.full((n, MAX_OBJECTS + 1), max(h, w) + 1)
    x1, y1 = big.scatter_reduce(1, index, xs, "amin"), big.scatter_reduce(1, index, ys, "amin")
    x2, y2 = (-big).scatter_reduce(1, index, xs, "amax") + 1, (-big).scatter_reduce(1, index, ys, "amax") + 1
    boxes = torch.stack([x1, y1, x2, y2], -1)[:, 1:].float()  # (N, slots, 4)
    return torch.where((x2 > 0)[:, 1:, None], boxes, 0.0)


# ---- colours and background ---------------------------------------------------------------

def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Hue, saturation, value in [0, 1] (any shape) -> (..., 3) RGB."""
    n = torch.tensor([5.0, 3.0, 1.0])  # R, G, B
    k = (n + h[..., None] * 6) % 6
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _background(n: int, size: int, gen: torch.Generator) -> Tensor:
    """(n, 3, S, S): a dim two-colour gradient in a random direction plus low-frequency blotches."""
    c1 = 0.05 + 0.4 * torch.rand(n, 3, 1, 1, generator=gen)
    c2 = 0.05 + 0.4 * torch.rand(n, 3, 1, 1, generator=gen)
    phi = 2 * math.pi * torch.rand(n, 1, 1, 1, generator=gen)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5  # (S,)
    t = 0.5 + grid * phi.cos() + grid[:, None] * phi.sin()  # (n, 1, S, S): position along the gradient
    blotches = F.interpolate(torch.rand(n, 1, 5, 5, generator=gen) - 0.5, size=(size, size), mode="bilinear",
                             align_corners=False)  # (n, 1, S, S): smooth texture
    tint = 0.1 + 0.2 * torch.rand(n, 3, 1, 1, generator=gen)  # how strongly each channel shows it
    return torch.addcmul(c1, c2 - c1, t.clamp_(0, 1)).addcmul_(tint, blotches)


# ---- scenes -------------------------------------------------------------------------------

def _draw_params(m: int, size: int, gen: torch.Generator) -> tuple[Tensor, ...]:
    kind = torch.randint(0, len(CLASSES), (m,), generator=gen)
    r = size * (RADIUS[0] + (RADIUS[1] - RADIUS[0]) * torch.rand(m, generator=gen))
    margin = REACH * r  # the whole shape stays inside the frame
    cx = margin + (size - 2 * margin) * torch.rand(m, generator=gen)
    cy = margin + (size - 2 * margin) * torch.rand(m, generator=gen)
    tilt = (torch.rand(m, generator=gen) - 0.5) * (math.pi / 6)  # squares and crosses: up to ±15°
    angle = torch.where(kind == CLASSES.index("triangle"), 2 * math.pi * torch.rand(m, generator=gen), tilt)
    return kind, cx, cy, r, angle


def generate(n: int, size: int = DEFAULT_SIZE, seed: int = 0) -> Scenes:
    """`n` scenes of side `size`, from `seed`: objects placed slot by slot, all scenes at once."""
    if size < 16:
        raise DeepAtlasError(f"shapes: image_size {size} is too small (at least 16)")
    gen = torch.Generator().manual_seed(seed)
    wanted = torch.randint(1, MAX_OBJECTS + 1, (n,), generator=gen)  # objects each scene asks for
    owner = torch.full((n, size * size), -1, dtype=torch.int8)  # (n, S·S): the slot on top at each pixel
    labels = torch.full((n, MAX_OBJECTS), -1, dtype=torch.long)
    visible = torch.zeros(n, MAX_OBJECTS, dtype=torch.long)  # pixels each object shows so far
    need = torch.zeros(n, MAX_OBJECTS)  # pixels each placed object must keep visible
    win = min(size, math.ceil(2 * REACH * RADIUS[1] * size) + 2)  # a window that holds any one shape
    steps = torch.arange(win)
    for slot in range(MAX_OBJECTS):
        pending = wanted > slot  # (n,)
        for _ in range(TRIES):
            idx = pending.nonzero().squeeze(1)
            m = len(idx)
            if m == 0:
                break
            kind, cx, cy, r, angle = _draw_params(m, size, gen)
            x0 = (cx - win / 2).round().long().clamp(0, size - win)  # (m,): each shape's window in the image
            y0 = (cy - win / 2).round().long().clamp(0, size - win)
            mask = shape_masks(kind, cx - x0, cy - y0, r, angle, win)  # (m, win, win)
            flat = (y0[:, None, None] + steps[:, None]) * size + x0[:, None, None] + steps  # (m, win, win) pixel ids
            under = owner[idx[:, None, None], flat]  # (m, win, win): what is there now
            hidden = torch.where(mask, under, -1).long() + 1 + (MAX_OBJECTS + 1) * torch.arange(m)[:, None, None]
            lost = torch.bincount(hidden.flatten(), minlength=m * (MAX_OBJECTS + 1)).view(m, -1)[:, 1:]  # (m, slots)
            ok = (visible[idx] - lost >= need[idx]).all(1)  # every earlier object stays visible enough
            accepted, mask, area = idx[ok], mask[ok], mask[ok].flatten(1).sum(1)
            owner[accepted[:, None, None], flat[ok]] = torch.where(mask, slot, under[ok]).to(torch.int8)
            visible[accepted] -= lost[ok]
            visible[accepted, slot] = area
            need[accepted, slot] = torch.clamp(MIN_VISIBLE * area.float(), min=MIN_PIXELS)
            labels[accepted, slot] = kind[ok]
            pending[accepted] = False
    owner = owner.view(n, size, size)
    # colours: each object of a scene gets its own eighth of the hue circle, so neighbours differ
    bins = torch.rand(n, 8, generator=gen).argsort(1)[:, :MAX_OBJECTS].float()  # (n, slots)
    hue = (bins + 0.2 + 0.6 * torch.rand(n, MAX_OBJECTS, generator=gen)) / 8
    sat = 0.55 + 0.45 * torch.rand(n, MAX_OBJECTS, generator=gen)
    val = 0.65 + 0.35 * torch.rand(n, MAX_OBJECTS, generator=gen)
    colours = _hsv_to_rgb(hue, sat, val).transpose(1, 2)  # (n, 3, slots)
    palette = torch.cat([torch.zeros(n, 3, 1), colours], 2)  # (n, 3, 1 + slots): index 0 is background
    index = (owner.long() + 1).view(n, 1, -1).expand(n, 3, -1)  # (n, 3, S·S)
    fg = palette.gather(2, index).view(n, 3, size, size)  # (n, 3, S, S): each pixel's object colour
    images = torch.where(owner[:, None] >= 0, fg, _background(n, size, gen))
    noise = torch.rand(n, 1, size, size, generator=gen).sub_(0.5).mul_(0.14)  # grey sensor noise everywhere
    images = images.add_(noise).clamp_(0, 1)
    return Scenes(images, owner, labels, owner_boxes(owner))


def train_count(source: str) -> int | None:
    """`shapes` -> the default training count, `shapes-N` -> N, anything else -> None."""
    if source == "shapes":
        return COUNTS["train"]
    match = re.fullmatch(r"shapes-(\d+)", source)
    if match is None:
        return None
    if not 1 <= int(match.group(1)) <= MAX_TRAIN:
        raise DeepAtlasError(f"{source}: shapes-N takes a number of training images N from 1 to {MAX_TRAIN:,}")
    return int(match.group(1))


@lru_cache(maxsize=4)
def splits(source: str, size: int = 0) -> dict[str, Scenes]:
    """The train/val/test scenes of `shapes` or `shapes-N` at side `size` (0: DEFAULT_SIZE)."""
    n_train = train_count(source)
    if n_train is None:
        raise DeepAtlasError(f"unknown dataset {source!r}: not shapes nor shapes-N")
    size = size or DEFAULT_SIZE
    counts = {**COUNTS, "train": n_train}
    if sum(counts.values()) * size * size > MAX_PIXELS:
        raise DeepAtlasError(f"{source} at image_size={size}: {sum(counts.values()):,} scenes of {size}x{size} are "
                             f"more than {MAX_PIXELS:,} pixels; lower image_size or the number of training images")
    return {part: generate(counts[part], size, SEEDS[part]) for part in ("train", "val", "test")}
