"""Users' own images (issue 18): the image size taken from the data, detection and segmentation predicted at the
input's own size (letterboxed) with boxes and masks in its pixels, annotated PNGs of its size and aspect, the score
threshold, masks as RLE in JSON, raw inputs (PIL images, arrays) encoded as training did, and trivial baselines."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

import deepatlas
from deepatlas.data import detection, images, segmentation
from deepatlas.data.detection import DetectionDataset
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.detection import detection_baseline, segmentation_baseline
from deepatlas.tasks import get_task


def scene(width: int, height: int, seed: int, boxes: list[list[int]]) -> np.ndarray:
    """A textured (height, width, 3) uint8 picture with a bright rectangle at each box [x0, y0, x1, y1]."""
    rng = np.random.default_rng(seed)
    picture = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        picture[y0:y1, x0:x1] = (230, 200 - 60 * (k % 2), 40)
    return picture


def coco_folder(root, n: int = 8, size=(128, 96)) -> dict:
    """n pictures of `size` (width, height), two rectangles each, as a COCO folder with boxes and polygons."""
    (root / "images").mkdir(parents=True)
    w, h = size
    records, annotations = [], []
    for i in range(n):
        boxes = [[8 + 4 * i, 10, 40 + 4 * i, 40], [w - 50, h - 40 - 2 * i, w - 10, h - 8 - 2 * i]]
        Image.fromarray(scene(w, h, i, boxes)).save(root / "images" / f"{i}.png")
        records.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h})
        for x0, y0, x1, y1 in boxes:
            annotations.append({"id": len(annotations), "image_id": i, "category_id": 1, "iscrowd": 0,
                                "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    coco = {"images": records, "annotations": annotations, "categories": [{"id": 1, "name": "block"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return coco


def digit_folder(root, per_class: int = 12, sizes=None) -> None:
    """scikit-learn's 8x8 digits 0, 1, 2 enlarged to 28x28 grey PNGs (or to `sizes`, cycled), a folder per class."""
    x, y, _ = images._digits()
    for label in range(3):
        (root / str(label)).mkdir(parents=True)
        for i, picture in enumerate(x[y == label][:per_class]):
            side = 28 if sizes is None else sizes[i % len(sizes)]
            big = images.resize(picture[None], side)[0, 0].clamp(0, 1)
            Image.fromarray((big.numpy() * 255).round().astype(np.uint8)).save(root / str(label) / f"{i}.png")


class Stub(nn.Module):
    """Stands in for a trained dense predictor; keeps the images it was given (the letterboxed inputs)."""

    def __init__(self, detections=None, probabilities=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.detections, self.probs, self.seen = detections, probabilities, []

    def predict(self, x):
        self.seen.append(x)
        return [self.detections] * len(x)

    def probabilities(self, x):
        self.seen.append(x)
        return self.probs.expand(len(x), -1, -1, -1)


# ---- 1. the size comes from the data ---------------------------------------------------------

def test_image_folders_keep_their_own_size_or_take_the_median(tmp_path, capsys):
    digit_folder(tmp_path / "same")
    d = images.load(str(tmp_path / "same"))
    assert d.spec["image_size"] == 28 and d.train.tensors[0].shape[1:] == (1, 28, 28)
    digit_folder(tmp_path / "mixed", sizes=[20, 30, 30, 40])  # once an error; now the median longer side
    capsys.readouterr()
    d = images.load(str(tmp_path / "mixed"))
    assert d.spec["image_size"] == 30 and d.train.tensors[0].shape[1:] == (1, 30, 30)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resized to 30x30, the median of their longer sides" in err


def test_detection_and_segmentation_folders_are_letterboxed_to_a_side_from_the_data(tmp_path, capsys):
    coco = coco_folder(tmp_path / "coco", n=5)
    d = detection.load(str(tmp_path / "coco"))
    assert "letterboxed to 128x128" in capsys.readouterr().err
    assert d.spec["image_size"] == 128 and d.dims["image_size"] == 128  # not 64: the 128x96 images' own side
    every = DetectionDataset(torch.cat([d.train.images, d.val.images, d.test.images]),
                             d.train.targets + d.val.targets + d.test.targets)
    assert every.images.shape[1:] == (3, 128, 128) and every.images[:, :, 96:].abs().max() == 0  # padded below
    boxes = sorted(b for t in every.targets for b in t["boxes"].tolist())
    truth = sorted([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                   for a in coco["annotations"])
    assert boxes == truth, "scale 1: the boxes are the JSON's own"
    # a portrait image and a landscape one: both keep their aspect, scaled by the one factor 128 / 192
    folder = tmp_path / "seg"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, (w, h) in enumerate([(192, 96), (96, 192), (192, 96)]):
        Image.fromarray(scene(w, h, i, [])).save(folder / "images" / f"{i}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[:48, :48] = 1
        Image.fromarray(mask).save(folder / "masks" / f"{i}.png")
    s = segmentation.load(str(folder))
    x, y = (torch.cat(t) for t in zip(s.train.tensors, s.val.tensors, s.test.tensors))
    assert s.spec["image_size"] == 192 and x.shape[1:] == (3, 192, 192)
    assert (y[:, :48, :48] == 1).all() and (y == 1).sum() == 3 * 48 * 48, "the labels are not resized at scale 1"
    assert (y == segmentation.IGNORE).sum() == 3 * 96 * 192, "the padding is ignored, not background"
    assert d.spec["scale"] == 1.0 and s.spec["scale"] == 1.0  # every image kept its pixel size
    Image.new("RGB", (1000, 700)).save(tmp_path / "big.png")
    side, scale, note = detection.geometry([tmp_path / "big.png"], 0, "big")
    assert side == detection.MAX_SIDE and scale == 512 / 1000 and "capped at 512" in note


def test_runs_on_users_images_train_at_the_data_size(tmp_path, cli_run):
    digit_folder(tmp_path / "digits")
    lenet = deepatlas.train("lenet", data=str(tmp_path / "digits"), out=tmp_path / "lenet", overrides={"epochs": "2"})
    predictor = deepatlas.load(lenet["run_dir"])
    assert predictor.model.classifier[1].in_features == 16 * 7 * 7, "28x28 digits train at 28 (not the recipe's 16)"
    digit = np.asarray(Image.open(tmp_path / "digits" / "2" / "0.png"))  # a raw array, as from any image library
    assert predictor.predict(digit).names == ["image 0"]
    assert 0.2 <= lenet["baseline"]["accuracy"] <= 0.45  # the majority class of three of a size

    coco_folder(tmp_path / "coco")
    # an untrained Mask R-CNN scoring every box (score_threshold 0): the predictions' frame is what is tested
    run = deepatlas.train("mask_rcnn", data=str(tmp_path / "coco"), out=tmp_path / "mask_rcnn",
                          overrides={"epochs": "1", "batch_size": "4", "score_threshold": "0"})
    assert deepatlas.load(run["run_dir"]).model.cfg.image_size == 128
    assert set(run["baseline"]) >= {"baseline", "map_50", "mask_map_50"}
    Image.fromarray(scene(384, 303, 9, [[40, 50, 140, 130]])).save(tmp_path / "photo.png")
    code, out, err = cli_run("predict", run["run_dir"], tmp_path / "photo.png", "--out", tmp_path / "a.png",
                             "--threshold", "0", "--json")
    assert code == 0, err
    [row] = json.loads(out)  # stdout is the JSON alone ("drawn: ..." goes to stderr)
    assert row["detections"], "threshold 0 keeps every box the model gives"
    corners = torch.tensor([d["box"] for d in row["detections"]])
    assert (corners >= 0).all() and (corners[:, [0, 2]] <= 384).all() and (corners[:, [1, 3]] <= 303).all()
    assert corners[:, [0, 2]].max() > 128, "boxes are in the photo's pixels, not the 128x128 input's"
    assert all(d["mask"]["size"] == [303, 384] for d in row["detections"]), "masks too, as RLE"
    assert Image.open(tmp_path / "a.png").size == (384, 303)


# ---- 2-5. predictions at the input's own size, drawn on it, thresholded, masks as RLE ---------

def test_detections_come_back_in_the_input_pixels_with_masks_as_rle(tmp_path):
    # a run whose training images were shrunk to a third: a 384x303 photo is seen at 128x101, one window
    spec = {"kind": "detection", "classes": ["coin", "key"], "image_size": 128, "scale": 1 / 3}
    masks = torch.zeros(2, 128, 128)
    masks[0, 20:60, 10:50] = 1.0  # the first box's pixels, as a mask head gives them (probabilities)
    stub = Stub({"boxes": torch.tensor([[10.0, 20, 50, 60], [0, 0, 128, 128]]), "scores": torch.tensor([0.9, 0.6]),
                 "labels": torch.tensor([0, 1]), "masks": masks})
    photo = scene(384, 303, 0, [[30, 60, 150, 180]])
    rows = detection.predict(stub, spec, Image.fromarray(photo), out=tmp_path / "a.png")
    seen = stub.seen[0]  # 384x303 -> 128x101, not squashed to 128x128
    assert seen.shape == (1, 3, 128, 128) and seen[:, :, 101:].abs().max() == 0
    assert torch.equal(seen[0], images.letterbox(images._to_tensor(Image.fromarray(photo)), 128)[0].clamp(0, 1))
    first, whole = rows[0]["detections"]
    assert first["box"] == [30.0, 60.0, 150.0, 180.0] and whole["box"] == [0.0, 0.0, 384.0, 303.0]  # ×3, clipped
    assert first["mask"]["size"] == [303, 384]
    decoded = detection.rle_decode(first["mask"]["counts"], 303, 384)
    ys, xs = decoded.nonzero(as_tuple=True)
    assert abs(xs.min() - 30) <= 1 and abs(xs.max() + 1 - 150) <= 1 and abs(ys.min() - 60) <= 1
    assert abs(ys.max() + 1 - 180) <= 1 and decoded.sum() == pytest.approx(120 * 120, rel=0.03)
    coco_mask = pytest.importorskip("pycocotools.mask")  # the reference's reading of our RLE
    ref = coco_mask.decode(coco_mask.frPyObjects(first["mask"], 303, 384))
    assert np.array_equal(ref, decoded.numpy().astype(np.uint8))
    assert Image.open(tmp_path / "a.png").size == (384, 303), "the annotated PNG is the input's size and aspect"
    # the score threshold, forwarded by the Task as the CLI's --threshold is; arrays and lists of inputs
    task = get_task("detection")
    kept = task.predict(stub, spec, [photo, photo[:150]], threshold=0.7)
    assert [len(r["detections"]) for r in kept.rows] == [1, 1] and kept.names == ["image 0", "image 1"]
    assert detection.predict(stub, spec, photo, threshold=0.95)[0]["predicted"] == "nothing at 0.95 or above"
    with pytest.raises(DeepAtlasError, match="threshold"):
        detection.predict(stub, spec, photo, threshold=1.5)
    # a run trained on images enlarged 3.2 times: a 40x30 input is seen at 128x96
    [row] = detection.predict(stub, {**spec, "scale": 3.2}, photo[:30, :40], out=tmp_path / "b.png", threshold=0.7)
    assert row["detections"][0]["box"] == pytest.approx([3.125, 6.25, 15.625, 18.75], abs=0.06)  # ÷3.2
    assert Image.open(tmp_path / "b.png").size == (400, 300), "a tiny input is enlarged by a whole factor"


def bright_blocks(x):
    """A stand-in detector: in each window (B, 3, S, S), the box around its bright pixels (red above 0.8)."""
    bright = x[:, 0] > 0.8                                            # (B, S, S)
    rows, cols, at = bright.any(2), bright.any(1), torch.arange(x.shape[-1])
    box = torch.stack([torch.where(cols, at, 999).amin(1), torch.where(rows, at, 999).amin(1),
                       torch.where(cols, at + 1, 0).amax(1), torch.where(rows, at + 1, 0).amax(1)], 1).float()
    found = rows.any(1)
    return [{"boxes": box[i:i + 1][found[i:i + 1]], "scores": torch.ones(int(found[i])),
             "labels": torch.zeros(int(found[i]), dtype=torch.long)} for i in range(len(x))]


def test_large_inputs_are_seen_in_overlapping_windows_at_the_training_scale():
    stub = Stub()
    stub.predict = lambda x: stub.seen.append(x) or bright_blocks(x)
    spec = {"kind": "detection", "classes": ["block"], "image_size": 64, "scale": 1.0}
    picture = scene(160, 120, 0, [[10, 10, 30, 30], [110, 70, 140, 100]])
    [row] = detection.predict(stub, spec, picture)
    assert sum(len(x) for x in stub.seen) == 12  # 64-px windows every 32 px: 3 rows x 4 columns, none shrunk
    # each block is cut by some windows' inner edges (dropped) and whole in others (one box after NMS)
    assert sorted(d["box"] for d in row["detections"]) == [[10, 10, 30, 30], [110, 70, 140, 100]]
    probs = torch.zeros(1, 2, 64, 64)  # a segmenter that sees a coin in the left half of every window
    probs[:, 1] = 0.4
    probs[:, 1, :, :32] = 0.7
    probs[:, 0] = 1 - probs[:, 1]
    [row] = segmentation.predict(Stub(probabilities=probs), {**spec, "classes": ["background", "coin"]}, picture)
    left = torch.zeros(120, 160, dtype=torch.bool)
    left[:, :128] = True  # overlapping windows averaged: 0.7, then (0.4 + 0.7) / 2 up to x = 128, then 0.4 alone
    assert torch.equal(detection.rle_decode(row["masks"]["coin"]["counts"], 120, 160), left)


def test_segmentation_maps_come_back_at_the_input_resolution(tmp_path):
    spec = {"kind": "segmentation", "classes": ["background", "coin"], "image_size": 64, "scale": 0.4}
    probs = torch.zeros(1, 2, 64, 64)
    probs[:, 1] = 0.4
    probs[:, 1, :, :32] = 0.7  # the left half is a coin with probability 0.7, the rest 0.4
    probs[:, 0] = 1 - probs[:, 1]
    stub = Stub(probabilities=probs)
    picture = scene(160, 120, 1, [])  # -> 64x48 letterboxed
    [row] = segmentation.predict(stub, spec, picture, out=tmp_path / "s.png")
    left = torch.zeros(120, 160, dtype=torch.bool)
    left[:, :80] = True
    assert row["shares"] == {"background": 0.5, "coin": 0.5}
    assert row["masks"]["coin"]["size"] == [120, 160]
    assert torch.equal(detection.rle_decode(row["masks"]["coin"]["counts"], 120, 160), left)
    assert np.array_equal(np.asarray(Image.open(row["mask"])), left.numpy().astype(np.uint8))
    assert Image.open(tmp_path / "s.png").size == (320, 240), "the input's aspect, enlarged twice to be legible"
    assert segmentation.predict(stub, spec, picture, threshold=0.3)[0]["shares"] == {"coin": 1.0}
    assert segmentation.predict(stub, spec, picture, threshold=0.8)[0]["masks"] == {}


# ---- 6. raw inputs ----------------------------------------------------------------------------

def test_encode_takes_paths_pil_images_and_arrays_exactly_as_training_did(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = images.load(str(tmp_path), image_size=8)
    trained = torch.cat([d.train.tensors[0], d.val.tensors[0], d.test.tensors[0]])
    path = tmp_path / "dog" / "3.png"
    x, names = images.encode(d.spec, [path, Image.open(path), np.asarray(Image.open(path))])
    assert x.shape == (3, 3, 8, 8) and names == [str(path), "image 1", "image 2"]
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert any(torch.equal(x[0], t) for t in trained), "the very tensor training made of that file"
    floats, _ = images.encode(d.spec, np.asarray(Image.open(path)) / 255.0)
    assert torch.allclose(floats[0], x[0], atol=1e-5)
    grey = {**d.spec, "channels": 1, "mean": [0.5], "std": [0.25]}
    as_file, _ = images.encode(grey, path)
    assert torch.equal(as_file, images.encode(grey, np.asarray(Image.open(path)))[0])  # luma as PIL computes it
    assert (as_file - images.encode(grey, np.asarray(Image.open(path)) / 255.0)[0]).abs().max() < 0.02
    for bad, message in ((np.zeros(5), "expected an image"), (np.full((4, 4), 2.0), "must be in \\[0, 1\\]"),
                         ({"a": 1}, "a dict; expected a path")):
        with pytest.raises(DeepAtlasError, match=message):
            images.encode(d.spec, bad)


# ---- 7. trivial baselines ---------------------------------------------------------------------

def test_baselines_are_the_trivial_predictors_scored_like_the_models():
    spec = {"classes": ["a", "b", "c"]}
    train = TensorDataset(torch.zeros(5, 1), torch.tensor([0, 0, 1, 2, 0]))
    examples = TensorDataset(torch.zeros(4, 1), torch.tensor([0, 1, 1, 0]))
    text, values = images.baseline(spec, train, examples)
    assert values == {"accuracy": 0.5} and "'a'" in text

    spec = {"classes": ["background", "coin"], "image_size": 4}
    masks = torch.full((2, 4, 4), segmentation.IGNORE)  # padding is the most frequent label, and no class
    masks[:, 0] = 1
    masks[:, 1, :2] = 0
    masks[:, 1, 2:] = 0
    masks[0, 2, 0] = 0
    text, values = segmentation_baseline(spec, TensorDataset(torch.zeros(2), masks),
                                         TensorDataset(torch.zeros(1), masks[:1]))
    # every pixel background: 5 of its 9 labelled pixels right; IoU background 5/9, coin 0
    assert "'background'" in text and values == pytest.approx({"miou": 5 / 18, "pixel_accuracy": 5 / 9})

    spec = {"classes": ["coin", "key"], "image_size": 64}
    def target(box, label):
        boxes = torch.tensor([box], dtype=torch.float32)
        return {"boxes": boxes, "labels": torch.tensor([label]), "masks": detection.box_masks(boxes, 64)}
    train = DetectionDataset(torch.zeros(3, 3, 64, 64), [target([10, 10, 30, 30], 1), target([20, 20, 40, 40], 1),
                                                         target([0, 0, 5, 5], 0)])
    mean = [10, 10, 25, 25]
    text, values = detection_baseline(spec, train, DetectionDataset(torch.zeros(2, 3, 64, 64),
                                                                    [target(mean, 1), target(mean, 1)]))
    assert "'key'" in text and "(10, 10, 25, 25)" in text
    assert values["map_50"] == 1.0 and values["mask_map_50"] == 1.0
    _, values = detection_baseline(spec, train, DetectionDataset(torch.zeros(1, 3, 64, 64), [target(mean, 0)]))
    assert values["map_50"] == 0.0
