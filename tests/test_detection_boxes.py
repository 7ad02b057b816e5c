"""Box operators (nn/boxes.py) against brute-force Python references and hand-worked values."""
import math

import pytest
import torch

from deepatlas.nn.boxes import (
    batched_nms,
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    generalized_box_iou,
    make_anchors,
    nms,
    roi_align,
    roi_pool,
)


def random_boxes(n: int, generator: torch.Generator, extent: float = 100.0, max_size: float = 40.0) -> torch.Tensor:
    """(n, 4) float64 (x1, y1, x2, y2) boxes with positive width and height."""
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * extent
    size = torch.rand(n, 2, generator=generator, dtype=torch.float64) * max_size + 0.5
    return torch.cat([corner, corner + size], dim=1)


# ---- Python references ------------------------------------------------------------------------------------

def py_iou_giou(a: list[float], b: list[float]) -> tuple[float, float]:
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area_a + area_b - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union, inter / union - (hull - union) / hull


def py_nms(boxes: list[list[float]], scores: list[float], threshold: float) -> list[int]:
    """Textbook greedy NMS: take the best remaining box, drop those overlapping it by more than threshold."""
    remaining = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [i for i in remaining if py_iou_giou(boxes[best], boxes[i])[0] <= threshold]
    return keep


def py_bilinear(fmap: list[list[float]], y: float, x: float) -> float:
    """The reference RoIAlign bilinear read of one channel (H x W nested lists) at (y, x)."""
    height, width = len(fmap), len(fmap[0])
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = math.floor(y), math.floor(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[y0][x0] + (1 - ly) * lx * fmap[y0][x1]
            + ly * (1 - lx) * fmap[y1][x0] + ly * lx * fmap[y1][x1])


def py_roi_align(features, rois, out_h, out_w, scale, ratio, aligned):
    feats = features.tolist()
    out = torch.zeros(len(rois), features.shape[1], out_h, out_w, dtype=torch.float64)
    offset = 0.5 if aligned else 0.0
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy = x1 * scale - offset, y1 * scale - offset
        rw, rh = x2 * scale - offset - sx, y2 * scale - offset - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / out_w, rh / out_h
        for c in range(features.shape[1]):
            for ph in range(out_h):
                for pw in range(out_w):
                    total = 0.0
                    for iy in range(ratio):
                        for ix in range(ratio):
                            y = sy + ph * bh + (iy + 0.5) * bh / ratio
                            x = sx + pw * bw + (ix + 0.5) * bw / ratio
                            total += py_bilinear(feats[int(b)][c], y, x)
                    out[r, c, ph, pw] = total / ratio**2
    return out


def c_round(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def py_roi_pool(features, rois, out_h, out_w, scale):
    feats = features.tolist()
    height, width = features.shape[-2:]
    out = torch.zeros(len(rois), features.shape[1], out_h, out_w, dtype=torch.float64)
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy, ex, ey = (c_round(v * scale) for v in (x1, y1, x2, y2))
        rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
        bw, bh = rw / out_w, rh / out_h
        for c in range(features.shape[1]):
            for ph in range(out_h):
                for pw in range(out_w):
                    h0 = min(max(math.floor(ph * bh) + sy, 0), height)
                    h1 = min(max(math.ceil((ph + 1) * bh) + sy, 0), height)
                    w0 = min(max(math.floor(pw * bw) + sx, 0), width)
                    w1 = min(max(math.ceil((pw + 1) * bw) + sx, 0), width)
                    cells = [feats[int(b)][c][i][j] for i in range(h0, h1) for j in range(w0, w1)]
                    out[r, c, ph, pw] = max(cells) if cells else 0.0
    return out


# ---- formats, IoU, GIoU -----------------------------------------------------------------------------------

def test_area_and_format_conversions_hand_worked():
    boxes = torch.tensor([[1.0, 2.0, 4.0, 8.0], [0.0, 0.0, 0.5, 2.0]])
    assert torch.equal(box_area(boxes), torch.tensor([18.0, 1.0]))
    cxcywh = box_xyxy_to_cxcywh(boxes)
    assert torch.equal(cxcywh, torch.tensor([[2.5, 5.0, 3.0, 6.0], [0.25, 1.0, 0.5, 2.0]]))
    assert torch.equal(box_cxcywh_to_xyxy(cxcywh), boxes)
    assert torch.equal(box_area(boxes.view(1, 2, 4)), torch.tensor([[18.0, 1.0]]))  # any leading shape
    assert torch.equal(clip_boxes(torch.tensor([[-3.0, 2.0, 50.0, 70.0]]), (60, 40)),
                       torch.tensor([[0.0, 2.0, 40.0, 60.0]]))


def test_iou_and_giou_equal_a_python_double_loop():
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(13, g), random_boxes(9, g)
    iou, giou = box_iou(a, b), generalized_box_iou(a, b)
    assert iou.shape == giou.shape == (13, 9)
    ref = [[py_iou_giou(x, y) for y in b.tolist()] for x in a.tolist()]
    assert torch.allclose(iou, torch.tensor([[p[0] for p in row] for row in ref], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(giou, torch.tensor([[p[1] for p in row] for row in ref], dtype=torch.float64), atol=1e-12)
    assert (iou > 0).any() and (iou == 0).any()  # both overlapping and disjoint pairs were exercised
    assert (giou <= iou + 1e-12).all() and (giou > -1).all()


def test_giou_hand_worked_identical_and_far_apart():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]], dtype=torch.float64)
    # intersection 1, union 7, enclosing box 9
    assert box_iou(a, b).item() == pytest.approx(1 / 7, abs=1e-15)
    assert generalized_box_iou(a, b).item() == pytest.approx(1 / 7 - 2 / 9, abs=1e-15)
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(6, g)
    assert torch.allclose(generalized_box_iou(boxes, boxes).diagonal(), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(box_iou(boxes, boxes).diagonal(), torch.ones(6, dtype=torch.float64))
    # disjoint boxes: IoU is 0 whatever the gap, GIoU decreases toward -1 as they move apart
    gaps = torch.tensor([0.0, 1.0, 10.0, 1e3, 1e7], dtype=torch.float64)
    far = torch.stack([2 + gaps, 2 + gaps, 4 + gaps, 4 + gaps], dim=1)  # (5, 4)
    assert torch.equal(box_iou(a, far)[0], torch.zeros(5, dtype=torch.float64))
    giou = generalized_box_iou(a, far)[0]
    assert (giou.diff() < 0).all()
    assert giou[-1].item() == pytest.approx(-1.0, abs=1e-6)


# ---- NMS --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.3, 0.5, 0.7, 0.95])
def test_nms_equals_brute_force_greedy(threshold):
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        boxes = random_boxes(60, g, extent=60.0)  # crowded: plenty of overlaps
        scores = torch.rand(60, generator=g, dtype=torch.float64)
        keep = nms(boxes, scores, threshold)
        assert keep.dtype == torch.long
        expected = py_nms(boxes.tolist(), scores.tolist(), threshold)
        assert keep.tolist() == expected
        assert (scores[keep].diff() < 0).all()  # decreasing score order


def test_nms_hand_worked_and_edge_cases():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [20.0, 20.0, 30.0, 30.0],
                          [0.0, 0.0, 10.0, 5.0]])
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    # box 1 is best; box 0 overlaps it by 9/11 (suppressed at 0.5); box 3 overlaps box 1 by 45/105
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 0, 3, 2]
    assert nms(boxes[:0], scores[:0], 0.5).shape == (0,)


def test_batched_nms_is_per_class_nms_and_never_crosses_labels():
    g = torch.Generator().manual_seed(5)
    boxes = random_boxes(80, g, extent=50.0)
    scores = torch.rand(80, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (80,), generator=g)
    keep = batched_nms(boxes, scores, labels, 0.4)
    expected = []
    for k in range(4):
        idx = torch.nonzero(labels == k).flatten().tolist()
        expected += [idx[i] for i in py_nms([boxes[j].tolist() for j in idx], [scores[j].item() for j in idx], 0.4)]
    expected.sort(key=lambda i: -scores[i].item())
    assert keep.tolist() == expected
    # identical boxes of different labels all survive; of one label only the best
    same = torch.tensor([[5.0, 5.0, 9.0, 9.0]]).repeat(4, 1)
    s = torch.tensor([0.1, 0.4, 0.3, 0.2])
    assert batched_nms(same, s, torch.tensor([0, 1, 2, 3]), 0.1).tolist() == [1, 2, 3, 0]
    assert batched_nms(same, s, torch.tensor([0, 0, 1, 1]), 0.1).tolist() == [1, 2]
    assert batched_nms(same[:0], s[:0], torch.tensor([], dtype=torch.long), 0.5).shape == (0,)


# ---- encoding, anchors ------------------------------------------------------------------------------------

def test_encode_hand_worked_and_decode_round_trip():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
    box = torch.tensor([[5.0, 5.0, 25.0, 25.0]])     # centre (15, 15), 20 x 20
    expected = torch.tensor([[1.0, 0.25, math.log(2.0), 0.0]])
    assert torch.allclose(encode_boxes(box, anchor), expected)
    assert torch.allclose(encode_boxes(box, anchor, (10.0, 10.0, 5.0, 5.0)), expected * torch.tensor([10, 10, 5, 5]))
    g = torch.Generator().manual_seed(2)
    anchors, boxes = random_boxes(50, g).float(), random_boxes(50, g).float()
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        deltas = encode_boxes(boxes, anchors, weights)
        assert torch.allclose(decode_boxes(deltas, anchors, weights), boxes, atol=1e-5, rtol=1e-5)
    # broadcasting: (N, K, 4) deltas (one per class) against (N, 1, 4) anchors
    many = torch.randn(50, 3, 4, generator=g)
    assert torch.allclose(encode_boxes(decode_boxes(many, anchors[:, None]), anchors[:, None]), many, atol=1e-4)
    # dw, dh clamped at log(1000/16): a huge delta gives a 62.5x box, not inf
    huge = decode_boxes(torch.tensor([[0.0, 0.0, 50.0, 50.0]]), anchor)
    assert torch.allclose(box_xyxy_to_cxcywh(huge), torch.tensor([[5.0, 10.0, 625.0, 1250.0]]))


def test_make_anchors_count_centres_areas_ratios_and_order():
    sizes, ratios, stride = [8.0, 16.0], [0.5, 1.0, 2.0], 4
    anchors = make_anchors((3, 5), stride, sizes, ratios)
    assert anchors.shape == (3 * 5 * 6, 4)
    cx, cy, w, h = box_xyxy_to_cxcywh(anchors).view(3, 5, 6, 4).unbind(-1)  # (H', W', A) each
    i, j = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    assert torch.allclose(cx, ((j + 0.5) * stride)[..., None].expand(3, 5, 6))
    assert torch.allclose(cy, ((i + 0.5) * stride)[..., None].expand(3, 5, 6))
    expected_area = torch.tensor([s * s for s in sizes for _ in ratios])
    expected_ratio = torch.tensor([r for _ in sizes for r in ratios])
    assert torch.allclose(w * h, expected_area.expand(3, 5, 6))
    assert torch.allclose(h / w, expected_ratio.expand(3, 5, 6))
    first = anchors[:6]  # cell (0, 0), centre (2, 2): size 8 ratio 1 is the square [-2, -2, 6, 6]
    assert torch.allclose(first[1], torch.tensor([-2.0, -2.0, 6.0, 6.0]))
    assert make_anchors((2, 2), 8, [8], [1.0], dtype=torch.float64).dtype == torch.float64


# ---- RoIAlign ---------------------------------------------------------------------------------------------

def ramp_features(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """f(c, y, x) = x + 10 y + 100 c + 1000 b: bilinear interpolation of it is exact inside the map."""
    b = torch.arange(batch, dtype=torch.float64).view(-1, 1, 1, 1)
    c = torch.arange(channels, dtype=torch.float64).view(1, -1, 1, 1)
    y = torch.arange(height, dtype=torch.float64).view(1, 1, -1, 1)
    x = torch.arange(width, dtype=torch.float64).view(1, 1, 1, -1)
    return x + 10 * y + 100 * c + 1000 * b


def test_roi_align_tiny_hand_worked():
    fmap = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    # aligned=False, one sample at the RoI's centre (0.5, 0.5): the mean of the four pixels
    rois = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]])
    assert roi_align(fmap, rois, 1, 1.0, sampling_ratio=1, aligned=False).item() == pytest.approx(1.5)
    # aligned=True shifts by -0.5: RoI [0.5, 1.5]^2 in image pixels samples at (0.5, 0.5) again
    rois = torch.tensor([[0.0, 0.5, 0.5, 1.5, 1.5]])
    assert roi_align(fmap, rois, 1, 1.0, sampling_ratio=1, aligned=True).item() == pytest.approx(1.5)
    # 2 x 2 samples of RoI [0, 1]^2 (aligned=False) at 0.25 and 0.75: mean is still f(0.5, 0.5)
    rois = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]])
    assert roi_align(fmap, rois, 1, 1.0, sampling_ratio=2, aligned=False).item() == pytest.approx(1.5)
    # a single sample at (y, x) = (0.25, 0.75) of an aligned 1x1 bin: 0.75 + 2 * 0.25 = 1.25
    rois = torch.tensor([[0.0, 1.0, 0.5, 1.5, 1.0]])
    assert roi_align(fmap, rois, 1, 1.0, sampling_ratio=1, aligned=True).item() == pytest.approx(1.25)


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_on_a_ramp_equals_f_at_each_bin_centre(aligned):
    g = torch.Generator().manual_seed(3)
    height, width, scale = 12, 16, 0.5
    features = ramp_features(2, 3, height, width)
    # RoIs whose samples all lie in [0, W-1] x [0, H-1] (feature coordinates), where bilinear is exact
    lo, hi = 2.0, 2 * (min(height, width) - 1) - 1.0
    corners = lo + torch.rand(20, 2, 2, generator=g, dtype=torch.float64) * (hi - lo)
    x1, x2 = corners[:, 0].min(1).values, corners[:, 0].max(1).values + 2.5
    y1, y2 = corners[:, 1].min(1).values, corners[:, 1].max(1).values + 2.5
    x2, y2 = x2.clamp(max=2 * (width - 1)), y2.clamp(max=2 * (height - 1))
    b = torch.randint(0, 2, (20,), generator=g).double()
    rois = torch.stack([b, x1, y1, x2, y2], dim=1)
    out = roi_align(features, rois, (3, 4), scale, sampling_ratio=2, aligned=aligned)
    assert out.shape == (20, 3, 3, 4)
    off = 0.5 if aligned else 0.0
    sx, sy = x1 * scale - off, y1 * scale - off
    bw, bh = (x2 * scale - off - sx) / 4, (y2 * scale - off - sy) / 3
    cx = sx[:, None] + (torch.arange(4.0, dtype=torch.float64) + 0.5) * bw[:, None]  # (R, w) bin centres
    cy = sy[:, None] + (torch.arange(3.0, dtype=torch.float64) + 0.5) * bh[:, None]  # (R, h)
    c = torch.arange(3, dtype=torch.float64)
    expected = (cx[:, None, None, :] + 10 * cy[:, None, :, None] + 100 * c[None, :, None, None]
                + 1000 * b[:, None, None, None])
    assert torch.allclose(out, expected, atol=1e-10)


@pytest.mark.parametrize("aligned,ratio", [(True, 1), (True, 2), (False, 2), (True, 3)])
def test_roi_align_equals_python_reference_with_borders(aligned, ratio):
    """Random features, RoIs straddling and leaving the map: exercises the edge clamp and the zero outside."""
    g = torch.Generator().manual_seed(4)
    features = torch.randn(2, 2, 5, 7, generator=g, dtype=torch.float64)
    xy = torch.rand(12, 2, 2, generator=g, dtype=torch.float64) * 24 - 5  # image coords in [-5, 19]
    x1, x2 = xy[:, 0].min(1).values, xy[:, 0].max(1).values
    y1, y2 = xy[:, 1].min(1).values, xy[:, 1].max(1).values
    b = torch.randint(0, 2, (12,), generator=g).double()
    rois = torch.stack([b, x1, y1, x2, y2], dim=1)
    rois = torch.cat([rois, torch.tensor([[1.0, 30.0, 30.0, 40.0, 36.0], [0.0, 0.0, 0.0, 0.4, 0.3]],
                                         dtype=torch.float64)])  # far outside the map; a tiny RoI
    out = roi_align(features, rois, (2, 3), 0.5, sampling_ratio=ratio, aligned=aligned)
    assert torch.allclose(out, py_roi_align(features, rois, 2, 3, 0.5, ratio, aligned), atol=1e-12)
    assert torch.equal(out[-2], torch.zeros(2, 2, 3, dtype=torch.float64))


def test_roi_align_gradcheck_float64():
    g = torch.Generator().manual_seed(6)
    features = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.3, 0.7, 8.9, 7.1], [1, -2.0, 3.0, 6.0, 12.0], [1, 4.2, 2.2, 5.1, 3.4]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (3, 2), 0.5, sampling_ratio=2), (features,))
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, 0.5, sampling_ratio=1, aligned=False),
                                    (features,))
    # the gradient is the transpose of the bilinear weights: on a one-pixel RoI read at a pixel centre,
    # the whole output gradient lands on that pixel
    f = torch.zeros(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    roi_align(f, torch.tensor([[0.0, 1.0, 1.0, 2.0, 2.0]], dtype=torch.float64), 1, 1.0, 1).sum().backward()
    expected = torch.zeros(3, 3, dtype=torch.float64)
    expected[1, 1] = 1.0
    assert torch.equal(f.grad[0, 0], expected)


def test_roi_align_float32_and_empty():
    features = ramp_features(1, 2, 6, 6).float()
    rois = torch.tensor([[0.0, 1.0, 1.0, 9.0, 9.0]])
    out = roi_align(features, rois, 2, 1.0)
    assert out.dtype == torch.float32 and out.shape == (1, 2, 2, 2)
    assert roi_align(features, rois[:0], (2, 3)).shape == (0, 2, 2, 3)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align(features, rois, 2, sampling_ratio=0)


# ---- RoIPool ----------------------------------------------------------------------------------------------

def test_roi_pool_hand_worked():
    fmap = torch.arange(16.0).view(1, 1, 4, 4)
    whole = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])  # cells 0..3 on both axes, two 2-cell bins each
    assert torch.equal(roi_pool(fmap, whole, 2), torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    # a 3-cell RoI into 2 bins: bins [floor(0), ceil(1.5)) = [0, 2) and [floor(1.5), ceil(3)) = [1, 3) overlap
    three = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0]])  # columns 1..3 of row 0
    assert torch.equal(roi_pool(fmap, three, (1, 2)), torch.tensor([[[[2.0, 3.0]]]]))


def test_roi_pool_equals_brute_force_max():
    g = torch.Generator().manual_seed(7)
    features = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    xy = torch.rand(15, 2, 2, generator=g, dtype=torch.float64) * 26 - 4
    x1, x2 = xy[:, 0].min(1).values, xy[:, 0].max(1).values
    y1, y2 = xy[:, 1].min(1).values, xy[:, 1].max(1).values
    b = torch.randint(0, 2, (15,), generator=g).double()
    rois = torch.stack([b, x1, y1, x2, y2], dim=1)
    # odd pixel corners land on .5 cells at scale 0.5: C's round() sends 2.5 to 3 (round-half-even would give 2)
    halves = torch.tensor([[1.0, 5.0, 1.0, 9.0, 5.0], [0.0, 1.0, 5.0, 13.0, 9.0]], dtype=torch.float64)
    off_map = torch.tensor([[0.0, 40.0, 40.0, 50.0, 50.0]], dtype=torch.float64)
    rois = torch.cat([rois, halves, off_map])
    for size in [(2, 2), (3, 4), (5, 3)]:
        out = roi_pool(features, rois, size, 0.5)
        assert out.shape == (18, 3, *size)
        assert torch.equal(out, py_roi_pool(features, rois, *size, 0.5))
    assert torch.equal(out[-1], torch.zeros(3, 5, 3, dtype=torch.float64))


def test_roi_pool_gradient_goes_to_the_max():
    features = torch.arange(16.0).view(1, 1, 4, 4).requires_grad_()
    roi_pool(features, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]]), 2).sum().backward()
    expected = torch.zeros(4, 4)
    expected[1, 1] = expected[1, 3] = expected[3, 1] = expected[3, 3] = 1.0
    assert torch.equal(features.grad[0, 0], expected)
