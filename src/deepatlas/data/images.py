"""Image classification data: embedded digits, rotated digits, image folders and MNIST IDX files.

Images are float tensors (N, C, H, W), scaled to [0, 1] and then standardized per channel with
the training split's mean and std. Embedded sets use the same fixed stratified 60/20/20 split
as every dataset (seed 0). Augmentation is a batch transform of tensor ops (random shifts, flips,
rotations), applied by the training loop on the batch's own device.
"""
from __future__ import annotations

import gzip
import math
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas import memory
from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
ROTATION_SEED = 1
MAX_PIXELS = 2**26
"""the most pixels an image file may declare (64 megapixels); its header is checked before anything is decoded"""
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
DATA_COPIES = 3
"""a dataset's images are held about three times while it is prepared: resized, standardized, split"""


# ---- tensor ops ---------------------------------------------------------------------------

def resize(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) -> (N, C, size, size) by bilinear interpolation (antialiased when shrinking); a result larger
    than the memory available is refused before it is allocated."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    n, channels = images.shape[0], images.shape[1]
    copies = 1 if n == 1 else DATA_COPIES
    memory.require(copies * n * channels * size * size * images.element_size(), f"{n:,} images at image_size={size}")
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
    train, val, test = splits if splits is not None else split_indices(y, source, "images")
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

def open_image(path: Path):
    """The PIL image of `path` with only its header read (Image.open is lazy): refused, naming the file, when it
    is no image or its header declares more than MAX_PIXELS pixels, before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError
    too_large = f"images may have at most {MAX_PIXELS:,} pixels (64 megapixels): shrink it first"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the bound below says it, naming the file
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise DeepAtlasError(f"{path}: its header declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; "
                             f"{too_large}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DeepAtlasError(f"{path}: not a readable image ({err.__class__.__name__})") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise DeepAtlasError(f"{path}: its header declares {width}x{height} = {width * height:,} pixels; {too_large}")
    return img


def _open_image(path: Path, mode: str | None = None):
    """An image file decoded and converted to `mode` (None: L for grey images, RGB for the others)."""
    with open_image(path) as img:
        try:
            img.load()
            return img.convert(mode or ("L" if img.mode in GREY_MODES else "RGB"))
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise DeepAtlasError(f"{path}: not a readable image ({err.__class__.__name__})") from None


def _to_tensor(img) -> Tensor:
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())  # (C, H, W)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_files(files: list[Path], image_size: int = 0) -> Tensor:
    """Image files -> (N, C, H, W) in [0, 1], grey (C = 1) unless one is in colour (then all are RGB), resized to
    `image_size` (0: all must have one size). Every header is read and checked before any image is decoded."""
    headers = []
    for f in files:
        with open_image(f) as img:
            headers.append((img.size, img.mode in GREY_MODES))
    mode = "L" if all(grey for _, grey in headers) else "RGB"  # grey and colour mixed: all colour
    if not image_size:
        (w0, h0), _ = headers[0]
        for f, ((w, h), _) in zip(files, headers):
            if (w, h) != (w0, h0):
                raise DeepAtlasError(f"{f}: size {w}x{h} differs from {files[0].name}'s {w0}x{h0}; "
                                     "set --set image_size=N to resize all")
    channels = 1 if mode == "L" else 3
    pixels = len(files) * image_size ** 2 if image_size else sum(w * h for (w, h), _ in headers)
    memory.require(pixels * channels * 4, f"{len(files):,} images" + (f" at image_size={image_size}" if image_size
                                                                      else f" of {files[0].parent}"))
    tensors = []
    for f in files:  # decoded one at a time, each resized before the next
        t = _to_tensor(_open_image(f, mode))
        tensors.append(resize(t[None], image_size)[0] if image_size else t)
    return torch.stack(tensors)


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
    return read_image_files(files, image_size), np.array(labels), classes


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


GZIP_MAX_RATIO = 1100
"""deflate expands at most ~1032-fold, so a gzip file of n bytes holds fewer than 1100·n"""


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """One IDX file (gzipped or not): magic 0x0000_08_nd (unsigned bytes), nd big-endian sizes, data. The header
    must give nd sizes (`ndim`, when given) whose product the file can hold: checked before the data is read."""
    gzipped = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if gzipped else path.open("rb")) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:3] != b"\0\0\x08":
                raise DeepAtlasError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
            if ndim is not None and magic[3] != ndim:
                raise DeepAtlasError(f"{path}: its header gives {magic[3]} dimensions; expected {ndim} "
                                     f"({'(N, H, W) images' if ndim == 3 else '(N,) labels'})")
            ndim = magic[3]
            head = f.read(4 * ndim)
            if len(head) < 4 * ndim:
                raise DeepAtlasError(f"{path}: the header ends early ({4 + len(head)} of {4 + 4 * ndim} bytes)")
            shape = struct.unpack(f">{ndim}I", head)
            expected = math.prod(shape)
            size = path.stat().st_size
            room = GZIP_MAX_RATIO * size if gzipped else size - 4 - 4 * ndim
            if expected > room:
                raise DeepAtlasError(f"{path}: its header announces {' x '.join(map(str, shape))} = {expected:,} "
                                     f"bytes of data, more than {'a' if gzipped else 'the'} {size:,}-byte "
                                     f"{'gzip file can hold' if gzipped else 'file holds'}")
            data = f.read(expected + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise DeepAtlasError(f"{path}: cannot read ({err})") from None
    if len(data) != expected:
        raise DeepAtlasError(f"{path}: {len(data):,} bytes of data, but its header announces {expected:,}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _read_idx_folder(folder: Path):
    """MNIST layout: train files give train and val (the last sixth), t10k files give test."""
    files = _idx_files(folder)
    missing = [IDX_NAMES[k] for k in IDX_NAMES if k not in files]
    if missing:
        raise DeepAtlasError(f"{folder}: missing IDX file(s) {', '.join(missing)} (gzipped or not)")
    arrays = {k: read_idx(p, 3 if k.endswith("images") else 1) for k, p in files.items()}
    for part in ("train", "test"):
        n, h, w = arrays[f"{part}_images"].shape
        if n != len(arrays[f"{part}_labels"]) or not (h and w):
            raise DeepAtlasError(f"{files[part + '_images']}: expected (N, H, W) images, one per label")
    n_train, n_test = len(arrays["train_labels"]), len(arrays["test_labels"])
    if n_train < 6:
        raise DeepAtlasError(f"{files['train_images']}: {n_train} image(s); its last sixth is the validation split, "
                             "so it needs at least 6")
    if n_test < 1:
        raise DeepAtlasError(f"{files['test_images']}: no images; the test split needs at least one")
    x = torch.from_numpy(np.concatenate([arrays["train_images"], arrays["test_images"]])).float()[:, None] / 255.0
    y = np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64)
    n = len(y)
    n_val = n_train // 6
    splits = (np.arange(n_train - n_val), np.arange(n_train - n_val, n_train), np.arange(n_train, n))
    classes = [str(c) for c in range(int(y.max()) + 1)]
    return x, y, classes, splits
