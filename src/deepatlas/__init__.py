"""deepatlas: a runnable atlas of deep learning.

    import deepatlas
    model = deepatlas.create_model("mlp", in_features=30, n_classes=2)
    result = deepatlas.train("mlp", out="runs/mlp")
    trained = deepatlas.load("runs/mlp")
"""
from deepatlas.catalog import Entry, entries, get
from deepatlas.engine.loop import Scaling
from deepatlas.engine.run import VERSION as __version__, create_model, evaluate, load, predict, sample, train
from deepatlas.errors import DeepAtlasError

__all__ = ["__version__", "create_model", "train", "evaluate", "load", "predict", "sample", "entries", "get", "Entry", "Scaling",
           "DeepAtlasError"]
