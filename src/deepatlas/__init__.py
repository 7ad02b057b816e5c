"""deepatlas: a runnable atlas of deep learning.

    import deepatlas
    model = deepatlas.create_model("mlp", in_features=30, n_classes=2)
    result = deepatlas.train("mlp", out="runs/mlp")
    trained = deepatlas.load("runs/mlp")

The public functions live in `deepatlas.api`; they are imported on first use, so that `import deepatlas`
(and `deepatlas list`) costs no torch import.
"""
import os

# Before torch loads its OpenMP runtime (which reads these once): threads that wait for work sleep instead of
# spinning. Spinning threads of two processes on one machine fight for its cores (a small model's step: 4.0 ms
# alone, 61 ms beside another process; benchmarks/load.py). A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepatlas.errors import DeepAtlasError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "train", "evaluate", "load", "predict", "sample", "entries", "get",
           "cards", "Entry", "Scaling", "DeepAtlasError"]


def __getattr__(name: str):
    if name in __all__:
        from deepatlas import api
        return getattr(api, name)
    raise AttributeError(f"module 'deepatlas' has no attribute {name!r}")
