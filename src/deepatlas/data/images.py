"""Image classification data: embedded digits, rotated digits, image folders and MNIST IDX files.

Images are float tensors (N, C, H, W), scaled to [0, 1] and then standardized per channel with
the training split's mean and std. Embedded sets use the same fixed stratified 60/20/20 split
as every dataset (seed 0). Augmentation is a batch transform of tensor ops (random shifts, flips,
rotations), applied by the training loop on the batch's own device.
"""
from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
ROTATION_SEED = 1


# ---- tensor ops ---------------------------------------------------------------------------

def resize(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size) by bilinear interpolation (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < images.shape[-1])


def rotate(images: Tensor, angles: Tensor, mode: str = "bilinear") -> Tensor:
    """Rotate each image (N, C, H, W) about its centre by its own angle (N,) in radians; zeros outside."""
    cos, sin = angles.cos(), angles.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def shift(images: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Translate each image by whole pixels (dx, dy each (N,)), filling with zeros: a padded random crop."""
    n, _, h, w = images.shape
    zero, one = torch.zeros_like(dx, dtype=images.dtype), torch.ones_like(dx, dtype=images.dtype)
    theta = torch.stack([torch.stack([one, zero, -2 * dx.to(images.dtype) / w], -1),
                         torch.stack([zero, one, -2 * dy.to(images.dtype) / h], -1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


@dataclass
class Augment:
    """A batch transform: random crop with zero padding, horizontal flip, small rotation."""
    crop_pad: int = 0
    flip: bool = False
    rotate: float = 0.0  # degrees

    def __call__(self, batch):
        x, y = batch
        n, device = x.shape[0], x.device
        if self.crop_pad:
            dx, dy = torch.randint(-self.crop_pad, self.crop_pad + 1, (2, n), device=device)
            x = shift(x, dx, dy)
        if self.flip:
            x = torch.where(torch.rand(n, 1, 1, 1, device=device) < 0.5, x.flip(-1), x)
        if self.rotate:
            x = rotate(x, (torch.rand(n, device=device) * 2 - 1) * math.radians(self.rotate))
        return x, y

    @property
    def active(self) -> bool:
        return bool(self.crop_pad or self.flip or self.rotate)


# ---- the dataset --------------------------------------------------------------------------

class ImageData(Splits):
    @property
    def dims(self) -> dict[str, int]:
        return {"in_channels": self.spec["channels"], "image_size": self.spec["image_size"],
                "n_classes": len(self.spec["classes"])}


def _digits() -> tuple[Tensor, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.from_numpy(d.images).float()[:, None] / 16.0, d.target, [str(c) for c in range(10)]


def _rotated_digits(size: int) -> tuple[Tensor, np.ndarray, list[str]]:
    """Every digit turned by its own random angle in [0, 360°) (seeded): rotated MNIST in miniature."""
    x, y, classes = _digits()
    x = resize(F.pad(x, (2, 2, 2, 2)), max(size, 12))  # a margin, so no stroke leaves the frame when turned
    angles = torch.from_numpy(np.random.default_rng(ROTATION_SEED).uniform(0, 2 * math.pi, len(x))).float()
    return rotate(x, angles), y, classes


EMBEDDED = {"digits", "rotated-digits"}


def _standardize(images: Tensor, mean: list[float], std: list[float]) -> Tensor:
    m = torch.tensor(mean, dtype=images.dtype)[None, :, None, None]
    s = torch.tensor(std, dtype=images.dtype)[None, :, None, None]
    return (images - m) / s


def _from_arrays(x: Tensor, y: np.ndarray, classes: list[str], source: str, size: int,
                 splits=None) -> tuple[TensorDataset, TensorDataset, TensorDataset, dict]:
    """Resize, split (unless given), fit the per-channel standardization on train, package."""
    x = resize(x, size)
    train, val, test = splits if splits is not None else split_indices(y)
    mean = x[train].mean(dim=(0, 2, 3)).tolist()
    std = [max(s, 1e-6) for s in x[train].std(dim=(0, 2, 3)).tolist()]
    spec = {"source": source, "classes": classes, "channels": x.shape[1], "image_size": size,
            "mean": mean, "std": std}
    x, yt = _standardize(x, mean, std), torch.as_tensor(y, dtype=torch.long)
    return (*(TensorDataset(x[i], yt[i]) for i in (train, val, test)), spec)


def load(source: str, image_size: int = 0, augment: Augment | None = None) -> ImageData:
    """An embedded set by name, an image folder (one sub-folder per class) or a folder of MNIST IDX files."""
    splits = None
    if source == "digits":
        x, y, classes = _digits()
    elif source == "rotated-digits":
        x, y, classes = _rotated_digits(image_size or 8)
    elif Path(source).is_dir():
        path = Path(source)
        if _idx_files(path):
            x, y, classes, splits = _read_idx_folder(path)
        else:
            x, y, classes = _read_image_folder(path, image_size)
    elif Path(source).exists():
        raise DeepAtlasError(f"{source}: expected a folder (one sub-folder of images per class, or MNIST IDX files)")
    else:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a folder, nor one of {', '.join(sorted(EMBEDDED))}")
    train, val, test, spec = _from_arrays(x, y, classes, source, image_size or x.shape[-1], splits)
    return ImageData(train, val, test, spec, augment if augment is not None and augment.active else None)


def load_for(options, target: str | None = None) -> ImageData:
    return load(options.data, options.image_size, Augment(options.crop_pad, options.flip, options.rotate))


# ---- users' files -------------------------------------------------------------------------

def _open_image(path: Path, mode: str | None = None):
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img.load()
            if mode is None:
                mode = "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DeepAtlasError(f"{path}: not a readable image ({err.__class__.__name__})") from None


def _to_tensor(img) -> Tensor:
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())  # (C, H, W)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image_folder(root: Path, image_size: int) -> tuple[Tensor, np.ndarray, list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DeepAtlasError(f"{root}: needs one sub-folder of images per class, at least two classes")
    files, labels = [], []
    for i, name in enumerate(classes):
        found = _image_files(root / name)
        if not found:
            raise DeepAtlasError(f"{root / name}: class folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += found
        labels += [i] * len(found)
    images = [_open_image(f) for f in files]
    mode = "RGB" if any(img.mode == "RGB" for img in images) else "L"  # grey and colour mixed: all colour
    tensors = []
    for f, img in zip(files, images):
        t = _to_tensor(img.convert(mode))
        if image_size:
            t = resize(t[None], image_size)[0]
        elif tensors and t.shape != tensors[0].shape:
            raise DeepAtlasError(f"{f}: size {t.shape[2]}x{t.shape[1]} differs from {files[0].name}'s "
                                 f"{tensors[0].shape[2]}x{tensors[0].shape[1]}; set --set image_size=N to resize all")
        tensors.append(t)
    return torch.stack(tensors), np.array(labels), classes


def read_inputs(spec: dict, path: str) -> tuple[Tensor, list[str]]:
    """An image file, or a folder of images, encoded for the model: (x, a name per image)."""
    p = Path(path)
    if not p.exists():
        raise DeepAtlasError(f"{path}: no such file or folder")
    files = _image_files(p) if p.is_dir() else [p]
    if not files:
        raise DeepAtlasError(f"{path}: no images in this folder")
    mode = "L" if spec["channels"] == 1 else "RGB"
    x = torch.stack([resize(_to_tensor(_open_image(f, mode))[None], spec["image_size"])[0] for f in files])
    return _standardize(x, spec["mean"], spec["std"]), [str(f) for f in files]


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """An image folder with one sub-folder per class (the run's class names), to evaluate on."""
    root = Path(path)
    if not root.is_dir():
        raise DeepAtlasError(f"{path}: expected a folder with one sub-folder of images per class")
    xs, ys = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name not in spec["classes"]:
            raise DeepAtlasError(f"{sub}: class {sub.name!r} was not in training ({', '.join(spec['classes'])})")
        x, _ = read_inputs(spec, str(sub))
        xs.append(x)
        ys.append(torch.full((len(x),), spec["classes"].index(sub.name), dtype=torch.long))
    if not xs:
        raise DeepAtlasError(f"{path}: no class sub-folders")
    return TensorDataset(torch.cat(xs), torch.cat(ys))


# ---- MNIST IDX files ----------------------------------------------------------------------

IDX_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def _idx_files(folder: Path) -> dict[str, Path]:
    found = {}
    for key, name in IDX_NAMES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
    return found


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not): magic 0x0000_08_nd (unsigned bytes), nd big-endian sizes, data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DeepAtlasError(f"{path}: cannot read ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DeepAtlasError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(raw) != expected:
        raise DeepAtlasError(f"{path}: {len(raw)} bytes, but its header announces {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_idx_folder(folder: Path):
    """MNIST layout: train files give train and val (the last sixth), t10k files give test."""
    files = _idx_files(folder)
    missing = [IDX_NAMES[k] for k in IDX_NAMES if k not in files]
    if missing:
        raise DeepAtlasError(f"{folder}: missing IDX file(s) {', '.join(missing)} (gzipped or not)")
    arrays = {k: read_idx(p) for k, p in files.items()}
    for part in ("train", "test"):
        if arrays[f"{part}_images"].ndim != 3 or len(arrays[f"{part}_images"]) != len(arrays[f"{part}_labels"]):
            raise DeepAtlasError(f"{files[part + '_images']}: expected (N, H, W) images, one per label")
    x = torch.from_numpy(np.concatenate([arrays["train_images"], arrays["test_images"]])).float()[:, None] / 255.0
    y = np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64)
    n_train, n = len(arrays["train_labels"]), len(y)
    n_val = n_train // 6
    splits = (np.arange(n_train - n_val), np.arange(n_train - n_val, n_train), np.arange(n_train, n))
    classes = [str(c) for c in range(int(y.max()) + 1)]
    return x, y, classes, splits
