"""Detection data: embedded `shapes` scenes, COCO-format folders and YOLO txt folders.

An item is (image, target): image float (3, S, S) in [0, 1]; target {"boxes": float (n, 4) as
(x1, y1, x2, y2) in pixels of the S×S image, "labels": long (n,) in [0, K), "masks": uint8 (n, S, S)}.
A batch is (images (B, 3, S, S), a list of B targets): the Dataset's `collate`, which the loop uses.

Users' data: every image is letterboxed to S×S (scaled by S / its longer side, so its aspect is kept, into the
top-left corner, zeros right and below), its boxes and masks with it. S = `image_size`; 0 takes it from the data:
the largest side of the folder's images rounded up to a multiple of 32 (the backbones' coarsest stride), at most
512 (memory and time on a CPU), said in a notice (`geometry`). The embedded scenes are S×S already (64 by default).
    COCO   a folder with the images (beside the JSON or in `images/`) and one annotations JSON (`images`,
           `annotations` with `bbox` [x, y, w, h], `category_id` and `segmentation` as polygons or RLE, plain
           or compressed, and `categories`), at the top or in `annotations/`. JSON files whose names hold
           `train`, `val` (and `test`) give the split; otherwise a fixed 60/20/20 split by image (seed 0).
           Crowd annotations (`iscrowd` 1) are left out, as COCO's evaluation ignores them; an annotation
           without a segmentation gets its filled box as mask.
    YOLO   `images/` and `labels/` (one `class cx cy w h` line per object, normalized to [0, 1], a missing
           label file meaning no object), optional `classes.txt`; `images/train`, `images/val`... give the
           split. YOLO has no masks: each mask is the filled box.
`write_coco` writes a dataset back as a COCO-format folder (PNG images, polygons or RLE).

`predict` takes paths, PIL images or arrays at any size: each is brought to the scale the training images were
seen at and cut into overlapping S×S windows (`Windows`; one window, a letterbox, when it fits), and its boxes
(and masks, as COCO RLE) are mapped back to the input's own pixels, kept from a score `threshold` on. `baseline`
is the trivial detector that eval prints beside the model's mAP.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from deepatlas import memory
from deepatlas.data import SPLIT_SEED, Splits, images, read_lines, shapes
from deepatlas.data.images import letterbox, shift
from deepatlas.errors import DeepAtlasError, notice, option
from deepatlas.nn.boxes import batched_nms, box_area

EMBEDDED = {"shapes"}
DEFAULT_SIZE = shapes.DEFAULT_SIZE
BOX_TOLERANCE = 1.0  # pixels a COCO box may overhang the image (rounding in annotation tools); clipped
STRIDE = 32
"""a side taken from the data is a multiple of this: the coarsest stride of the detectors' and FCN's backbones"""
MAX_SIDE = 512
"""the largest side taken from the data (a larger one is set by hand): memory and time of training on a CPU"""


# ---- the dataset --------------------------------------------------------------------------

def collate(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """[(image (3, S, S), target)] -> (images (B, 3, S, S), [target]): targets differ in size, so stay a list."""
    return torch.stack([image for image, _ in batch]), [target for _, target in batch]


class DetectionDataset(Dataset):
    """Images (N, 3, S, S) in [0, 1] and one target dict per image."""
    collate = staticmethod(collate)

    def __init__(self, images: Tensor, targets: list[dict[str, Tensor]]):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.images[i], self.targets[i]


class DetectionData(Splits):
    @property
    def dims(self) -> dict[str, int]:
        return {"in_channels": 3, "image_size": self.spec["image_size"], "n_classes": len(self.spec["classes"])}


def empty_target(size: int) -> dict[str, Tensor]:
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
            "masks": torch.zeros(0, size, size, dtype=torch.uint8)}


class Augment:
    """A batch transform: each image flipped left-right with probability 1/2 (`flip`) and/or translated by
    whole pixels in [-crop_pad, crop_pad] with zero fill (a padded random crop, `crop_pad`), its boxes and
    masks with it. A box is clipped to the image; one left with under a third of its area (mostly cropped
    away) is dropped with its mask and label."""

    def __init__(self, flip: bool = True, crop_pad: int = 0):
        self.flip, self.crop_pad = flip, crop_pad

    def __call__(self, batch):
        x, targets = batch
        n, width = len(x), x.shape[-1]
        flip = torch.rand(n, device=x.device) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool, device=x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        dx, dy = (torch.randint(-self.crop_pad, self.crop_pad + 1, (2, n), device=x.device) if self.crop_pad
                  else torch.zeros(2, n, dtype=torch.long, device=x.device))
        if self.crop_pad:
            x = shift(x, dx, dy)
        out = []
        for f, ox, oy, t in zip(flip.tolist(), dx.tolist(), dy.tolist(), targets):  # one small dict per image
            boxes, masks = t["boxes"], t["masks"]
            if f:
                boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], -1)
                masks = masks.flip(-1)
            if ox or oy:
                moved = boxes + boxes.new_tensor([ox, oy, ox, oy])
                clipped = moved.clamp(0, width)
                keep = box_area(clipped) >= box_area(moved) / 3
                kept = int(keep.sum())
                masks = masks[keep] if kept == 0 else shift(masks[keep, None].float(), dx.new_full((kept,), ox),
                                                            dy.new_full((kept,), oy))[:, 0].to(masks.dtype)
                boxes = clipped[keep]
                t = {**t, "labels": t["labels"][keep]}
            out.append({**t, "boxes": boxes, "masks": masks} if (f or ox or oy) else t)
        return x, out


# ---- masks: polygons and RLE --------------------------------------------------------------

def polygons_to_mask(polygons: list[Tensor], height: int, width: int) -> Tensor:
    """Polygons, each (V, 2) of (x, y) in pixels -> (height, width) bool: the pixels whose centre lies inside
    any of them (even-odd rule per polygon, a ray to +x from each centre; the union over polygons, as in COCO)."""
    if not polygons:
        return torch.zeros(height, width, dtype=torch.bool)
    start = torch.cat(polygons)  # (E, 2): every edge of every polygon
    end = torch.cat([p.roll(-1, 0) for p in polygons])  # (E, 2)
    owner = torch.cat([torch.full((len(p),), i) for i, p in enumerate(polygons)])  # (E,) polygon of each edge
    py = torch.arange(height, dtype=start.dtype) + 0.5  # (H,) row centres
    px = torch.arange(width, dtype=start.dtype) + 0.5  # (W,)
    y0, y1 = start[:, 1, None], end[:, 1, None]  # (E, 1)
    spans = (y0 > py) != (y1 > py)  # (E, H): the edge crosses the row's centre line (half-open: no double count)
    t = (py - y0) / torch.where(y1 == y0, torch.ones_like(y0), y1 - y0)  # (E, H)
    x_cross = start[:, 0, None] + t * (end[:, 0, None] - start[:, 0, None])  # (E, H): where it crosses
    crossings = spans[:, :, None] & (px < x_cross[:, :, None])  # (E, H, W)
    per_polygon = torch.zeros(len(polygons), height, width, dtype=torch.long).index_add_(0, owner, crossings.long())
    return (per_polygon % 2 == 1).any(0)


def mask_to_polygons(mask: Tensor) -> list[list[float]]:
    """(H, W) mask -> COCO polygons that rasterize back to it exactly: one rectangle per horizontal run of
    pixels, [x0, y, x1, y, x1, y+1, x0, y+1] on pixel edges (runs found by differencing each padded row)."""
    m = F.pad(mask.bool().to(torch.int8), (1, 1))  # (H, W + 2): a zero at both ends of every row
    change = m[:, 1:] - m[:, :-1]  # (H, W + 1): +1 where a run starts, -1 just past where it ends
    rows, x0 = (change == 1).nonzero(as_tuple=True)
    _, x1 = (change == -1).nonzero(as_tuple=True)  # same row-major order: the k-th start meets the k-th end
    y0, y1, x0, x1 = rows.float(), rows.float() + 1, x0.float(), x1.float()
    return torch.stack([x0, y0, x1, y0, x1, y1, x0, y1], 1).tolist()


def run_lengths(masks: Tensor) -> list[Tensor]:
    """(n, H, W) masks -> each one's COCO run lengths (column-major, starting with a run of zeros), all at once."""
    n, h, w = masks.shape
    flat = masks.bool().transpose(1, 2).flatten(1)  # (n, W·H) column-major, as COCO stores masks
    before = F.pad(flat, (1, 0))[:, :-1]  # (n, W·H) the previous pixel, a zero before the first
    mask, start = (flat != before).nonzero(as_tuple=True)  # a run starts here (the first may be an empty zero run)
    first, last = torch.arange(n), torch.full((n,), h * w)
    owner = torch.cat([first, mask, first])  # every mask's bounds: 0, each run start, H·W
    bound = torch.cat([torch.zeros(n, dtype=torch.long), start, last])
    order = torch.argsort(owner * (h * w + 1) + bound, stable=True)  # by mask, then position
    owner, bound = owner[order], bound[order]
    counts = bound[1:] - bound[:-1]  # (·,) gaps between consecutive bounds; those across two masks are dropped
    same = owner[1:] == owner[:-1]
    return list(counts[same].split(torch.bincount(owner[1:][same], minlength=n).tolist()))


def rle_encode(mask: Tensor, compressed: bool = False) -> dict:
    """(H, W) mask -> COCO RLE {"size": [H, W], "counts": run lengths}: column-major runs, starting with zeros;
    `compressed` gives COCO's string form (deltas against the count two back, 5-bit groups, chars from '0')."""
    counts = run_lengths(mask[None])[0]
    return {"size": list(mask.shape), "counts": _compress(counts) if compressed else counts.tolist()}


def rle_encode_all(masks: Tensor) -> list[dict]:
    """(n, H, W) masks -> n uncompressed COCO RLE objects, encoded together."""
    size = list(masks.shape[1:])
    return [{"size": size, "counts": c.tolist()} for c in run_lengths(masks)]


def _compress(counts: Tensor) -> str:
    x = counts.clone()
    x[3:] -= counts[1:-2]  # counts past the third are stored as differences to the count two before
    shifts = 5 * torch.arange(8)  # up to 8 groups of 5 bits for 32-bit counts
    groups = (x[:, None] >> shifts) & 0x1F  # (M, 8): 5-bit groups, least significant first
    rest = x[:, None] >> (shifts + 5)  # (M, 8): what is left after each group (arithmetic shift keeps the sign)
    more = torch.where(groups & 0x10 != 0, rest != -1, rest != 0)  # (M, 8): another group must follow
    used = torch.cat([torch.ones(len(x), 1, dtype=torch.bool), more[:, :-1]], 1).long().cumprod(1).bool()  # (M, 8)
    chars = (groups | (more.long() << 5)) + 48  # continuation bit 0x20, then the offset into printable chars
    return bytes(chars[used].tolist()).decode("ascii")


def _decompress(text: str) -> Tensor:
    codes = torch.tensor(list(text.encode("ascii")), dtype=torch.long) - 48  # (L,)
    if len(codes) == 0:
        return codes
    if codes.min() < 0 or codes.max() > 63:
        raise ValueError("characters outside COCO's RLE alphabet")
    last = codes & 0x20 == 0  # (L,): a group without the continuation bit ends a number
    if not last[-1]:
        raise ValueError("truncated")
    number = torch.cat([torch.zeros(1, dtype=torch.long), last.long().cumsum(0)[:-1]])  # (L,) number of each group
    first = torch.cat([torch.ones(1, dtype=torch.bool), last[:-1]])
    start = torch.arange(len(codes))[first]  # (M,) where each number begins
    position = torch.arange(len(codes)) - start[number]  # (L,) the group's place within its number
    x = torch.zeros(len(start), dtype=torch.long).index_add_(0, number, (codes & 0x1F) << (5 * position))
    ends = torch.arange(len(codes))[last]  # (M,) each number's final group
    negative = codes[ends] & 0x10 != 0
    x = torch.where(negative, x | (-1 << (5 * (position[ends] + 1))), x)  # sign-extend
    counts = x.clone()  # undo the deltas: from the fourth on, each count adds the one two before it
    counts[1::2] = x[1::2].cumsum(0)  # the odd chain: c1, c3 = x3 + c1, ...
    counts[2::2] = x[2::2].cumsum(0)  # the even chain from c2: c2, c4 = x4 + c2, ...
    return counts


def rle_decode(counts: list[int] | str, height: int, width: int) -> Tensor:
    """COCO RLE (a counts list, or the compressed string) -> (height, width) bool mask. ValueError if malformed."""
    counts = _decompress(counts) if isinstance(counts, str) else torch.as_tensor(counts, dtype=torch.long)
    if counts.ndim != 1 or (counts < 0).any() or int(counts.sum()) != height * width:
        raise ValueError(f"run lengths do not add up to {height}x{width} pixels")
    values = torch.arange(len(counts)) % 2 == 1  # runs alternate, zeros first
    flat = values.repeat_interleave(counts)  # (H·W,) column-major
    return flat.view(width, height).t()


# ---- reading images -----------------------------------------------------------------------

def _load_image(path: Path, side: int) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
    """An image file -> ((3, side, side) in [0, 1], letterboxed; its (height, width); its content's (nh, nw))."""
    x = images._to_tensor(images._open_image(path, "RGB"))  # (3, h, w)
    boxed, content = letterbox(x, side)
    return boxed.clamp(0, 1), (x.shape[1], x.shape[2]), content


def geometry(files: list[Path], size: int, source: str) -> tuple[int, float, str | None]:
    """How a folder's images are seen (their headers alone are read): (S, the side they are letterboxed to; the
    median of their scales S / longer side, at which `Windows` shows inputs to predict for; the notice that says how
    S was taken from the data, or None). S = `size`, or 0: the largest side rounded up to a multiple of STRIDE, at
    most MAX_SIDE."""
    sizes = images.image_sizes(files)
    largest = max(max(wh) for wh in sizes)
    side = size or min(-(-largest // STRIDE) * STRIDE, MAX_SIDE)
    scale = statistics.median(side / max(wh) for wh in sizes)
    if size or all(wh == (side, side) for wh in sizes):
        return side, scale, None
    (w0, h0), (w1, h1) = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
    why = (f"the largest side rounded up to a multiple of {STRIDE}" if side < MAX_SIDE or largest == MAX_SIDE
           else f"the largest side, {largest}, capped at {MAX_SIDE} for memory and time")
    shown = f"{w0}x{h0}" if (w0, h0) == (w1, h1) else f"{w0}x{h0} to {w1}x{h1}"
    return side, scale, (f"{source}: {len(files):,} images of {shown} letterboxed to {side}x{side} ({why}; aspect "
                         "kept, padded right and below; --set image_size=N to choose)")


def _reserve(n: int, side: int, source: str) -> None:
    """Refuse, before decoding, a folder whose letterboxed images would not fit in memory (held about twice)."""
    memory.require(2 * n * 3 * side * side * 4, f"{n:,} images of {source} at {side}x{side}")


def letterbox_labels(labels: Tensor, side: int, content: tuple[int, int], fill: int = 0) -> Tensor:
    """(h, w) integer labels -> (side, side): resized to `content` (nh, nw) by nearest neighbour (no blending of
    ids), into the top-left corner like `images.letterbox`; `fill` elsewhere."""
    if labels.shape != content:
        labels = F.interpolate(labels[None, None].float(), size=content, mode="nearest-exact")[0, 0]
    out = torch.full((side, side), fill, dtype=torch.long)
    out[:content[0], :content[1]] = labels.long()
    return out


def box_masks(boxes: Tensor, size: int) -> Tensor:
    """(n, 4) boxes -> (n, S, S) uint8: the pixels whose centre lies in each box."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    inside_x = (c >= boxes[:, 0, None]) & (c < boxes[:, 2, None])  # (n, S)
    inside_y = (c >= boxes[:, 1, None]) & (c < boxes[:, 3, None])
    return (inside_y[:, :, None] & inside_x[:, None, :]).to(torch.uint8)


# ---- COCO ---------------------------------------------------------------------------------

def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DeepAtlasError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DeepAtlasError(f"{path}: cannot read ({err.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise DeepAtlasError(f"{path}: expected a COCO object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DeepAtlasError(f"{path}: no {key!r} list (COCO format: images, annotations, categories)")
    return data


def _coco_files(root: Path) -> dict[str, Path] | None:
    """The annotation files of a COCO folder: {"all": path} or {"train": ..., "val": ..., ("test": ...)};
    None when the folder holds no JSON file."""
    found = sorted(root.glob("*.json")) + (sorted((root / "annotations").glob("*.json"))
                                           if (root / "annotations").is_dir() else [])
    if not found:
        return None
    splits = {}
    for part in ("train", "val", "test"):
        named = [f for f in found if part in f.stem.lower()]
        if len(named) > 1:
            raise DeepAtlasError(f"{root}: several {part} annotation files ({', '.join(f.name for f in named)})")
        if named:
            splits[part] = named[0]
    if splits:
        if "train" not in splits or "val" not in splits:
            raise DeepAtlasError(f"{root}: split annotation files need both a train and a val file "
                                 f"(found {', '.join(f.name for f in splits.values())})")
        return splits
    if len(found) > 1:
        raise DeepAtlasError(f"{root}: several annotation files ({', '.join(f.name for f in found)}); "
                             "keep one, or name them train/val/test")
    return {"all": found[0]}


def _find_image(root: Path, json_path: Path, name: str) -> Path:
    for folder in (root, root / "images", json_path.parent, json_path.parent.parent / "images"):
        if (folder / name).is_file():
            return folder / name
    raise DeepAtlasError(f"{json_path}: image {name!r} not found (looked beside the JSON and in images/)")


def _image_file(root: Path, json_path: Path, img) -> Path:
    """The file of one entry of a COCO `images` list."""
    if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
        raise DeepAtlasError(f"{json_path}: every image needs an id and a file_name")
    return _find_image(root, json_path, img["file_name"])


def _number(value, path: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DeepAtlasError(f"{path}: {what}: expected a number, got {value!r}")
    return float(value)


def _annotation_mask(ann: dict, box: Tensor, height: int, width: int, size: int, content: tuple[int, int],
                     where: str) -> Tensor:
    """One annotation's segmentation (polygons, RLE or none) -> (S, S) bool, in the letterboxed image, whose
    content (the image) is `content` = (nh, nw) pixels."""
    seg = ann.get("segmentation")
    if not seg:
        return box_masks(box[None], size)[0].bool()
    try:
        if isinstance(seg, list):  # polygons: [[x1, y1, x2, y2, ...], ...] in original pixels
            scale = torch.tensor([content[1] / width, content[0] / height], dtype=torch.float64)
            polygons = []
            for poly in seg:
                if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                    raise ValueError("each polygon must be a flat list of at least 3 (x, y) points")
                polygons.append(torch.tensor(poly, dtype=torch.float64).view(-1, 2) * scale)  # (V, 2)
            return polygons_to_mask(polygons, size, size)
        if isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if list(seg["size"]) != [height, width]:
                raise ValueError(f"RLE size {seg['size']} is not the image's [{height}, {width}]")
            return letterbox_labels(rle_decode(seg["counts"], height, width), size, content).bool()
        raise ValueError("expected a list of polygons or an RLE object with size and counts")
    except (ValueError, TypeError, RuntimeError) as err:
        raise DeepAtlasError(f"{where}: bad segmentation ({err})") from None


def read_coco(json_path: Path, root: Path, size: int, classes: list[str] | None = None, data: dict | None = None
              ) -> tuple[DetectionDataset, list[str]]:
    """One COCO annotations file (`data`: its JSON, when already read) -> (dataset letterboxed to side `size`,
    class names). Categories become 0..K-1 by id; with `classes` given (a trained run's), each category is found
    there by name instead."""
    data = data if data is not None else _load_json(json_path)
    categories = {}
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DeepAtlasError(f"{json_path}: every category needs an id and a name")
        categories[cat["id"]] = str(cat["name"])
    if classes is None:
        names = [categories[k] for k in sorted(categories)]
        label_of = {k: i for i, k in enumerate(sorted(categories))}
    else:
        unknown = sorted(set(categories.values()) - set(classes))
        if unknown:
            raise DeepAtlasError(f"{json_path}: categor{'ies' if len(unknown) > 1 else 'y'} "
                                 f"{', '.join(unknown)} not in the run's classes ({', '.join(classes)})")
        names, label_of = classes, {k: classes.index(v) for k, v in categories.items()}
    by_image: dict = {}
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DeepAtlasError(f"{json_path}: an annotation without image_id")
        by_image.setdefault(ann["image_id"], []).append(ann)
    known = {img.get("id") for img in data["images"] if isinstance(img, dict)}
    orphans = [k for k in by_image if k not in known]
    if orphans:
        raise DeepAtlasError(f"{json_path}: annotations refer to image id {orphans[0]!r}, which is not in images")
    _reserve(len(data["images"]), size, json_path.name)
    pictures, targets = [], []
    for img in data["images"]:
        file = _image_file(root, json_path, img)
        picture, (height, width), content = _load_image(file, size)
        if (img.get("height", height), img.get("width", width)) != (height, width):
            raise DeepAtlasError(f"{file}: the image is {width}x{height}, but {json_path.name} says "
                                 f"{img.get('width')}x{img.get('height')}")
        boxes, labels, masks = [], [], []
        for ann in by_image.get(img["id"], []):
            if ann.get("iscrowd", 0):
                continue
            where = f"{json_path}: annotation {ann.get('id', '?')} ({img['file_name']})"
            if ann.get("category_id") not in label_of:
                raise DeepAtlasError(f"{where}: category_id {ann.get('category_id')!r} is not in categories")
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise DeepAtlasError(f"{where}: bbox must be [x, y, width, height]")
            x, y, w, h = (_number(v, json_path, where) for v in bbox)
            if w <= 0 or h <= 0:
                raise DeepAtlasError(f"{where}: empty box {bbox}")
            if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or \
                    y + h > height + BOX_TOLERANCE:
                raise DeepAtlasError(f"{where}: box {bbox} lies outside the {width}x{height} image")
            box = torch.tensor([max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)], dtype=torch.float64)
            box = (box * torch.tensor([content[1] / width, content[0] / height] * 2, dtype=torch.float64)).float()
            boxes.append(box)
            labels.append(label_of[ann["category_id"]])
            masks.append(_annotation_mask(ann, box, height, width, size, content, where))
        pictures.append(picture)
        targets.append({"boxes": torch.stack(boxes), "labels": torch.tensor(labels, dtype=torch.long),
                        "masks": torch.stack(masks).to(torch.uint8)} if boxes else empty_target(size))
    if not pictures:
        raise DeepAtlasError(f"{json_path}: no images listed")
    return DetectionDataset(torch.stack(pictures), targets), names


def write_coco(folder: str | Path, dataset, classes: list[str], masks: str = "polygon") -> Path:
    """Write a detection dataset as a COCO-format folder: `images/NNNNN.png` and `annotations.json`.
    `masks`: "polygon" (exact, one rectangle per pixel run), "rle" (counts lists) or "compressed" (RLE strings).
    Category ids are 1..K in `classes` order. Returns the annotations file."""
    from PIL import Image
    if masks not in ("polygon", "rle", "compressed"):
        raise ValueError(f"masks must be polygon, rle or compressed, not {masks!r}")
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records, annotations = [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        name = f"{i:05d}.png"
        pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / "images" / name)
        height, width = image.shape[1:]
        records.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        for box, label, mask in zip(target["boxes"].tolist(), target["labels"].tolist(), target["masks"]):
            if masks == "polygon":
                segmentation = mask_to_polygons(mask)
            else:
                segmentation = rle_encode(mask, compressed=masks == "compressed")
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "area": int(mask.sum()), "iscrowd": 0, "segmentation": segmentation})
    coco = {"images": records, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(classes)]}
    path = folder / "annotations.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(coco))
    os.replace(partial, path)  # never a half-written annotations file
    return path


# ---- YOLO ---------------------------------------------------------------------------------

def _yolo_classes(root: Path) -> list[str] | None:
    for path in (root / "classes.txt", root / "labels" / "classes.txt"):
        if path.is_file():
            names = [line.strip() for line in read_lines(path) if line.strip()]
            if not names:
                raise DeepAtlasError(f"{path}: no class names")
            return names
    return None


def _read_yolo_labels(path: Path, content: tuple[int, int], n_classes: int | None) -> tuple[Tensor, Tensor]:
    """One YOLO label file -> (boxes (n, 4) in pixels of the letterboxed image, whose content, the image, is
    `content` = (nh, nw) pixels; labels (n,))."""
    rows, lines = [], read_lines(path)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 5:
                raise ValueError
            values = [float(v) for v in parts[1:]]
            label = int(parts[0])
        except ValueError:
            raise DeepAtlasError(f"{path}: line {number}: expected 'class cx cy w h', got {line.strip()!r}") from None
        if label < 0 or (n_classes is not None and label >= n_classes):
            raise DeepAtlasError(f"{path}: line {number}: class {label} is not in classes.txt (0..{n_classes - 1})"
                                 if n_classes else f"{path}: line {number}: negative class {label}")
        rows.append([label, *values])
    if not rows:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    table = torch.tensor(rows, dtype=torch.float64)  # (n, 5)
    cxcy, wh = table[:, 1:3], table[:, 3:5]
    corners = torch.cat([cxcy - wh / 2, cxcy + wh / 2], 1)  # (n, 4) normalized (x1, y1, x2, y2)
    bad = (wh <= 0).any(1) | (corners < -1e-3).any(1) | (corners > 1 + 1e-3).any(1)
    if bad.any():
        number = [i for i, line in enumerate(lines, 1) if line.strip()][int(bad.nonzero()[0])]
        raise DeepAtlasError(f"{path}: line {number}: box outside the image (cx cy w h are fractions in [0, 1])")
    nh, nw = content
    return (corners.clamp(0, 1) * torch.tensor([nw, nh, nw, nh])).float(), table[:, 0].long()


def _yolo_dirs(root: Path) -> dict[str, tuple[Path, Path]]:
    """{part: (image folder, label folder)}: "train", "val" (and "test") when images/ has them, else "all"."""
    parts = [p for p in ("train", "val", "test") if (root / "images" / p).is_dir()]
    if parts:
        return {p: (root / "images" / p, root / "labels" / p) for p in parts}
    return {"all": (root / "images", root / "labels")}


def _yolo_images(image_dir: Path) -> list[Path]:
    files = images._image_files(image_dir)
    if not files:
        raise DeepAtlasError(f"{image_dir}: no images ({', '.join(sorted(images.IMAGE_SUFFIXES))})")
    return files


def _read_yolo_split(image_dir: Path, label_dir: Path, size: int, n_classes: int | None) -> tuple[Tensor, list]:
    files = _yolo_images(image_dir)
    _reserve(len(files), size, str(image_dir))
    pictures, targets = [], []
    for file in files:
        picture, _, content = _load_image(file, size)
        pictures.append(picture)
        label_file = label_dir / f"{file.stem}.txt"
        if label_file.is_file():
            boxes, labels = _read_yolo_labels(label_file, content, n_classes)
            targets.append({"boxes": boxes, "labels": labels, "masks": box_masks(boxes, size)})
        else:  # YOLO's convention: no label file, no object
            targets.append(empty_target(size))
    return torch.stack(pictures), targets


def read_yolo(root: Path, size: int) -> tuple[dict[str, DetectionDataset], list[str]]:
    """A YOLO folder -> ({"all": dataset} or {"train", "val", ("test")}: datasets, class names)."""
    classes = _yolo_classes(root)
    n_classes = None if classes is None else len(classes)
    loaded = {p: _read_yolo_split(image_dir, label_dir, size, n_classes)
              for p, (image_dir, label_dir) in _yolo_dirs(root).items()}
    if classes is None:
        top = max((int(t["labels"].max()) for _, ts in loaded.values() for t in ts if len(t["labels"])), default=0)
        classes = [str(k) for k in range(top + 1)]
    return {p: DetectionDataset(*v) for p, v in loaded.items()}, classes


# ---- splits and the data module API -------------------------------------------------------

def _split(dataset: DetectionDataset, source: str) -> tuple[DetectionDataset, ...]:
    """A fixed 60/20/20 split by image (seed 0)."""
    n = len(dataset)
    if n < 3:
        raise DeepAtlasError(f"{source}: {n} image(s); a 60/20/20 split needs at least 3")
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = n_test = max(1, round(0.2 * n))
    parts = np.split(order, [n - n_val - n_test, n - n_test])
    return tuple(DetectionDataset(dataset.images[p], [dataset.targets[i] for i in p]) for p in parts)


def _from_shapes(source: str, size: int) -> tuple[tuple[DetectionDataset, ...], list[str]]:
    scenes = shapes.splits(source, size)
    return tuple(DetectionDataset(scenes[p].images, scenes[p].targets()) for p in ("train", "val", "test")), \
        list(shapes.CLASSES)


def _from_folder(root: Path, size: int) -> tuple[tuple[DetectionDataset, ...], list[str], int, float, str | None]:
    """A COCO or YOLO folder -> ((train, val, test), class names, then its `geometry` from every image the folder's
    annotations name: side S (`size`, or 0: from the data), scale and notice)."""
    files = _coco_files(root)
    if files is None:
        if not ((root / "images").is_dir() and (root / "labels").is_dir()):
            raise DeepAtlasError(f"{root}: expected a COCO-format folder (images and an annotations JSON) "
                                 "or a YOLO folder (images/ and labels/)")
        size, scale, note = geometry([f for d, _ in _yolo_dirs(root).values() for f in _yolo_images(d)], size,
                                     str(root))
        parts, classes = read_yolo(root, size)
    else:
        data = {part: _load_json(path) for part, path in files.items()}
        size, scale, note = geometry([_image_file(root, files[part], img) for part, coco in data.items()
                                      for img in coco["images"]], size, str(root))
        parts, classes = {}, None
        for part, path in files.items():
            parts[part], names = read_coco(path, root, size, classes, data[part])
            classes = classes or names
    if "all" in parts:
        return _split(parts["all"], str(root)), classes, size, scale, note
    return (parts["train"], parts["val"], parts.get("test", parts["val"])), classes, size, scale, note  # no test: val


def load(source: str, image_size: int = 0, flip: bool = False, crop_pad: int = 0) -> DetectionData:
    """`shapes`, `shapes-N` (S×S scenes, S = `image_size` or 64), a COCO-format folder or a YOLO folder
    (letterboxed to S = `image_size`, or 0: the side `geometry` takes from the data; the spec's "scale" says how
    much its images were scaled, for `predict`)."""
    note, extra = None, {}
    if shapes.train_count(source) is not None:
        size = image_size or DEFAULT_SIZE
        (train, val, test), classes = _from_shapes(source, size)
    elif Path(source).is_dir():
        (train, val, test), classes, size, scale, note = _from_folder(Path(source), image_size)
        extra = {"scale": scale}
    elif Path(source).exists():
        raise DeepAtlasError(f"{source}: expected a folder (COCO-format, or YOLO images/ and labels/)")
    else:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a folder, nor shapes or shapes-N")
    if note:  # once the data is read: a refused file would make it a second line
        notice(note)
    spec = {"kind": "detection", "source": source, "classes": classes, "image_size": size, **extra}
    return DetectionData(train, val, test, spec, Augment(flip, crop_pad) if flip or crop_pad else None)


def load_for(options, target: str | None = None) -> DetectionData:
    return load(options.data, options.image_size, options.flip, options.crop_pad)


MAX_SCALED = 4
"""an input is seen at most MAX_SCALED · S on its longer side (at most 7 × 7 windows); a larger one is shrunk"""
NMS_IOU = 0.5
"""detections of one class from overlapping windows that overlap more than this are one object"""
PREDICT_BATCH = 16
"""windows a model sees at once in `predict`"""


class Windows:
    """One input as a model of side S sees it. Brought to the training scale (`spec["scale"]`, how much the
    training images were scaled on average; 1 for the embedded scenes), at most MAX_SCALED · S on its longer side,
    zero-padded right and below, and cut into S×S windows that overlap by half (`F.unfold`); an input that fits in
    S×S is one window, a letterbox. Objects are so seen at the size they were trained at, however large the input.
    `x` (L, 3, S, S) the windows, rows then columns; `offsets` (L, 2) each one's (x0, y0) in the scaled input."""

    def __init__(self, picture: Tensor, spec: dict):
        side, (h, w) = spec["image_size"], picture.shape[1:]
        scale = min(spec.get("scale", 1.0), MAX_SCALED * side / max(h, w))
        H, W = max(1, round(h * scale)), max(1, round(w * scale))
        if (H, W) != (h, w):
            picture = F.interpolate(picture[None], size=(H, W), mode="bilinear", align_corners=False,
                                    antialias=scale < 1)[0]
        step = side // 2
        Hp, Wp = (side + step * -(-max(n - side, 0) // step) for n in (H, W))  # whole windows cover it
        padded = F.pad(picture, (0, Wp - W, 0, Hp - H)).clamp(0, 1)
        self.x = F.unfold(padded[None], side, stride=step)[0].T.reshape(-1, 3, side, side)  # (L, 3, S, S)
        columns = (Wp - side) // step + 1
        index = torch.arange(len(self.x))
        self.offsets = torch.stack([index % columns, index // columns], 1) * step  # (L, 2) x0, y0
        self.size, self.scaled, self.padded, self.side, self.step = (h, w), (H, W), (Hp, Wp), side, step

    def boxes_back(self, boxes: Tensor) -> Tensor:
        """(n, 4) boxes in the scaled input -> in the input's own pixels, clipped to it."""
        (h, w), (H, W) = self.size, self.scaled
        scaled = boxes.float() * torch.tensor([w / W, h / H, w / W, h / H])
        return torch.minimum(scaled.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32))

    def merge(self, found: list[dict]) -> dict[str, Tensor]:
        """The windows' detections (`detect`'s dicts, one per window) as the input's: boxes moved to the scaled
        input; a box cut by a window edge inside the input dropped (the next window, half a window on, holds that
        object whole when it is at most S/2 wide); per-class NMS across windows; best first. "masks" stay the
        windows' (n, S, S), with "window" (n,) saying whose (see `masks_back`)."""
        counts = torch.tensor([len(d["scores"]) for d in found])
        window = torch.repeat_interleave(torch.arange(len(found)), counts)            # (D,)
        det = {k: torch.cat([d[k] for d in found]) for k in found[0]}
        x0, y0 = self.offsets[window].T                                              # (D,) each
        (H, W), S, b = self.scaled, self.side, det["boxes"]
        cut = ((b[:, 0] <= 1) & (x0 > 0)) | ((b[:, 1] <= 1) & (y0 > 0)) | \
              ((b[:, 2] >= S - 1) & (x0 + S < W)) | ((b[:, 3] >= S - 1) & (y0 + S < H))
        det["boxes"] = b + torch.stack([x0, y0, x0, y0], 1)
        det["window"] = window
        keep = (~cut).nonzero().squeeze(1)
        if len(found) > 1:  # one object seen by several windows: the best box of it
            keep = keep[batched_nms(det["boxes"][keep], det["scores"][keep], det["labels"][keep], NMS_IOU)]
        else:
            keep = keep[torch.argsort(det["scores"][keep], descending=True, stable=True)]
        return {k: v[keep] for k, v in det.items()}

    def masks_back(self, masks: Tensor, window: Tensor) -> Tensor:
        """Windows' masks (n, S, S) (probabilities), `window` (n,) whose -> (n, h, w) bool over the input: pasted
        at their windows' places, cropped to the scaled input, resized to the input's size, kept where >= 0.5;
        PREDICT_BATCH masks at a time (a large input's float canvases are the memory)."""
        (h, w), (H, W), S = self.size, self.scaled, self.side
        out = [torch.zeros(0, h, w, dtype=torch.bool)]
        for part, whose in zip(masks.split(PREDICT_BATCH), window.split(PREDICT_BATCH)) if len(masks) else ():
            canvas = part.new_zeros(len(part), *self.padded, dtype=torch.float32)
            rows = self.offsets[whose, 1, None] + torch.arange(S)                    # (n, S)
            cols = self.offsets[whose, 0, None] + torch.arange(S)
            canvas[torch.arange(len(part))[:, None, None], rows[:, :, None], cols[:, None, :]] = part.float()
            crop = canvas[:, :H, :W]
            if (H, W) != (h, w):
                crop = F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            out.append(crop >= 0.5)
        return torch.cat(out)

    def average(self, maps: Tensor) -> Tensor:
        """The windows' maps (L, K, S, S) -> (K, H, W) over the scaled input: overlapping windows averaged
        (`F.fold`, the inverse of the unfold that cut them)."""
        S, (H, W) = self.side, self.scaled
        columns = maps.flatten(1).T[None]                                            # (1, K·S·S, L)
        total = F.fold(columns, self.padded, S, stride=self.step)[0]                 # (K, Hp, Wp)
        count = F.fold(torch.ones_like(columns[:, :S * S]), self.padded, S, stride=self.step)[0]  # (1, Hp, Wp)
        return (total / count)[:, :H, :W]

    def labels_back(self, labels: Tensor) -> Tensor:
        """(H, W) labels over the scaled input -> (h, w) over the input itself (nearest neighbour)."""
        if labels.shape == self.size:
            return labels
        return F.interpolate(labels[None, None].float(), size=self.size, mode="nearest-exact")[0, 0].long()


def in_windows(predict, windows: Windows, device) -> list[dict[str, Tensor]]:
    """A detector's `predict` over the windows, PREDICT_BATCH at a time on `device`: a dict per window, on the CPU."""
    return [{k: v.cpu() for k, v in found.items()}
            for batch in windows.x.split(PREDICT_BATCH) for found in predict(batch.to(device))]


def raw_inputs(raw) -> list:
    """Raw inputs to predict for (paths, PIL images, arrays, lists of them; a folder's `images/` too), as
    `images.raw_images` gives them: (name, load) pairs, each decoded when loaded."""
    return images.raw_images(raw, "RGB", sub="images")


def check_threshold(threshold: float) -> float:
    if not 0 <= threshold <= 1:
        raise DeepAtlasError(f"{option('threshold')} {threshold}: a score threshold is in [0, 1]")
    return float(threshold)


def read_inputs(spec: dict, path: str) -> tuple[Tensor, list[str]]:
    """An image file or a folder of images -> (their `Windows` (L, 3, S, S) in [0, 1], a name per image; an image
    that fits is one window)."""
    found = raw_inputs(Path(path))
    return torch.cat([Windows(load(), spec).x for _, load in found]), [name for name, _ in found]


def read_labeled(spec: dict, path: str) -> DetectionDataset:
    """A COCO-format folder (its test file when it has split files) or a YOLO folder, in the run's classes."""
    root, size = Path(path), spec["image_size"]
    if not root.is_dir():
        raise DeepAtlasError(f"{path}: expected a COCO-format folder (images and an annotations JSON)")
    files = _coco_files(root)
    if files is not None:
        return read_coco(files.get("test", files.get("val", files.get("all"))), root, size, spec["classes"])[0]
    if (root / "images").is_dir() and (root / "labels").is_dir():
        parts, classes = read_yolo(root, size)
        if not set(classes) <= set(spec["classes"]):
            raise DeepAtlasError(f"{path}: classes {', '.join(classes)} differ from the run's "
                                 f"({', '.join(spec['classes'])})")
        dataset = parts.get("test", parts.get("val", parts.get("all")))
        remap = torch.tensor([spec["classes"].index(c) for c in classes])
        dataset.targets = [{**t, "labels": remap[t["labels"]]} for t in dataset.targets]
        return dataset
    raise DeepAtlasError(f"{path}: expected a COCO-format folder (images and an annotations JSON) "
                         "or a YOLO folder (images/ and labels/)")


# ---- predictions, shown ---------------------------------------------------------------------

SHOW_THRESHOLD = 0.5


def predict(objective, spec: dict, inputs, out: Path | None = None, threshold: float = SHOW_THRESHOLD) -> list[dict]:
    """Detections scoring at least `threshold` for each input (a path to an image or a folder, a PIL image, an
    array, or a list of these), seen in `Windows` at the training scale and mapped back to its own pixels:
    {"input", "predicted" (a line of text), "detections": [{"class", "score", "box": [x1, y1, x2, y2] in the input's
    pixels, and "mask" (COCO RLE over the input, uncompressed) when the model gives masks}]}. With `out`, each
    input is drawn at its own size and aspect with its detections, as a PNG (numbered when there are several)."""
    from deepatlas.data import draw
    threshold = check_threshold(threshold)
    device = next(objective.parameters()).device
    found, rows = raw_inputs(inputs), []
    for i, (name, load) in enumerate(found):  # a row per input, its windows a batch
        picture = load()
        windows = Windows(picture, spec)
        det = windows.merge(in_windows(objective.predict, windows, device))
        det = {k: v[det["scores"] >= threshold] for k, v in det.items()}
        det["boxes"] = windows.boxes_back(det["boxes"])
        items = [{"class": spec["classes"][label], "score": round(score, 4), "box": [round(v, 1) for v in box]}
                 for box, label, score in zip(det["boxes"].tolist(), det["labels"].tolist(), det["scores"].tolist())]
        if "masks" in det:
            det["masks"] = windows.masks_back(det["masks"], det["window"])
            items = [{**item, "mask": rle} for item, rle in zip(items, rle_encode_all(det["masks"]))]
        text = "; ".join(f"{d['class']} {d['score']:.2f} at ({', '.join(f'{v:.0f}' for v in d['box'])})"
                         for d in items)
        rows.append({"input": name, "predicted": text or f"nothing at {threshold:g} or above", "detections": items})
        if out is not None:
            draw.save_boxes(draw.numbered(Path(out), i, len(found)), picture, det, spec["classes"])
    return rows


def plot_predictions(objective, spec: dict, dataset, path: Path) -> None:
    """predictions.png for the run directory: 8 validation images, predicted boxes over dashed truth."""
    from deepatlas.data import draw
    images, targets = collate([dataset[i] for i in range(min(len(dataset), 8))])
    device = next(objective.parameters()).device
    found = [{k: v[d["scores"] >= SHOW_THRESHOLD].cpu() for k, v in d.items()}
             for d in objective.predict(images.to(device))]
    draw.prediction_grid(path, images, found, spec["classes"], targets, "detection")
