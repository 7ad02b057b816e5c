"""glyphs and glyphs-m (data/glyphs.py) and their FD judge (tasks/glyphs_judge.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepatlas.data import glyphs
from deepatlas.tasks import glyphs_judge
from deepatlas.tasks.generative import frechet_distance


@pytest.fixture(scope="module")
def grey():
    return glyphs.load("glyphs")


@pytest.fixture(scope="module")
def colour():
    return glyphs.load("glyphs-m")


def test_glyphs_shapes_classes_and_splits(grey):
    x, y, classes, (train, val, test), extra = grey
    assert x.shape == (36 * glyphs.PER_CLASS, 1, 32, 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and extra == {}
    assert classes == list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert np.bincount(y).tolist() == [glyphs.PER_CLASS] * 36
    assert len(train) == 5400 and len(val) == len(test) == 1800
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    for part in (train, val, test):
        assert len(np.unique(y[part])) == 36
    # every example has ink, none fills the frame, and no two are the same image
    ink = x.flatten(1).mean(1)
    assert ink.min() > 0.02 and ink.max() < 0.6
    assert len(torch.unique(x.flatten(1), dim=0)) == len(x)


def test_glyphs_are_deterministic(grey):
    labels = np.arange(36).repeat(3)
    assert torch.equal(glyphs.render(labels, seed=5), glyphs.render(labels, seed=5))
    assert not torch.equal(glyphs.render(labels, seed=5), glyphs.render(labels, seed=6))
    assert torch.equal(glyphs.load("glyphs")[0], grey[0])  # the same set on every load


def test_glyphs_m_changes_colour_and_keeps_shape(grey, colour):
    x, y = grey[0], grey[1]
    xm, ym, _, splits, extra = colour
    assert xm.shape == (len(x), 3, 32, 32) and 0 <= xm.min() and xm.max() <= 1
    assert np.array_equal(ym, y) and all(np.array_equal(a, b) for a, b in zip(splits, grey[3]))
    assert extra["photos"][:2] == ["china.jpg", "flower.jpg"]
    # colour: the photographs give channels that differ and a far brighter background than black paper
    assert xm.mean() > x.mean() + 0.15 and (xm[:, 0] - xm[:, 2]).abs().mean() > 0.05
    # shape: the glyph's edges are where the blend's edges are
    def edges(img):
        g = img.mean(1, keepdim=True)
        return ((g[..., 1:, :-1] - g[..., :-1, :-1]).abs() + (g[..., :-1, 1:] - g[..., :-1, :-1]).abs()).flatten(1)
    a, b = edges(x[:1000]), edges(xm[:1000])
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert corr.median() > 0.5
    assert torch.equal(glyphs.blend(x[:50])[0], glyphs.blend(x[:50])[0])


def test_judge_is_small_and_recognizes_glyphs(grey):
    assert glyphs_judge.JUDGE_FILE.stat().st_size < 1_000_000
    x, y, _, (_, _, test), _ = grey
    _, probs = glyphs_judge.judge_features(x[test])
    assert probs.argmax(-1).eq(torch.as_tensor(y[test])).float().mean() > 0.98


def test_glyphs_fd_small_for_real_halves_large_for_noise(grey):
    x, _, _, (_, _, test), _ = grey
    real = x[test]
    same = glyphs_judge.glyphs_scores(real, real)
    assert same["glyphs_fd"] == pytest.approx(0.0, abs=1e-2) and same["class_coverage"] == 36
    noise = glyphs_judge.glyphs_scores(torch.rand_like(real), real)
    assert noise["glyphs_fd"] > 20 * same["fd_real_halves"] and noise["class_coverage"] < 36
    # a blur, a plausible failure of a generator, is far from the real set too
    blurred = F.avg_pool2d(real, 3, 1, 1)
    assert glyphs_judge.glyphs_scores(blurred, real)["glyphs_fd"] > 3 * same["fd_real_halves"]


def test_frechet_distance_is_shared_with_digits():
    a = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
