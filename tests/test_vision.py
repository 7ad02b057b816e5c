"""Vision family: image data (embedded, folders, IDX), augmentation ops, and LeNet."""
import gzip
import math

import numpy as np
import pytest
import torch
from PIL import Image

import deepatlas
from deepatlas.data import images
from deepatlas.errors import DeepAtlasError


# ---- tensor ops ---------------------------------------------------------------------------

def test_rotate_by_quarter_turns_matches_rot90():
    x = torch.randn(3, 2, 8, 8)
    turned = images.rotate(x, torch.full((3,), math.pi / 2), mode="nearest")
    assert torch.allclose(turned, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5) or \
        torch.allclose(turned, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(images.rotate(x, torch.zeros(3)), x, atol=1e-5)


def test_shift_is_a_padded_crop():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    moved = images.shift(x, torch.tensor([1]), torch.tensor([0]))
    assert torch.equal(moved[0, 0, :, 1:], x[0, 0, :, :3]) and moved[0, 0, :, 0].abs().sum() == 0


def test_augment_is_random_per_image_and_keeps_labels():
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16)
    ax, ay = images.Augment(crop_pad=2, flip=True, rotate=10)((x, y))
    assert ax.shape == x.shape and torch.equal(ay, y)
    changed = (ax - x).flatten(1).abs().sum(1) > 0
    assert changed.sum() >= 12


# ---- embedded data ------------------------------------------------------------------------

def test_digits_as_images():
    d = images.load("digits", image_size=16)
    assert d.dims == {"in_channels": 1, "image_size": 16, "n_classes": 10}
    assert [len(d.train), len(d.val), len(d.test)] == [1078, 359, 360]
    x = d.train.tensors[0]
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-2  # standardized on train


def test_rotated_digits_are_fixed_and_rotated():
    a, b = images.load("rotated-digits", 16), images.load("rotated-digits", 16)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    plain = images.load("digits", 16)
    assert torch.equal(a.test.tensors[1], plain.test.tensors[1])  # same split, same labels
    assert not torch.allclose(a.test.tensors[0], plain.test.tensors[0], atol=0.5)


# ---- users' files -------------------------------------------------------------------------

def write_folder(root, classes=("cat", "dog"), n=6, size=(12, 12), mode="L"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            shape = size[::-1] + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_image_folder_round_trip(tmp_path):
    root = write_folder(tmp_path / "imgs", mode="RGB")
    d = images.load(str(root), image_size=8)
    assert d.dims == {"in_channels": 3, "image_size": 8, "n_classes": 2}
    assert d.spec["classes"] == ["cat", "dog"] and len(d.train) + len(d.val) + len(d.test) == 12
    x, names = images.read_inputs(d.spec, str(root / "cat"))
    assert x.shape == (6, 3, 8, 8) and names[0].endswith("0.png")
    labelled = images.read_labeled(d.spec, str(root))
    assert labelled.tensors[1].tolist() == [0] * 6 + [1] * 6


def write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    train_x, test_x = rng.integers(0, 255, (60, 6, 6)), rng.integers(0, 255, (12, 6, 6))
    train_y, test_y = np.arange(60) % 3, np.arange(12) % 3
    for name, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                        ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        write_idx(tmp_path / (name + suffix), array, gz)
    assert np.array_equal(images.read_idx(tmp_path / ("t10k-images-idx3-ubyte" + suffix)), test_x)
    d = images.load(str(tmp_path))
    assert [len(d.train), len(d.val), len(d.test)] == [50, 10, 12]  # t10k is the test split
    assert d.test.tensors[1].tolist() == test_y.tolist() and d.dims["n_classes"] == 3


def test_bad_image_inputs_get_one_clear_line(tmp_path):
    root = write_folder(tmp_path / "a")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DeepAtlasError, match="broken.png: not a readable image"):
        images.load(str(root))

    root = write_folder(tmp_path / "b")
    (root / "bird").mkdir()
    with pytest.raises(DeepAtlasError, match="bird: class folder has no images"):
        images.load(str(root))

    root = write_folder(tmp_path / "c")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "cat" / "big.png")
    # mixed sizes are no error: all are resized to the median of their longer sides (tests/test_own_images.py)
    assert images.load(str(root)).dims["image_size"] == 12
    assert images.load(str(root), image_size=16).dims["image_size"] == 16

    (tmp_path / "d").mkdir()
    write_idx(tmp_path / "d" / "train-images-idx3-ubyte", np.zeros((4, 2, 2)), False)
    with pytest.raises(DeepAtlasError, match="missing IDX file"):
        images.load(str(tmp_path / "d"))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x01junk")
    with pytest.raises(DeepAtlasError, match="bad magic number"):
        images.read_idx(tmp_path / "e" / "t10k-labels-idx1-ubyte")
    with pytest.raises(DeepAtlasError, match="unknown dataset"):
        images.load("imagenet-1k")


# ---- LeNet --------------------------------------------------------------------------------

def test_lenet_shapes_and_convolutional_translation_equivariance():
    torch.manual_seed(0)
    model = deepatlas.create_model("lenet", image_size=32).eval()
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 12:20, 12:20] = torch.randn(8, 8)
    assert model(x).shape == (1, 10)
    # shared filters: shifting the input by 4 pixels (the two 2x subsamplings) shifts the S4 maps by 1
    features = model.features(x)
    shifted = model.features(torch.roll(x, shifts=4, dims=-1))
    interior = slice(2, -1)  # away from the zero-padded borders (and the column the roll wraps)
    assert torch.allclose(torch.roll(features, 1, dims=-1)[..., interior], shifted[..., interior], atol=1e-5)


def test_lenet_learns_digits_and_predicts_images(tmp_path, cli_run):
    result = deepatlas.train("lenet", out=tmp_path / "run", overrides={"epochs": "4", "image_size": "12"})
    assert result["test"]["accuracy"] > 0.6  # chance is 0.1
    assert deepatlas.load(tmp_path / "run").model.classifier[1].in_features == 16 * 3 * 3  # the model follows the data
    digit = images._digits()[0][0, 0].numpy()  # a "0"
    Image.fromarray((digit * 255).astype(np.uint8)).save(tmp_path / "zero.png")
    code, out, err = cli_run("predict", tmp_path / "run", tmp_path / "zero.png")
    assert code == 0, err
    assert "zero.png" in out and "top classes" in out
