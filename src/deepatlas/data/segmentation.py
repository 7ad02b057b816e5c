"""Semantic segmentation data: embedded `shapes` scenes and users' folders of images with PNG label masks.

An item is (image float (3, S, S) in [0, 1], mask long (S, S)): 0 is background, 1..K the classes; the
spec's `classes` lists all K + 1 names, background first, so a label value indexes it directly.

    shapes   the detection scenes (data/shapes.py): each pixel gets the class + 1 of the object visible there.
    folder   `images/` and `masks/`, a PNG label image per image with the same file stem, whose pixel values
             are class ids (0 background); optional `classes.txt` naming the classes 1..K, one a line (or
             0..K when its first line is `background`). Without it, K is the largest value in the masks.
             Images and masks are letterboxed to S×S as detection's are (aspect kept, padded right and
             below; masks by nearest neighbour, their padding IGNORE so it counts in neither loss nor
             metrics); S = `image_size`, or 0: from the data, as detection's `geometry` says. A fixed 60/20/20
             split by image (seed 0).

`predict` takes paths, PIL images or arrays at any size, seen as detection's `Windows` at the training scale
(overlapping windows averaged), with a `threshold` on the object probability; its label maps come back at the
input's own resolution, as a PNG and as COCO RLE per class. `baseline` labels every pixel with the training
split's most frequent class.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas.data import SPLIT_SEED, Splits, images, read_lines, shapes
from deepatlas.data import detection
from deepatlas.data.detection import PREDICT_BATCH, Windows, _load_image, _reserve, check_threshold, \
    geometry, letterbox_labels, raw_inputs, rle_encode_all
from deepatlas.errors import DeepAtlasError, notice

EMBEDDED = {"shapes"}
DEFAULT_SIZE = shapes.DEFAULT_SIZE
BACKGROUND = "background"
IGNORE = 255
"""the label of padding pixels: the objective's ignore_index (and outside [0, K) for the confusion matrix)"""


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


def _folder_images(root: Path) -> list[Path]:
    image_dir, mask_dir = root / "images", root / "masks"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise DeepAtlasError(f"{root}: expected images/ and masks/ (PNG label images with the same file names)")
    files = images._image_files(image_dir)
    if not files:
        raise DeepAtlasError(f"{image_dir}: no images ({', '.join(sorted(images.IMAGE_SUFFIXES))})")
    return files


def read_folder(root: Path, size: int, classes: list[str] | None = None) -> tuple[TensorDataset, list[str]]:
    """`images/` + `masks/` -> (dataset of (N, 3, S, S) images and (N, S, S) masks, letterboxed to side `size`;
    classes with background). `classes` (a run's) fixes the class names; otherwise classes.txt or the largest
    mask value does."""
    files = _folder_images(root)
    mask_dir = root / "masks"
    _reserve(len(files), size, str(root))
    named = classes or _classes_file(root)
    pictures, masks, tops = [], [], []
    for file in files:
        mask_file = mask_dir / f"{file.stem}.png"
        if not mask_file.is_file():
            raise DeepAtlasError(f"{file}: no mask {mask_file.name} in {mask_dir}")
        picture, original, content = _load_image(file, size)
        mask = _read_mask(mask_file, original)
        tops.append(int(mask.max()))
        if named is not None and tops[-1] >= len(named):
            raise DeepAtlasError(f"{mask_file}: label {tops[-1]}, but there are only classes "
                                 f"0..{len(named) - 1} ({', '.join(named)})")
        pictures.append(picture)
        masks.append(letterbox_labels(mask, size, content, IGNORE))
    if named is None:
        if max(tops) == 0:
            raise DeepAtlasError(f"{mask_dir}: every mask is background (0); labels are class ids 1..K")
        named = [BACKGROUND, *(str(k) for k in range(1, max(tops) + 1))]
    return TensorDataset(torch.stack(pictures), torch.stack(masks)), named


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
    """`shapes`, `shapes-N` (S×S scenes, S = `image_size` or 64) or a folder of images/ and masks/ (letterboxed to
    S = `image_size`, or 0: from the data, as detection's `geometry` says, with the "scale" `predict` uses)."""
    note, extra = None, {}
    if shapes.train_count(source) is not None:
        size = image_size or DEFAULT_SIZE
        scenes = shapes.splits(source, size)
        parts = [TensorDataset(scenes[p].images, scenes[p].semantic()) for p in ("train", "val", "test")]
        classes = [BACKGROUND, *shapes.CLASSES]
    elif Path(source).is_dir():
        size, scale, note = geometry(_folder_images(Path(source)), image_size, source)
        extra = {"scale": scale}
        dataset, classes = read_folder(Path(source), size)
        parts = _split(dataset, source)
    elif Path(source).exists():
        raise DeepAtlasError(f"{source}: expected a folder with images/ and masks/")
    else:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a folder, nor shapes or shapes-N")
    if note:  # once the data is read: a refused file would make it a second line
        notice(note)
    spec = {"kind": "segmentation", "source": source, "classes": classes, "image_size": size, **extra}
    return SegmentationData(*parts, spec, Flip() if flip else None)


def load_for(options, target: str | None = None) -> SegmentationData:
    return load(options.data, options.image_size, options.flip)


def read_inputs(spec: dict, path: str) -> tuple[Tensor, list[str]]:
    """An image file or a folder of images -> (their detection `Windows` (L, 3, S, S) in [0, 1], a name each)."""
    return detection.read_inputs(spec, path)


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """A folder of images/ and masks/ labelled with the run's class ids, to evaluate on."""
    return read_folder(Path(path), spec["image_size"], spec["classes"])[0]


# ---- predictions, shown ---------------------------------------------------------------------

def label_map(probabilities: Tensor, threshold: float) -> Tensor:
    """(N, K, H, W) class probabilities, background first -> (N, H, W) labels: a pixel's most probable object
    class where the probability that it is any object, 1 - p(background), is at least `threshold`; else
    background (0). At 0.5 with one object class this is the argmax."""
    objects = probabilities[:, 1:]                                                   # (N, K - 1, H, W)
    label = objects.argmax(1) + 1                                                    # (N, H, W)
    return torch.where(1 - probabilities[:, 0] >= threshold, label, torch.zeros_like(label))


def predict(objective, spec: dict, inputs, out: Path | None = None, threshold: float = 0.5) -> list[dict]:
    """The label map of each input (a path to an image or a folder, a PIL image, an array, or a list of these),
    seen in detection's `Windows` at the training scale (overlaps averaged) and mapped back to the input's own
    resolution (`label_map`'s `threshold` on the object probability): {"input", "predicted" (each class's share
    of the pixels), "shares", "masks": {class: COCO RLE over the input (uncompressed)} for each object class
    present}. With `out`, an overlay PNG per input
    at its own size and aspect, and its label map (`<out>-mask.png`, one byte per pixel: the class id) are
    saved (numbered when there are several)."""
    from deepatlas.data import draw
    threshold = check_threshold(threshold)
    device, K = next(objective.parameters()).device, len(spec["classes"])
    found, rows = raw_inputs(inputs), []
    for i, (name, load) in enumerate(found):  # a row per input, its windows a batch
        picture = load()
        windows = Windows(picture, spec)
        probabilities = torch.cat([objective.probabilities(batch.to(device)).cpu()
                                   for batch in windows.x.split(PREDICT_BATCH)])        # (L, K, S, S)
        labels = windows.labels_back(label_map(windows.average(probabilities)[None], threshold)[0])  # (h, w)
        shares = torch.bincount(labels.flatten(), minlength=K).double() / labels.numel()  # (K,)
        present = shares.nonzero().squeeze(1)
        found_shares = {spec["classes"][k]: round(float(shares[k]), 4) for k in present.tolist()}
        text = ", ".join(f"{c} {v:.0%}" for c, v in sorted(found_shares.items(), key=lambda kv: -kv[1]))
        objects = present[present > 0]
        masks = labels[None] == objects[:, None, None]                                  # (n, h, w) one per class
        row = {"input": name, "predicted": text, "shares": found_shares,
               "masks": dict(zip((spec["classes"][k] for k in objects.tolist()), rle_encode_all(masks)))}
        if out is not None:
            target = draw.numbered(Path(out), i, len(found))
            row["mask"] = str(draw.save_segmentation(target, picture, labels, spec["classes"]))
        rows.append(row)
    return rows


def plot_predictions(objective, spec: dict, dataset, path: Path) -> None:
    """predictions.png for the run directory: 8 validation images, predicted label maps next to the truth."""
    from deepatlas.data import draw
    images, truth = (torch.stack(t) for t in zip(*[dataset[i] for i in range(min(len(dataset), 8))]))
    device = next(objective.parameters()).device
    labels = objective.predict(images.to(device)).cpu()
    draw.prediction_grid(path, images, list(labels), spec["classes"], list(truth), "segmentation")
