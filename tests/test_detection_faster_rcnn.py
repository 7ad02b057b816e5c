"""Faster R-CNN ("faster_rcnn"): anchor labelling, minibatch sampling, the RPN loss on ignored anchors, proposal
NMS, the head's regression targets, output shapes, and a short learning test."""
import torch

import deepatlas.data.detection as detection_data
from deepatlas.models.detection.faster_rcnn import (
    HEAD_WEIGHTS,
    Config,
    FasterRCNN,
    FasterRCNNLoss,
    rank_within,
    sample,
)
from deepatlas.nn.boxes import batched_nms, decode_boxes, nms_per_image
from deepatlas.tasks.detection import MeanAveragePrecision


def small(**kw) -> FasterRCNN:
    torch.manual_seed(0)
    return FasterRCNN(Config(**kw))


def test_shapes_and_detect_format():
    model = small().eval()
    images = torch.rand(3, 3, 64, 64)
    features = model.features(images)
    logits, deltas = model.rpn(features)
    anchors = model.anchors(features, images)
    n = features.shape[-2] * features.shape[-1] * 9                     # H' W' A, 3 sizes x 3 ratios
    assert logits.shape == (3, n) and deltas.shape == (3, n, 4) and anchors.shape == (n, 4)
    out = model.detect(images)
    assert len(out) == 3
    for d in out:
        assert d["boxes"].shape == (len(d["scores"]), 4) and d["labels"].shape == d["scores"].shape
        assert len(d["scores"]) <= model.cfg.max_detections
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 64).all() and (d["labels"] < 4).all()


def test_anchor_labelling_crafted_case():
    model = small(rpn_batch=1000)
    anchors = torch.tensor([
        [0, 0, 20, 15],      # IoU 0.75 with A: positive
        [0, 0, 20, 13.6],    # 0.68: ignored (between 0.3 and 0.7, and not A's best)
        [0, 0, 20, 6.2],     # 0.31: ignored
        [0, 0, 20, 5.6],     # 0.28: negative
        [100, 100, 110, 105],  # 0.5 with B, B's best anchor: positive although below 0.7
        [100, 100, 110, 104],  # 0.4 with B: ignored
        [200, 200, 210, 210],  # no overlap: negative
    ], dtype=torch.float32)
    gt_a, gt_b = torch.tensor([[0.0, 0, 20, 20]]), torch.tensor([[100.0, 100, 110, 110]])
    targets = [{"boxes": gt_a, "labels": torch.tensor([0])}, {"boxes": gt_b, "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    labels, deltas = model.rpn_targets(anchors, targets)
    # each image sees only its own ground truths; an image without any has only negatives
    assert labels.tolist() == [[1, -1, -1, 0, 0, 0, 0], [0, 0, 0, 0, 1, -1, 0], [0, 0, 0, 0, 0, 0, 0]]
    assert torch.allclose(decode_boxes(deltas[0, 0], anchors[0]), gt_a[0], atol=1e-5)
    assert torch.allclose(decode_boxes(deltas[1, 4], anchors[4]), gt_b[0], atol=1e-5)


def test_sampling_counts_and_fractions():
    torch.manual_seed(0)
    group = torch.repeat_interleave(torch.arange(3), torch.tensor([1300, 1010, 25]))
    positive = torch.cat([torch.arange(1300) < 300, torch.arange(1010) < 10, torch.arange(25) < 5])
    pos, neg = sample(positive, ~positive, group, 3, per_group=256, positive_fraction=0.5)
    assert not (pos & ~positive).any() and not (neg & positive).any()   # drawn from the right candidates
    n_pos = torch.bincount(group[pos], minlength=3).tolist()
    n_neg = torch.bincount(group[neg], minlength=3).tolist()
    assert n_pos == [128, 10, 5] and n_neg == [128, 246, 20]            # up to half positive, negatives fill up
    # rank_within ranks inside each group
    rank = rank_within(torch.tensor([1, 0, 1, 0, 1]), torch.tensor([0.1, 0.5, 0.9, 0.2, 0.4]), 2)
    assert rank.tolist() == [2, 0, 0, 1, 1]


def test_rpn_loss_gives_ignored_anchors_no_gradient():
    model = small()
    objective = FasterRCNNLoss(model)
    logits = torch.randn(2, 6, requires_grad=True)
    deltas = torch.randn(2, 6, 4, requires_grad=True)
    labels = torch.tensor([[1, -1, 0, -1, 1, 0], [-1, -1, 0, 1, -1, -1]])
    cls, reg = objective.rpn_loss(logits, deltas, labels, torch.randn(2, 6, 4))
    (cls + reg).backward()
    ignored, positive = labels == -1, labels == 1
    assert (logits.grad[ignored] == 0).all() and (logits.grad[~ignored] != 0).all()
    assert (deltas.grad[~positive] == 0).all() and (deltas.grad[positive] != 0).any(-1).all()


def test_per_image_nms_equals_batched_nms():
    torch.manual_seed(0)
    B, k = 4, 40
    xy = torch.rand(B, k, 2) * 40
    boxes = torch.cat([xy, xy + 5 + torch.rand(B, k, 2) * 20], -1)     # (B, k, 4)
    scores = torch.rand(B, k).sort(1, descending=True).values
    labels = torch.randint(0, 3, (B, k))
    valid = torch.rand(B, k) > 0.1
    for lab in (None, labels):
        keep = nms_per_image(boxes, valid, 0.5, lab)
        image = torch.arange(B)[:, None].expand(B, k)[valid]
        group = image * 3 + (labels[valid] if lab is not None else 0)
        ref = batched_nms(boxes[valid], scores[valid], group, 0.5)
        expected = torch.zeros(int(valid.sum()), dtype=torch.bool)
        expected[ref] = True
        assert torch.equal(keep[valid], expected) and not keep[~valid].any()


def test_proposals_survive_nms_as_expected():
    model = small(proposal_nms_iou=0.7).eval()
    anchors = torch.tensor([[0, 0, 20, 20], [1, 1, 21, 21], [30, 30, 50, 50], [0, 0, 20, 10.0]])
    # image 0: anchor 1 overlaps the better anchor 0 at IoU 0.82 > 0.7: suppressed; anchor 3 at 0.5: kept
    # image 1: anchor 1 scores best, so anchor 0 is the one suppressed
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0], [4.0, 5.0, 3.0, 2.0]])
    rois = model.propose(logits, torch.zeros(2, 4, 4), anchors, (64, 64))
    assert rois[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(rois[:3, 1:], anchors[[0, 2, 3]]) and torch.equal(rois[3:, 1:], anchors[[1, 2, 3]])
    model.cfg.post_nms_test = 2                                              # then the best 2 of each image
    rois = model.propose(logits, torch.zeros(2, 4, 4), anchors, (64, 64))
    assert torch.equal(rois[:, 1:], anchors[[0, 2, 1, 2]])


def test_head_targets_decode_to_the_ground_truth():
    model = small(roi_batch=32)
    torch.manual_seed(0)
    targets = [{"boxes": torch.tensor([[5.0, 5, 20, 25], [30, 30, 60, 50]]), "labels": torch.tensor([2, 0])},
               {"boxes": torch.tensor([[10.0, 40, 30, 60]]), "labels": torch.tensor([3])}]
    xy = torch.rand(200, 2) * 50
    proposals = torch.cat([torch.randint(0, 2, (200, 1)).float(), xy, xy + 4 + torch.rand(200, 2) * 20], 1)
    s = model.sample_rois(proposals, targets)
    gt = torch.cat([t["boxes"] for t in targets])
    gt_labels = torch.cat([t["labels"] for t in targets])
    fg = s["labels"] > 0
    assert fg.any() and (s["labels"][fg] == gt_labels[s["gt_index"][fg]] + 1).all()
    assert torch.allclose(decode_boxes(s["deltas"][fg], s["rois"][fg, 1:], HEAD_WEIGHTS), gt[s["gt_index"][fg]],
                          atol=1e-4)
    per_image = torch.bincount(s["rois"][:, 0].long(), minlength=2)
    fg_per_image = torch.bincount(s["rois"][fg, 0].long(), minlength=2)
    assert (per_image == 32).all() and (fg_per_image <= 8).all() and (fg_per_image >= 1).all()
    # every ground truth was added to the proposals, so each one can be sampled as its own foreground RoI
    exact = (s["rois"][fg, 1:] == gt[s["gt_index"][fg]]).all(1)
    assert exact.any()


def test_learns_on_a_small_subset():
    torch.manual_seed(0)
    data = detection_data.load("shapes")
    images, targets = detection_data.collate([data.train[i] for i in range(64)])
    model = FasterRCNN(Config())
    objective = FasterRCNNLoss(model)

    def map50() -> float:
        metric = MeanAveragePrecision()
        model.eval()
        metric.update(model.detect(images), targets)
        model.train()
        return metric.compute()["map_50"]

    before = map50()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    losses = []
    for _ in range(10):
        for i in range(0, 64, 16):
            loss = objective.loss(images[i:i + 16], targets[i:i + 16])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    after = map50()
    assert sum(losses[-4:]) < 0.75 * sum(losses[:4])  # about 0.67
    assert after > before + 0.12, (before, after)  # about 0.02 -> 0.28 with seed 0
