"""YOLO v1: You Only Look Once, detection as one regression over a grid.

J. Redmon, S. Divvala, R. Girshick, A. Farhadi, 2016. "You Only Look Once: Unified, Real-Time Object
Detection." CVPR 2016, arXiv:1506.02640.

The image is divided into an S×S grid; one forward pass predicts, for every cell, B boxes (x, y the box
centre relative to the cell, √w, √h the square roots of its size relative to the image), a confidence per
box, trained toward the IoU between that box and the object it is responsible for (0 where none), and one
set of C class probabilities P(class | object) per cell. A cell is responsible for an object whose centre
falls in it; of its B predictors, the one whose current box has the highest IoU with the object is the
"responsible" one and alone gets the coordinate loss, so the predictors specialize in sizes and shapes.
The loss is sum-squared error over everything (eq. 3):

    λcoord Σ_i Σ_j 1obj_ij [(x_i - x̂_i)² + (y_i - ŷ_i)²]
  + λcoord Σ_i Σ_j 1obj_ij [(√w_i - √ŵ_i)² + (√h_i - √ĥ_i)²]
  +        Σ_i Σ_j 1obj_ij (C_i - Ĉ_i)²    +    λnoobj Σ_i Σ_j 1noobj_ij (C_i - Ĉ_i)²
  +        Σ_i 1obj_i Σ_c (p_i(c) - p̂_i(c))²

with λcoord = 5 (coordinates matter more than the many empty cells' confidences) and λnoobj = 0.5; the √
makes a pixel of error cost more on a small box than on a large one. At test time each box scores
P(class | object) · confidence for every class, low scores are dropped and per-class NMS removes duplicates.

Here: the backbone is the vision family's ResNet (`ResNet.feature_maps`), whose stride-8 stage gives an
S = 8 grid on the 64×64 shapes scenes (8-pixel cells for objects 10 to 22 pixels wide), then a small
convolutional head (leaky ReLU 0.1, as the paper) with linear outputs; `head="fc"` uses the paper's fully
connected layers instead. When two objects' centres fall in one cell, v1 can predict only one: the larger
(by box area) is assigned, the other gets no target that step (about 2% of the shapes objects).
Shape legend: B batch, S grid side, nb boxes per cell (the paper's B), K classes (the paper's C), M objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from deepatlas.catalog import (Bar, Data, Entry, NonNegative, Paper, Positive, Probability, Range, Relation, Size,
                              Train, register)
from deepatlas.errors import DeepAtlasError
from deepatlas.models.vision import resnet
from deepatlas.models.vision.resnet import Depth
from deepatlas.nn.boxes import batched_nms, box_area, clip_boxes
from deepatlas.tasks.detection import Detection


@dataclass
class Config:
    in_channels: Size = 3
    """image channels (set from the data)"""
    image_size: Size = 64
    """input side length (set from the data)"""
    n_classes: Size = 4
    """object classes C (set from the data)"""
    depth: Depth = "resnet18"
    """ResNet preset of the backbone (an ImageNet preset: its stride-8 stage gives the grid)"""
    width: Positive = 0.5
    """width multiplier of the backbone's channels"""
    stage: Annotated[int, Range(0, 3)] = 1
    """backbone stage whose map is the grid: 0, 1, 2, 3 for strides 4, 8, 16, 32 (S = image_size / stride)"""
    boxes_per_cell: Size = 2
    """B: boxes predicted per grid cell"""
    head: Literal["conv", "fc"] = "conv"
    """conv: 3x3 convolutions then a 1x1 to the outputs per cell; fc: the paper's fully connected layers"""
    head_channels: Size = 128
    """channels of the conv head (or units of the fc head's hidden layer)"""
    lambda_coord: NonNegative = 5.0
    """λcoord: weight of the coordinate terms"""
    lambda_noobj: NonNegative = 0.5
    """λnoobj: weight of the confidence of boxes responsible for no object"""
    score_threshold: Probability = 0.02
    """inference: drop boxes whose class-specific score P(class|object)·confidence is below this"""
    nms_threshold: Probability = 0.5
    """inference: per-class NMS drops a box overlapping a better one of its class by more than this IoU"""
    max_detections: Size = 100
    """inference: boxes kept per image (best scores first), before NMS"""

    def __post_init__(self):
        stages = len(resnet.PRESETS[self.depth][1])
        if self.stage >= stages:
            raise DeepAtlasError(f"yolo: stage {self.stage} is past the last stage of {self.depth} (0-{stages - 1})")


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of corresponding boxes a (..., 4) and b (..., 4), (x1, y1, x2, y2) -> (...,); 0 for empty boxes."""
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)  # (..., 2)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a).clamp(min=0) + box_area(b).clamp(min=0) - inter
    return inter / union.clamp(min=1e-9)


class YOLO(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.backbone = resnet.backbone(cfg.in_channels, cfg.depth, cfg.width, stages=cfg.stage + 1)  # up to the grid's
        c = self.backbone.stage_channels[cfg.stage]
        self.grid = cfg.image_size // (4 * 2 ** cfg.stage)        # S (ImageNet stem: strides 4, 8, 16, 32)
        self.per_cell = cfg.boxes_per_cell * 5 + cfg.n_classes    # nb (x, y, √w, √h, confidence) + K
        hidden = cfg.head_channels
        if cfg.head == "conv":
            self.head = nn.Sequential(
                nn.Conv2d(c, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.LeakyReLU(0.1),
                nn.Conv2d(hidden, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.LeakyReLU(0.1),
                nn.Conv2d(hidden, self.per_cell, 1))              # linear outputs, as the paper's last layer
        else:  # the paper: flatten the last conv map, a hidden fully connected layer, then S·S·(5nb + K) outputs
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(c * self.grid ** 2, hidden), nn.LeakyReLU(0.1), nn.Dropout(0.5),
                nn.Linear(hidden, self.grid ** 2 * self.per_cell))

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) -> raw predictions (B, S, S, nb·5 + K), rows (y) then columns (x)."""
        features = self.backbone.feature_maps(images)[-1]                   # (B, c, S, S): stage `stage`'s map
        out = self.head(features)
        if self.cfg.head == "conv":
            return out.permute(0, 2, 3, 1)                                  # (B, nb·5 + K, S, S) -> (B, S, S, ·)
        return out.view(len(images), self.grid, self.grid, self.per_cell)  # (B, S·S·(nb·5 + K)) -> (B, S, S, ·)

    def split(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """raw (B, S, S, nb·5 + K) -> boxes (B, S, S, nb, 4) as (x, y, √w, √h), confidences (B, S, S, nb),
        class probabilities (B, S, S, K)."""
        nb = self.cfg.boxes_per_cell
        per_box = raw[..., : nb * 5].unflatten(-1, (nb, 5))                 # (B, S, S, nb, 5)
        return per_box[..., :4], per_box[..., 4], raw[..., nb * 5:]

    @staticmethod
    def decode(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Grid predictions (B, S, S, nb, 4) as (x, y, √w, √h) -> image boxes (B, S, S, nb, 4) (x1, y1, x2, y2)
        in pixels: centre = (column + x, row + y) · cell size, size = (√w)² · image size."""
        n_rows, n_cols = boxes.shape[1:3]
        height, width = image_size
        rows = torch.arange(n_rows, device=boxes.device, dtype=boxes.dtype)[:, None, None]  # (S, 1, 1)
        cols = torch.arange(n_cols, device=boxes.device, dtype=boxes.dtype)[None, :, None]  # (1, S, 1)
        cx = (cols + boxes[..., 0]) * (width / n_cols)                      # (B, S, S, nb)
        cy = (rows + boxes[..., 1]) * (height / n_rows)
        w = boxes[..., 2].clamp(min=0) ** 2 * width                         # a negative √w means an empty box
        h = boxes[..., 3].clamp(min=0) ** 2 * height
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)

    @staticmethod
    def encode(boxes: Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """Image boxes (M, 4) (x1, y1, x2, y2) -> the row (M,) and column (M,) of the cell holding each centre and
        the regression targets (M, 4) (x, y relative to that cell, √w, √h relative to the image)."""
        n_rows, n_cols = grid
        height, width = image_size
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        gx, gy = cx / width * n_cols, cy / height * n_rows                  # (M,) centres in cell units
        col = gx.floor().clamp(0, n_cols - 1)
        row = gy.floor().clamp(0, n_rows - 1)
        w, h = (boxes[:, 2] - boxes[:, 0]) / width, (boxes[:, 3] - boxes[:, 1]) / height
        target = torch.stack([gx - col, gy - row, w.clamp(min=0).sqrt(), h.clamp(min=0).sqrt()], dim=-1)  # (M, 4)
        return row.long(), col.long(), target

    @torch.no_grad()
    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """images (B, 3, H, W) -> per image {"boxes" (n, 4), "scores" (n,), "labels" (n,)}: class-specific scores
        P(class|object)·confidence, the best `max_detections` per image above `score_threshold`, then per-class
        NMS run once for the whole batch (the group of a box is image index × K + class)."""
        size = tuple(images.shape[-2:])
        boxes, confidence, probs = self.split(self(images))                 # (B,S,S,nb,4), (B,S,S,nb), (B,S,S,K)
        n_img, K = len(images), probs.shape[-1]
        boxes = clip_boxes(self.decode(boxes, size), size)                  # (B, S, S, nb, 4) pixels
        scores = probs.clamp(0, 1)[..., None, :] * confidence.clamp(0, 1)[..., :, None]  # (B, S, S, nb, K)
        scores = scores.flatten(1)                                          # (B, S·S·nb·K)
        top = scores.topk(min(self.cfg.max_detections, scores.shape[1]), dim=1)  # (B, k) best first
        box_index = top.indices // K                                        # (B, k) index into S·S·nb
        labels = top.indices % K                                            # (B, k)
        image = torch.arange(n_img, device=images.device)[:, None].expand_as(labels)  # (B, k)
        chosen = boxes.flatten(1, 3).gather(1, box_index[..., None].expand(-1, -1, 4))  # (B, k, 4)
        keep = top.values > self.cfg.score_threshold                        # (B, k)
        chosen, values, labels, image = chosen[keep], top.values[keep], labels[keep], image[keep]  # (D, ·)
        wide = (box_area(chosen) > 0)                                       # an empty box cannot be drawn
        chosen, values, labels, image = chosen[wide], values[wide], labels[wide], image[wide]
        kept = batched_nms(chosen, values, image * K + labels, self.cfg.nms_threshold)  # (D',) best first
        kept = kept[torch.argsort(image[kept], stable=True)]                # grouped by image, best first in each
        counts = torch.bincount(image[kept], minlength=n_img).tolist()
        return [{"boxes": b, "scores": s, "labels": c} for b, s, c in
                zip(chosen[kept].split(counts), values[kept].split(counts), labels[kept].split(counts))]


class YOLOLoss(Detection):
    """The sum-squared loss of eq. 3, summed over cells and boxes and averaged over the images of the batch."""

    def assign(self, boxes: Tensor, targets: list[dict], image_size: tuple[int, int]) -> dict[str, Tensor]:
        """Targets of a batch, for all images at once. boxes: the predicted (x, y, √w, √h) (B, S, S, nb, 4).

        Returns, per assigned object (M of them, one per cell at most): "image", "row", "col", "box" (the
        responsible predictor: the highest IoU of the cell's nb boxes with the object), "target" (M, 4) the
        regression target, "label" (M,), and "iou" (M,), the responsible box's IoU with the object: its
        confidence target."""
        S_rows, S_cols = boxes.shape[1:3]
        counts = torch.tensor([len(t["boxes"]) for t in targets], device=boxes.device)
        gt = torch.cat([t["boxes"] for t in targets]).to(boxes)             # (M', 4) every image's objects
        labels = torch.cat([t["labels"] for t in targets]).to(boxes.device).long()  # (M',)
        image = torch.repeat_interleave(torch.arange(len(targets), device=boxes.device), counts)  # (M',)
        row, col, target = YOLO.encode(gt, (S_rows, S_cols), image_size)    # (M',), (M',), (M', 4)
        # one object per cell: sort by area (largest first), then stably by cell; the first of each cell wins
        cell = (image * S_rows + row) * S_cols + col                        # (M',) a unique id per cell
        order = torch.argsort(box_area(gt), descending=True, stable=True)
        order = order[torch.argsort(cell[order], stable=True)]
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = cell[order][1:] != cell[order][:-1]
        won = order[first]                                                  # (M,) the objects assigned
        image, row, col, target, labels, gt = image[won], row[won], col[won], target[won], labels[won], gt[won]
        # the responsible predictor: the cell's box with the highest IoU with the object (no gradient)
        cell_boxes = YOLO.decode(boxes.detach(), image_size)[image, row, col]  # (M, nb, 4) in pixels
        iou = paired_iou(cell_boxes, gt[:, None, :])                        # (M, nb)
        best = iou.max(dim=1)                                               # values, indices (M,)
        return {"image": image, "row": row, "col": col, "box": best.indices, "target": target, "label": labels,
                "iou": best.values}

    def loss(self, images: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        cfg = self.model.cfg
        boxes, confidence, probs = self.model.split(self.model(images))     # (B,S,S,nb,4), (B,S,S,nb), (B,S,S,K)
        a = self.assign(boxes, targets, tuple(images.shape[-2:]))
        i, r, c, j = a["image"], a["row"], a["col"], a["box"]
        pred = boxes[i, r, c, j]                                            # (M, 4) the responsible boxes
        xy = ((pred[:, :2] - a["target"][:, :2]) ** 2).sum()
        wh = ((pred[:, 2:] - a["target"][:, 2:]) ** 2).sum()                # on √w, √h
        obj = torch.zeros_like(confidence, dtype=torch.bool)                # (B, S, S, nb): 1obj_ij
        obj[i, r, c, j] = True
        conf_obj = ((confidence[i, r, c, j] - a["iou"]) ** 2).sum()         # Ĉ = IoU(pred, truth)
        conf_noobj = (confidence[~obj] ** 2).sum()                          # Ĉ = 0 for every other box
        onehot = torch.nn.functional.one_hot(a["label"], probs.shape[-1]).to(probs)  # (M, K)
        cls = ((probs[i, r, c] - onehot) ** 2).sum()                        # once per cell holding an object
        n = len(images)
        parts = {"coord": cfg.lambda_coord * (xy + wh) / n, "object": conf_obj / n,
                 "no_object": cfg.lambda_noobj * conf_noobj / n, "class": cls / n}
        return {"loss": sum(parts.values()), **parts}


register(Entry(
    name="yolo", title="YOLO v1 (You Only Look Once)", family="detection", year=2016,
    paper=Paper("J. Redmon, S. Divvala, R. Girshick, A. Farhadi",
                "You Only Look Once: Unified, Real-Time Object Detection", "arXiv:1506.02640"),
    summary="One network pass regresses, on an S×S grid, B boxes with confidences and one class distribution "
            "per cell, trained with a single sum-squared loss; NMS removes duplicates. The first real-time "
            "one-stage detector.",
    when_to_use="Fast single-shot detection of moderately sized, well-separated objects; a simple, readable "
                "baseline for dense box regression; when speed matters more than the last points of mAP.",
    when_not="Small or crowded objects (one object per cell, coarse grid) or precise localization: anchor-based "
             "one-stage detectors (later YOLOs) or two-stage ones (Faster R-CNN) are more accurate.",
    relations=[
        Relation("uses", "resnet", "a ResNet backbone's grid of features carries the boxes"),
        Relation("alternative_to", "faster_rcnn", "one stage: boxes and classes from a grid in one pass, fast"),
    ],
    config=Config, build=YOLO, objective=YOLOLoss, task="detection",
    train=Train(epochs=20, batch_size=32, lr=3e-3, weight_decay=0.05, warmup=100, grad_clip=10.0),
    data=Data("shapes", flip=True),
    bar=Bar("map_50", 0.80, "max", 300),
))
