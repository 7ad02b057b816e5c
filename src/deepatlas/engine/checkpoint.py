"""Weights and checkpoints as safetensors: no pickle anywhere.

A checkpoint is any nested state (dicts with str or int keys, lists, tuples, numbers, strings,
tensors). Tensors go into the safetensors file under their path; the rest of the structure is
JSON in the file's metadata. `SafetensorsIO` plugs this into Fabric, so `fabric.save` and
`fabric.load` (which know how to gather DDP/FSDP state) write and read it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import CheckpointIO
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from deepatlas.engine.rundir import replace_atomically
from deepatlas.errors import DeepAtlasError


def _pack(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"$tensor": path}
    if isinstance(obj, dict):
        return {"$dict": [[k, _pack(v, tensors, f"{path}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"$tuple": [_pack(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a safetensors checkpoint")


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "$tensor" in obj:
            return tensors[obj["$tensor"]]
        if "$tuple" in obj:
            return tuple(_unpack(v, tensors) for v in obj["$tuple"])
        return {k: _unpack(v, tensors) for k, v in obj["$dict"]}
    return obj


def _atomic_save(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """Write beside the target, flush, then rename, so an interrupted save never leaves a half file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    replace_atomically(tmp, path)


def copy_atomically(source: Path, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.copyfile(source, tmp)
    replace_atomically(tmp, path)


def save_state(state: dict, path: str | Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _pack(state, tensors, "s")
    _atomic_save(tensors, Path(path), {"skeleton": json.dumps(skeleton)})


def load_state(path: str | Path) -> dict:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            skeleton = json.loads((f.metadata() or {})["skeleton"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise DeepAtlasError(f"{path}: not a deepatlas checkpoint ({err})") from None
    return _unpack(skeleton, tensors)


class SafetensorsIO(CheckpointIO):
    """Fabric's checkpoint plugin, writing safetensors instead of torch.save's pickle."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_state(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_state(path)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    _atomic_save(state, Path(path), metadata or {})


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load `path` into `model`, refusing a file whose tensor names or shapes differ from the model's."""
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise DeepAtlasError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise DeepAtlasError(f"{path}: not a valid safetensors file ({err})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra else
                  f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the config makes {tuple(expected[wrong[0]].shape)}")
        raise DeepAtlasError(f"{path}: weights do not match the run's config ({detail})")
    model.load_state_dict(state)
    return model
