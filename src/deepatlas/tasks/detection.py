"""Detection and segmentation: their yardsticks (COCO mAP, mean IoU) and base objectives.

Detection is scored as the COCO benchmark scores it (T.-Y. Lin et al. 2014, "Microsoft COCO: Common
Objects in Context", arXiv:1405.0312; the reference code is pycocotools' `COCOeval`):

    for each class c and IoU threshold t in 0.50:0.05:0.95
        take every detection of class c (at most 100 per image, the top scores), highest score first;
        each matches the still-unmatched ground truth of class c in its own image with the highest
        IoU >= t (a true positive), or matches nothing (a false positive: a duplicate is one);
        precision p(r) and recall r after each detection, p made monotone: p_interp(r) = max_{r' >= r} p(r')
        AP_c(t) = 1/101 * sum_{r in 0:0.01:1} p_interp(r)     (0 past the highest recall reached)
    mAP = mean over t and over the classes that have ground truth; "map_50" at t = 0.5, "map_75" at 0.75.

Mask AP is the same with the IoU of binary masks (pixels) in place of the IoU of boxes.

Semantic segmentation is scored by the pixel confusion matrix C (C[i, j] = pixels of true class i
predicted as j): IoU_k = C[k, k] / (row_k + col_k - C[k, k]) = TP / (TP + FP + FN), mean IU over the
classes (J. Long, E. Shelhamer, T. Darrell 2015, "Fully Convolutional Networks for Semantic
Segmentation", arXiv:1411.4038, section 5), and pixel accuracy = trace(C) / sum(C).

Formats, per image. Predictions {"boxes": (m, 4) float xyxy pixels, "scores": (m,), "labels": (m,) long,
and for mask AP "masks": (m, H, W) float probabilities (kept where >= 0.5) or bool}; targets {"boxes":
(n, 4), "labels": (n,), and for mask AP "masks": (n, H, W) uint8 or bool}.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.data.detection import SHOW_THRESHOLD, box_masks
from deepatlas.nn.boxes import box_iou
from deepatlas.tasks import Objective, Task

# Bit-identical to pycocotools' thresholds (np.linspace): a recall of exactly 0.35 then falls on the same side
# of the 0.35 recall threshold as in the reference (np.linspace's 0.35 is 0.35000000000000003).
IOU_THRESHOLDS = torch.from_numpy(np.linspace(0.5, 0.95, 10))       # (T,) float64, 0.50:0.05:0.95
RECALL_POINTS = torch.from_numpy(np.linspace(0.0, 1.0, 101))        # (R,) float64, 0:0.01:1
MASK_THRESHOLD = 0.5                                                 # a float mask's pixels >= 0.5 are inside


def _binary(masks: Tensor) -> Tensor:
    """(m, H, W) probabilities, 0/1 integers or bools -> (m, H*W) float 0/1."""
    inside = masks if masks.dtype == torch.bool else masks >= MASK_THRESHOLD
    return inside.flatten(1).float()


def _mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of masks a (m, H, W) and b (n, H, W) -> (m, n) float64 (pixel counts, exact below 2^24)."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"predicted masks are {tuple(a.shape[1:])} but target masks are {tuple(b.shape[1:])}")
    a, b = _binary(a), _binary(b.to(a.device))                                       # (m, HW), (n, HW)
    inter = (a @ b.T).double()                                                       # (m, n) pixels in both
    union = a.sum(1).double()[:, None] + b.sum(1).double()[None, :] - inter          # (m, n)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter)).cpu()


def _greedy_match(iou: Tensor, det_labels: Tensor, gt_labels: Tensor, thresholds: Tensor) -> Tensor:
    """pycocotools' greedy assignment, for a batch of images and all thresholds at once.

    iou (B, m, n) float64, each image's detections in decreasing score order; det_labels (B, m) and gt_labels
    (B, n), padded with labels that match nothing (e.g. -1 and -2). Returns matched (B, T, m) bool: whether
    detection d is a true positive at threshold t. Detection d, in turn, takes the unmatched ground truth of
    its class with the highest IoU >= t (on a tie, the later one, as the reference does)."""
    B, m, n = iou.shape
    matched = torch.zeros(B, len(thresholds), m, dtype=torch.bool)
    if m == 0 or n == 0:
        return matched
    iou = torch.where(det_labels[:, :, None] == gt_labels[:, None, :], iou, -1.0)   # (B, m, n) other classes never
    taken = torch.zeros(B, len(thresholds), n, dtype=torch.bool)                     # (B, T, n) ground truth matched
    for d in range(m):  # sequential by nature: a match removes that ground truth from later detections
        candidate = iou[:, d, None, :]                                               # (B, 1, n)
        free = (candidate >= thresholds[None, :, None]) & ~taken                     # (B, T, n) candidates at each t
        best = n - 1 - torch.where(free, candidate, -1.0).flip(-1).argmax(-1)        # (B, T) last of the highest IoU
        hit = free.any(-1)                                                           # (B, T)
        taken |= F.one_hot(best, n).bool() & hit[..., None]
        matched[:, :, d] = hit
    return matched


def _pad(tensors: list[Tensor], value: float) -> Tensor:
    """Tensors (L_i, ...) -> (B, max L_i, ...), the missing rows filled with `value`."""
    return nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=value)


def _average_precision(scores: Tensor, matched: Tensor, n_gt: int) -> tuple[Tensor, Tensor]:
    """One class over the whole split: detections' scores (D,) in image order, matched (T, D), n_gt > 0.
    Returns (AP (T,), recall reached (T,))."""
    T = matched.shape[0]
    if scores.numel() == 0:
        return torch.zeros(T, dtype=torch.float64), torch.zeros(T, dtype=torch.float64)
    order = torch.sort(scores, descending=True, stable=True).indices                 # (D,) across images, ties in order
    tp = matched[:, order].double().cumsum(1)                                        # (T, D) true positives so far
    fp = (~matched[:, order]).double().cumsum(1)                                     # (T, D) false positives so far
    recall = tp / n_gt                                                               # (T, D) non-decreasing
    precision = tp / (tp + fp)                                                       # (T, D)
    envelope = precision.flip(1).cummax(1).values.flip(1)                            # (T, D) max over recall >= r
    points = RECALL_POINTS.expand(T, -1).contiguous()                                # (T, R)
    first = torch.searchsorted(recall.contiguous(), points, side="left")             # (T, R) first index with recall >= r
    reached = first < recall.shape[1]
    sampled = envelope.gather(1, first.clamp(max=recall.shape[1] - 1)) * reached     # (T, R) 0 past the last recall
    return sampled.mean(1), recall[:, -1]


class MeanAveragePrecision:
    """COCO-style box (and mask) mAP, accumulated over batches.

    `update(predictions, targets)` matches the detections of all the batch's images at once (each image's
    greedy assignment depends only on its own; the batch is padded), keeping per detection its score, class
    and (T,) true-positive flags;
    `compute()` ranks each class's detections over the whole split and returns floats:
    {"map", "map_50", "map_75", "mar_100"} for iou_type "bbox", the same prefixed "mask_" for "segm"
    (both for ("bbox", "segm")). "mar_100" is the recall reached, averaged like the AP. With no ground
    truth at all, every value is -1 (as pycocotools).

    `max_detections` keeps each image's top-scoring detections. pycocotools caps per image *and class*;
    the two agree whenever a model outputs at most `max_detections` per image, as detectors do.
    Crowd regions and area ranges are not modelled: this is COCOeval's "all" area at 100 detections.
    """

    def __init__(self, iou_type: str | Sequence[str] = "bbox", max_detections: int = 100):
        self.iou_types = (iou_type,) if isinstance(iou_type, str) else tuple(iou_type)
        unknown = set(self.iou_types) - {"bbox", "segm"}
        if unknown or not self.iou_types:
            raise ValueError(f"iou_type must be 'bbox', 'segm' or both, got {iou_type!r}")
        self.max_detections = max_detections
        self.reset()

    def reset(self) -> None:
        self._scores: list[Tensor] = []                                              # per image (m,)
        self._labels: list[Tensor] = []                                              # per image (m,)
        self._matched: dict[str, list[Tensor]] = {kind: [] for kind in self.iou_types}  # per image (T, m)
        self._gt_labels: list[Tensor] = []                                           # per image (n,)

    @torch.no_grad()
    def update(self, predictions: list[dict], targets: list[dict]) -> None:
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        ious: dict[str, list[Tensor]] = {kind: [] for kind in self.iou_types}
        first = len(self._labels)
        for pred, target in zip(predictions, targets):  # each image's top detections and its IoU matrices
            scores = pred["scores"].detach().double().cpu()
            keep = torch.sort(scores, descending=True, stable=True).indices[: self.max_detections]  # (m,)
            self._scores.append(scores[keep])
            self._labels.append(pred["labels"].detach().cpu().long()[keep])
            self._gt_labels.append(target["labels"].detach().cpu().long())
            for kind in self.iou_types:
                if kind == "bbox":
                    iou = box_iou(pred["boxes"].detach().cpu()[keep].double(), target["boxes"].detach().cpu().double())
                else:
                    if "masks" not in pred or "masks" not in target:
                        raise KeyError("mask AP needs 'masks' in both predictions and targets")
                    iou = _mask_iou(pred["masks"].detach()[keep.to(pred["masks"].device)], target["masks"].detach())
                ious[kind].append(iou)
        if not predictions:
            return
        counts = [len(labels) for labels in self._labels[first:]]
        labels, gt_labels = _pad(self._labels[first:], -1), _pad(self._gt_labels[first:], -2)  # (B, m), (B, n)
        n = gt_labels.shape[1]
        for kind, per_image in ious.items():  # the greedy matching of the whole batch at once
            iou = _pad([F.pad(i, (0, n - i.shape[1]), value=-1.0) for i in per_image], -1.0)  # (B, m, n)
            matched = _greedy_match(iou, labels, gt_labels, IOU_THRESHOLDS)          # (B, T, m)
            self._matched[kind].extend(flags[:, :count] for flags, count in zip(matched, counts))

    def compute(self) -> dict[str, float]:
        scores = torch.cat(self._scores) if self._scores else torch.zeros(0, dtype=torch.float64)
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        gt_labels = torch.cat(self._gt_labels) if self._gt_labels else torch.zeros(0, dtype=torch.long)
        classes, n_gt = gt_labels.unique(return_counts=True)                          # classes with ground truth
        out = {}
        for kind in self.iou_types:
            prefix = "" if kind == "bbox" else "mask_"
            if len(classes) == 0:
                out.update({f"{prefix}{k}": -1.0 for k in ("map", "map_50", "map_75", "mar_100")})
                continue
            matched = torch.cat(self._matched[kind], 1)                                # (T, D)
            ap, recall = zip(*(_average_precision(scores[labels == c], matched[:, labels == c], int(n))
                               for c, n in zip(classes.tolist(), n_gt.tolist())))
            ap, recall = torch.stack(ap), torch.stack(recall)                          # (K, T) each
            out.update({f"{prefix}map": ap.mean().item(), f"{prefix}map_50": ap[:, 0].mean().item(),
                        f"{prefix}map_75": ap[:, 5].mean().item(), f"{prefix}mar_100": recall.mean().item()})
        return out


def class_iou(confusion: Tensor) -> Tensor:
    """IoU of each class, TP / (TP + FP + FN), from a confusion matrix (K, K) with rows = truth and
    columns = prediction -> (K,) float64; NaN for a class absent from both truth and prediction."""
    confusion = confusion.double()
    tp = confusion.diagonal()                                                        # (K,)
    union = confusion.sum(0) + confusion.sum(1) - tp                                 # (K,) TP + FP + FN
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(confusion: Tensor) -> Tensor:
    """Mean IU over the classes present in the truth or the prediction; every class counts, background
    included (as FCN reports it). A scalar float64 tensor."""
    return class_iou(confusion).nanmean()


class ConfusionMatrix:
    """Pixel confusion matrix (K, K) accumulated over batches with one bincount per batch.

    `update(pred_labels (B, H, W), target (B, H, W))`: pixels whose target is outside [0, K) (e.g. 255,
    the "void" label of PASCAL VOC) are ignored. `compute()` -> {"miou": mean IU over the classes present
    in target or prediction, background (class 0) included, "pixel_accuracy"}."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.matrix: Tensor | None = None

    @torch.no_grad()
    def update(self, pred_labels: Tensor, target: Tensor) -> None:
        K = self.num_classes
        pred_labels, target = pred_labels.flatten().long(), target.flatten().long()  # (B*H*W,)
        valid = (target >= 0) & (target < K)
        index = target[valid] * K + pred_labels[valid].clamp(0, K - 1)             # row = truth, column = prediction
        counts = torch.bincount(index, minlength=K * K).view(K, K)                  # (K, K)
        self.matrix = counts if self.matrix is None else self.matrix + counts.to(self.matrix.device)

    def compute(self) -> dict[str, float]:
        if self.matrix is None:
            return {"miou": float("nan"), "pixel_accuracy": float("nan")}
        total = self.matrix.sum().clamp(min=1)
        return {"miou": mean_iou(self.matrix).item(), "pixel_accuracy": (self.matrix.trace() / total).item()}


def painted(found: list[dict], size: tuple[int, int], min_score: float = 0.0) -> Tensor:
    """Instance masks as semantic label maps (B, H, W): 0 background, class + 1 where a mask covers the pixel, the
    highest-scoring mask's where several do, masks of detections scoring below `min_score` left out (targets have no
    scores: their visible masks never overlap). All images at once, their masks padded to the most any has."""
    H, W = size
    masks = _pad([_binary(f["masks"]).view(-1, H, W).cpu() for f in found], 0.0).bool()        # (B, m, H, W)
    scores = _pad([f.get("scores", torch.ones(len(f["labels"]))).detach().float().cpu() for f in found], -1.0)
    labels = _pad([f["labels"].detach().cpu().long() for f in found], -1)                        # (B, m)
    if masks.shape[1] == 0:
        return torch.zeros(len(found), H, W, dtype=torch.long)
    inside = masks & (scores >= min_score)[:, :, None, None]                                     # (B, m, H, W)
    top = torch.where(inside, scores[:, :, None, None], -2.0).argmax(1)                          # (B, H, W)
    label = labels.gather(1, top.flatten(1)).view_as(top) + 1
    return torch.where(inside.any(1), label, 0)


class Detection(Objective):
    """Base objective of a detector; batches are (images (B, 3, H, W), targets: list of B dicts).

    A subclass (the detector's own objective, in its model file) writes
    `loss(images, targets) -> {"loss": total, ...parts}`, the training loss of its architecture (YOLO's
    sum-squared terms, the RPN and head losses of Faster R-CNN, DETR's matched set loss); validation logs
    that loss too. The wrapped model must have `detect(images) -> list of B prediction dicts`
    ({"boxes", "scores", "labels"} and "masks" for instance segmentation, see the module docstring),
    post-processing included (score threshold, NMS where the architecture uses it). Validation feeds
    those predictions to a MeanAveragePrecision, whose whole-split values the engine adds at the end of
    every evaluation (through `reset_metrics` / `compute_metrics`). A detector with masks is also scored as a
    semantic segmenter would be on the same images: its masks scoring at least SHOW_THRESHOLD `painted` into
    one class map, against the targets' masks painted the same way ("miou", "pixel_accuracy")."""

    metric = "map_50"
    export_note = "the network's raw outputs, before box decoding, the score threshold and NMS"

    def __init__(self, model: nn.Module, iou_type: str | Sequence[str] = "bbox", max_detections: int = 100):
        super().__init__(model)
        self.average_precision = MeanAveragePrecision(iou_type, max_detections)
        self.confusion: ConfusionMatrix | None = None

    def loss(self, images: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        raise NotImplementedError("a detector's objective implements loss(images, targets) -> {'loss': ...}")

    def measure(self, batch) -> dict[str, Tensor]:
        images, targets = batch
        return self.loss(images, targets)

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        images, targets = batch
        logs = self.measure(batch)
        found = self.model.detect(images)
        self.average_precision.update(found, targets)
        if "segm" in self.average_precision.iou_types and self.data_spec.get("classes"):
            if self.confusion is None:
                self.confusion = ConfusionMatrix(len(self.data_spec["classes"]) + 1)  # background first
            size = images.shape[-2:]
            self.confusion.update(painted(found, size, SHOW_THRESHOLD), painted(targets, size))
        return logs

    @torch.no_grad()
    def predict(self, images: Tensor) -> list[dict]:
        return self.model.detect(images)

    def reset_metrics(self) -> None:
        self.average_precision.reset()
        self.confusion = None

    def compute_metrics(self) -> dict[str, float]:
        return {**self.average_precision.compute(), **(self.confusion.compute() if self.confusion else {})}


class Segmentation(Objective):
    """Per-pixel cross-entropy for a model images (B, C, H, W) -> logits (B, K, H, W); batches are
    (images, target (B, H, W) long). Target pixels equal to `ignore_index` count in neither the loss nor
    the metrics. Logs {"loss", "pixel_accuracy"} per batch; the engine adds the split's "miou" and
    "pixel_accuracy" from the accumulated confusion matrix (background included in the mean)."""

    metric = "miou"

    def __init__(self, model: nn.Module, num_classes: int | None = None, ignore_index: int = 255):
        super().__init__(model)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion: ConfusionMatrix | None = None

    def measure(self, batch, logits: Tensor | None = None) -> dict[str, Tensor]:
        images, target = batch
        logits = self.model(images) if logits is None else logits                    # (B, K, H, W)
        loss = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        valid = target != self.ignore_index                                          # (B, H, W)
        correct = ((logits.argmax(1) == target) & valid).sum()
        return {"loss": loss, "pixel_accuracy": correct / valid.sum().clamp(min=1)}

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        images, target = batch
        logits = self.model(images)                                                  # (B, K, H, W)
        if self.confusion is None:
            self.confusion = ConfusionMatrix(self.num_classes or logits.shape[1])
        self.confusion.update(logits.argmax(1), target)
        return self.measure(batch, logits)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Class of each pixel (B, H, W)."""
        return self.model(images).argmax(1)

    @torch.no_grad()
    def probabilities(self, images: Tensor) -> Tensor:
        """Each pixel's class probabilities (B, K, H, W), background first (what `predict`'s threshold reads)."""
        return self.model(images).softmax(1)

    def reset_metrics(self) -> None:
        if self.confusion is not None:
            self.confusion.reset()

    def compute_metrics(self) -> dict[str, float]:
        return self.confusion.compute() if self.confusion is not None else {}


class DenseTask(Task):
    """Detection and segmentation: their trivial predictors are scored by this module's metrics."""

    def trivial(self, spec: dict, train, examples):
        return TRIVIAL[self.name](spec, train, examples)


def detection_baseline(spec: dict, train, examples) -> tuple[str, dict[str, float]]:
    """The trivial detector: on every image one box, the mean of the training split's boxes (x1, y1, x2, y2),
    labelled with its most frequent class, score 1 (its filled box as mask); scored on `examples` by the same
    COCO mAP as the models: {"map", "map_50", "map_75", "mar_100"} and their "mask_" twins when the examples have
    masks. `train` None: the examples' own boxes give the mean and the class."""
    targets = examples.targets if hasattr(examples, "targets") else [examples[i][1] for i in range(len(examples))]
    fitted = train if train is not None else examples
    fitted = fitted.targets if hasattr(fitted, "targets") else [fitted[i][1] for i in range(len(fitted))]
    boxes, labels = torch.cat([t["boxes"] for t in fitted]), torch.cat([t["labels"] for t in fitted])
    where = "training split's" if train is not None else "examples' own"
    with_masks = all("masks" in t for t in targets)
    metric = MeanAveragePrecision(("bbox", "segm") if with_masks else "bbox")
    if len(labels) == 0:  # nothing to place a box at: the detector that finds nothing
        nothing = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long),
                   "masks": torch.zeros(0, spec["image_size"], spec["image_size"], dtype=torch.bool)}
        metric.update([nothing] * len(targets), targets)
        return f"no detections (the {where} images have no objects)", metric.compute()
    box = boxes.mean(0, keepdim=True)  # (1, 4)
    label = torch.bincount(labels, minlength=len(spec["classes"])).argmax()
    guess = {"boxes": box, "scores": torch.ones(1), "labels": label[None],
             "masks": box_masks(box, spec["image_size"]).bool()}
    for start in range(0, len(targets), 256):  # the same guess for every image, matched a chunk at a time
        chunk = targets[start:start + 256]
        metric.update([guess] * len(chunk), chunk)
    shown = ", ".join(f"{v:.0f}" for v in box[0].tolist())
    return (f"one box per image at the {where} mean box ({shown}), labelled "
            f"{spec['classes'][int(label)]!r}, the most frequent class", metric.compute())


def segmentation_baseline(spec: dict, train, examples) -> tuple[str, dict[str, float]]:
    """The trivial segmenter: every pixel gets the training split's most frequent class (the examples' own when
    `train` is None); scored on `examples` as the models are: {"miou", "pixel_accuracy"} (padding ignored)."""
    K = len(spec["classes"])
    truth = examples.tensors[1]
    counted = (train if train is not None else examples).tensors[1].flatten()
    counted = counted[(counted >= 0) & (counted < K)]  # padding (IGNORE) is no class
    majority = int(torch.bincount(counted, minlength=K).argmax())
    confusion = ConfusionMatrix(K)
    confusion.update(torch.full_like(truth, majority), truth)
    where = "the training split's" if train is not None else "these examples'"
    return f"every pixel {spec['classes'][majority]!r}, {where} most frequent class", confusion.compute()


TRIVIAL = {"detection": detection_baseline, "segmentation": segmentation_baseline}

TASKS = [DenseTask("detection", "deepatlas.data.detection", draws=True, options=("image_size", "crop_pad", "flip")),
         DenseTask("segmentation", "deepatlas.data.segmentation", draws=True, options=("image_size", "flip"))]
