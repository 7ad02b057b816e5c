"""Pictures of dense predictions: boxes and masks over an image, semantic masks over or beside it, and grids.

Used by `deepatlas predict RUN image.png --out annotated.png`, which draws on the input itself: the PNG has the
input's aspect and size (a small input is enlarged by a whole factor, to at least LEGIBLE pixels on its longer
side, so labels stay readable), and by the prediction grid a detection or segmentation run leaves in its
directory (predictions.png: validation images, predictions against truth).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

LEGIBLE = 400
"""an annotated input smaller than this on its longer side is enlarged by the largest whole factor that fits"""
VOID = (0.5, 0.5, 0.5)
"""the colour of labels past the classes (segmentation's padding, IGNORE)"""
PALETTE = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:olive", "tab:pink",
           "tab:brown", "tab:gray"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _rgb(image: Tensor) -> np.ndarray:
    return image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, 3)


def label_colours(n: int) -> np.ndarray:
    """(n, 3) RGB colours: black for label 0 (background), then the palette."""
    from matplotlib.colors import to_rgb
    return np.array([(0.0, 0.0, 0.0)] + [to_rgb(PALETTE[i % len(PALETTE)]) for i in range(max(n - 1, 0))])


def _coloured(labels: Tensor, n: int) -> np.ndarray:
    """(H, W) labels -> (H, W, 3): `label_colours`, grey (VOID) for a label past the n classes (padding)."""
    colours = np.concatenate([label_colours(n), [VOID]])
    return colours[np.minimum(labels.cpu().numpy(), n)]


def _canvas(height: int, width: int):
    """A figure whose one axes fills it exactly, saved (at dpi 100) as a PNG of the input's aspect: width x height
    times a whole factor (1 unless the input is smaller than LEGIBLE)."""
    plt = _pyplot()
    factor = max(1, LEGIBLE // max(height, width))
    fig = plt.figure(figsize=(factor * width / 100, factor * height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    return plt, fig, ax


def draw_boxes(ax, image: Tensor, detections: dict, classes: list[str], truth: dict | None = None) -> None:
    """Predicted boxes (solid, labelled with class and score) over the image; ground truth dashed, if given."""
    from matplotlib.patches import Rectangle
    rgb = _rgb(image)
    if "masks" in detections and len(detections["masks"]):  # instance masks: tint each object's pixels
        masks = (detections["masks"].detach().cpu() >= 0.5).to(torch.uint8)        # (n, H, W)
        first = masks.argmax(0).numpy()                                              # (H, W) the best object there
        colours = label_colours(len(classes) + 1)[detections["labels"].cpu().numpy() + 1]  # (n, 3)
        rgb = np.where(masks.any(0).numpy()[..., None], 0.5 * rgb + 0.5 * colours[first], rgb)
    ax.imshow(rgb, extent=(0, rgb.shape[1], rgb.shape[0], 0))  # pixel i spans [i, i + 1]: box corners line up
    if truth is not None:
        for box in truth["boxes"].tolist():
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ls="--", lw=1, ec="white"))
    for box, label, score in zip(detections["boxes"].tolist(), detections["labels"].tolist(),
                                 detections["scores"].tolist()):
        colour = PALETTE[label % len(PALETTE)]
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, lw=1.5, ec=colour))
        ax.text(box[0], box[1] - 1, f"{classes[label]} {score:.2f}", color="white", fontsize=6,
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.5, "lw": 0})
    ax.set_axis_off()


def draw_segmentation(axes, image: Tensor, labels: Tensor, classes: list[str], truth: Tensor | None = None) -> None:
    """The image, the predicted label map in colour, and the true one if given, on consecutive axes."""
    panels = [("image", _rgb(image)), ("predicted", _coloured(labels, len(classes)))]
    if truth is not None:
        panels.append(("truth", _coloured(truth, len(classes))))
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_axis_off()


def save_boxes(path: Path, image: Tensor, detections: dict, classes: list[str]) -> None:
    """The image (3, H, W) with its detections (boxes, and masks (n, H, W), in its pixels), at its own aspect."""
    plt, fig, ax = _canvas(*image.shape[1:])
    draw_boxes(ax, image, detections, classes)
    ax.set(xlim=(0, image.shape[2]), ylim=(image.shape[1], 0))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_segmentation(path: Path, image: Tensor, labels: Tensor, classes: list[str]) -> Path:
    """The image (3, H, W) with its label map (H, W) tinted over it, at its own aspect, the classes present named
    in a corner legend, saved at `path`; and the label map itself (one byte per pixel, the class id) beside it."""
    from PIL import Image
    plt, fig, ax = _canvas(*image.shape[1:])
    rgb, tint = _rgb(image), _coloured(labels, len(classes))
    inside = (labels.cpu().numpy() > 0)[..., None]
    ax.imshow(np.where(inside, 0.5 * rgb + 0.5 * tint, rgb), interpolation="nearest")
    ax.set_axis_off()
    present = sorted(set(labels.unique().tolist()) - {0})
    colours = label_colours(len(classes))
    if present:
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in present]
        ax.legend(handles, [classes[k] for k in present], loc="upper right", fontsize=7, framealpha=0.7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    mask_path = path.with_name(f"{path.stem}-mask.png")
    Image.fromarray(labels.cpu().numpy().astype(np.uint8)).save(mask_path)
    return mask_path


def prediction_grid(path: Path, images: Tensor, predictions: list, classes: list[str], truths: list,
                    kind: str, title: str = "") -> None:
    """Up to 8 validation images with the model's predictions (boxes over the image, or label maps next to
    the truth), for a run directory."""
    plt = _pyplot()
    n = min(len(images), 8)
    if kind == "detection":
        fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
        for ax, image, det, truth in zip(axes.flat, images[:n], predictions, truths):
            draw_boxes(ax, image, det, classes, truth)
        for ax in axes.flat[n:]:
            ax.set_axis_off()
    else:
        fig, axes = plt.subplots(4, 6, figsize=(10, 7))
        for k in range(n):
            row, col = divmod(k, 2)
            draw_segmentation(axes[row, 3 * col:3 * col + 3], images[k], predictions[k], classes, truths[k])
        for ax in axes.flat[3 * n:]:
            ax.set_axis_off()
    fig.suptitle(title or "validation predictions" + (" (dashed: truth)" if kind == "detection" else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def numbered(path: Path, i: int, n: int) -> Path:
    """`path` itself for a single output, else path-1.png, path-2.png, ..."""
    return path if n == 1 else path.with_name(f"{path.stem}-{i + 1}{path.suffix}")
