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
from pathlib import Path
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


MIN_SPLIT = 3
"""items a 60/20/20 split needs so that train, val and test each get one"""
MIN_STRATIFIED = 5
"""items of every class for the split to keep the classes' shares in each part (fewer: a plain random split)"""


def split_indices(y: np.ndarray, where: str = "data", unit: str = "rows"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fixed, stratified 60/20/20 train/val/test split (seed 0, whatever the run's seed). Refuses, naming
    `where`, data too small for every part to get at least one of its `unit`."""
    from sklearn.model_selection import train_test_split
    if len(y) < MIN_SPLIT:
        raise DeepAtlasError(f"{where}: {len(y)} {unit}; a 60/20/20 train/val/test split needs at least "
                             f"{MIN_SPLIT} (and {MIN_STRATIFIED} of each class to keep every class in each part)")
    idx = np.arange(len(y))
    stratify = y if np.unique(y, return_counts=True)[1].min() >= MIN_STRATIFIED else None
    train, rest = train_test_split(idx, test_size=0.4, random_state=SPLIT_SEED, stratify=stratify)
    val, test = train_test_split(rest, test_size=0.5, random_state=SPLIT_SEED,
                                 stratify=None if stratify is None else y[rest])
    return train, val, test


def is_file(text: str) -> bool:
    """Whether `text` names an existing file; False for a text that cannot be a path (too long, a NUL byte)."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a BOM dropped); one clear error, naming the file, for bytes that are not text."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise DeepAtlasError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
