"""Datasets: embedded ones (generated or shipped inside a dependency) and readers for users' files.

Each Task (deepatlas.tasks) names its data module; a data module has the same four functions:
    load_for(options, target)      -> a `Splits`: train/val/test Datasets, a JSON `spec` that
                                     re-encodes new inputs the way training did, `dims` (the
                                     sizes a model config takes from its data) and
                                     `train_transform` (a batch augmentation, or None)
    read_inputs(spec, path)       -> (inputs tensor, a name per input), for `predict`
    read_labeled(spec, path)      -> a labelled Dataset, for `eval --data`
    EMBEDDED                      -> the dataset names that need no file
and, where a task's predictions are not class probabilities (translate, forecast, evaluate),
    predict(objective, spec, text) -> [{"input", "predicted", ...}] for each input in `text`
and, for generative models (task "generation"),
    write_samples(spec, samples, out) -> the files written (a PNG grid, a scatter, WAV files)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from deepatlas.errors import DeepAtlasError

SPLIT_SEED = 0


@dataclass
class Splits:
    """What every `load_for` returns; each data module subclasses it to add its `dims` property."""
    train: Dataset
    val: Dataset
    test: Dataset
    spec: dict
    """plain JSON, saved in the run's config.json: re-encodes new inputs the way training did"""
    train_transform: Callable | None = None
    """a batch augmentation the loop applies on the batch's device, or None"""


def split_indices(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fixed, stratified 60/20/20 train/val/test split (seed 0, whatever the run's seed)."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(y))
    stratify = y if np.unique(y, return_counts=True)[1].min() >= 5 else None
    train, rest = train_test_split(idx, test_size=0.4, random_state=SPLIT_SEED, stratify=stratify)
    val, test = train_test_split(rest, test_size=0.5, random_state=SPLIT_SEED,
                                 stratify=None if stratify is None else y[rest])
    return train, val, test
