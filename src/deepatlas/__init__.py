"""deepatlas: a runnable atlas of deep learning.

    import deepatlas
    model = deepatlas.create_model("mlp", in_features=30, n_classes=2)
    result = deepatlas.train("mlp", out="runs/mlp")
    trained = deepatlas.load("runs/mlp")          # a Predictor: .predict(raw inputs), .encode, .model

The public functions live in `deepatlas.api`; they are imported on first use, so that `import deepatlas`
(and `deepatlas list`) costs no torch import.
"""
from deepatlas import cores  # noqa: F401  (notes whether the user set OMP_NUM_THREADS, before anything else does)
from deepatlas.errors import DeepAtlasError

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "train", "evaluate", "baseline", "load", "Predictor", "predict", "sample",
           "entries", "get", "cards", "Entry", "Scaling", "DeepAtlasError"]


def __getattr__(name: str):
    if name in __all__:
        from deepatlas import api
        return getattr(api, name)
    raise AttributeError(f"module 'deepatlas' has no attribute {name!r}")
