"""What detection and segmentation runs show people: predictions as text and drawn into PNGs, and the
grid of validation predictions a run leaves behind."""
from deepatlas.tasks import get_task
import numpy as np
import torch
from PIL import Image
from torch import nn

from deepatlas import data
from deepatlas.catalog import Data
from deepatlas.data import detection, segmentation


class Fixed(nn.Module):
    """Stands in for a trained model: `answer(images)` is its prediction for a batch."""

    def __init__(self, answer):
        super().__init__()
        self.answer, self.weight = answer, nn.Parameter(torch.zeros(1))

    def predict(self, images):
        return self.answer(images)

    def probabilities(self, images):
        """A segmenter's: certain of the label map `answer` gives."""
        return torch.nn.functional.one_hot(self.answer(images)).permute(0, 3, 1, 2).float()  # (B, K, H, W)


def test_detection_predict_lists_confident_boxes_and_draws_them(tmp_path):
    scene = get_task("detection").load(Data(data="shapes")).test[0][0]
    Image.fromarray((scene.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "scene.png")
    spec = get_task("detection").load(Data(data="shapes")).spec
    model = Fixed(lambda images: [{"boxes": torch.tensor([[4.0, 5, 20, 30], [30, 30, 50, 60]]),
                                   "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([1, 0])}] * len(images))
    [row] = detection.predict(model, spec, str(tmp_path / "scene.png"), out=tmp_path / "drawn.png")
    assert row["detections"] == [{"class": spec["classes"][1], "score": 0.9, "box": [4.0, 5.0, 20.0, 30.0]}]
    assert row["predicted"].startswith(f"{spec['classes'][1]} 0.90 at (4, 5, 20, 30)")
    assert Image.open(tmp_path / "drawn.png").size[0] > 100


def test_segmentation_predict_reports_shares_and_writes_the_label_map(tmp_path):
    splits = get_task("segmentation").load(Data(data="shapes"))
    Image.fromarray((splits.test[0][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "s.png")
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[:, :16] = 2  # a quarter of the image is class 2
    model = Fixed(lambda images: labels.expand(len(images), -1, -1))
    [row] = segmentation.predict(model, splits.spec, str(tmp_path / "s.png"), out=tmp_path / "seg.png")
    assert row["shares"] == {"background": 0.75, splits.spec["classes"][2]: 0.25}
    assert np.array_equal(np.asarray(Image.open(row["mask"])), labels[0].numpy())


def test_runs_leave_a_grid_of_validation_predictions(tmp_path):
    box = {"boxes": torch.tensor([[1.0, 1, 9, 9]]), "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}
    for task, answer in (("detection", lambda images: [box] * len(images)),
                         ("segmentation", lambda images: torch.zeros(len(images), 64, 64, dtype=torch.long))):
        splits = get_task(task).load(Data(data="shapes"))
        module = detection if task == "detection" else segmentation
        module.plot_predictions(Fixed(answer), splits.spec, splits.val, tmp_path / f"{task}.png")
        assert Image.open(tmp_path / f"{task}.png").size[0] >= 800


def test_eval_and_predict_on_a_coco_folder(tmp_path, cli_run):
    import deepatlas
    from deepatlas.data.detection import DetectionDataset, write_coco
    deepatlas.train("yolo", out=tmp_path / "run", overrides={"data": "shapes-64", "epochs": "1"})
    assert (tmp_path / "run" / "predictions.png").exists()
    test = get_task("detection").load(Data(data="shapes")).test
    scenes = [test[i] for i in range(6)]
    write_coco(tmp_path / "coco", DetectionDataset(torch.stack([x for x, _ in scenes]), [t for _, t in scenes]),
               get_task("detection").load(Data(data="shapes")).spec["classes"], masks="rle")
    code, out, _ = cli_run("eval", tmp_path / "run", "--data", tmp_path / "coco", "--json")
    assert code == 0 and 0 <= __import__("json").loads(out)["map_50"] <= 1
    code, _, err = cli_run("predict", tmp_path / "run", tmp_path / "coco" / "images", "--out", tmp_path / "a.png")
    assert code == 0 and "drawn" in err and (tmp_path / "a-1.png").exists() and (tmp_path / "a-6.png").exists()
    code, _, _ = cli_run("predict", tmp_path / "run", tmp_path / "coco" / "images", "--out", tmp_path / "p.csv")
    assert code == 0 and (tmp_path / "p.csv").read_text().startswith("input,predicted")
