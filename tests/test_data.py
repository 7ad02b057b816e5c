"""Tabular data: fixed splits, train-only statistics, users' CSV files and their errors."""
import numpy as np
import pytest
import torch

from deepatlas.data import tabular
from deepatlas.errors import DeepAtlasError


def write(path, text):
    path.write_text(text)
    return str(path)


def make_csv(tmp_path, n=60):
    rng = np.random.default_rng(0)
    lines = ["size,color,label"]
    for i in range(n):
        color = ["red", "green", "blue"][i % 3]
        lines.append(f"{rng.normal() + (i % 2) * 3:.3f},{color},{'yes' if i % 2 else 'no'}")
    return write(tmp_path / "d.csv", "\n".join(lines) + "\n")


@pytest.mark.parametrize("name,rows,classes", [("breast_cancer", 569, 2), ("wine", 178, 3), ("iris", 150, 3),
                                               ("iris_setosa", 150, 2), ("digits", 1797, 10)])
def test_embedded_splits_are_fixed_and_disjoint(name, rows, classes):
    a, b = tabular.load(name), tabular.load(name)
    sizes = [len(a.train), len(a.val), len(a.test)]
    assert sum(sizes) == rows and sizes[0] > 0.55 * rows
    assert a.n_classes == classes
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    train_rows = {tuple(r) for r in a.train.tensors[0].tolist()}
    assert not train_rows & {tuple(r) for r in a.test.tensors[0].tolist()}


def test_standardization_is_fitted_on_train_only():
    d = tabular.load("breast_cancer")
    x_train, x_test = d.train.tensors[0], d.test.tensors[0]
    assert torch.allclose(x_train.mean(0), torch.zeros(30), atol=1e-4)
    assert torch.allclose(x_train.std(0, unbiased=False), torch.ones(30), atol=1e-3)
    assert not torch.allclose(x_test.mean(0), torch.zeros(30), atol=1e-2)


def test_csv_numeric_and_categorical_columns(tmp_path):
    d = tabular.load(make_csv(tmp_path), target="label")
    assert d.in_features == 1 + 3  # size, one-hot color
    assert d.spec["classes"] == ["no", "yes"]
    onehot = d.train.tensors[0][:, 1:]
    assert torch.equal(onehot.sum(1), torch.ones(len(d.train)))


def test_unseen_category_encodes_as_zeros(tmp_path):
    d = tabular.load(make_csv(tmp_path), target="label")
    x, _ = tabular.encode(d.spec, {"size": ["1.0"], "color": ["purple"]})
    assert x[0, 1:].abs().sum() == 0


def test_gaps_are_refused_under_missing_error(tmp_path):
    with pytest.raises(DeepAtlasError, match="line 3") as err:
        tabular.load(write(tmp_path / "bad.csv", "a,b,label\n1,2,x\n3,,y\n"), target="label", missing="error")
    assert "\n" not in str(err.value) and "bad.csv: gaps in 'b' 1 (first: line 3)" in str(err.value)


@pytest.mark.parametrize("text,target,message", [
    ("a,b,label\n1,2,x\n3,4\n", "label", "line 3 has 2 fields, the header has 3"),
    ("a,b,label\n1,2,x\n", "nope", "no column 'nope'"),
    ("a,b,label\n1,2,x\n", None, "say which column is the label with target="),
    ("a,b,label\n", "label", "at least one data row"),
    ("a,a,label\n1,2,x\n", "label", "repeated column"),
    ("a,label\n1,x\n2,x\n", "label", "single class"),
])
def test_bad_csv_gets_one_clear_line(tmp_path, text, target, message):
    with pytest.raises(DeepAtlasError, match=message.replace("(", r"\(").replace("-", r"\-")) as err:
        tabular.load(write(tmp_path / "bad.csv", text), target=target)
    assert "\n" not in str(err.value) and "bad.csv" in str(err.value)


def test_unknown_dataset_or_missing_file():
    with pytest.raises(DeepAtlasError, match="no such file"):
        tabular.load("missing.csv", target="y")
    with pytest.raises(DeepAtlasError, match="unknown dataset"):
        tabular.load("cifar11")
