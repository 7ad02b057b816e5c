"""Box operators shared by the detectors and instance segmenters (YOLO, Faster R-CNN, DETR, Mask R-CNN).

Plain, vectorized PyTorch; device and dtype come from the inputs.

- IoU, and the generalized IoU of Rezatofighi, Tsoi, Gwak, Sadeghian, Reid & Savarese, "Generalized
  Intersection over Union: A Metric and A Loss for Bounding Box Regression", CVPR 2019, arXiv:1902.09630:
  GIoU(A, B) = IoU(A, B) - |C \\ (A ∪ B)| / |C|, with C the smallest box enclosing A and B; it lies in (-1, 1].
- Greedy non-maximum suppression, and per-class NMS by offsetting each class's boxes apart.
- The R-CNN box parameterization of Girshick, Donahue, Darrell & Malik, "Rich feature hierarchies for accurate
  object detection and semantic segmentation", CVPR 2014, arXiv:1311.2524, used against anchors by Ren, He,
  Girshick & Sun, "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks", NeurIPS
  2015, arXiv:1506.01497: dx = (x - xa)/wa, dy = (y - ya)/ha, dw = log(w/wa), dh = log(h/ha); and the
  anchors themselves (every feature cell, every size and aspect ratio).
- RoIPool of Girshick, "Fast R-CNN", ICCV 2015, arXiv:1504.08083 (max over quantized bins), and RoIAlign of
  He, Gkioxari, Dollár & Girshick, "Mask R-CNN", ICCV 2017, arXiv:1703.06870 (no quantization: each bin
  averages bilinearly interpolated samples).

Boxes are float tensors (..., 4) of absolute pixel corners (x1, y1, x2, y2) unless a function says otherwise;
widths are x2 - x1 (no "+1"). Shape legend: N, M boxes; R regions of interest; A anchors per cell;
B batch, C channels, H W feature height and width, h w pooled output height and width, s samples per bin axis.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Faster R-CNN's cap on dw, dh before exp: a box may grow at most 1000/16 times its anchor per side.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


# ---- formats, areas, overlaps ----------------------------------------------------------------------------

def box_area(boxes: Tensor) -> Tensor:
    """Area of (x1, y1, x2, y2) boxes: (..., 4) -> (...,). Degenerate boxes (x2 < x1) give a negative area."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(centre x, centre y, width, height) -> (x1, y1, x2, y2): (..., 4) -> (..., 4)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> (centre x, centre y, width, height): (..., 4) -> (..., 4)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip (x1, y1, x2, y2) boxes (..., 4) to an image of size (height, width); returns (..., 4)."""
    height, width = size
    x = boxes[..., 0::2].clamp(0, width)   # (..., 2): x1, x2
    y = boxes[..., 1::2].clamp(0, height)  # (..., 2): y1, y2
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def _intersection_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas of a (N, 4) and b (M, 4): two (N, M) tensors."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])      # (N, M, 2)
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)                   # (N, M, 2), 0 where disjoint
    inter = wh[..., 0] * wh[..., 1]                               # (N, M)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter   # (N, M)
    return inter, union


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise intersection over union |A ∩ B| / |A ∪ B| of a (N, 4) and b (M, 4): (N, M)."""
    inter, union = _intersection_union(a, b)
    return inter / union


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019) of a (N, 4) and b (M, 4): (N, M) in (-1, 1].

    GIoU = IoU - (|C| - |A ∪ B|) / |C|, with C the smallest axis-aligned box enclosing A and B. Unlike IoU it
    still tells disjoint boxes apart (it decreases toward -1 as they move apart), so 1 - GIoU is a usable loss.
    """
    inter, union = _intersection_union(a, b)
    iou = inter / union
    top_left = torch.minimum(a[:, None, :2], b[None, :, :2])      # (N, M, 2): corner of the enclosing box C
    bottom_right = torch.maximum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)                   # (N, M, 2)
    enclosing = wh[..., 0] * wh[..., 1]                           # (N, M): |C|
    return iou - (enclosing - union) / enclosing


# ---- non-maximum suppression -----------------------------------------------------------------------------

def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: boxes (N, 4), scores (N,) -> indices (K,) of the kept boxes (int64),
    in decreasing score order.

    Repeatedly keep the highest-scoring remaining box and drop every remaining box whose IoU with it is
    greater than iou_threshold. The greedy choice is sequential, so the IoU matrix is computed once and the
    loop runs once per *kept* box, each step dropping all the boxes it suppresses at once.
    """
    order = torch.argsort(scores, descending=True, stable=True)  # (N,) candidates, best first
    iou = box_iou(boxes, boxes)                                  # (N, N), computed once
    keep = []
    remaining = order
    while remaining.numel() > 0:
        best, rest = remaining[0], remaining[1:]
        keep.append(best)
        remaining = rest[iou[best, rest] <= iou_threshold]       # survivors keep their score order
    if not keep:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    return torch.stack(keep)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Per-class NMS: boxes (N, 4), scores (N,), labels (N,) int -> kept indices (K,), decreasing score.

    Boxes of different labels never suppress each other: each class's boxes are shifted by
    label * (extent of all boxes + 1) along both axes, so boxes of different classes cannot overlap, and one
    NMS runs over all of them.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    extent = boxes.max() - boxes.min() + 1                       # wider than any box and any gap between two
    shifted = boxes + (labels.to(boxes.dtype) * extent)[:, None]  # (N, 4): class k lives in its own square
    return nms(shifted, scores, iou_threshold)


# ---- box coding against anchors / proposals --------------------------------------------------------------


def nms_per_image(boxes: Tensor, valid: Tensor, iou_threshold: float, labels: Tensor | None = None) -> Tensor:
    """Greedy NMS in every image at once: boxes (B, k, 4), each row sorted by decreasing score, valid (B, k) bool
    -> kept (B, k) bool; with labels (B, k), per class. The result of batched_nms grouped by image (and
    class), without its (B k)^2 IoU matrix: only each image's own k x k. Box j is kept iff no kept higher-scoring
    box of its image overlaps it above the threshold. Iterating keep <- valid and not any_{i<j}(keep_i and
    overlap_ij) from keep = valid settles on exactly that greedy answer (after t rounds the first t boxes are
    final, and the fixed point is unique), usually in a few rounds instead of one step per kept box."""
    overlap = torch.vmap(box_iou)(boxes, boxes) > iou_threshold                     # (B, k, k)
    if labels is not None:
        overlap &= labels[:, :, None] == labels[:, None, :]                           # classes never suppress each other
    overlap = overlap.triu(1) & valid[:, :, None]                                     # only an earlier valid box suppresses
    keep = valid
    while True:
        kept = valid & ~(overlap & keep[:, :, None]).any(1)                           # (B, k)
        if torch.equal(kept, keep):
            return keep
        keep = kept

def encode_boxes(boxes: Tensor, anchors: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> Tensor:
    """Regression targets of boxes (..., 4) against anchors (..., 4) (broadcast), both (x1, y1, x2, y2):
    deltas (..., 4) = (wx (x - xa)/wa, wy (y - ya)/ha, ww log(w/wa), wh log(h/ha)), (x, y) box centres."""
    wx, wy, ww, wh = weights
    x, y, w, h = box_xyxy_to_cxcywh(boxes).unbind(-1)
    xa, ya, wa, ha = box_xyxy_to_cxcywh(anchors).unbind(-1)
    return torch.stack([wx * (x - xa) / wa, wy * (y - ya) / ha,
                        ww * torch.log(w / wa), wh * torch.log(h / ha)], dim=-1)


def decode_boxes(deltas: Tensor, anchors: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> Tensor:
    """Inverse of encode_boxes: deltas (..., 4) applied to anchors (..., 4) (broadcast) -> boxes (..., 4)
    (x1, y1, x2, y2). dw, dh are clamped at log(1000/16) before exp so a wild prediction cannot overflow."""
    wx, wy, ww, wh = weights
    xa, ya, wa, ha = box_xyxy_to_cxcywh(anchors).unbind(-1)
    dx, dy, dw, dh = deltas.unbind(-1)
    dw = (dw / ww).clamp(max=BBOX_XFORM_CLIP)
    dh = (dh / wh).clamp(max=BBOX_XFORM_CLIP)
    x = dx / wx * wa + xa             # x = xa + wa dx
    y = dy / wy * ha + ya             # y = ya + ha dy
    w = torch.exp(dw) * wa            # w = wa exp(dw)
    h = torch.exp(dh) * ha            # h = ha exp(dh)
    return box_cxcywh_to_xyxy(torch.stack([x, y, w, h], dim=-1))


def make_anchors(feature_size: tuple[int, int], stride: float, sizes: Sequence[float], ratios: Sequence[float],
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Anchors of a (H', W') feature map whose cells are `stride` input pixels apart: (H' W' A, 4), A =
    len(sizes) * len(ratios), (x1, y1, x2, y2) in input pixels.

    Cell (i, j) is centred at ((j + 0.5) stride, (i + 0.5) stride); its anchors have area size^2 and aspect
    ratio h / w = ratio (w = size / sqrt(ratio), h = size sqrt(ratio)). Ordered by cell (row-major), then by
    size, then by ratio: anchor a of cell (i, j) is row (i W' + j) A + a, matching a head's (H', W', A) output.
    """
    rows, cols = feature_size
    size = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratio = torch.as_tensor(ratios, dtype=dtype, device=device)
    w = (size[:, None] / ratio.sqrt()[None, :]).reshape(-1)        # (A,) sizes outer, ratios inner
    h = (size[:, None] * ratio.sqrt()[None, :]).reshape(-1)        # (A,)
    base = torch.stack([-w, -h, w, h], dim=-1) / 2                 # (A, 4) centred on the origin
    cy = (torch.arange(rows, dtype=dtype, device=device) + 0.5) * stride  # (H',)
    cx = (torch.arange(cols, dtype=dtype, device=device) + 0.5) * stride  # (W',)
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")                 # (H', W') each
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)  # (H' W', 1, 4)
    return (centres + base[None]).reshape(-1, 4)                   # (H' W' A, 4)


# ---- pooling features inside regions of interest ---------------------------------------------------------

def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _bilinear_axis(coord: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """One axis of RoIAlign's bilinear interpolation, as in the reference definition.

    coord (...,): sample coordinates along an axis of `length` pixels (pixel k's centre at k).
    Returns the two neighbouring indices (low, high) (..., 2) int64 and their weights (..., 2), the weights
    zero where coord lies outside [-1, length] (such a sample contributes 0); within it, coordinates below 0
    are read as 0 and those past length - 1 as length - 1 (edge replication).
    """
    inside = (coord >= -1.0) & (coord <= length)                   # (...,)
    c = coord.clamp(min=0)
    low = c.floor().clamp(max=length - 1)                          # (...,) float, in [0, length - 1]
    at_edge = low >= length - 1
    c = torch.where(at_edge, low, c)                               # past the last pixel: read the last pixel
    high = torch.where(at_edge, low, low + 1)
    frac = c - low                                                 # weight of the high neighbour
    index = torch.stack([low, high], dim=-1).long()               # (..., 2)
    weight = torch.stack([1 - frac, frac], dim=-1) * inside[..., None].to(coord.dtype)  # (..., 2)
    return index, weight


def roi_align(features: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = 2, aligned: bool = True) -> Tensor:
    """RoIAlign (He et al. 2017): features (B, C, H, W), rois (R, 5) rows [batch_index, x1, y1, x2, y2] in
    input-image pixels -> pooled features (R, C, h, w).

    Each RoI is scaled onto the feature map (spatial_scale = feature size / image size) without rounding
    (aligned=True also shifts it by -0.5 pixel so that pixel k's centre sits at coordinate k), split into h x w
    equal bins without rounding, and each bin averages s x s (s = sampling_ratio) regularly spaced bilinear
    samples, at (bin start + (i + 0.5) / s * bin size). Samples outside [-1, H] x [-1, W] count as 0.
    Differentiable w.r.t. features (each output is a fixed weighted sum of feature vectors); first-order
    gradients only (torch's embedding_bag has no double backward).
    """
    if sampling_ratio < 1:
        raise ValueError(f"roi_align needs sampling_ratio >= 1 (got {sampling_ratio}); the adaptive "
                         "per-RoI sample count of the reference is not supported")
    n_batch, n_chan, height, width = features.shape
    h, w = _pair(output_size)
    s = sampling_ratio
    n_roi = rois.shape[0]
    rois = rois.to(features.dtype)
    batch = rois[:, 0].long()                                      # (R,)
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - offset).unbind(-1)  # (R,) each, feature-map coordinates
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:                                                # the original Mask R-CNN code forced size >= 1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / w, roi_h / h                            # (R,)

    # sample positions in units of bins: bin p, sample i -> p + (i + 0.5) / s
    sample = (torch.arange(s, dtype=features.dtype, device=features.device) + 0.5) / s  # (s,)
    grid_y = (torch.arange(h, dtype=features.dtype, device=features.device)[:, None] + sample).reshape(-1)  # (h s,)
    grid_x = (torch.arange(w, dtype=features.dtype, device=features.device)[:, None] + sample).reshape(-1)  # (w s,)
    ys = y1[:, None] + grid_y[None, :] * bin_h[:, None]           # (R, h s)
    xs = x1[:, None] + grid_x[None, :] * bin_w[:, None]           # (R, w s)
    iy, wy = _bilinear_axis(ys, height)                     # (R, h s, 2) rows above/below and weights
    ix, wx = _bilinear_axis(xs, width)                      # (R, w s, 2) columns left/right and weights

    # the 4 bilinear corners of every sample, as rows of the flattened (B H W, C) feature table
    index = (batch[:, None, None, None, None] * (height * width)
             + iy[:, :, None, :, None] * width + ix[:, None, :, None, :])      # (R, h s, w s, 2, 2)
    weight = wy[:, :, None, :, None] * wx[:, None, :, None, :] / (s * s)      # (R, h s, w s, 2, 2), / s^2: mean
    # group by output bin: (R, h, s, w, s, 2, 2) -> (R, h, w, s, s, 2, 2) -> one bag of 4 s^2 terms per bin
    index = index.view(n_roi, h, s, w, s, 2, 2).permute(0, 1, 3, 2, 4, 5, 6).reshape(n_roi * h * w, 4 * s * s)
    weight = weight.view(n_roi, h, s, w, s, 2, 2).permute(0, 1, 3, 2, 4, 5, 6).reshape(n_roi * h * w, 4 * s * s)
    table = features.permute(0, 2, 3, 1).reshape(n_batch * height * width, n_chan)  # (B H W, C)
    # each bin = sum_k weight_k * table[index_k]: an embedding bag, so the (R, h, w, 4 s^2, C) gather is
    # never materialized; its backward scatters the weights back onto the feature map
    pooled = F.embedding_bag(index, table, mode="sum", per_sample_weights=weight)  # (R h w, C)
    return pooled.view(n_roi, h, w, n_chan).permute(0, 3, 1, 2)   # (R, C, h, w)


def _round_half_away(x: Tensor) -> Tensor:
    """C's round(): halves go away from zero (torch.round sends them to the even neighbour)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def roi_pool(features: Tensor, rois: Tensor, output_size: int | tuple[int, int],
             spatial_scale: float = 1.0) -> Tensor:
    """RoIPool (Girshick 2015): features (B, C, H, W), rois (R, 5) [batch_index, x1, y1, x2, y2] in input
    pixels -> (R, C, h, w), the max of each of h x w quantized bins (0 for an empty bin).

    The RoI corners are rounded to feature cells (start = round(x1 * scale), end = round(x2 * scale), size =
    max(end - start + 1, 1)); bin p of an axis covers cells [start + floor(p size / h), start + ceil((p + 1)
    size / h)) clipped to the map. Vectorized as a mask-and-max over the RoI's whole feature map, which
    costs R C H W w memory: meant for the small maps of this project.
    """
    height, width = features.shape[-2:]
    h, w = _pair(output_size)
    batch = rois[:, 0].long()                                       # (R,)
    x1, y1, x2, y2 = _round_half_away(rois[:, 1:].to(features.dtype) * spatial_scale).unbind(-1)  # (R,) each
    roi_w = (x2 - x1 + 1).clamp(min=1)
    roi_h = (y2 - y1 + 1).clamp(min=1)

    def bin_masks(start: Tensor, size: Tensor, n_bins: int, length: int) -> Tensor:
        """(R, n_bins, length) bool: which cells of the axis fall in each bin."""
        p = torch.arange(n_bins, dtype=features.dtype, device=features.device)[None]  # (1, n_bins)
        bin_size = (size / n_bins)[:, None]                                          # (R, 1)
        lo = (torch.floor(p * bin_size) + start[:, None]).clamp(0, length)          # (R, n_bins)
        hi = (torch.ceil((p + 1) * bin_size) + start[:, None]).clamp(0, length)     # (R, n_bins)
        cell = torch.arange(length, dtype=features.dtype, device=features.device)    # (length,)
        return (cell >= lo[..., None]) & (cell < hi[..., None])

    rows = bin_masks(y1, roi_h, h, height)                          # (R, h, H)
    cols = bin_masks(x1, roi_w, w, width)                           # (R, w, W)
    fmap = features[batch]                                          # (R, C, H, W)
    lowest = torch.tensor(torch.finfo(features.dtype).min, dtype=features.dtype, device=features.device)
    # max over each bin's columns, then over its rows (cells outside the bin read as the lowest value)
    by_col = torch.where(cols[:, None, None, :, :], fmap[:, :, :, None, :], lowest).amax(dim=-1)  # (R, C, H, w)
    by_bin = torch.where(rows[:, None, :, :, None], by_col[:, :, None, :, :], lowest).amax(dim=3)  # (R, C, h, w)
    empty = ~(rows.any(-1)[:, :, None] & cols.any(-1)[:, None, :])  # (R, h, w): bin clipped away entirely
    return by_bin.masked_fill(empty[:, None], 0.0)
