"""Mask R-CNN: Faster R-CNN with a third, fully convolutional branch that predicts an instance mask per RoI.

K. He, G. Gkioxari, P. Dollár, R. Girshick, 2017. "Mask R-CNN." ICCV 2017, arXiv:1703.06870.

Faster R-CNN's two stages are kept (faster_rcnn.py, imported, not copied): the RPN proposes boxes, RoIAlign
pools each one from the shared feature map, a head classifies and refines it. In parallel with that box head
a small FCN reads a 14x14 RoIAlign feature of each foreground RoI and predicts K binary masks of 28x28, one per
class, so that classes do not compete for pixels; only the ground-truth class's mask is trained:

    L = L_cls + L_box + L_mask,   L_mask = mean over the 28x28 pixels of BCE(sigmoid(m_k), t),  k = class of the RoI

The target t is the RoI's matched ground-truth mask cropped to the RoI and resized to 28x28 (RoIAlign on the
mask, binarized at 0.5). RoIAlign (bilinear samples, no rounding of the RoI) is what makes these pixel-accurate
masks possible; the paper shows that RoIPool's quantization costs mask AP. At inference the box branch runs
first (scores, NMS), then the mask head on the final boxes only; each detection keeps its predicted class's
mask, pasted back into the image inside its box. Here L = L_RPN + L_cls + L_box + L_mask (Faster R-CNN's
training, as in the paper, which adds L_mask to its multi-task loss).
Shapes: B images, S image side, R regions (rows [image index, x1, y1, x2, y2]), F foreground RoIs, D detections,
G ground truths in the batch, K object classes, M = 28 mask side.

Backbone and box branch: faster_rcnn's (ResNet-18 at half width, one stride-4 map: the paper's "C4"-like
single-map variant rather than FPN). The mask head is the paper's FPN-style head (3x3 convs, a 2x transposed
conv, 1x1 to K), narrower and shallower by default to fit a 2-core CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import Bar, Count, Data, Entry, NonNegative, Paper, Relation, Size, Train, register
from deepatlas.models.detection import faster_rcnn
from deepatlas.models.detection.faster_rcnn import FasterRCNN, FasterRCNNLoss
from deepatlas.nn.boxes import roi_align


@dataclass
class Config(faster_rcnn.Config):
    mask_roi_size: Size = 14
    """RoIAlign output side for the mask head (the paper's 14x14); its masks are twice that, 28x28"""
    mask_channels: Size = 32
    """channels of the mask head's convs (the paper's 256)"""
    mask_convs: Count = 2
    """3x3 conv + ReLU layers before the upsampling (the paper's FPN head has 4)"""
    mask_weight: NonNegative = 1.0
    """weight of L_mask in the total loss (the paper's 1)"""
    max_detections: Size = 20
    """inference: detections kept per image, each given a mask (the paper's 100; a scene holds at most 6 objects)"""


# ---- masks: targets from the ground truth, predictions back into the image ----------------------------------

def mask_targets(gt_masks: Tensor, rois: Tensor, gt_index: Tensor, size: int) -> Tensor:
    """Each RoI's matched ground-truth mask cropped to the RoI and resized to size x size, binarized at 0.5.

    gt_masks (G, S, S) any dtype, rois (F, 5) (their image column is ignored), gt_index (F,) rows of gt_masks
    -> (F, size, size) float 0/1. One RoIAlign over all masks at once: the masks are the "images" of a
    (G, 1, S, S) batch and each RoI's "image index" is its ground truth's row."""
    boxes = torch.cat([gt_index[:, None].to(rois.dtype), rois[:, 1:]], 1)                   # (F, 5)
    # one bilinear sample per bin: a 28th of a RoI of these scenes (at most 24 px) is under a pixel
    crops = roi_align(gt_masks[:, None].to(rois.dtype), boxes, size, spatial_scale=1.0, sampling_ratio=1)
    return (crops[:, 0] >= 0.5).to(rois.dtype)                                               # (F, M, M)


def paste_masks(masks: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Masks (D, M, M) in box coordinates -> (D, H, W) in the image: each image pixel whose centre (x + 0.5,
    y + 0.5) lies inside its box samples the mask bilinearly at the matching point; pixels outside get 0.

    A box's mask cell u spans x1 + [u, u + 1) w / M, so grid_sample (align_corners=False: -1 and 1 are the outer
    edges of the first and last cells) reads pixel centre px at (px - x1) / w * 2 - 1."""
    H, W = size
    x1, y1, x2, y2 = boxes.unbind(-1)                                                        # (D,) each
    px = torch.arange(W, device=masks.device, dtype=masks.dtype) + 0.5                       # (W,) pixel centres
    py = torch.arange(H, device=masks.device, dtype=masks.dtype) + 0.5                       # (H,)
    gx = (px[None, :] - x1[:, None]) / (x2 - x1).clamp(min=1e-6)[:, None] * 2 - 1            # (D, W)
    gy = (py[None, :] - y1[:, None]) / (y2 - y1).clamp(min=1e-6)[:, None] * 2 - 1            # (D, H)
    grid = torch.stack([gx[:, None, :].expand(-1, H, -1), gy[:, :, None].expand(-1, -1, W)], -1)  # (D, H, W, 2)
    pasted = F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[:, 0]                                         # (D, H, W)
    inside = ((gx.abs() <= 1)[:, None, :] & (gy.abs() <= 1)[:, :, None])                      # (D, H, W)
    return pasted * inside


# ---- the network -------------------------------------------------------------------------------------------

class MaskHead(nn.Module):
    """The FCN mask branch: n x (3x3 conv, ReLU) on the 14x14 RoI feature, a 2x2 stride-2 transposed conv (ReLU)
    to 28x28, and a 1x1 conv to K mask logits, one per class."""

    def __init__(self, in_channels: int, channels: int, n_convs: int, n_classes: int):
        super().__init__()
        layers = []
        for i in range(n_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(channels if n_convs else in_channels, channels, 2, stride=2)
        self.logits = nn.Conv2d(channels, n_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.logits.weight, std=0.001)

    def forward(self, pooled: Tensor) -> Tensor:
        h = self.convs(pooled)                                              # (F, C, 14, 14)
        h = self.upsample(h).relu()                                         # (F, C, 28, 28)
        return self.logits(h)                                               # (F, K, 28, 28)


class MaskRCNN(FasterRCNN):
    """Faster R-CNN (backbone, RPN, box head) plus a mask head on RoIAlign features of the same map."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        channels = self.backbone.stage_channels[cfg.feature_stage]
        self.mask_head = MaskHead(channels, cfg.mask_channels, cfg.mask_convs, cfg.n_classes)

    def mask_logits(self, features: Tensor, rois: Tensor, image_size: int) -> Tensor:
        """RoIs (F, 5) -> mask logits (F, K, M, M) from a 14x14 RoIAlign of the feature map (B, C, H', W')."""
        # one bilinear sample per bin: the 64-px scenes' RoIs span a few stride-4 cells, so a 14x14 bin is
        # already smaller than a cell (the paper finds RoIAlign insensitive to the sample count)
        pooled = roi_align(features, rois, self.cfg.mask_roi_size, spatial_scale=features.shape[-1] / image_size,
                           sampling_ratio=1)                                # (F, C, 14, 14)
        return self.mask_head(pooled)

    @torch.no_grad()
    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Faster R-CNN's detections, each with "masks" (n, H, W): the mask head run on the final boxes, the
        predicted class's mask kept, its sigmoid pasted into the image inside the box (probabilities, 0 outside)."""
        found = super().detect(images)
        features = self.features(images)                                    # (B, C, H', W')
        boxes = torch.cat([d["boxes"] for d in found])                      # (D, 4)
        labels = torch.cat([d["labels"] for d in found])                    # (D,)
        counts = [len(d["boxes"]) for d in found]
        image = torch.repeat_interleave(torch.arange(len(found), device=images.device),
                                        torch.tensor(counts, device=images.device))  # (D,)
        rois = torch.cat([image[:, None].to(boxes.dtype), boxes], 1)        # (D, 5)
        logits = self.mask_logits(features, rois, images.shape[-1])         # (D, K, M, M)
        masks = logits[torch.arange(len(labels), device=images.device), labels].sigmoid()  # (D, M, M)
        pasted = paste_masks(masks, boxes, tuple(images.shape[-2:]))         # (D, H, W)
        return [{**d, "masks": m} for d, m in zip(found, pasted.split(counts))]


# ---- the objective -------------------------------------------------------------------------------------------

class MaskRCNNLoss(FasterRCNNLoss):
    """Faster R-CNN's losses plus L_mask: per-pixel sigmoid BCE of the ground-truth class's mask on the foreground
    sampled RoIs (the other K - 1 masks get no gradient); mask AP ("mask_map_50") is evaluated beside box AP."""

    metric = "mask_map_50"
    not_exported = "three stages, with NMS over the proposals and then over the boxes the masks are made for"

    def __init__(self, model: nn.Module):
        super().__init__(model, iou_type=("bbox", "segm"))

    @staticmethod
    def mask_loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
        """logits (F, K, M, M), labels (F,) in [0, K), targets (F, M, M) 0/1 -> mean BCE over the F M M pixels of
        each RoI's own class's mask."""
        if len(labels) == 0:
            return logits.sum() * 0.0
        chosen = logits[torch.arange(len(labels), device=logits.device), labels]            # (F, M, M)
        return F.binary_cross_entropy_with_logits(chosen, targets)

    def loss(self, images: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        logs, features, sampled = self.losses(images, targets)
        fg = (sampled["labels"] > 0).nonzero().squeeze(1)                                  # (F,)
        rois, labels, gt_index = sampled["rois"][fg], sampled["labels"][fg] - 1, sampled["gt_index"][fg]
        gt_masks = torch.cat([t["masks"].to(images.device) for t in targets])               # (G, S, S)
        target = mask_targets(gt_masks, rois, gt_index, 2 * self.model.cfg.mask_roi_size)   # (F, M, M)
        mask = self.mask_loss(self.model.mask_logits(features, rois, images.shape[-1]), labels, target)
        return {**logs, "loss": logs["loss"] + self.model.cfg.mask_weight * mask, "mask": mask}


register(Entry(
    name="mask_rcnn", title="Mask R-CNN", family="detection", year=2017,
    paper=Paper("K. He, G. Gkioxari, P. Dollár, R. Girshick", "Mask R-CNN", "arXiv:1703.06870"),
    summary="Faster R-CNN plus a small fully convolutional head that predicts a 28x28 mask per class on each "
            "RoIAlign-pooled region; only the ground-truth class's mask is trained, and masks are pasted back "
            "into the image inside the detected boxes.",
    when_to_use="Instance segmentation: separate masks for every object, overlapping objects of the same class "
                "included; a strong, well-understood two-stage baseline that also gives boxes.",
    when_not="Only class regions are needed (semantic segmentation: FCN, U-Net); tight real-time budgets; very "
             "fine boundaries on large objects (28x28 masks are coarse).",
    relations=[
        Relation("builds_on", "faster_rcnn", "adds a per-instance mask head and RoIAlign to Faster R-CNN"),
        Relation("uses", "resnet", "a ResNet backbone"),
        Relation("alternative_to", "unet", "one mask per object instance, not one class per pixel"),
    ],
    config=Config, build=MaskRCNN, objective=MaskRCNNLoss, task="detection",
    train=Train(epochs=9, batch_size=16, lr=2e-3, weight_decay=1e-4),
    data=Data("shapes", flip=True),
    bar=Bar("mask_map_50", 0.70, "max", 300),
))
