"""Mask R-CNN ("mask_rcnn"): output shapes, the mask loss on the ground-truth class only (exact zero gradient
elsewhere), mask targets and pasting round trips, and a short learning test."""
import torch

import deepatlas.data.detection as detection_data
from deepatlas.models.detection.mask_rcnn import Config, MaskRCNN, MaskRCNNLoss, mask_targets, paste_masks


def small(**kw) -> MaskRCNN:
    torch.manual_seed(0)
    return MaskRCNN(Config(**kw))


def test_detect_returns_masks_in_the_image():
    model = small().eval()
    images = torch.rand(3, 3, 64, 64)
    out = model.detect(images)
    assert len(out) == 3
    for d in out:
        n = len(d["scores"])
        assert d["boxes"].shape == (n, 4) and d["labels"].shape == (n,)
        assert d["masks"].shape == (n, 64, 64) and d["masks"].dtype == torch.float32
        assert (d["masks"] >= 0).all() and (d["masks"] <= 1).all()
    assert sum(len(d["scores"]) for d in out) > 0                       # an untrained model still emits some
    # the mask head: (F, C, 14, 14) RoI features -> (F, K, 28, 28) logits
    rois = torch.tensor([[0, 4.0, 4, 30, 30], [2, 10, 20, 50, 40]])
    assert model.mask_logits(model.features(images), rois, 64).shape == (2, 4, 28, 28)


def test_mask_loss_trains_only_the_ground_truth_class():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 28, 28, requires_grad=True)
    labels = torch.tensor([2, 0, 3, 2, 1])
    targets = (torch.rand(5, 28, 28) > 0.5).float()
    MaskRCNNLoss.mask_loss(logits, labels, targets).backward()
    own = torch.zeros(5, 4, dtype=torch.bool)
    own[torch.arange(5), labels] = True
    assert (logits.grad[~own] == 0).all()                                # exactly zero on the other K - 1 masks
    assert (logits.grad[own] != 0).all()                                 # every pixel of the own mask
    # and it is the mean per-pixel sigmoid BCE of the own class's mask
    p = logits[torch.arange(5), labels].sigmoid()
    ref = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()
    assert torch.allclose(MaskRCNNLoss.mask_loss(logits, labels, targets), ref, atol=1e-6)


def test_mask_loss_gradient_through_the_objective():
    model = small()
    objective = MaskRCNNLoss(model)
    data = detection_data.load("shapes")
    images, targets = detection_data.collate([data.train[i] for i in range(4)])
    logs = objective.loss(images, targets)
    assert {"loss", "rpn_cls", "rpn_reg", "head_cls", "head_reg", "mask"} <= set(logs)
    logs["mask"].backward()
    assert model.mask_head.logits.weight.grad.abs().sum() > 0
    assert model.box_head.classify.weight.grad is None                  # L_mask does not reach the box head


def test_mask_target_of_a_ground_truth_box_pastes_back_to_its_mask():
    data = detection_data.load("shapes")
    _, target = data.train[0]
    masks, boxes = target["masks"], target["boxes"]                     # (n, 64, 64), (n, 4)
    n = len(boxes)
    rois = torch.cat([torch.zeros(n, 1), boxes], 1)
    crops = mask_targets(masks, rois, torch.arange(n), 28)              # (n, 28, 28) 0/1
    assert set(crops.unique().tolist()) <= {0.0, 1.0}
    pasted = paste_masks(crops, boxes, (64, 64)) >= 0.5                 # (n, 64, 64)
    truth = masks.bool()
    iou = (pasted & truth).flatten(1).sum(1) / (pasted | truth).flatten(1).sum(1)
    assert (iou >= 0.9).all(), iou
    # the "image" column of a target RoI is its ground truth's row, not its image: reversed order, same crops
    rev = torch.arange(n).flip(0)
    assert torch.equal(mask_targets(masks[rev], rois, rev.argsort(), 28), crops)


def test_pasting_a_full_mask_fills_its_box():
    boxes = torch.tensor([[10.0, 5, 30, 25], [3.3, 40.6, 20.2, 60.9], [50, 50, 64, 64]])
    pasted = paste_masks(torch.ones(3, 28, 28), boxes, (64, 64))        # (3, 64, 64)
    assert ((pasted == 0) | ((pasted - 1).abs() < 1e-5)).all()         # 1 inside (to rounding), 0 outside
    centre = torch.arange(64) + 0.5
    for box, mask in zip(boxes, pasted):                                # 3 boxes: check each against its box
        inside = ((centre >= box[0]) & (centre <= box[2]))[None, :] & ((centre >= box[1]) & (centre <= box[3]))[:, None]
        assert torch.equal(mask > 0.5, inside)                         # exactly the pixels whose centre is in
        ys, xs = mask.nonzero(as_tuple=True)
        assert (xs.min() - box[0]).abs() <= 1 and (xs.max() + 1 - box[2]).abs() <= 1
        assert (ys.min() - box[1]).abs() <= 1 and (ys.max() + 1 - box[3]).abs() <= 1
    # an integral box is filled exactly
    assert (pasted[0] > 0.5).sum() == 20 * 20 and (pasted[0, 5:25, 10:30] > 0.5).all()


def test_mask_loss_falls_on_a_small_subset():
    torch.manual_seed(0)
    data = detection_data.load("shapes")
    images, targets = detection_data.collate([data.train[i] for i in range(16)])
    model = MaskRCNN(Config())
    objective = MaskRCNNLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    masks = []
    for _ in range(30):
        logs = objective.loss(images, targets)
        opt.zero_grad()
        logs["loss"].backward()
        opt.step()
        masks.append(logs["mask"].item())
    # untrained, every mask pixel is 0.5 (BCE log 2 = 0.69); the best constant guess, the objects' share of their
    # boxes (about 0.65), still scores about 0.64; trained, the head tells shape from background (about 0.44)
    fraction = torch.cat([t["masks"].float().flatten(1).sum(1) / ((t["boxes"][:, 2:] - t["boxes"][:, :2]).prod(1))
                          for t in targets]).mean()
    constant = -(fraction * fraction.log() + (1 - fraction) * (1 - fraction).log()).item()
    assert abs(masks[0] - 0.693) < 0.01 and sum(masks[-4:]) / 4 < 0.8 * constant, (masks, constant)
