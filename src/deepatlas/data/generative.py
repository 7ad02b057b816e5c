"""Data for generative models: images, 2-D toy densities and audio, each with a writer for samples.

    images  `digits` (sklearn's 8×8 digits), or a user's image folder (flat, one sub-folder per class, or
            MNIST IDX files): float (N, C, H, W) in [0, 1], labels kept; `image_size` resizes (16 gives the
            16×16 view), `binarize` thresholds at 0.5 (the binary view for Bernoulli models). A model that
            wants [−1, 1] maps x -> 2x − 1 itself and its samples back.
    points  `8gaussians`, `25gaussians`, `moons`, `swissroll`, `checkerboard` (data/toy2d.py): (N, 2) with the
            index of the mode each point came from.
    audio   `tones` (data/audio.py) or a user's folder of WAV files: windows (N, T) in [−1, 1] at 8 kHz, cut
            without overlap from clips split 60/20/20 by clip (by time within each file when fewer than 5).

Every item is (x, label), so one loader serves all three; the spec's "kind" says which view it is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas.data import Splits, audio, glyphs, images, split_indices, toy2d
from deepatlas.errors import DeepAtlasError

DEFAULT_WINDOW = 2048
EMBEDDED = {"digits", "tones", *glyphs.NAMES, *toy2d.NAMES}


class GenerativeData(Splits):
    @property
    def dims(self) -> dict:
        """`data_shape`: one example's shape, (C, H, W), (2,) or (T,); images also give `n_classes` (their labels)."""
        classes = {"n_classes": len(self.spec["classes"])} if "classes" in self.spec else {}
        return {"data_shape": list(self.spec["shape"]), **classes}


# ---- images -------------------------------------------------------------------------------

def _read_images(path: Path) -> tuple[Tensor, np.ndarray, list[str], tuple | None]:
    """A folder of images (flat, or one sub-folder per class) or of MNIST IDX files, in [0, 1]."""
    if images._idx_files(path):
        return images._read_idx_folder(path)
    if any(p.is_dir() for p in path.iterdir()):
        return (*images._read_image_folder(path, 0), None)
    files = images._image_files(path)
    if not files:
        raise DeepAtlasError(f"{path}: no images ({', '.join(sorted(images.IMAGE_SUFFIXES))}) in this folder")
    return images.read_image_files(files), np.zeros(len(files), dtype=np.int64), ["image"], None


def _image_view(x: Tensor, size: int, binarize: bool) -> Tensor:
    x = images.resize(x, size).clamp(0, 1) if size else x
    return (x >= 0.5).float() if binarize else x


def _load_images(source: str, size: int, binarize: bool) -> GenerativeData:
    extra = {}
    if source == "digits":
        x, y, classes = images._digits()
        splits = None
    elif source in glyphs.NAMES:  # 32×32 characters, greyscale or over photographs (data/glyphs.py)
        x, y, classes, splits, extra = glyphs.load(source)
    else:
        x, y, classes, splits = _read_images(Path(source))
    x = _image_view(x, size, binarize)
    train, val, test = splits if splits is not None else split_indices(y, source, "images")
    yt = torch.as_tensor(y, dtype=torch.long)
    spec = {"kind": "images", "source": source, "shape": list(x.shape[1:]), "binary": binarize, "classes": classes,
            **extra}
    return GenerativeData(*(TensorDataset(x[i], yt[i]) for i in (train, val, test)), spec)


# ---- points and audio ---------------------------------------------------------------------

def _load_points(name: str) -> GenerativeData:
    parts = toy2d.splits(name)
    spec = {"kind": "points", "source": name, "shape": [2]}
    return GenerativeData(*(TensorDataset(*parts[s]) for s in ("train", "val", "test")), spec)


def _load_audio(source: str, window: int) -> GenerativeData:
    clips = audio.tones() if source == "tones" else audio.read_wav_folder(Path(source))
    if len(clips) >= 5:
        order = np.random.default_rng(0).permutation(len(clips))
        cut = [round(0.6 * len(clips)), round(0.8 * len(clips))]
        parts = [[clips[i] for i in idx] for idx in np.split(order, cut)]
    else:  # few files: the first 60% of each for training, the next 20% for validation, the rest for test
        parts = [[c[round(a * len(c)):round(b * len(c))] for c in clips] for a, b in ((0, .6), (.6, .8), (.8, 1))]
    sets = []
    for part in parts:
        x = audio.windows(part, window)
        if len(x) == 0:
            raise DeepAtlasError(f"{source}: too little audio for windows of {window} samples; lower --set window")
        sets.append(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)))
    spec = {"kind": "audio", "source": source, "shape": [window], "sample_rate": audio.SAMPLE_RATE}
    return GenerativeData(*sets, spec)


# ---- the data module API ------------------------------------------------------------------

def load_for(options, target: str | None = None) -> GenerativeData:
    source = options.data
    if source in toy2d.NAMES:
        return _load_points(source)
    if source == "tones" or (Path(source).is_dir() and any(Path(source).glob("*.wav"))):
        return _load_audio(source, options.window or DEFAULT_WINDOW)
    if source in ("digits", *glyphs.NAMES) or Path(source).is_dir():
        return _load_images(source, options.image_size, options.binarize)
    if Path(source).exists():
        raise DeepAtlasError(f"{source}: expected a folder of images or of .wav files")
    raise DeepAtlasError(f"unknown dataset {source!r}: not a folder, nor one of {', '.join(sorted(EMBEDDED))}")


def read_inputs(spec: dict, path: str) -> tuple[Tensor, list[str]]:
    """Images (a file or a folder) in the run's view, for models that also encode or classify."""
    if spec["kind"] != "images":
        raise DeepAtlasError(f"this run models {spec['kind']}: use `deepatlas sample RUN` to generate")
    p = Path(path)
    if not p.exists():
        raise DeepAtlasError(f"{path}: no such file or folder")
    files = images._image_files(p) if p.is_dir() else [p]
    if not files:
        raise DeepAtlasError(f"{path}: no images in this folder")
    channels, size = spec["shape"][0], spec["shape"][-1]
    x = torch.stack([images._to_tensor(images._open_image(f, "L" if channels == 1 else "RGB")) for f in files])
    return _image_view(images.resize(x, size), 0, spec["binary"]), [str(f) for f in files]


def independent_pixels(images: Tensor, n: int) -> Tensor:
    """n images shaped as `images` (N, C, H, W), every pixel drawn on its own from the N values it takes there."""
    pool = images.flatten(1)                                                         # (N, D)
    rows = torch.randint(len(pool), (n, pool.shape[1]), device=pool.device)         # a source image per pixel
    return pool.gather(0, rows).view(n, *images.shape[1:])


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """A folder in the run's domain (images or WAV files), to evaluate the model's likelihood or quality on."""
    if spec["kind"] == "points":
        raise DeepAtlasError("eval --data: toy2d runs are evaluated on their own test split")
    if spec["kind"] == "audio":
        return TensorDataset(x := audio.windows(audio.read_wav_folder(Path(path)), spec["shape"][0]),
                             torch.zeros(len(x), dtype=torch.long))
    x, _ = read_inputs(spec, path)
    return TensorDataset(x, torch.zeros(len(x), dtype=torch.long))


# ---- writing samples ----------------------------------------------------------------------

def image_grid(x: Tensor, columns: int, cell: int = 48) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one uint8 image (rows·(cell+2), columns·(cell+2), C), nearest upscaling."""
    n, c, h, w = x.shape
    scale = max(1, cell // max(h, w))
    x = x.clamp(0, 1).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    rows = -(-n // columns)
    x = torch.cat([x, torch.ones(rows * columns - n, *x.shape[1:])])
    x = torch.nn.functional.pad(x, (1, 1, 1, 1), value=0.5)  # grey gutters: neither ink nor paper
    grid = x.view(rows, columns, c, *x.shape[-2:]).permute(0, 3, 1, 4, 2).reshape(rows * x.shape[-2],
                                                                                  columns * x.shape[-1], c)
    return (grid * 255).round().byte().numpy()


def write_each(samples: Tensor, folder: Path) -> list[Path]:
    """One PNG per image (N, C, H, W) in [0, 1], at its own size: folder/sample-0.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"sample-{i}.png" for i in range(len(samples))]
    for path, image in zip(paths, samples.detach().float().cpu()):
        _write_png((image.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy(), path)
    return paths


def write_trajectory(frames: Tensor, path: Path, seconds: float = 4.0) -> Path:
    """An animated GIF of the sampling chain, frames (F, N, C, H, W) in [0, 1]: each frame the grid of the N
    samples at one step, the last held for a second."""
    from PIL import Image
    columns = int(np.ceil(np.sqrt(frames.shape[1])))
    grids = [image_grid(f.float().cpu(), columns) for f in frames]
    images = [Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g) for g in grids]
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = int(1000 * seconds / len(images))
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=[duration] * (len(images) - 1) + [1000])
    return path


def _write_png(grid: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)


def _scatter(samples: Tensor, name: str, path: Path) -> None:
    """Samples over the true density (its log-density, down to 8 nats below the peak)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = toy2d.density(name)
    reference, _ = d.sample(20_000, torch.Generator().manual_seed(0))
    lo, hi = (reference.min(0).values - 0.5).tolist(), (reference.max(0).values + 0.5).tolist()
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 300), torch.linspace(lo[1], hi[1], 300), indexing="xy")
    logp = d.log_prob(torch.stack([gx.flatten(), gy.flatten()], -1)).view(300, 300)
    fig, ax = plt.subplots(figsize=(6, 6))
    shown = logp.clamp(min=logp.max() - 8)  # log scale, so narrow modes stay visible
    ax.imshow(shown.numpy(), extent=(lo[0], hi[0], lo[1], hi[1]), origin="lower", cmap="Blues")
    ax.scatter(samples[:, 0], samples[:, 1], s=3, c="tab:red", alpha=0.5, label=f"{len(samples)} samples")
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), title=f"samples over the true density ({name})")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


DENSITY_GRID = 120


def plot_density(objective, spec: dict, samples: Tensor, path: Path) -> list[Path]:
    """A model with exact log-densities (`objective.log_prob(x) -> (N,)`) on 2-D points: its log-density on a grid,
    its samples, and the true density, side by side (log scale, down to 8 nats below each peak). [] otherwise."""
    if spec.get("kind") != "points" or not hasattr(objective, "log_prob") or spec["source"] not in toy2d.NAMES:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = toy2d.density(spec["source"])
    reference, _ = d.sample(20_000, torch.Generator().manual_seed(0))
    lo, hi = (reference.min(0).values - 0.5).tolist(), (reference.max(0).values + 0.5).tolist()
    n = DENSITY_GRID
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], n), torch.linspace(lo[1], hi[1], n), indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], -1)  # (n², 2)
    like = next(objective.parameters())
    with torch.no_grad():
        model = torch.cat([objective.log_prob(g.to(like)).float().cpu() for g in grid.split(4096)]).view(n, n)
    true = d.log_prob(grid).view(n, n)
    samples = samples.detach().float().cpu()
    extent = (lo[0], hi[0], lo[1], hi[1])
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, logp, title in ((axes[0], model, "model log-density"), (axes[2], true, f"true density ({d.name})")):
        ax.imshow(logp.clamp(min=logp.max() - 8).numpy(), extent=extent, origin="lower", cmap="Blues")
        ax.set(title=title, xlim=extent[:2], ylim=extent[2:])
    axes[1].scatter(samples[:, 0], samples[:, 1], s=3, c="tab:red", alpha=0.5)
    axes[1].set(title=f"{len(samples)} samples", xlim=extent[:2], ylim=extent[2:], aspect="equal")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [path]


def plot_predictions(objective, spec: dict, dataset, path: Path) -> None:
    """After training, a model with exact log-densities on 2-D points draws density.png beside `path` (seeded
    samples); other generative models draw nothing here."""
    if spec.get("kind") == "points" and hasattr(objective, "log_prob"):
        with torch.random.fork_rng(devices=[]):  # the same samples after every run, the run's own RNG untouched
            torch.manual_seed(0)
            samples = objective.sample(1000)
        plot_density(objective, spec, samples, path.with_name("density.png"))


def write_samples(spec: dict, samples: Tensor, out: Path, columns: int = 0) -> list[Path]:
    """A PNG grid (images), a scatter over the true density (points) or one WAV per sample (audio, `out` a folder)."""
    samples = samples.detach().float().cpu()
    if spec["kind"] == "audio":
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"sample-{i}.wav" for i in range(len(samples))]
        for p, wave in zip(paths, samples):
            audio.write_wav(p, wave, spec["sample_rate"])
        return paths
    out.parent.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "points":
        _scatter(samples, spec["source"], out)
    else:
        _write_png(image_grid(samples, columns or int(np.ceil(np.sqrt(len(samples))))), out)
    return [out]
