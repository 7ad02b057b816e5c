"""Semantic segmentation data: embedded `shapes` scenes and users' folders of images with PNG label masks.

An item is (image float (3, S, S) in [0, 1], mask long (S, S)): 0 is background, 1..K the classes; the
spec's `classes` lists all K + 1 names, background first, so a label value indexes it directly.

    shapes   the detection scenes (data/shapes.py): each pixel gets the class + 1 of the object visible there.
    folder   `images/` and `masks/`, a PNG label image per image with the same file stem, whose pixel values
             are class ids (0 background); optional `classes.txt` naming the classes 1..K, one a line (or
             0..K when its first line is `background`). Without it, K is the largest value in the masks.
             Images and masks are resized to S×S (masks by nearest neighbour); a fixed 60/20/20 split by
             image (seed 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas.data import SPLIT_SEED, Splits, images, read_lines, shapes
from deepatlas.data.detection import _load_image, read_images
from deepatlas.errors import DeepAtlasError

EMBEDDED = {"shapes"}
DEFAULT_SIZE = shapes.DEFAULT_SIZE
BACKGROUND = "background"


class SegmentationData(Splits):
    @property
    def dims(self) -> dict[str, int]:
        """`n_classes` counts the background: K + 1 output channels."""
        return {"in_channels": 3, "image_size": self.spec["image_size"], "n_classes": len(self.spec["classes"])}


class Flip:
    """A batch transform: each image and its mask flipped left-right together with probability 1/2."""

    def __call__(self, batch):
        x, y = batch  # (B, 3, H, W), (B, H, W)
        flip = torch.rand(len(x), device=x.device) < 0.5  # (B,)
        return torch.where(flip[:, None, None, None], x.flip(-1), x), torch.where(flip[:, None, None], y.flip(-1), y)


# ---- users' folders -----------------------------------------------------------------------

def _classes_file(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in read_lines(path) if line.strip()]
    if not names:
        raise DeepAtlasError(f"{path}: no class names")
    return names if names[0].lower() == BACKGROUND else [BACKGROUND, *names]


def _read_mask(path: Path, size: tuple[int, int]) -> Tensor:
    """A PNG label image -> (H, W) long of its values; its size must be the image's (height, width)."""
    with images.open_image(path) as img:  # its header checked before it is decoded
        if img.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise DeepAtlasError(f"{path}: a {img.mode} image; a label mask needs one channel of class ids")
        try:
            img.load()
            values = np.asarray(img).astype(np.int64)  # palette images give their indices: the class ids
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise DeepAtlasError(f"{path}: not a readable image ({err.__class__.__name__})") from None
    if values.shape != size:
        raise DeepAtlasError(f"{path}: mask is {values.shape[1]}x{values.shape[0]}, its image {size[1]}x{size[0]}")
    return torch.from_numpy(values)


def read_folder(root: Path, size: int, classes: list[str] | None = None) -> tuple[TensorDataset, list[str]]:
    """`images/` + `masks/` -> (dataset of (N, 3, S, S) images and (N, S, S) masks, classes with background).
    `classes` (a run's) fixes the class names; otherwise classes.txt or the largest mask value does."""
    image_dir, mask_dir = root / "images", root / "masks"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise DeepAtlasError(f"{root}: expected images/ and masks/ (PNG label images with the same file names)")
    files = images._image_files(image_dir)
    if not files:
        raise DeepAtlasError(f"{image_dir}: no images ({', '.join(sorted(images.IMAGE_SUFFIXES))})")
    named = classes or _classes_file(root)
    pictures, masks = [], []
    for file in files:
        mask_file = mask_dir / f"{file.stem}.png"
        if not mask_file.is_file():
            raise DeepAtlasError(f"{file}: no mask {mask_file.name} in {mask_dir}")
        picture, original = _load_image(file, size)
        mask = _read_mask(mask_file, original)
        if named is not None and int(mask.max()) >= len(named):
            raise DeepAtlasError(f"{mask_file}: label {int(mask.max())}, but there are only classes "
                                 f"0..{len(named) - 1} ({', '.join(named)})")
        pictures.append(picture)
        masks.append(mask)
    if named is None:
        top = max(int(m.max()) for m in masks)
        if top == 0:
            raise DeepAtlasError(f"{mask_dir}: every mask is background (0); labels are class ids 1..K")
        named = [BACKGROUND, *(str(k) for k in range(1, top + 1))]
    resized = [_resize_labels(m, size) if m.shape != (size, size) else m for m in masks]
    return TensorDataset(torch.stack(pictures), torch.stack(resized).long()), named


def _resize_labels(mask: Tensor, size: int) -> Tensor:
    """(H, W) class ids -> (S, S) by nearest neighbour (no blending of ids)."""
    return F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest-exact")[0, 0].long()


def _split(dataset: TensorDataset, source: str) -> list[TensorDataset]:
    n = len(dataset)
    if n < 3:
        raise DeepAtlasError(f"{source}: {n} image(s); a 60/20/20 split needs at least 3")
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(n))
    n_val = n_test = max(1, round(0.2 * n))
    parts = order.split([n - n_val - n_test, n_val, n_test])
    return [TensorDataset(*(t[p] for t in dataset.tensors)) for p in parts]


# ---- the data module API ------------------------------------------------------------------

def load(source: str, image_size: int = 0, flip: bool = False) -> SegmentationData:
    """`shapes`, `shapes-N` or a folder of images/ and masks/, at side `image_size` (0: 64)."""
    size = image_size or DEFAULT_SIZE
    if shapes.train_count(source) is not None:
        scenes = shapes.splits(source, size)
        parts = [TensorDataset(scenes[p].images, scenes[p].semantic()) for p in ("train", "val", "test")]
        classes = [BACKGROUND, *shapes.CLASSES]
    elif Path(source).is_dir():
        dataset, classes = read_folder(Path(source), size)
        parts = _split(dataset, source)
    elif Path(source).exists():
        raise DeepAtlasError(f"{source}: expected a folder with images/ and masks/")
    else:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a folder, nor shapes or shapes-N")
    spec = {"kind": "segmentation", "source": source, "classes": classes, "image_size": size}
    return SegmentationData(*parts, spec, Flip() if flip else None)


def load_for(options, target: str | None = None) -> SegmentationData:
    return load(options.data, options.image_size, options.flip)


def read_inputs(spec: dict, path: str) -> tuple[Tensor, list[str]]:
    """An image file or a folder of images -> ((N, 3, S, S) in [0, 1], a name per image), for predict."""
    return read_images(spec, path)


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """A folder of images/ and masks/ labelled with the run's class ids, to evaluate on."""
    return read_folder(Path(path), spec["image_size"], spec["classes"])[0]


# ---- predictions, shown ---------------------------------------------------------------------

def predict(objective, spec: dict, path: str, out: Path | None = None) -> list[dict]:
    """The label map of each image in `path`: {"input", "predicted" (each class's share of the pixels),
    "shares"}; with `out`, an overlay PNG per image and its label map (`<out>-mask.png`, one byte per pixel:
    the class id) are saved (numbered when there are several)."""
    from deepatlas.data import draw
    x, names = read_inputs(spec, path)
    device = next(objective.parameters()).device
    labels = objective.predict(x.to(device)).cpu()                               # (N, H, W)
    counts = torch.nn.functional.one_hot(labels.flatten(1), len(spec["classes"])).sum(1).float()  # (N, K)
    shares = counts / counts.sum(-1, keepdim=True)
    rows = []
    for i, name in enumerate(names):
        found = {c: round(float(s), 4) for c, s in zip(spec["classes"], shares[i]) if s > 0}
        text = ", ".join(f"{c} {s:.0%}" for c, s in sorted(found.items(), key=lambda kv: -kv[1]))
        row = {"input": name, "predicted": text, "shares": found}
        if out is not None:
            target = draw.numbered(Path(out), i, len(names))
            row["mask"] = str(draw.save_segmentation(target, x[i], labels[i], spec["classes"]))
        rows.append(row)
    return rows


def plot_predictions(objective, spec: dict, dataset, path: Path) -> None:
    """predictions.png for the run directory: 8 validation images, predicted label maps next to the truth."""
    from deepatlas.data import draw
    images, truth = (torch.stack(t) for t in zip(*[dataset[i] for i in range(min(len(dataset), 8))]))
    device = next(objective.parameters()).device
    labels = objective.predict(images.to(device)).cpu()
    draw.prediction_grid(path, images, list(labels), spec["classes"], list(truth), "segmentation")
