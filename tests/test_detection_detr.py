""""detr" (DETR): Hungarian matching against brute force, the set loss's invariance to the ground-truth order,
output shapes, one auxiliary loss per decoder layer, no NMS at inference, the pre-training's object windows, the
backbone's learning-rate scale, and a short learning test."""
import dataclasses
import itertools

import pytest
import torch

from deepatlas import catalog
from deepatlas.catalog import Train
from deepatlas.data.detection import load
from deepatlas.engine.loop import Scaling, fit, make_fabric, make_optimizers
from deepatlas.engine.rundir import RunDir
from deepatlas.models.detection.detr import DETR, Config, DETRLoss, match, object_windows, sine_positions
from deepatlas.nn.boxes import box_cxcywh_to_xyxy, generalized_box_iou

SIZE = 64


def small(**overrides) -> DETR:
    torch.manual_seed(0)
    cfg = {"width": 0.25, "d_model": 32, "heads": 4, "encoder_layers": 1, "decoder_layers": 2, "ffn": 64,
           "n_queries": 5, **overrides}
    return DETR(Config(**cfg))


def random_targets(counts: list[int], generator: torch.Generator) -> list[dict]:
    """Random boxes (pixels, x1 < x2, y1 < y2) and labels in [0, 4) for images with `counts` objects."""
    targets = []
    for n in counts:
        xy = torch.rand(n, 2, generator=generator) * 40
        wh = 4 + torch.rand(n, 2, generator=generator) * 20
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 4, (n,), generator=generator)})
    return targets


def test_shapes_and_positions():
    model = small().eval()
    out = model(torch.rand(3, 3, SIZE, SIZE))
    assert out["logits"].shape == (2, 3, 5, 5) and out["boxes"].shape == (2, 3, 5, 4)  # (L, B, N, K+1), (L, B, N, 4)
    assert out["boxes"].min() >= 0 and out["boxes"].max() <= 1                          # sigmoid (cx, cy, w, h)
    pos = sine_positions(8, 8, 32)
    assert pos.shape == (64, 32)
    assert len({tuple(p.tolist()) for p in pos.round(decimals=5)}) == 64                 # every cell its own code
    detections = model.detect(torch.rand(2, 3, SIZE, SIZE))
    assert len(detections) == 2 and detections[0]["boxes"].shape == (5, 4) and detections[0]["labels"].max() < 4


def test_hungarian_matching_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    for seed in range(6):
        sizes = torch.randint(0, 5, (3,), generator=gen).tolist()                        # 0 to 4 targets per image
        cost = torch.randn(3, 5, sum(sizes), generator=gen)                               # (B, N=5, M)
        pairs = match(cost, sizes)
        for i, (block, (q, t)) in enumerate(zip(cost.split(sizes, -1), pairs)):
            c = block[i]                                                                  # (5, m_i)
            assert len(q) == sizes[i] and len(set(q.tolist())) == sizes[i]                # one query per target
            best = min((sum(c[p[j], j].item() for j in range(sizes[i])) for p in
                        itertools.permutations(range(5), sizes[i])), default=0.0)
            assert abs(c[q, t].sum().item() - best) < 1e-6, (seed, i)


def test_matching_cost_is_the_papers():
    """The batched cost equals -λ_cls p̂(c) + λ_L1 L1 + λ_giou (-GIoU) pair by pair (1, 5, 2)."""
    model = small()
    loss = DETRLoss(model)
    gen = torch.Generator().manual_seed(1)
    logits, boxes = torch.randn(2, 5, 5, generator=gen), torch.rand(2, 5, 4, generator=gen) * 0.5 + 0.2
    labels, gt = torch.tensor([0, 3, 2]), torch.rand(3, 4, generator=gen) * 0.4 + 0.3
    cost = loss.matching_cost(logits, boxes, labels, gt)
    for b, n, m in itertools.product(range(2), range(5), range(3)):
        p = logits[b, n].softmax(0)[labels[m]]
        l1 = (boxes[b, n] - gt[m]).abs().sum()
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes[b, n])[None], box_cxcywh_to_xyxy(gt[m])[None])[0, 0]
        torch.testing.assert_close(cost[b, n, m], -p + 5 * l1 - 2 * giou)


def test_loss_invariant_to_ground_truth_order_and_has_aux_losses():
    model = small(decoder_layers=3)
    objective = DETRLoss(model)
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(3, 3, SIZE, SIZE, generator=gen)
    targets = random_targets([4, 1, 3], gen)
    logs = objective.loss(images, targets)
    assert {"aux_0", "aux_1"} <= logs.keys() and "aux_2" not in logs                    # one per earlier layer
    for seed in range(3):
        perm_gen = torch.Generator().manual_seed(seed)
        shuffled = []
        for t in targets:
            p = torch.randperm(len(t["labels"]), generator=perm_gen)
            shuffled.append({"boxes": t["boxes"][p], "labels": t["labels"][p]})
        again = objective.loss(images, shuffled)
        for k in logs:
            assert abs(logs[k].item() - again[k].item()) < 1e-5, k
    without = DETRLoss(small(decoder_layers=3, aux_loss=False)).loss(images, targets)
    assert not any(k.startswith("aux") for k in without)
    total = logs["aux_0"] + logs["aux_1"] + logs["class"] + 5 * logs["l1"] + 2 * logs["giou"]
    torch.testing.assert_close(logs["loss"], total)


def test_no_nms_duplicate_queries_give_duplicate_detections():
    model = small().eval()
    with torch.no_grad():
        model.query_embed.weight[1] = model.query_embed.weight[0]                          # queries 0 and 1 identical
    out = model(torch.rand(1, 3, SIZE, SIZE))
    torch.testing.assert_close(out["boxes"][-1, 0, 0], out["boxes"][-1, 0, 1])
    det = model.detect(torch.rand(1, 3, SIZE, SIZE))[0]
    assert len(det["boxes"]) == 5                                                          # every query reported
    same = (det["boxes"][:, None] - det["boxes"][None]).abs().sum(-1) < 1e-5              # (5, 5)
    assert same.sum() >= 5 + 2                                                             # the duplicate survived


def test_learns_a_fixed_batch():
    """Fitting a few scenes: the loss falls far below the untrained model's and the matched boxes' IoU rises."""
    model = small(n_queries=6, d_model=64, ffn=128)
    objective = DETRLoss(model)
    gen = torch.Generator().manual_seed(3)
    targets = random_targets([2, 3, 1, 2], gen)
    images = torch.zeros(4, 3, SIZE, SIZE)
    for i, t in enumerate(targets):  # draw the boxes as filled rectangles, a colour per class
        for (x1, y1, x2, y2), c in zip(t["boxes"].long().tolist(), t["labels"].tolist()):
            images[i, c % 3, y1:y2, x1:x2] = 1.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = objective.loss(images, targets)["loss"].item()
    for _ in range(150):
        loss = objective.loss(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    end = objective.loss(images, targets)
    assert end["loss"].item() < 0.3 * start
    assert end["giou"].item() < 0.3                                                       # mean 1 - GIoU of matches


def test_object_windows_are_centred_crops_at_the_images_scale():
    """The pre-training set: each object's window has its box centre at the window's centre, the same pixels as
    the image (no resampling), and zeros where the window leaves the image."""
    images = torch.rand(2, 3, SIZE, SIZE) + 1                                              # every pixel >= 1
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 21.0, 30.0], [0.0, 0.0, 6.0, 4.0]]), "labels": torch.tensor([2, 0])},
               {"boxes": torch.tensor([[40.0, 33.0, 60.0, 63.0]]), "labels": torch.tensor([3])}]
    windows, labels = object_windows(images, targets)
    assert windows.shape == (3, 3, SIZE // 2, SIZE // 2) and labels.tolist() == [2, 0, 3]
    half = SIZE // 4
    for window, image, (cx, cy) in zip(windows, [images[0], images[0], images[1]], [(15, 25), (3, 2), (50, 48)]):
        assert torch.equal(window[:, half, half], image[:, cy, cx])                        # centre on the centre
        expected = torch.zeros_like(window)                                                 # pixel by pixel
        for r in range(2 * half):
            for c in range(2 * half):
                y, x = cy - half + r, cx - half + c
                if 0 <= y < SIZE and 0 <= x < SIZE:
                    expected[:, r, c] = image[:, y, x]
        assert torch.equal(window, expected)


def test_backbone_learning_rate_is_a_multiple_of_the_recipes():
    """backbone_lr_scale reaches the optimizer: the backbone's group peaks at scale x the recipe's lr (the value the
    schedule scales), every other parameter at the recipe's, and each parameter is in exactly one group."""
    objective = DETRLoss(small(backbone_lr_scale=0.1))
    backbone, rest = make_optimizers(objective, Train(lr=2e-3))["model"].param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in objective.model.backbone.parameters()}
    assert backbone["base_lr"] == pytest.approx(2e-4) and rest["base_lr"] == pytest.approx(2e-3)
    assert len(backbone["params"]) + len(rest["params"]) == len(list(objective.parameters()))


def test_pretraining_phase_teaches_the_backbone_the_classes(tmp_path):
    """A few epochs of the object-centric pre-training phase, in the engine's fit loop: the backbone's pooled
    features tell the validation split's objects apart far above chance (4 classes: 0.25; the commonest class is
    under 0.35 of them), and DETR's backbone is the one the phase trained."""
    torch.manual_seed(0)
    data = load("shapes")
    objective = DETRLoss(DETR(Config()))
    [phase] = objective.phases(data)
    assert phase.name == "pretrain" and phase.objective.model is objective.model.backbone
    settings = catalog.get("detr").phases["pretrain"]
    summary = fit(phase.objective, phase.train_set, phase.val_set, dataclasses.replace(settings, epochs=3),
                  RunDir(tmp_path).phase("pretrain"), fabric=make_fabric(Scaling()), monitor=phase.monitor)
    assert summary["epochs"] == 3 and summary["val"]["accuracy"] > 0.6
    assert (tmp_path / "checkpoint-pretrain.safetensors").exists() and (tmp_path / "log-pretrain.csv").exists()


def test_a_phased_run_logs_each_phase_skips_it_on_request_and_resumes_inside_it(tmp_path):
    """The pre-training is a phase of the run: its own checkpoint, log and curves; `--set pretrain.epochs=0` skips
    it; a run stopped after the phase (no main checkpoint yet) resumes from the phase's checkpoint to the very same
    weights; the time budget covers the phases too."""
    from safetensors.torch import load_file

    import deepatlas
    tiny = {"d_model": "16", "heads": "2", "encoder_layers": "1", "decoder_layers": "1", "ffn": "32",
            "n_queries": "5", "width": "0.25", "epochs": "1", "batch_size": "8", "pretrain.epochs": "2"}
    run = tmp_path / "run"
    deepatlas.train("detr", data="shapes-24", overrides=tiny, out=run)
    assert json_of(run / "config.json")["phases"]["pretrain"]["epochs"] == 2
    for name in ("checkpoint-pretrain.safetensors", "log-pretrain.csv", "curves-pretrain.png", "model.safetensors"):
        assert (run / name).exists(), name
    first = load_file(run / "model.safetensors")
    (run / "checkpoint.safetensors").unlink()                 # as if stopped between the phase and the main training
    deepatlas.train(resume=run)
    again = load_file(run / "model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)

    skipped = tmp_path / "skipped"
    deepatlas.train("detr", data="shapes-24", overrides={**tiny, "pretrain.epochs": "0"}, out=skipped)
    assert not (skipped / "checkpoint-pretrain.safetensors").exists() and (skipped / "model.safetensors").exists()

    hurried = deepatlas.train("detr", data="shapes-24", overrides=tiny, out=tmp_path / "hurried", max_time=0.01)
    assert hurried["status"] == "stopped: time budget reached in phase pretrain" and hurried["steps"] == 0


def json_of(path):
    import json
    return json.loads(path.read_text())
