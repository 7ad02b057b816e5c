"""Graphs: one objective for node-level and graph-level data, classified or regressed (data/graphs.py).

A graph network maps a `GraphBatch` (deepatlas.nn.graph) to one output row per node (N, K) at node level, or per
graph (G, K) at graph level (it reads out its nodes itself); the data's spec says which ("level") and what the
target is ("target": "classes" or "regression"). Its `embed(batch)` gives its last hidden layer (node rows or graph
rows), which the embeddings plot draws. Its config takes `in_features`, `n_outputs`, `level` and `edge_features`
from the data.

At node level only the nodes of the batch's `mask` are scored (the split's nodes of the one graph); at graph level
every graph. Classes: cross-entropy, accuracy. Regression (the target standardized with the training part's mean
and std): the MSE of the standardized target trains; mse, mae and rmse are reported in the target's own units
(rmse from the split's mean squared error, not a mean of batch values), and in evaluation mae_vs_mean, the mae
over that of always predicting the training mean (1: no better than the mean; 0: exact). Each value is weighed by
the count of nodes or graphs it averages over ("NAME#n"), so a split's mean is over its nodes or graphs whatever the
batching.

`prepare(data)` may return the dataset to train on instead of `data.train` (GraphSAGE's sampled mini-batches).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from deepatlas.errors import DeepAtlasError, option
from deepatlas.nn.graph import GraphBatch, single
from deepatlas.tasks import Objective, Task
from deepatlas.tasks.classification import regression
from deepatlas.tasks.predictions import ClassProbabilities, Prediction


class GraphObjective(Objective):
    """Wraps `model(batch: GraphBatch) -> (N, K) or (G, K)`; logs {"loss", "accuracy"} or {"loss", "mse", "mae",
    "rmse"} over the scored nodes or graphs."""

    def forward(self, batch: GraphBatch) -> Tensor:
        return self.model(batch)

    def measure(self, batch: GraphBatch) -> dict[str, Tensor]:
        out, y = self(batch), batch.y
        if batch.mask is not None:                    # node level: the split's nodes only
            out, y = out[batch.mask], y[batch.mask]
        n = torch.tensor(float(len(y)), device=out.device)
        if y.is_floating_point():
            std = self.data_spec.get("target_std", 1.0)
            logs = regression(out.reshape(y.shape), y, std)
            if not self.training:   # the training mean's error (0 in standardized units) for mae_vs_mean
                logs["mean_mae"] = y.abs().mean() * std
        else:
            logs = {"loss": F.cross_entropy(out, y), "accuracy": (out.argmax(-1) == y).float().mean()}
        return {**logs, **{f"{k}#n": n for k in logs}}

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        """rmse of a regressed split: the square root of its mean squared error (target units); mae_vs_mean: its
        mae over that of always predicting the training mean on the same split (a ratio of the split's means)."""
        if "mse" not in means:
            return means
        means = {**means, "rmse": math.sqrt(means["mse"])}
        if "mean_mae" in means:
            means["mae_vs_mean"] = means["mae"] / max(means.pop("mean_mae"), 1e-12)
        return means

    # ---- export: the network's forward pass on (x, edge_index[, batch]) ----------------------------------

    export_note = "node rows (N, K) or graph rows (G, K); edges to a node not given are left out"
    export_axes = {"edge_index": {1: "edges"}, "edge_attr": {0: "edges"}}
    """besides the nodes (the batch axis), the edge count is free (tools/export.py)"""

    def export_inputs(self, data, n: int) -> dict[str, Tensor]:
        """Node level: node 0 of the test graph and up to n - 1 of its neighbours, with the edges among them; graph
        level: the first n test graphs as one batch (x, edge_index, batch). Edge features (bonds), where the data
        has them, follow as edge_attr (E, D)."""
        if self.data_spec["level"] == "graph":
            g = data.test.collate(data.test.indices[:n].tolist())           # the pool's numbers of the first n
            inputs = {"x": g.x, "edge_index": g.edge_index, "batch": g.batch}
            return inputs if g.edge_attr is None else {**inputs, "edge_attr": g.edge_attr}
        g = data.test.graph
        near = g.edge_index[1][g.edge_index[0] == 0]                      # node 0's neighbours
        nodes = torch.cat([torch.zeros(1, dtype=torch.long), near[near != 0]]).unique()[:n]
        number = torch.full((g.num_nodes,), -1, dtype=torch.long)
        number[nodes] = torch.arange(len(nodes))
        ends = number[g.edge_index]                                         # (2, E) -1 for a node left out
        inside = (ends >= 0).all(0)
        inputs = {"x": g.x[nodes], "edge_index": ends[:, inside]}
        if g.edge_attr is None:
            return inputs
        return {**inputs, "batch": torch.zeros(len(nodes), dtype=torch.long), "edge_attr": g.edge_attr[inside]}

    def infer(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None,
              edge_attr: Tensor | None = None) -> Tensor:
        """The network's output for nodes x (N, F) and edges (2, E) with their features (E, D) if any (edges to
        nodes beyond N are left out)."""
        inside = (edge_index < x.shape[0]).all(0)
        edge_index = edge_index[:, inside]
        edge_attr = None if edge_attr is None else edge_attr[inside]
        if batch is None:
            return self(single(x, edge_index))
        return self(GraphBatch(x, edge_index, batch, int(batch.max()) + 1, edge_attr=edge_attr))


@dataclass(frozen=True)
class GraphTask(Task):
    """Node predictions take `node` ids (`--node`, `--nodes FILE`), on the run's own graph unless a graph file is
    given; the embeddings plot goes to embeddings.png."""

    def predict(self, objective, spec: dict, inputs, out: Path | None = None, render: Path | None = None,
                **options) -> Prediction:
        if inputs is None and spec.get("level") == "node":
            inputs = spec["source"]                 # the graph the run was trained on
        if inputs is None:
            raise DeepAtlasError(f"give graph files to predict for (a GraphML/GML file, a TUDataset folder); "
                                 f"{option('node')} is for node-level runs")
        rows = super().predict(objective, spec, inputs, out, render, **options).rows
        return (ClassProbabilities if spec["target"] == "classes" else Prediction)(rows)

    def after_training(self, objective, spec: dict, splits, run_path: Path) -> None:
        self.module.plot_predictions(objective, spec, splits.val, run_path / "embeddings.png")


TASKS = [GraphTask("graph", "deepatlas.data.graphs", options=("task",))]
