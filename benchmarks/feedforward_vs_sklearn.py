"""Side by side: deepatlas's feedforward entries against scikit-learn on identical data.

Same fixed train/val/test split, same standardization, same hidden widths. scikit-learn's
Perceptron and MLPClassifier are what a tabular user would otherwise reach for (residual_mlp has
no scikit-learn counterpart: it faces the plain MLPClassifier of its width and depth). Prints test
accuracy and wall-clock seconds for each, and the ratios (deepatlas / scikit-learn). deepatlas's
seconds include what a run does besides fitting (validation and a checkpoint every epoch, the
test evaluation, the plot); scikit-learn's are `fit` alone.

    .venv/bin/python benchmarks/feedforward_vs_sklearn.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

from sklearn.linear_model import Perceptron as SkPerceptron
from sklearn.neural_network import MLPClassifier

import deepatlas
from deepatlas.data.tabular import load


def peer(name: str, entry):
    cfg = entry.config()
    if name == "perceptron":
        return SkPerceptron(max_iter=entry.train.epochs, random_state=0)
    return MLPClassifier(hidden_layer_sizes=(cfg.width,) * cfg.depth, alpha=entry.train.weight_decay,
                         batch_size=entry.train.batch_size, learning_rate_init=entry.train.lr,
                         max_iter=entry.train.epochs, random_state=0)


def compare(name: str) -> dict:
    entry = deepatlas.get(name)
    data = load(entry.data.data)
    (x, y), (xt, yt) = (t.numpy() for t in data.train.tensors), (t.numpy() for t in data.test.tensors)
    start = time.perf_counter()
    model = peer(name, entry).fit(x, y)
    peer_s, peer_acc = time.perf_counter() - start, float(model.score(xt, yt))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ours = deepatlas.train(name, out=tmp)
        ours_s = time.perf_counter() - start
    acc = ours["test"]["accuracy"]
    return {"name": name, "data": entry.data.data, "peer": type(model).__name__,
            "accuracy": round(acc, 4), "peer_accuracy": round(peer_acc, 4), "accuracy_ratio": round(acc / peer_acc, 3),
            "seconds": round(ours_s, 2), "peer_seconds": round(peer_s, 2), "time_ratio": round(ours_s / peer_s, 2)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = [compare(n) for n in ("perceptron", "mlp", "residual_mlp")]
    for r in rows:
        print(f"{r['name']:13s} {r['data']:14s} acc {r['accuracy']:.4f} vs {r['peer']} {r['peer_accuracy']:.4f} "
              f"(x{r['accuracy_ratio']})  time {r['seconds']:.2f}s vs {r['peer_seconds']:.2f}s (x{r['time_ratio']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
