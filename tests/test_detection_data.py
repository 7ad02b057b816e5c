"""Detection and segmentation data: shapes scenes, COCO (polygons, RLE) and YOLO folders, PNG label masks."""
from deepatlas.tasks import get_task
import json
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from deepatlas import data
from deepatlas.catalog import Data
from deepatlas.data import detection, images, segmentation, shapes
from deepatlas.errors import DeepAtlasError
from deepatlas.nn.boxes import box_area


@pytest.fixture(scope="module")
def val():
    return shapes.splits("shapes")["val"]


# ---- shapes scenes ------------------------------------------------------------------------

def test_scenes_are_seeded_and_splits_differ():
    a, b = shapes.generate(20, 64, 5), shapes.generate(20, 64, 5)
    assert torch.equal(a.images, b.images) and torch.equal(a.owner, b.owner) and torch.equal(a.labels, b.labels)
    c = shapes.generate(20, 64, 6)
    assert not torch.equal(a.images, c.images)
    full, small = shapes.splits("shapes"), shapes.splits("shapes-40")
    assert [len(full[p]) for p in ("train", "val", "test")] == [1000, 250, 250] and len(small["train"]) == 40
    assert torch.equal(full["test"].images, small["test"].images), "val/test do not depend on the train count"
    assert not torch.equal(full["val"].images[:5], full["test"].images[:5])
    assert not torch.equal(full["train"].images[:5], full["val"].images[:5])
    assert shapes.generate(3, 96, 1).images.shape == (3, 3, 96, 96)


def test_every_box_is_the_tight_box_of_its_visible_mask(val):
    for target in val.targets()[:80]:
        for box, mask in zip(target["boxes"], target["masks"]):
            ys, xs = mask.nonzero(as_tuple=True)
            assert len(ys) >= shapes.MIN_PIXELS
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_masks_partition_the_semantic_foreground(val):
    masks = val.instance_masks()  # (N, slots, S, S)
    assert masks.sum(1).max() <= 1, "instance masks of one image never overlap"
    semantic = val.semantic()
    assert torch.equal(masks.any(1), semantic > 0)
    drawn = (masks.long() * (val.labels.clamp(min=0) + 1)[:, :, None, None]).sum(1)  # class + 1 under each mask
    assert torch.equal(drawn, semantic)
    assert ((val.labels >= 0) == masks.flatten(2).any(2)).all(), "a slot is labelled exactly when it is visible"


def test_object_counts_and_classes_cover_the_range(val):
    counts = (val.labels >= 0).sum(1)
    assert counts.min() == 1 and counts.max() == shapes.MAX_OBJECTS
    assert set(counts.tolist()) == set(range(1, 7))
    assert set(val.labels[val.labels >= 0].tolist()) == set(range(len(shapes.CLASSES)))
    images = val.images
    assert images.shape == (250, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    background = images.permute(0, 2, 3, 1)[val.owner < 0]  # (P, 3)
    assert background.std(0).min() > 0.05, "a textured, varied background, not one flat colour"


def test_shape_masks_hand_counted():
    one = torch.ones(1)
    def area(kind, r=5.0, angle=0.0):
        k = torch.tensor([shapes.CLASSES.index(kind)])
        return int(shapes.shape_masks(k, 10 * one, 10 * one, r * one, angle * one, 20).sum())
    # square: half side 0.8·5 = 4 around 10: pixel centres 6.5..13.5, 8 × 8
    assert area("square") == 64
    # cross, r = 6: bars 12 long (centres 4.5..15.5) and 4 wide (|v| ≤ 2.1: 8.5..11.5): 2·48 − 16
    assert area("cross", r=6.0) == 80
    assert area("circle", r=8.0) == pytest.approx(math.pi * 64, rel=0.05)
    assert area("triangle", r=8.0) == pytest.approx(3 * math.sqrt(3) / 4 * (shapes.REACH * 8) ** 2, rel=0.08)
    # an unrotated triangle has its flat side down (+y) and its apex up: 5/9 of it below its centroid
    tri = shapes.shape_masks(torch.tensor([2]), 10 * one, 10 * one, 6 * one, 0 * one, 20)[0]
    rows = tri.sum(1)[tri.any(1)]
    assert rows[0] <= 2 and rows[-1] == rows.max() and tri[10:].sum() / tri.sum() == pytest.approx(5 / 9, abs=0.05)
    masks = shapes.shape_masks(torch.tensor([1, 1]), torch.tensor([10.0, 7.0]), torch.tensor([10.0, 9.0]),
                               torch.tensor([5.0, 3.0]), torch.zeros(2), 20)
    assert shapes.tight_boxes(masks).tolist() == [[6, 6, 14, 14], [5, 7, 9, 11]]


def test_generating_the_default_splits_is_fast():
    start = time.perf_counter()
    for part in ("train", "val", "test"):
        shapes.generate(shapes.COUNTS[part], 64, shapes.SEEDS[part])
    assert time.perf_counter() - start < 3.0


# ---- the detection dataset ----------------------------------------------------------------

def test_load_for_dims_spec_and_collate():
    d = get_task("detection").load(Data(data="shapes-30", flip=True))
    assert d.dims == {"in_channels": 3, "image_size": 64, "n_classes": 4}
    assert d.spec == {"kind": "detection", "source": "shapes-30", "classes": shapes.CLASSES, "image_size": 64}
    assert len(d.train) == 30 and len(d.val) == 250
    image, target = d.train[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.long
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape[1:] == (64, 64)
    loader = DataLoader(d.train, batch_size=4, collate_fn=d.train.collate)
    x, targets = next(iter(loader))
    assert x.shape == (4, 3, 64, 64) and isinstance(targets, list) and len(targets) == 4
    for i in range(4):
        assert torch.equal(x[i], d.train[i][0]) and targets[i] is d.train.targets[i]
    torch.manual_seed(0)
    flipped, out = d.train_transform((x, targets))
    for i in range(4):
        assert torch.equal(out[i]["boxes"], shapes.tight_boxes(out[i]["masks"].bool()))
        same = torch.equal(flipped[i], x[i])
        assert same or torch.equal(flipped[i], x[i].flip(-1))
        assert torch.equal(out[i]["masks"], targets[i]["masks"] if same else targets[i]["masks"].flip(-1))
    assert get_task("detection").load(Data(data="shapes-30", image_size=48)).dims["image_size"] == 48


def test_random_crop_moves_boxes_and_masks_with_the_image():
    """A padded random crop (`crop_pad`) translates each image; its boxes and masks move by the same offset, are
    clipped to the image, and an object mostly cropped away (under a third of its box left) is dropped."""
    d = get_task("detection").load(Data(data="shapes-30", flip=False, crop_pad=30))
    x, targets = next(iter(DataLoader(d.train, batch_size=16, collate_fn=d.train.collate)))
    torch.manual_seed(0)
    moved, out = d.train_transform((x, targets))
    torch.manual_seed(0)
    dx, dy = torch.randint(-30, 31, (2, 16))  # the offsets the transform drew
    assert torch.equal(moved, images.shift(x, dx, dy))
    dropped = 0
    for i in range(16):
        t, o = targets[i], out[i]
        offset = torch.tensor([dx[i], dy[i], dx[i], dy[i]], dtype=torch.float32)
        shifted = t["boxes"] + offset
        clipped = shifted.clamp(0, 64)
        keep = box_area(clipped) >= box_area(shifted) / 3
        dropped += int((~keep).sum())
        assert torch.equal(o["boxes"], clipped[keep]) and torch.equal(o["labels"], t["labels"][keep])
        n = int(keep.sum())
        if n:
            expected = images.shift(t["masks"][keep, None].float(), dx[i].repeat(n), dy[i].repeat(n))[:, 0]
            assert torch.equal(o["masks"], expected.to(torch.uint8))
        else:  # every object cropped away: an empty target
            assert o["masks"].shape == (0, 64, 64)
    assert dropped > 0  # with offsets up to 30 px some objects near the border leave the crop


# ---- COCO: masks, round trips, errors -----------------------------------------------------

def test_rle_hand_worked():
    # counts [1, 2, 3] on 2×3, column-major: column 0 = (0, 1), column 1 = (1, 0), column 2 = (0, 0)
    assert detection.rle_decode([1, 2, 3], 2, 3).long().tolist() == [[0, 1, 0], [1, 0, 0]]
    assert detection.rle_encode(torch.tensor([[0, 1, 0], [1, 0, 0]]))["counts"] == [1, 2, 3]
    assert detection.rle_encode(torch.ones(2, 2))["counts"] == [0, 4], "runs start with zeros"
    # the string form: '0' + value; past the third count, deltas; 5-bit groups with a continuation bit
    for text, counts in {"324": [3, 2, 4], "1232": [1, 2, 3, 4], "5:2I": [5, 10, 2, 3], "X1": [40]}.items():
        assert detection._decompress(text).tolist() == counts
        assert detection._compress(torch.tensor(counts)) == text
    with pytest.raises(ValueError, match="add up"):
        detection.rle_decode([1, 2], 2, 3)


def test_rle_and_polygons_round_trip_random_masks():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        mask = torch.rand(9, 13, generator=g) < 0.4
        for compressed in (False, True):
            rle = detection.rle_encode(mask, compressed)
            assert torch.equal(detection.rle_decode(rle["counts"], 9, 13), mask)
        polys = [torch.tensor(p, dtype=torch.float64).view(-1, 2) for p in detection.mask_to_polygons(mask)]
        assert torch.equal(detection.polygons_to_mask(polys, 9, 13), mask)
    large = torch.zeros(300, 400, dtype=torch.bool)
    large[10:200, 50:390] = True  # runs of thousands: several 5-bit groups each
    assert torch.equal(detection.rle_decode(detection.rle_encode(large, True)["counts"], 300, 400), large)


def test_polygon_rasterizer_hand_worked():
    tri = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    # centres (j + .5, i + .5) inside x + y < 4: i + j ≤ 2
    expected = torch.tensor([[i + j <= 2 for j in range(4)] for i in range(4)])
    assert torch.equal(detection.polygons_to_mask([tri], 4, 4), expected)
    square = torch.tensor([[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]])
    both = detection.polygons_to_mask([tri, square], 4, 4)  # several polygons: their union
    assert torch.equal(both, expected | detection.polygons_to_mask([square], 4, 4))
    assert int(detection.polygons_to_mask([square], 4, 4).sum()) == 4


@pytest.mark.parametrize("masks", ["polygon", "rle", "compressed"])
def test_coco_round_trip(tmp_path, val, masks):
    d = detection.DetectionDataset(val.images[:30], val.targets()[:30])
    path = detection.write_coco(tmp_path, d, shapes.CLASSES, masks)
    coco = json.loads(path.read_text())
    assert coco["categories"][0] == {"id": 1, "name": "circle"} and len(coco["images"]) == 30
    spec = {"kind": "detection", "classes": shapes.CLASSES, "image_size": 64}
    back = detection.read_labeled(spec, str(tmp_path))
    assert (back.images - d.images).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
    for got, want in zip(back.targets, d.targets):
        for key in ("boxes", "labels", "masks"):
            assert torch.equal(got[key], want[key]), key
    loaded = detection.load(str(tmp_path))  # as training data: 60/20/20 by image
    assert loaded.spec["classes"] == shapes.CLASSES and [len(loaded.train), len(loaded.val), len(loaded.test)] == [18, 6, 6]
    x, names = detection.read_inputs(spec, str(tmp_path))
    assert x.shape == (30, 3, 64, 64) and names[0].endswith("00000.png")


def _coco_folder(tmp_path, size=(128, 96)):
    """One 128×96 image with a box and a triangle polygon, and one with an RLE mask (uncompressed)."""
    w, h = size
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    rle = detection.rle_encode(torch.zeros(h, w, dtype=torch.bool).index_fill_(0, torch.arange(10, 20), True))
    coco = {"images": [{"id": 7, "file_name": "a.png", "width": w, "height": h},
                       {"id": 8, "file_name": "b.png", "width": w, "height": h}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [32, 24, 64, 48],
                             "segmentation": [[32, 24, 96, 24, 32, 72]]},
                            {"id": 2, "image_id": 8, "category_id": 5, "bbox": [0, 10, w, 10], "segmentation": rle},
                            {"id": 3, "image_id": 8, "category_id": 5, "bbox": [0, 0, 5, 5], "iscrowd": 1}],
            "categories": [{"id": 5, "name": "dog"}, {"id": 3, "name": "cat"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return coco


def test_coco_images_of_other_sizes_are_letterboxed_with_boxes_and_masks(tmp_path):
    _coco_folder(tmp_path)
    spec = {"classes": ["cat", "dog"], "image_size": 64}
    a, b = detection.read_labeled(spec, str(tmp_path)).targets
    assert a["boxes"].tolist() == [[16, 12, 48, 36]] and a["labels"].tolist() == [0]  # ×0.5 in x and y: aspect kept
    assert b["labels"].tolist() == [1] and len(b["boxes"]) == 1, "the crowd annotation is left out"
    assert b["masks"][0].any(1).nonzero().squeeze(1).tolist() == list(range(5, 10))  # rows 10..19 of 96 -> 5..9
    tri = a["masks"][0].bool()  # the polygon scaled by 1/2: right angle at (16, 12), legs 32 (x) and 24 (y)
    ys, xs = tri.nonzero(as_tuple=True)
    assert xs.min() == 16 and ys.min() == 12 and ((xs - 16) / 32 + (ys - 12) / 24 < 1).all()
    assert int(tri.sum()) == pytest.approx(32 * 24 / 2, rel=0.06)


def test_coco_split_files(tmp_path):
    coco = _coco_folder(tmp_path)
    (tmp_path / "annotations.json").unlink()
    for part in ("train", "val"):
        (tmp_path / f"instances_{part}.json").write_text(json.dumps(coco))
    d = detection.load(str(tmp_path))
    assert d.spec["classes"] == ["cat", "dog"] and len(d.train) == len(d.val) == len(d.test) == 2


def test_coco_errors_name_the_file(tmp_path):
    coco = _coco_folder(tmp_path)
    spec = {"classes": ["cat", "dog"], "image_size": 64}
    ann = tmp_path / "annotations.json"
    ann.write_text('{"images": [')
    with pytest.raises(DeepAtlasError, match=r"annotations\.json: not valid JSON"):
        detection.read_labeled(spec, str(tmp_path))
    ann.write_text(json.dumps({"images": []}))
    with pytest.raises(DeepAtlasError, match="annotations.json: no 'annotations' list"):
        detection.read_labeled(spec, str(tmp_path))
    bad = json.loads(json.dumps(coco))
    bad["annotations"][0]["bbox"] = [100, 24, 64, 48]  # 100 + 64 > 128
    ann.write_text(json.dumps(bad))
    with pytest.raises(DeepAtlasError, match=r"annotation 1 \(a\.png\): box .* outside the 128x96 image"):
        detection.read_labeled(spec, str(tmp_path))
    bad = json.loads(json.dumps(coco))
    bad["annotations"][1]["segmentation"]["counts"][0] += 1
    ann.write_text(json.dumps(bad))
    with pytest.raises(DeepAtlasError, match=r"annotation 2 \(b\.png\): bad segmentation"):
        detection.read_labeled(spec, str(tmp_path))
    ann.write_text(json.dumps(coco))
    (tmp_path / "b.png").unlink()
    with pytest.raises(DeepAtlasError, match="image 'b.png' not found"):
        detection.read_labeled(spec, str(tmp_path))
    with pytest.raises(DeepAtlasError, match=r"categor.* dog not in the run's classes"):
        detection.read_labeled({"classes": ["cat"], "image_size": 64}, str(tmp_path))
    with pytest.raises(DeepAtlasError, match="unknown dataset 'nope'"):
        detection.load("nope")
    (tmp_path / "a.png").write_text("not an image")
    with pytest.raises(DeepAtlasError, match="a.png: not a readable image"):
        detection.read_labeled(spec, str(tmp_path))


# ---- YOLO ---------------------------------------------------------------------------------

def _yolo_folder(tmp_path, n=5):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(n):
        Image.fromarray(np.full((40, 80, 3), 30 * i, dtype=np.uint8)).save(tmp_path / "images" / f"{i}.jpg")
        if i:  # image 0 has no label file: no objects
            (tmp_path / "labels" / f"{i}.txt").write_text("1 0.5 0.5 0.5 0.25\n\n0 0.25 0.75 0.5 0.5\n")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")


def test_yolo_folder(tmp_path):
    _yolo_folder(tmp_path)
    d = detection.load(str(tmp_path))
    assert d.spec["classes"] == ["cat", "dog"] and len(d.train) + len(d.val) + len(d.test) == 5
    every = d.train.targets + d.val.targets + d.test.targets
    assert sorted(len(t["boxes"]) for t in every) == [0, 2, 2, 2, 2]
    t = next(t for t in every if len(t["boxes"]))
    assert d.spec["image_size"] == 96  # 80x40 images: their longer side rounded up to a multiple of 32
    # letterboxed: 80x40 -> 96x48 at the top (×1.2 in x and y), so the fractions are of 96 and of 48
    assert t["boxes"].tolist() == [[24, 18, 72, 30], [0, 24, 48, 48]] and t["labels"].tolist() == [1, 0]
    assert torch.equal(shapes.tight_boxes(t["masks"].bool()), t["boxes"]), "YOLO masks are the filled boxes"
    assert detection.read_labeled({"classes": ["dog", "cat"], "image_size": 64}, str(tmp_path)).targets[1][
        "labels"].tolist() == [0, 1], "labels follow the run's class order"


def test_yolo_errors_name_the_file_and_line(tmp_path):
    _yolo_folder(tmp_path)
    (tmp_path / "labels" / "2.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.9 0.5 0.4 0.2\n")
    with pytest.raises(DeepAtlasError, match=r"labels/2\.txt: line 2: box outside the image"):
        detection.load(str(tmp_path))
    (tmp_path / "labels" / "2.txt").write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(DeepAtlasError, match=r"2\.txt: line 1: expected 'class cx cy w h'"):
        detection.load(str(tmp_path))
    (tmp_path / "labels" / "2.txt").write_text("2 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DeepAtlasError, match=r"2\.txt: line 1: class 2 is not in classes.txt"):
        detection.load(str(tmp_path))


# ---- segmentation -------------------------------------------------------------------------

def test_segmentation_shapes_match_detection_scenes(val):
    d = get_task("segmentation").load(Data(data="shapes-20"))
    assert d.dims == {"in_channels": 3, "image_size": 64, "n_classes": 5}
    assert d.spec["classes"] == ["background", *shapes.CLASSES]
    x, y = d.val.tensors
    assert torch.equal(x, val.images) and y.dtype == torch.long
    for target, semantic in zip(val.targets()[:20], y):  # the class + 1 of the visible instance at each pixel
        built = torch.zeros(64, 64, dtype=torch.long)
        for mask, label in zip(target["masks"], target["labels"]):
            built[mask.bool()] = label + 1
        assert torch.equal(built, semantic)
    flip = segmentation.Flip()
    torch.manual_seed(0)
    fx, fy = flip((x[:6], y[:6]))
    for i in range(6):
        assert (torch.equal(fx[i], x[i]) and torch.equal(fy[i], y[i])) or \
            (torch.equal(fx[i], x[i].flip(-1)) and torch.equal(fy[i], y[i].flip(-1)))


def _seg_folder(tmp_path, n=5):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((32, 48, 3), 40 * i, dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        mask = np.zeros((32, 48), dtype=np.uint8)
        mask[8:24, 12:36] = 1 + i % 2
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")


def test_segmentation_folder(tmp_path):
    _seg_folder(tmp_path)
    d = segmentation.load(str(tmp_path), 16)
    assert d.dims == {"in_channels": 3, "image_size": 16, "n_classes": 3}
    assert d.spec["classes"] == ["background", "1", "2"]
    x, y = d.train.tensors
    assert x.shape == (3, 3, 16, 16) and y.shape == (3, 16, 16) and len(d.val) == len(d.test) == 1
    # letterboxed: 48x32 -> 16x11 at the top; the rows below are padding, ignored by the loss and the metrics
    assert set(y[:, :11].unique().tolist()) <= {0, 1, 2} and (y[:, 11:] == segmentation.IGNORE).all()
    inside = (y[0] > 0) & (y[0] < 3)  # mask rows 8..23, columns 12..35, at a third of the size
    assert inside.nonzero().amin(0).tolist() == [3, 4] and inside.nonzero().amax(0).tolist() == [7, 11]
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    assert segmentation.load(str(tmp_path)).spec["classes"] == ["background", "cat", "dog"]
    labeled = segmentation.read_labeled({"classes": ["background", "cat", "dog"], "image_size": 32}, str(tmp_path))
    assert labeled.tensors[1].shape == (5, 32, 32)


def test_segmentation_errors_name_the_file(tmp_path):
    _seg_folder(tmp_path)
    spec = {"classes": ["background", "cat"], "image_size": 32}
    with pytest.raises(DeepAtlasError, match=r"masks/1\.png: label 2, but there are only classes 0..1"):
        segmentation.read_labeled(spec, str(tmp_path))
    Image.fromarray(np.zeros((30, 48), dtype=np.uint8)).save(tmp_path / "masks" / "3.png")
    with pytest.raises(DeepAtlasError, match=r"3\.png: mask is 48x30, its image 48x32"):
        segmentation.load(str(tmp_path))
    Image.fromarray(np.zeros((32, 48, 3), dtype=np.uint8)).save(tmp_path / "masks" / "3.png")
    with pytest.raises(DeepAtlasError, match=r"3\.png: a RGB image; a label mask needs one channel"):
        segmentation.load(str(tmp_path))
    (tmp_path / "masks" / "3.png").unlink()
    with pytest.raises(DeepAtlasError, match=r"images/3\.png: no mask 3\.png"):
        segmentation.load(str(tmp_path))


def test_coco_subset_writes(tmp_path, val):
    """write_coco takes any indexable (image, target) dataset, e.g. a Subset."""
    d = detection.DetectionDataset(val.images[:10], val.targets()[:10])
    detection.write_coco(tmp_path, Subset(d, [3, 4]), shapes.CLASSES, "rle")
    back = detection.read_labeled({"classes": shapes.CLASSES, "image_size": 64}, str(tmp_path))
    assert len(back) == 2 and torch.equal(back.targets[1]["masks"], d.targets[4]["masks"])
