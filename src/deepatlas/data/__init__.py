"""Datasets: embedded ones (generated or shipped inside a dependency) and readers for users' files.

`load(task, source)` returns a dataset object with `train`, `val`, `test` (torch Datasets),
`spec` (JSON that re-encodes new inputs the way training did) and `dims` (the sizes a model
config takes from its data, e.g. in_features and n_classes).
"""
from __future__ import annotations

from deepatlas.errors import DeepAtlasError


def load(task: str, source: str, target: str | None = None):
    if task == "classification":
        from deepatlas.data import tabular
        return tabular.load(source, target)
    raise DeepAtlasError(f"no data loader for task {task!r}")


def embedded(task: str) -> list[str]:
    """Names of the embedded datasets a task can train on without any file."""
    if task == "classification":
        from deepatlas.data import tabular
        return list(tabular.EMBEDDED)
    return []
