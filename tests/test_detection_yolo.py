""""yolo" (YOLO v1): the eq. 3 loss by hand, the responsible predictor, IoU confidence targets, box coding,
NMS at inference, and a short learning test against the untrained model."""
import math

import pytest
import torch

from deepatlas.data import detection
from deepatlas.models.detection.yolo import YOLO, Config, YOLOLoss, paired_iou
from deepatlas.tasks.detection import MeanAveragePrecision

SIZE = 64  # 64x64 images, stride 8: an 8x8 grid of 8-pixel cells


def small(**overrides) -> YOLO:
    torch.manual_seed(0)
    return YOLO(Config(**{"width": 0.25, "head_channels": 32, **overrides}))


class Fixed(YOLO):
    """A YOLO whose raw output is a given tensor (B, S, S, nb·5 + K), to check the loss by hand."""

    def __init__(self, raw: torch.Tensor, cfg: Config):
        super().__init__(cfg)
        self.raw = raw

    def forward(self, images):
        return self.raw


def raw_output(cells: dict, S: int = 8, nb: int = 2, K: int = 4) -> torch.Tensor:
    """(1, S, S, nb·5 + K) zeros, with the given (row, col) -> vector entries."""
    raw = torch.zeros(1, S, S, nb * 5 + K, dtype=torch.float64)
    for (r, c), v in cells.items():
        raw[0, r, c] = torch.tensor(v, dtype=torch.float64)
    return raw


def test_shapes_and_grid():
    model = small().eval()
    raw = model(torch.rand(3, 3, SIZE, SIZE))
    assert model.grid == 8 and raw.shape == (3, 8, 8, 2 * 5 + 4)
    boxes, conf, probs = model.split(raw)
    assert boxes.shape == (3, 8, 8, 2, 4) and conf.shape == (3, 8, 8, 2) and probs.shape == (3, 8, 8, 4)
    fc = small(head="fc").eval()
    assert fc(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 8, 8, 14)


def test_encode_decode_round_trip():
    boxes = torch.tensor([[3.0, 5.0, 20.0, 17.0], [40.0, 41.5, 63.0, 60.0], [0.0, 0.0, 64.0, 64.0]], dtype=torch.float64)
    row, col, target = YOLO.encode(boxes, (8, 8), (SIZE, SIZE))
    assert row.tolist() == [1, 6, 4] and col.tolist() == [1, 6, 4]  # centres (11.5, 11), (51.5, 50.75), (32, 32)
    grid = torch.zeros(1, 8, 8, 1, 4, dtype=torch.float64)
    grid[0, row, col, 0] = target
    decoded = YOLO.decode(grid, (SIZE, SIZE))[0, row, col, 0]
    torch.testing.assert_close(decoded, boxes)
    # (x, y) relative to the cell, √w, √h relative to the image
    torch.testing.assert_close(target[0], torch.tensor([11.5 / 8 - 1, 11 / 8 - 1, math.sqrt(17 / 64), math.sqrt(12 / 64)],
                                                       dtype=torch.float64))


def test_loss_equals_hand_computed_value():
    """One object (class 2) centred in cell (row 2, col 1); box 1 overlaps it more than box 0, so box 1 is
    responsible: its coordinates, √w√h and confidence (toward its IoU) are trained; box 0 and every other
    cell's boxes are pushed to confidence 0 with λnoobj; the cell's class probabilities toward one-hot."""
    cfg = Config(width=0.25, head_channels=8)
    gt = torch.tensor([[4.0, 16.0, 20.0, 24.0]], dtype=torch.float64)  # centre (12, 20): col 1, row 2; 16 x 8
    tx, ty, tw, th = 12 / 8 - 1, 20 / 8 - 2, math.sqrt(16 / 64), math.sqrt(8 / 64)
    b0 = [0.9, 0.9, 0.1, 0.1, 0.3]                     # a tiny box at (15.2, 23.2): IoU 0.04 / 128
    b1 = [0.6, 0.4, 0.45, 0.3, 0.8]                    # centre (12.8, 19.2), 12.96 x 5.76
    probs = [0.1, 0.2, 0.6, 0.3]
    raw = raw_output({(2, 1): b0 + b1 + probs, (5, 5): [0, 0, 0, 0, 0.4, 0, 0, 0, 0, -0.2] + probs})
    objective = YOLOLoss(Fixed(raw, cfg))
    images = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.float64)
    out = objective.loss(images, [{"boxes": gt, "labels": torch.tensor([2])}])

    def iou(box):
        cx, cy = (1 + box[0]) * 8, (2 + box[1]) * 8
        w, h = box[2] ** 2 * 64, box[3] ** 2 * 64
        ix = max(0.0, min(cx + w / 2, 20) - max(cx - w / 2, 4))
        iy = max(0.0, min(cy + h / 2, 24) - max(cy - h / 2, 16))
        return ix * iy / (w * h + 128 - ix * iy)

    assert iou(b1) > iou(b0)
    coord = 5 * ((b1[0] - tx) ** 2 + (b1[1] - ty) ** 2)
    size = 5 * ((b1[2] - tw) ** 2 + (b1[3] - th) ** 2)
    obj = (b1[4] - iou(b1)) ** 2
    noobj = 0.5 * (b0[4] ** 2 + 0.4 ** 2 + 0.2 ** 2)
    cls = 0.1 ** 2 + 0.2 ** 2 + 0.4 ** 2 + 0.3 ** 2      # only the object's cell; the other cell has no object
    assert out["coord"].item() == pytest.approx(coord + size, rel=1e-9)
    assert out["object"].item() == pytest.approx(obj, rel=1e-9)
    assert out["no_object"].item() == pytest.approx(noobj, rel=1e-9)
    assert out["class"].item() == pytest.approx(cls, rel=1e-9)
    assert out["loss"].item() == pytest.approx(coord + size + obj + noobj + cls, rel=1e-9)


def test_responsible_box_is_highest_iou_and_confidence_target_is_iou():
    """Batched assignment over two images: each object goes to the predictor of its cell whose current box
    overlaps it most, and that predictor's confidence target is exactly that IoU."""
    torch.manual_seed(1)
    B, S, nb = 2, 8, 3
    boxes = torch.rand(B, S, S, nb, 4, dtype=torch.float64) * torch.tensor([1, 1, 0.6, 0.6], dtype=torch.float64)
    gt = [torch.tensor([[2.0, 3.0, 22.0, 15.0], [30.0, 30.0, 50.0, 60.0]], dtype=torch.float64),
          torch.tensor([[10.0, 40.0, 30.0, 55.0]], dtype=torch.float64)]
    targets = [{"boxes": g, "labels": torch.tensor([0, 3][: len(g)])} for g in gt]
    a = YOLOLoss(small()).assign(boxes, targets, (SIZE, SIZE))
    assert a["image"].tolist() == [0, 0, 1]
    decoded = YOLO.decode(boxes, (SIZE, SIZE))
    for m, (img, box) in enumerate([(0, gt[0][0]), (0, gt[0][1]), (1, gt[1][0])]):
        r, c = int((box[1] + box[3]) / 2 // 8), int((box[0] + box[2]) / 2 // 8)
        assert (a["row"][m].item(), a["col"][m].item()) == (r, c)
        ious = paired_iou(decoded[img, r, c], box.expand(nb, 4))            # (nb,) by brute force
        assert a["box"][m].item() == ious.argmax().item()
        assert a["iou"][m].item() == pytest.approx(ious.max().item(), rel=1e-12)
    assert a["label"].tolist() == [0, 3, 0]


def test_two_centres_in_one_cell_keep_the_larger_object():
    boxes = torch.zeros(1, 8, 8, 2, 4)
    gt = torch.tensor([[9.0, 9.0, 14.0, 14.0], [2.0, 2.0, 22.0, 21.0], [40.0, 40.0, 50.0, 50.0]])
    a = YOLOLoss(small()).assign(boxes, [{"boxes": gt, "labels": torch.tensor([1, 2, 3])}], (SIZE, SIZE))
    assert sorted(a["label"].tolist()) == [2, 3]                       # the small box in cell (1, 1) lost


def test_nms_removes_duplicates_at_inference():
    """Three cells predict the same object (two near-copies of class 1 and one of class 2) in two images:
    per-class NMS keeps one box of class 1 and the class-2 box, separately in each image."""
    cfg = Config(width=0.25, head_channels=8, score_threshold=0.1)
    per_cell = {(2, 2): [0.5, 0.5, 0.5, 0.5, 0.9] + [0] * 5 + [0, 1, 0, 0],
                (2, 3): [0.1, 0.5, 0.5, 0.5, 0.8] + [0] * 5 + [0, 1, 0, 0],
                (3, 2): [0.5, 0.1, 0.5, 0.5, 0.7] + [0] * 5 + [0, 0, 1, 0]}
    raw = torch.cat([raw_output(per_cell), raw_output(per_cell)]).float()
    detections = Fixed(raw, cfg).detect(torch.zeros(2, 3, SIZE, SIZE))
    assert len(detections) == 2
    for d in detections:
        assert d["labels"].tolist() == [1, 2]
        torch.testing.assert_close(d["scores"], torch.tensor([0.9, 0.7]))
        torch.testing.assert_close(d["boxes"][0], torch.tensor([12.0, 12.0, 28.0, 28.0]))  # centre (20, 20), 16 x 16


def test_learns_on_a_small_subset():
    """A few seconds of training on 96 scenes: the loss falls and mAP@0.5 on those scenes is far above the
    untrained model's."""
    data = detection.load("shapes")
    images, targets = detection.collate([data.train[i] for i in range(96)])
    model = small(width=0.5, head_channels=64)
    objective = YOLOLoss(model)

    def score() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            loss = objective.loss(images, targets)["loss"].item()
            metric = MeanAveragePrecision()
            metric.update(model.detect(images), targets)
        model.train()
        return loss, metric.compute()["map_50"]

    loss0, map0 = score()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(60):
        batch = torch.randperm(96)[:32]
        loss = objective.loss(images[batch], [targets[i] for i in batch.tolist()])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss1, map1 = score()
    assert loss1 < 0.5 * loss0
    assert map1 > map0 + 0.15, (map0, map1)                      # measured: 0.00 -> 0.26
