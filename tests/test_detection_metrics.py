"""COCO mAP (box and mask), mean IoU and the detection/segmentation objectives (tasks/detection.py)."""
import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from deepatlas.tasks.detection import (
    ConfusionMatrix,
    Detection,
    MeanAveragePrecision,
    Segmentation,
    class_iou,
    mean_iou,
    painted,
)

A, B, FAR = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]
# 2 ground truths, detections TP (0.9), FP (0.8), TP (0.7): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1;
# the envelope is 1 for r <= 0.5 (51 of the 101 points) and 2/3 for r in 0.51..1 (50 points).
HAND_AP = (51 * 1.0 + 50 * 2 / 3) / 101


def pred(boxes, scores, labels, masks=None):
    out = {"boxes": torch.tensor(boxes).view(-1, 4), "scores": torch.tensor(scores, dtype=torch.float),
           "labels": torch.tensor(labels, dtype=torch.long)}
    if masks is not None:
        out["masks"] = masks
    return out


def target(boxes, labels, masks=None):
    out = {"boxes": torch.tensor(boxes).view(-1, 4), "labels": torch.tensor(labels, dtype=torch.long)}
    if masks is not None:
        out["masks"] = masks
    return out


def score(predictions, targets, **kwargs):
    metric = MeanAveragePrecision(**kwargs)
    metric.update(predictions, targets)
    return metric.compute()


def random_scene(gen, n_images=5, n_classes=3, size=64, masks=False):
    """Ground truth boxes (and rectangle masks) and noisy predictions: shifted copies of the truth, some
    with the wrong class, plus random boxes."""
    predictions, targets = [], []
    for _ in range(n_images):
        n = int(torch.randint(1, 8, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * (size - 20)
        gt = torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=gen) * 16], 1).round()      # (n, 4)
        gt_labels = torch.randint(0, n_classes, (n,), generator=gen)
        copies = gt.repeat(2, 1) + torch.randn(2 * n, 4, generator=gen) * 1.0                # near misses
        xy = torch.rand(4, 2, generator=gen) * (size - 20)
        junk = torch.cat([xy, xy + 4 + torch.rand(4, 2, generator=gen) * 16], 1)
        boxes = torch.cat([copies, junk]).clamp(0, size - 1).round()
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = torch.cat([gt_labels.repeat(2), torch.randint(0, n_classes, (4,), generator=gen)])
        flip = torch.rand(len(labels), generator=gen) < 0.15
        labels[flip] = torch.randint(0, n_classes, (int(flip.sum()),), generator=gen)
        p = {"boxes": boxes, "scores": torch.rand(len(boxes), generator=gen), "labels": labels}
        t = {"boxes": gt, "labels": gt_labels}
        if masks:
            probabilities = torch.rand(len(boxes), size, size, generator=gen) * 0.5 + 0.45     # ~10% below 0.5
            p["masks"] = ellipse_masks(boxes, size).float() * probabilities                     # ragged ellipses
            t["masks"] = ellipse_masks(gt, size).to(torch.uint8)
        predictions.append(p)
        targets.append(t)
    return predictions, targets


def ellipse_masks(boxes, size):
    """(n, size, size) bool: the ellipse inscribed in each box."""
    centres = torch.arange(size) + 0.5
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2                # (n,)
    rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
    dx = ((centres[None, :] - cx[:, None]) / rx[:, None]) ** 2                              # (n, W)
    dy = ((centres[None, :] - cy[:, None]) / ry[:, None]) ** 2                              # (n, H)
    return dy[:, :, None] + dx[:, None, :] <= 1


# ---- hand-worked mAP ------------------------------------------------------------------------------------------

def test_perfect_predictions_score_one():
    _, targets = random_scene(torch.Generator().manual_seed(0), masks=True)
    perfect = [{"boxes": t["boxes"], "scores": torch.rand(len(t["labels"])), "labels": t["labels"],
                "masks": t["masks"].float()} for t in targets]
    out = score(perfect, targets, iou_type=("bbox", "segm"))
    for key in ("map", "map_50", "map_75", "mar_100", "mask_map", "mask_map_50", "mask_map_75", "mask_mar_100"):
        assert out[key] == pytest.approx(1.0, abs=1e-12), key


def test_hand_worked_precision_recall_curve():
    out = score([pred([A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])], [target([A, B], [0, 0])])
    assert out["map"] == pytest.approx(HAND_AP, abs=1e-12)          # IoUs are 1 or 0: same AP at every threshold
    assert out["map_50"] == pytest.approx(HAND_AP, abs=1e-12)
    assert out["mar_100"] == pytest.approx(1.0)
    # the FP ranked last instead: precision 1, 1, 2/3 -> the envelope is 1 up to recall 1
    assert score([pred([A, B, FAR], [0.9, 0.8, 0.7], [0, 0, 0])], [target([A, B], [0, 0])])["map"] == pytest.approx(1)
    # the FP ranked first: precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> envelope 2/3 everywhere
    out = score([pred([FAR, A, B], [0.9, 0.8, 0.7], [0, 0, 0])], [target([A, B], [0, 0])])
    assert out["map"] == pytest.approx(2 / 3, abs=1e-12)


def test_ranking_spans_images():
    """The same three detections split over two images rank together: same AP as in one image."""
    out = score([pred([A, FAR], [0.9, 0.8], [0, 0]), pred([B], [0.7], [0])], [target([A], [0]), target([B], [0])])
    assert out["map"] == pytest.approx(HAND_AP, abs=1e-12)
    # a detection only matches ground truth of its own image: B in the wrong image is a false positive
    out = score([pred([A], [0.9], [0]), pred([A], [0.7], [0])], [target([A], [0]), target([B], [0])])
    assert out["map"] == pytest.approx(51 / 101, abs=1e-12)          # precision 1 up to recall 1/2, then nothing


def test_iou_thresholds():
    """IoU 0.62 is a hit at 0.50, 0.55, 0.60 only: AP 1 at 3 of the 10 thresholds."""
    out = score([pred([[0.0, 0.0, 10.0, 6.2]], [0.9], [0])], [target([A], [0])])
    assert out["map"] == pytest.approx(0.3, abs=1e-12)
    assert out["map_50"] == 1.0 and out["map_75"] == 0.0


def test_duplicate_detection_is_false_positive():
    out = score([pred([A, A, B], [0.9, 0.8, 0.7], [0, 0, 0])], [target([A, B], [0, 0])])
    assert out["map"] == pytest.approx(HAND_AP, abs=1e-12)            # exactly the hand-worked FP case


def test_greedy_by_score_not_by_iou():
    """The higher-scored detection takes the ground truth even with a lower IoU (0.62 vs 1): at t <= 0.6 the
    exact box is the false positive (after recall 1: AP 1), at t >= 0.65 the loose one is (AP 1/2)."""
    loose = [0.0, 0.0, 10.0, 6.2]
    out = score([pred([loose, A], [0.9, 0.8], [0, 0])], [target([A], [0])])
    assert out["map_50"] == pytest.approx(1.0)                        # recall 1 reached at rank 1
    assert out["map_75"] == pytest.approx(0.5)                        # rank 1 FP, rank 2 TP: precision 1/2
    assert out["map"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)     # hits at 0.5, 0.55, 0.6


def test_equal_iou_tie_goes_to_the_later_ground_truth():
    """A detection at IoU 9/11 with both of two overlapping truths takes the later one (as pycocotools), so the
    next detection, exact on the first truth, is a hit too at t <= 0.8; at t >= 0.85 only that one is (recall
    1/2 at precision 1/2). Taking the first would leave it IoU 2/3 with the second: a miss from t = 0.7."""
    gt = [target([A, [2.0, 0.0, 12.0, 10.0]], [0, 0])]
    predictions = [pred([[1.0, 0.0, 11.0, 10.0], A], [0.9, 0.8], [0, 0])]
    expected = (7 * 1.0 + 3 * 0.5 * 51 / 101) / 10
    assert score(predictions, gt)["map"] == pytest.approx(expected, abs=1e-12)
    assert coco_eval(predictions, gt, "bbox", 16)[0] == pytest.approx(expected, abs=1e-12)


def test_classes_are_independent():
    gt = [target([A, B, FAR], [0, 0, 1])]
    both = score([pred([A, FAR, B, FAR], [0.9, 0.8, 0.7, 0.5], [0, 0, 0, 1])], gt)
    assert both["map"] == pytest.approx((HAND_AP + 1.0) / 2, abs=1e-12)
    # a detection of class 1 on a class-0 box neither matches it nor takes it from the class-0 detection
    out = score([pred([A, A, FAR], [0.95, 0.9, 0.5], [1, 0, 1])], [target([A, FAR], [0, 1])])
    assert out["map"] == pytest.approx((1.0 + 0.5) / 2, abs=1e-12)     # class 1: precision 1/2 at recall 1
    # a class with no ground truth is left out of the mean; a class with ground truth and no detection counts 0
    assert score([pred([A, B], [0.9, 0.8], [0, 2])], [target([A], [0])])["map"] == pytest.approx(1.0)
    assert score([pred([A], [0.9], [0])], [target([A, B], [0, 1])])["map"] == pytest.approx(0.5)


def test_at_most_100_detections_per_image():
    """100 higher-scored detections of another class push the only true positive out of the image's top 100."""
    false = [[40.0 + i % 10, 40.0, 50.0 + i % 10, 50.0] for i in range(100)]
    scores = [0.5 + i / 1000 for i in range(100)]
    kept = score([pred(false + [A], scores + [0.1], [1] * 100 + [0])], [target([A], [0])])
    assert kept["map"] == 0.0
    assert score([pred(false[:99] + [A], scores[:99] + [0.1], [1] * 99 + [0])], [target([A], [0])])["map"] == 1.0
    more = score([pred(false + [A], scores + [0.1], [1] * 100 + [0])], [target([A], [0])], max_detections=101)
    assert more["map"] == 1.0


def test_mask_ap_on_hand_made_masks():
    """Boxes are perfect, masks are not: mask IoU 13/16 is a hit up to t = 0.80 (7 of 10), 0 pixels a miss."""
    gt = torch.zeros(2, 8, 8, dtype=torch.uint8)
    gt[0, :4, :4] = 1
    gt[1, 4:, 4:] = 1
    predicted = torch.full((2, 8, 8), 0.2)                              # probabilities, binarized at 0.5
    predicted[0, :4, :4] = 0.9
    predicted[0, 0, :3] = 0.3                                         # 13 of the 16 pixels
    predicted[1, :4, 4:] = 0.7                                        # beside the second object
    boxes = [[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0]]
    out = score([pred(boxes, [0.9, 0.8], [0, 1], predicted)], [target(boxes, [0, 1], gt)], iou_type=("bbox", "segm"))
    assert out["map"] == pytest.approx(1.0)
    assert out["mask_map"] == pytest.approx((0.7 + 0.0) / 2, abs=1e-12)
    assert out["mask_map_50"] == pytest.approx(0.5) and out["mask_map_75"] == pytest.approx(0.5)
    bools = score([pred(boxes, [0.9, 0.8], [0, 1], predicted >= 0.5)], [target(boxes, [0, 1], gt)], iou_type="segm")
    assert bools["mask_map"] == out["mask_map"] and "map" not in bools


def test_accumulates_over_updates_and_resets():
    metric = MeanAveragePrecision()
    metric.update([pred([A, FAR], [0.9, 0.8], [0, 0])], [target([A], [0])])
    metric.update([pred([B], [0.7], [0])], [target([B], [0])])
    assert metric.compute()["map"] == pytest.approx(HAND_AP, abs=1e-12)
    metric.reset()
    assert metric.compute()["map"] == -1.0                            # no ground truth: undefined, as pycocotools



def test_one_batch_equals_one_image_at_a_time():
    """The greedy matching runs over a padded batch: images with no detections or no ground truth among ones
    with several must score exactly as when each image is its own update."""
    predictions, targets = random_scene(torch.Generator().manual_seed(4), n_images=5, n_classes=3, masks=True)
    predictions[1] = {k: v[:0] for k, v in predictions[1].items()}                  # no detections
    targets[3] = {k: v[:0] for k, v in targets[3].items()}                          # no ground truth
    batched, single = MeanAveragePrecision(("bbox", "segm")), MeanAveragePrecision(("bbox", "segm"))
    batched.update(predictions, targets)
    for p, t in zip(predictions, targets):
        single.update([p], [t])
    assert batched.compute() == single.compute()
    assert 0.1 < batched.compute()["map"] < 0.9

# ---- against pycocotools --------------------------------------------------------------------------------------

def coco_eval(predictions, targets, iou_type, size):
    images, annotations, results = [], [], []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        images.append({"id": i + 1, "height": size, "width": size})
        for j in range(len(t["labels"])):
            x0, y0, x1, y1 = t["boxes"][j].tolist()
            ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(t["labels"][j]) + 1,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            if iou_type == "segm":
                ann["segmentation"] = mask_utils.encode(np.asfortranarray(t["masks"][j].numpy().astype(np.uint8)))
                ann["area"] = float(t["masks"][j].sum())
            annotations.append(ann)
        for j in range(len(p["labels"])):
            x0, y0, x1, y1 = p["boxes"][j].tolist()
            res = {"image_id": i + 1, "category_id": int(p["labels"][j]) + 1, "score": float(p["scores"][j]),
                   "bbox": [x0, y0, x1 - x0, y1 - y0]}
            if iou_type == "segm":
                binary = (p["masks"][j] >= 0.5).numpy().astype(np.uint8)
                res = {**res, "segmentation": mask_utils.encode(np.asfortranarray(binary))}
                del res["bbox"]
            results.append(res)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(5)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats                                            # AP, AP50, AP75, ..., AR@100 at [8]


@pytest.mark.parametrize("seed, ties", [(0, False), (1, False), (2, True)])
def test_box_map_matches_pycocotools(seed, ties):
    predictions, targets = random_scene(torch.Generator().manual_seed(seed), n_images=6, n_classes=4)
    if ties:  # equal scores within and across images: both rank them stably, in image order
        for p in predictions:
            p["scores"] = (p["scores"] * 4).round() / 4
    ours, ref = score(predictions, targets), coco_eval(predictions, targets, "bbox", 64)
    for key, i in (("map", 0), ("map_50", 1), ("map_75", 2), ("mar_100", 8)):
        assert ours[key] == pytest.approx(ref[i], abs=1e-3), key
    assert 0.1 < ours["map"] < 0.9                                    # a test that discriminates: neither 0 nor 1


def test_mask_map_matches_pycocotools():
    predictions, targets = random_scene(torch.Generator().manual_seed(3), n_images=6, n_classes=3, masks=True)
    ours, ref = score(predictions, targets, iou_type="segm"), coco_eval(predictions, targets, "segm", 64)
    for key, i in (("mask_map", 0), ("mask_map_50", 1), ("mask_map_75", 2), ("mask_mar_100", 8)):
        assert ours[key] == pytest.approx(ref[i], abs=1e-3), key
    assert 0.1 < ours["mask_map"] < 0.9 and ours["mask_map"] != score(predictions, targets)["map"]


def test_max_detections_matches_pycocotools_when_one_class():
    """150 detections of one class in one image: both keep its top 100."""
    gen = torch.Generator().manual_seed(4)
    predictions, targets = random_scene(gen, n_images=2, n_classes=1)
    extra = torch.cat([torch.rand(150, 2, generator=gen) * 40, torch.rand(150, 2, generator=gen) * 40 + 44], 1).round()
    p = predictions[0]
    predictions[0] = {"boxes": torch.cat([p["boxes"], extra]), "labels": torch.zeros(len(p["boxes"]) + 150).long(),
                      "scores": torch.cat([p["scores"], torch.rand(150, generator=gen)])}
    ours, ref = score(predictions, targets), coco_eval(predictions, targets, "bbox", 64)
    assert ours["map"] == pytest.approx(ref[0], abs=1e-3) and ours["map_50"] == pytest.approx(ref[1], abs=1e-3)


# ---- mean IoU -------------------------------------------------------------------------------------------------

def test_mean_iou_hand_made_confusion():
    confusion = torch.tensor([[5, 1, 0, 0],       # rows: true class, columns: predicted class
                              [2, 3, 1, 0],
                              [0, 0, 0, 0],       # class 2 never true, predicted once: IoU 0, counted
                              [0, 0, 0, 0]])      # class 3 absent from both: left out
    iou = class_iou(confusion)
    assert iou[:3].tolist() == pytest.approx([5 / 8, 3 / 7, 0.0]) and torch.isnan(iou[3])
    assert mean_iou(confusion).item() == pytest.approx((5 / 8 + 3 / 7 + 0) / 3)


def test_confusion_matrix_counts_pixels():
    gen = torch.Generator().manual_seed(0)
    K, matrix = 4, ConfusionMatrix(4)
    brute = torch.zeros(K, K, dtype=torch.long)
    for _ in range(2):
        pred_labels = torch.randint(0, K, (2, 5, 7), generator=gen)
        truth = torch.randint(0, K, (2, 5, 7), generator=gen)
        truth[0, 0] = 255                                             # void pixels are ignored
        matrix.update(pred_labels, truth)
        for p, t in zip(pred_labels.flatten().tolist(), truth.flatten().tolist()):
            if t != 255:
                brute[t, p] += 1
    assert torch.equal(matrix.matrix, brute)
    out = matrix.compute()
    assert out["miou"] == pytest.approx(mean_iou(brute).item())
    assert out["pixel_accuracy"] == pytest.approx(brute.trace().item() / brute.sum().item())
    matrix.reset()
    matrix.update(torch.tensor([[[0, 0, 1]]]), torch.tensor([[[0, 0, 1]]]))
    assert matrix.compute() == {"miou": 1.0, "pixel_accuracy": 1.0}   # classes 2, 3 absent: not in the mean


# ---- objectives -----------------------------------------------------------------------------------------------

class Oracle(nn.Module):
    """A 'detector' that returns the targets it was handed; its loss is a constant."""

    def __init__(self):
        super().__init__()
        self.answers = []
        self.w = nn.Parameter(torch.ones(()))

    def detect(self, images):
        return self.answers


class OracleObjective(Detection):
    def loss(self, images, targets):
        return {"loss": self.model.w * 2.0}


def test_detection_objective_accumulates_map():
    objective = OracleObjective(Oracle())
    objective.reset_metrics()
    targets = [target([A, B], [0, 1]), target([FAR], [0])]
    objective.model.answers = [pred([A, B], [0.9, 0.8], [0, 1]), pred([B], [0.5], [0])]   # image 2: a miss
    logs = objective.validation_step((torch.zeros(2, 3, 8, 8), targets))
    assert logs["loss"].item() == 2.0
    out = objective.compute_metrics()
    assert out["map"] == pytest.approx((51 / 101 + 1.0) / 2)         # class 0: 1 of 2 found at rank 1
    objective.reset_metrics()
    objective.model.answers = [pred([A, B], [0.9, 0.8], [0, 1])]
    objective.validation_step((torch.zeros(1, 3, 8, 8), targets[:1]))
    assert objective.compute_metrics()["map"] == 1.0
    assert objective.training_step((torch.zeros(1, 3, 8, 8), targets[:1]))[0].requires_grad


def test_segmentation_objective():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, 3, padding=1)
    objective = Segmentation(model)
    images, truth = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    truth[:, 0] = 255
    objective.reset_metrics()
    logs = objective.validation_step((images, truth))
    reference = ConfusionMatrix(3)
    reference.update(model(images).argmax(1), truth)
    assert objective.compute_metrics() == reference.compute()
    valid = truth != 255
    expected = nn.functional.cross_entropy(model(images).permute(0, 2, 3, 1)[valid], truth[valid])
    assert logs["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["pixel_accuracy"].item() == pytest.approx(reference.compute()["pixel_accuracy"], rel=1e-6)
    assert torch.equal(objective.predict(images), model(images).argmax(1))


def test_painted_masks_are_the_segmentation_truth_and_the_top_score_wins():
    """Detection's targets painted into one class map are exactly the segmentation task's labels of the same
    scenes (so a mask detector's mIoU is on the segmentation board's images and truth); where predicted masks
    overlap the highest score's class is painted, and masks under the score threshold are not."""
    from deepatlas.data import shapes
    scenes = shapes.splits("shapes", 64)["val"]
    assert torch.equal(painted(scenes.targets(), (64, 64)), scenes.semantic())
    masks = torch.zeros(3, 4, 4)
    masks[0, :2], masks[1, 1:], masks[2] = 1, 1, 1           # rows 0-1, rows 1-3, everything
    found = [{"masks": masks, "scores": torch.tensor([0.9, 0.6, 0.3]), "labels": torch.tensor([0, 2, 1])}]
    expected = torch.tensor([1, 1, 3, 3])[:, None].expand(4, 4)  # row 1: 0.9 beats 0.6; the 0.3 mask is dropped
    assert torch.equal(painted(found, (4, 4), min_score=0.5)[0], expected)
    assert torch.equal(painted(found, (4, 4))[0], expected)     # without a threshold the 0.3 mask loses everywhere
    found[0]["scores"] = torch.tensor([0.2, 0.6, 0.3])
    assert torch.equal(painted(found, (4, 4), min_score=0.5)[0], torch.tensor([0, 3, 3, 3])[:, None].expand(4, 4))


def test_mask_detector_is_also_scored_by_mean_iou():
    objective = OracleObjective(Oracle())
    objective.average_precision = MeanAveragePrecision(("bbox", "segm"))
    objective.data_spec = {"classes": ["a", "b"]}
    objective.reset_metrics()
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[0, :4], masks[1, 4:] = 1, 1
    truth = {"boxes": torch.tensor([[0.0, 0, 8, 4], [0, 4, 8, 8]]), "labels": torch.tensor([0, 1]), "masks": masks}
    guess = {**truth, "scores": torch.tensor([0.9, 0.9]), "masks": masks.float(), "labels": torch.tensor([0, 0])}
    objective.model.answers = [guess]
    objective.validation_step((torch.zeros(1, 3, 8, 8), [truth]))
    out = objective.compute_metrics()
    assert out["pixel_accuracy"] == 0.5                        # the lower half is called class a, truly b
    assert out["miou"] == pytest.approx((1 / 2 + 0) / 2)        # background in neither (skipped): a 1/2, b 0
