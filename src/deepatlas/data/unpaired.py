"""Two image domains without pairs, for image-to-image translation (CycleGAN).

    glyphs>glyphs-m   domain A is glyphs (greyscale characters), B is glyphs-m (the same characters blended over
                      photographs, data/glyphs.py); `glyphs-m>glyphs` the other way. Each domain keeps its own
                      fixed 60/20/20 split and its labels (the judges of tasks/domain_judges.py read them).
    a folder          with sub-folders `A/` and `B/` of images (each flat, or one sub-folder per class): each domain
                      is split 60/20/20 on its own; `image_size` resizes both, else B is resized to A's size.

Training never pairs: an item is A's example i with a B example drawn at random by torch's global generator (the
loop reseeds it every epoch), so which b meets which a changes every epoch and is independent of A's shuffle;
glyphs' A[i] meets its own counterpart B[i] only by chance (1 in the train split's size). Held-out splits pair
A's i-th example with B's example at a fixed seeded permutation, for repeatable evaluation; their metrics look at
each direction on its own. Items are (a, label_a, b, label_b).

`predict` translates an image file (or a folder) A → B, or B → A with `reverse`, and writes each translation as a
PNG in the input's own pixel size: to `out`, or beside the input as NAME.to-B.png (NAME.to-A.png).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from deepatlas.data import Splits, glyphs, split_indices
from deepatlas.errors import DeepAtlasError

SEPARATOR = ">"
EMBEDDED = {f"{a}{SEPARATOR}{b}" for a, b in (glyphs.NAMES, glyphs.NAMES[::-1])}
EVAL_SEED = 0


class Unpaired(Dataset):
    """Items (a, label_a, b, label_b) over max(len A, len B): A's index i (mod its length), and B's drawn at random
    (`shuffle`, training) or at a fixed seeded permutation (held-out)."""

    def __init__(self, a: Tensor, y_a: Tensor, b: Tensor, y_b: Tensor, shuffle: bool):
        self.a, self.y_a, self.b, self.y_b, self.shuffle = a, y_a, b, y_b, shuffle
        self.order = torch.randperm(len(b), generator=torch.Generator().manual_seed(EVAL_SEED))

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def b_index(self, i: int) -> int:
        if self.shuffle:  # independent of i: the run's seeded global stream
            return int(torch.randint(len(self.b), ()))
        return int(self.order[i % len(self.b)])

    def __getitem__(self, i: int):
        j = self.b_index(i)
        return self.a[i % len(self.a)], self.y_a[i % len(self.a)], self.b[j], self.y_b[j]


class UnpairedData(Splits):
    @property
    def dims(self) -> dict:
        """Each domain's channels (the model's `channels_a`, `channels_b`)."""
        return {"channels_a": self.spec["shape"][0], "channels_b": self.spec["shape_b"][0]}


def _embedded(name: str) -> tuple[Tensor, np.ndarray, tuple]:
    x, y, _, parts, _ = glyphs.load(name)
    return x, y, parts


def _folder(root: Path, image_size: int) -> tuple[Tensor, np.ndarray, tuple]:
    from deepatlas.data.generative import _read_images
    from deepatlas.data.images import resize
    x, y, _, parts = _read_images(root)
    x = resize(x, image_size).clamp(0, 1) if image_size else x
    return x, y, parts if parts is not None else split_indices(y, str(root), "images")


def domain_folders(path: Path) -> tuple[Path, Path] | None:
    """(A, B) where `path` is a folder with sub-folders A/ and B/ (and no other), else None."""
    if not path.is_dir():
        return None
    subs = {p.name for p in path.iterdir() if p.is_dir()}
    return (path / "A", path / "B") if subs == {"A", "B"} else None


def load_for(options, target: str | None = None) -> UnpairedData:
    source = options.data
    if source in EMBEDDED:
        names = source.split(SEPARATOR)
        (xa, ya, pa), (xb, yb, pb) = (_embedded(n) for n in names)
        if options.image_size:
            from deepatlas.data.images import resize
            xa, xb = (resize(x, options.image_size).clamp(0, 1) for x in (xa, xb))
        domains = names
    else:
        found = domain_folders(Path(source))
        if found is None:
            path = Path(source)
            what = ("expected only the sub-folders A/ and B/, each of images" if path.is_dir() else
                    "expected a folder with sub-folders A/ and B/ of images, not a file" if path.exists() else
                    "no such folder")
            raise DeepAtlasError(f"{source}: {what}; or one of the embedded pairs {', '.join(sorted(EMBEDDED))}")
        (xa, ya, pa), (xb, yb, pb) = (_folder(p, options.image_size) for p in found)
        if xb.shape[-2:] != xa.shape[-2:]:  # both domains at A's size: one generator's input and output
            xb = F.interpolate(xb, size=tuple(xa.shape[-2:]), mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 1)
        domains = None
    ya, yb = torch.as_tensor(ya, dtype=torch.long), torch.as_tensor(yb, dtype=torch.long)
    sets = [Unpaired(xa[ia], ya[ia], xb[ib], yb[ib], shuffle=part == 0)
            for part, (ia, ib) in enumerate(zip(pa, pb))]
    spec = {"kind": "unpaired", "source": source, "domains": domains, "shape": list(xa.shape[1:]),
            "shape_b": list(xb.shape[1:]), "image_size": options.image_size}
    return UnpairedData(*sets, spec)


def test_images(spec: dict, n: int) -> Tensor:
    """The first n images of domain A's test split (fewer if it has fewer), as training saw them."""
    from deepatlas.catalog import Data
    test = load_for(Data(data=spec["source"], image_size=spec.get("image_size", 0))).test
    return test.a[:n]


def read_labeled(spec: dict, path: str) -> Unpaired:
    """A folder with A/ and B/ sub-folders of images, every image held out, in the run's sizes (`eval --data`)."""
    found = domain_folders(Path(path))
    if found is None:
        raise DeepAtlasError(f"{path}: expected a folder with sub-folders A/ and B/ of images")
    (xa, ya), (xb, yb) = (_read_domain(spec, p, key) for p, key in zip(found, ("shape", "shape_b")))
    return Unpaired(xa, ya, xb, yb, shuffle=False)


def _read_domain(spec: dict, path: Path, key: str) -> tuple[Tensor, Tensor]:
    from deepatlas.data.generative import _read_images
    x, y, _, _ = _read_images(path)
    x = _as_channels(x, spec[key][0])
    x = F.interpolate(x, size=tuple(spec[key][1:]), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x, torch.as_tensor(y, dtype=torch.long)


def _as_channels(x: Tensor, channels: int) -> Tensor:
    if x.shape[1] == channels:
        return x
    return x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)


@torch.no_grad()
def predict(objective, spec: dict, inputs, out: Path | None = None, reverse: bool = False) -> list[dict]:
    """Translate each input image (a path to an image or a folder, a PIL image, an array, or a list of these) A → B
    (`reverse`: B → A) at the run's size, and write the translation as a PNG resized back to the input's own
    pixel size: to `out` (numbered when several), or beside the input as NAME.to-B.png (NAME.to-A.png).
    Rows: {"input", "predicted": the PNG written, "size": [width, height]}."""
    from PIL import Image

    from deepatlas.data.draw import numbered
    from deepatlas.data.images import raw_images
    source_key, target_key = ("shape_b", "shape") if reverse else ("shape", "shape_b")
    found = raw_images(inputs, "L" if spec[source_key][0] == 1 else "RGB")
    target = "A" if reverse else "B"
    device = next(objective.parameters()).device
    was = objective.training
    objective.eval()
    rows = []
    try:
        for i, (name, load) in enumerate(found):
            x = load()                                                                  # (C, h, w) in [0, 1]
            h, w = x.shape[-2:]
            x = F.interpolate(x[None], size=tuple(spec[source_key][1:]), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
            y = objective.model.translate(x.to(device), reverse=reverse).float().cpu()  # (1, C', H, W)
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)[0]
            if out is not None:
                path = numbered(Path(out), i, len(found))
            elif Path(name).exists():
                path = Path(name).with_name(f"{Path(name).stem}.to-{target}.png")
            else:  # an image given in memory: beside nothing, so in the working folder
                path = Path(f"{name.replace(' ', '-')}.to-{target}.png")
            pixels = (y * 255).round().byte().permute(1, 2, 0).numpy()                  # (h, w, C')
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
            rows.append({"input": name, "predicted": str(path), "size": [int(w), int(h)]})
    finally:
        objective.train(was)
    return rows


def write_samples(spec: dict, samples: Tensor, out: Path, columns: int = 0) -> list[Path]:
    """Rows of (a, G(a), F(G(a))) as one PNG grid, two triples a row."""
    from deepatlas.data.generative import image_grid, _write_png
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_png(image_grid(samples.detach().float().cpu(), columns or 6), out)
    return [out]
