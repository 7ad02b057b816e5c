"""Image classification data: embedded digits, rotated digits, image folders and MNIST IDX files.

Images are float tensors (N, C, H, W), scaled to [0, 1] and then standardized per channel with
the training split's mean and std. Embedded sets use the same fixed stratified 60/20/20 split
as every dataset (seed 0). Augmentation is a batch transform of tensor ops (random shifts, flips,
rotations), applied by the training loop on the batch's own device.

Size: `image_size` N resizes every image to N×N; 0 takes the size from the data: the images' own
size when they all share one square size (28×28 digits stay 28), else the median of their longer
sides, every image resized to that square (a one-line notice says so).

Raw inputs (`encode`, what `deepatlas.load(run).predict(raw)` calls): a path to an image or a
folder of images, a PIL image, a numpy array H×W or H×W×C (uint8 0..255, or float in [0, 1]),
or a list of these, encoded exactly as the training images were. `letterbox` and `raw_images` are
shared with detection and segmentation, which keep each image's aspect instead of squashing it.
"""
from __future__ import annotations

import gzip
import math
import os
import statistics
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas import memory
from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError, notice

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


def letterbox(image: Tensor, side: int) -> tuple[Tensor, tuple[int, int]]:
    """(C, h, w) -> ((C, side, side), (nh, nw)): scaled by side / max(h, w), so the aspect is kept, into the
    top-left corner; zeros right and below. The content spans rows [0, nh) and columns [0, nw), so a point (x, y)
    of the image lands at (x · nw / w, y · nh / h). A square image is just resized (the same tensor as `resize`)."""
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                              antialias=scale < 1)[0]
    return F.pad(image, (0, side - nw, 0, side - nh)), (nh, nw)


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


def rotated_digits(size: int) -> tuple[Tensor, np.ndarray, list[str]]:
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
        x, y, classes = rotated_digits(image_size or 8)
    elif Path(source).is_dir():
        path = Path(source)
        if _idx_files(path):
            x, y, classes, splits = _read_idx_folder(path)
        else:
            x, y, classes = _read_image_folder(path, image_size, median=True)
    elif Path(source).exists():
        raise DeepAtlasError(f"{source}: expected a folder (one sub-folder of images per class, or MNIST IDX files)")
    else:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a folder, nor one of {', '.join(sorted(EMBEDDED))}")
    train, val, test, spec = _from_arrays(x, y, classes, source, image_size or max(x.shape[-2:]), splits)
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


def image_sizes(files: list[Path]) -> list[tuple[int, int]]:
    """The (width, height) of each image file, from its header alone (checked, nothing decoded)."""
    sizes = []
    for f in files:
        with open_image(f) as img:
            sizes.append(img.size)
    return sizes


def median_side(sizes: list[tuple[int, int]]) -> int:
    """The side images of several sizes are resized to when image_size is 0: the median of their longer sides
    (the lower median, so a side some image has)."""
    return statistics.median_low(max(s) for s in sizes)


def read_image_files(files: list[Path], image_size: int = 0, median: bool = False) -> Tensor:
    """Image files -> (N, C, H, W) in [0, 1], grey (C = 1) unless one is in colour (then all are RGB), resized to
    `image_size`; 0: their own size when they share one, else (`median`) `median_side`'s square, or refused.
    Every header is read and checked before any image is decoded."""
    headers = []
    for f in files:
        with open_image(f) as img:
            headers.append((img.size, img.mode in GREY_MODES))
    mode = "L" if all(grey for _, grey in headers) else "RGB"  # grey and colour mixed: all colour
    sizes = [size for size, _ in headers]
    chosen = not image_size and len(set(sizes)) > 1
    if chosen and not median:
        (w0, h0), odd = sizes[0], next(i for i, size in enumerate(sizes) if size != sizes[0])
        raise DeepAtlasError(f"{files[odd]}: size {sizes[odd][0]}x{sizes[odd][1]} differs from {files[0].name}'s "
                             f"{w0}x{h0}; set --set image_size=N to resize all")
    if chosen:
        image_size = median_side(sizes)
    channels = 1 if mode == "L" else 3
    pixels = len(files) * image_size ** 2 if image_size else sum(w * h for (w, h), _ in headers)
    memory.require(pixels * channels * 4, f"{len(files):,} images" + (f" at image_size={image_size}" if image_size
                                                                      else f" of {files[0].parent}"))
    tensors = []
    for f in files:  # decoded one at a time, each resized before the next
        t = _to_tensor(_open_image(f, mode))
        tensors.append(resize(t[None], image_size)[0] if image_size else t)
    if chosen:  # said once every image has been read: a file refused later would make it a second line
        (w0, h0), (w1, h1) = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
        notice(f"{os.path.commonpath(files)}: {len(files):,} images of {len(set(sizes))} sizes ({w0}x{h0} to "
               f"{w1}x{h1}), each resized to {image_size}x{image_size}, the median of their longer sides "
               "(--set image_size=N to choose)")
    return torch.stack(tensors)


def _read_image_folder(root: Path, image_size: int, median: bool = False) -> tuple[Tensor, np.ndarray, list[str]]:
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
    return read_image_files(files, image_size, median), np.array(labels), classes


def input_files(path: str | Path, sub: str | None = None) -> list[Path]:
    """An image file, or the images of a folder (or, when it has none, of its `sub` folder)."""
    p = Path(path)
    if not p.exists():
        raise DeepAtlasError(f"{path}: no such file or folder")
    if not p.is_dir():
        return [p]
    files = _image_files(p) or (_image_files(p / sub) if sub and (p / sub).is_dir() else [])
    if not files:
        raise DeepAtlasError(f"{path}: no images in this folder")
    return files


def _array_image(array: np.ndarray, mode: str, name: str) -> Tensor:
    """A numpy image H×W or H×W×C (C = 1, 3 or 4; alpha dropped) -> (C', H, W) float in [0, 1] of `mode`. uint8
    goes through PIL, as a file's pixels do (so a decoded PNG encodes exactly like the file); floats must be in
    [0, 1] and are made grey with PIL's weights (ITU-R 601-2) or colour by repeating the grey channel."""
    from PIL import Image
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or 0 in array.shape:
        raise DeepAtlasError(f"{name}: an array of shape {array.shape}; expected an image HxW or HxWxC (C = 1, 3, 4)")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise DeepAtlasError(f"{name}: {array.shape[1]}x{array.shape[0]} pixels; images may have at most "
                             f"{MAX_PIXELS:,} pixels (64 megapixels): shrink it first")
    if array.dtype == np.uint8:
        return _to_tensor(Image.fromarray(array).convert(mode))
    if array.dtype.kind not in "fiu":
        raise DeepAtlasError(f"{name}: an array of {array.dtype}; expected uint8 (0..255) or floats in [0, 1]")
    x = torch.from_numpy(np.asarray(array, dtype=np.float32))
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DeepAtlasError(f"{name}: values from {x.min().item():g} to {x.max().item():g}; a float image must be "
                             "in [0, 1] (pass uint8 for 0..255)")
    x = x[None] if x.ndim == 2 else x[:, :, :3].permute(2, 0, 1)  # (C, H, W), alpha dropped
    if mode == "L" and len(x) == 3:
        return (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
    return x.expand(3, -1, -1).contiguous() if mode == "RGB" and len(x) == 1 else x


def _pil_image(img, mode: str, name: str) -> Tensor:
    if img.width * img.height > MAX_PIXELS:
        raise DeepAtlasError(f"{name}: {img.width}x{img.height} pixels; images may have at most {MAX_PIXELS:,} "
                             "pixels (64 megapixels): shrink it first")
    return _to_tensor(img.convert(mode))


def raw_images(raw, mode: str, sub: str | None = None) -> list[tuple[str, Callable[[], Tensor]]]:
    """Raw inputs -> (name, load) per image, `load()` giving it as (C, H, W) in [0, 1] of `mode` at its own size,
    decoded only then (a folder of large photos is never held at once). `raw`: a path to an image or a folder (see
    `input_files`), a PIL image, a numpy array, or a list of these; an image given in memory is named "image i"
    (its place in the list)."""
    from PIL import Image
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not items:
        raise DeepAtlasError("no inputs to predict for")
    found = []
    for i, item in enumerate(items):
        name = f"image {i}"
        if isinstance(item, (str, Path)):
            found += [(str(f), partial(lambda f: _to_tensor(_open_image(f, mode)), f)) for f in input_files(item, sub)]
        elif isinstance(item, Image.Image):
            found.append((name, partial(_pil_image, item, mode, name)))
        elif isinstance(item, np.ndarray):
            found.append((name, partial(_array_image, item, mode, name)))
        else:
            raise DeepAtlasError(f"{name}: a {type(item).__name__}; expected a path, a PIL image or a numpy array")
    return found


def encode(spec: dict, raw) -> tuple[Tensor, list[str]]:
    """Raw inputs (see `raw_images`) encoded for the classifier exactly as its training images were: converted to
    its channels, resized to its image_size, standardized with its training mean and std -> (x (N, C, S, S),
    a name per image)."""
    found = raw_images(raw, "L" if spec["channels"] == 1 else "RGB")
    x = torch.stack([resize(load()[None], spec["image_size"])[0] for _, load in found])  # each resized as read
    return _standardize(x, spec["mean"], spec["std"]), [name for name, _ in found]


def read_inputs(spec: dict, path: str) -> tuple[Tensor, list[str]]:
    """An image file, or a folder of images, encoded for the model: (x, a name per image)."""
    return encode(spec, Path(path))


def baseline(spec: dict, train, examples) -> tuple[str, dict[str, float]]:
    """The trivial classifier: every image gets the training split's most frequent class (the examples' own when
    `train` is None); its accuracy on `examples`."""
    y = examples.tensors[1]
    counted = train.tensors[1] if train is not None else y
    majority = int(torch.bincount(counted, minlength=len(spec["classes"])).argmax())
    where = "the training split's" if train is not None else "these examples'"
    return (f"always {spec['classes'][majority]!r}, {where} most frequent class",
            {"accuracy": (y == majority).double().mean().item()})


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
