"""`deepatlas export RUN_DIR --format onnx` and `deepatlas info NAME --summary`.

Export writes a trained network as an ONNX file and checks it at once: onnxruntime runs the file on a test batch
of the run's own data, and its outputs are compared with PyTorch's. What is exported is the objective's inference
(`deepatlas.protocols.Exports`): `infer(*inputs)` on `export_inputs(data, n)`, the network's one forward pass
(a classifier's logits, a detector's raw outputs before decoding and NMS, a language model's logits, a policy's
greedy action). An objective whose inference is not one forward pass (a sampler drawing pixel by pixel, a tree
search, a planner) says what it is instead in `not_exported`, and export refuses in one line naming it.

The file is written by torch.onnx's TorchScript exporter, which is fast and keeps the batch axis dynamic; where it
has no translation for an operator (rot90 in gcnn), by the dynamo exporter. The batch axis is checked to be
really dynamic by running the file on a smaller batch too; where tracing fixed it, the file is written again for
the test batch's size, and the result says so. An objective may free further axes with `export_axes` ({input: {axis:
name}}): a graph network's edge count (its batch axis is the nodes).

The summary runs one example of an entry's default data through its default-config network, untrained, with a
forward hook on each layer: a table of module, output shape and parameters.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from deepatlas import api
from deepatlas.errors import DeepAtlasError
from deepatlas.protocols import Exports

FORMATS = ("onnx",)
BATCH = 8
"""test examples the exported file is checked on"""
TOLERANCE = 1e-4
"""the largest difference from PyTorch allowed, relative to the outputs' size (at least 1)"""


class Inference(nn.Module):
    """An objective's `infer` as a module's forward, several outputs as a tuple (ONNX names them in order)."""

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective

    def forward(self, *inputs: Tensor):
        out = self.objective.infer(*inputs)
        return tuple(out.values()) if isinstance(out, dict) else out


def check_exportable(name: str, objective) -> None:
    """One line where there is nothing to export, naming what inference is instead of one forward pass."""
    if not isinstance(objective, Exports):
        raise DeepAtlasError(f"{name}: its objective declares no inference to export (deepatlas.protocols.Exports)")
    if objective.not_exported:
        raise DeepAtlasError(f"{name}: inference is {objective.not_exported}, not one forward pass; nothing to export")


def check_onnx() -> None:
    """torch.onnx writes with onnx (and onnxscript, for the dynamo exporter); onnxruntime checks the file."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise DeepAtlasError("export needs onnx: pip install 'deepatlas[export]'") from None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise DeepAtlasError("export checks its file with onnxruntime: pip install onnxruntime") from None


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None) -> dict:
    """Write the trained network of `run_dir` as `fmt` (default file RUN_DIR/model.onnx), checked on a test batch
    of the run's data. Returns {"name", "file", "exporter", "inputs", "outputs" (name -> shape, "batch" where it
    is dynamic), "dynamic_batch", "checked_on" (examples), "max_abs_diff", "note" (what the outputs are)}."""
    if fmt not in FORMATS:
        raise DeepAtlasError(f"--format {fmt}: deepatlas exports {', '.join(FORMATS)}")
    api.check_output(out, "--out")
    _, saved, entry, _ = api._read(run_dir)
    objective = api.load_objective(run_dir)
    check_exportable(entry.name, objective)
    check_onnx()
    data = api._run_data(api.task_of(entry), saved)
    return write(entry.name, objective, data, Path(out) if out else Path(run_dir) / "model.onnx")


def fresh(name: str) -> tuple[nn.Module, object]:
    """Entry `name`'s objective around an untrained network of its default config (sized by its default data), in
    eval mode, and that data (Splits, or an Environment)."""
    entry = api.get(name)
    data = api.task_of(entry).load(entry.data)
    objective = api._objective(entry, api.build_config(entry, {}, data.dims), data.spec)
    return objective.eval(), data


def write(name: str, objective: nn.Module, data, out: Path) -> dict:
    """Export `objective`'s inference to the ONNX file `out`, checked on BATCH test examples of `data` (see
    `export`); nothing is left at `out` unless the check passed."""
    check_exportable(name, objective)
    check_onnx()
    objective = objective.to("cpu").eval()  # onnxruntime runs on the CPU here: compare it with PyTorch's there
    inputs = objective.export_inputs(data, BATCH)
    expected = _outputs(objective, inputs)
    batch = len(next(iter(inputs.values())))
    edges = {k for k, axes in getattr(objective, "export_axes", {}).items() if 0 in axes}  # not the batch axis
    smaller = {k: v if k in edges else v[: max(batch // 2, 1)] for k, v in inputs.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        exporter = _write_onnx(name, objective, inputs, expected, partial, dynamic=True)
        dynamic = batch > 1 and _agrees(_difference(partial, smaller, _outputs(objective, smaller)), expected)
        if not dynamic:  # tracing fixed the batch size somewhere: a file for this batch size
            exporter = _write_onnx(name, objective, inputs, expected, partial, dynamic=False)
        diff = _difference(partial, inputs, expected)
        if not _agrees(diff, expected):
            shown = "onnxruntime cannot run it" if diff is None else f"they differ by {diff:.3g}"
            raise DeepAtlasError(f"{name}: the exported file does not compute what PyTorch does ({shown}); "
                                 f"nothing written")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)

    free = getattr(objective, "export_axes", {}) if dynamic else {}

    def shape(k: str, t: Tensor) -> list:
        return ["batch" if dynamic and i == 0 and n == batch else free.get(k, {}).get(i, n) for i, n in enumerate(t.shape)]

    return {"name": name, "file": str(out), "exporter": exporter, "inputs": {k: shape(k, v) for k, v in inputs.items()},
            "outputs": {k: shape(k, v) for k, v in expected.items()}, "dynamic_batch": dynamic, "checked_on": batch,
            "max_abs_diff": diff, "note": objective.export_note}


def _agrees(diff: float | None, expected: dict[str, Tensor]) -> bool:
    """onnxruntime ran the file and its outputs are PyTorch's within TOLERANCE of their size."""
    return diff is not None and diff <= TOLERANCE * max([1.0] + [v.abs().max().item() for v in expected.values()
                                                                 if v.numel()])


def _outputs(objective, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """PyTorch's outputs by name: a dict's own names, or "output" for one tensor."""
    with torch.no_grad():
        out = objective.infer(*inputs.values())
    return dict(out) if isinstance(out, dict) else {"output": out}


def _write_onnx(name: str, objective, inputs: dict[str, Tensor], outputs: dict[str, Tensor], path: Path,
                dynamic: bool) -> str:
    """Write the file with the TorchScript exporter, else the dynamo one; which one did it. `dynamic`: the batch
    axis (the first, of the inputs and of the outputs that have it) is left free."""
    batch = len(next(iter(inputs.values())))
    free = [k for k, v in (*inputs.items(), *outputs.items()) if dynamic and v.dim() and len(v) == batch]
    axes = {k: {0: "batch"} for k in free}
    for k, more in (getattr(objective, "export_axes", {}) if dynamic else {}).items():  # a graph's edge axis
        axes.setdefault(k, {}).update(more)
    ways = {"torchscript": {"dynamo": False, "dynamic_axes": axes},
            "dynamo": {"dynamo": True, "external_data": False,  # one file: the weights inside
                       "dynamic_shapes": (tuple({a: torch.export.Dim.AUTO for a in axes[k]} if k in axes else None
                                                for k in inputs),)}}
    failed = None
    for exporter, options in ways.items():
        try:
            with _quiet():
                module = Inference(objective).eval()  # the exporter restores its mode, and so its children's
                torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=list(inputs),
                                  output_names=list(outputs), **options)
            return exporter
        except Exception as err:  # an operator without an ONNX translation, control flow that cannot be traced
            failed = failed or err
    first = str(failed).strip().splitlines()[0] if str(failed).strip() else ""
    raise DeepAtlasError(f"{name}: torch.onnx cannot export it ({type(failed).__name__}: {first})")


@contextlib.contextmanager
def _quiet():
    """The exporters' warnings and progress lines are about their internals, not the user's model."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _difference(path: Path, inputs: dict[str, Tensor], expected: dict[str, Tensor]) -> float | None:
    """The largest absolute difference between onnxruntime's outputs of the file and PyTorch's; None where
    onnxruntime cannot run it on these inputs (a batch size the export fixed)."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # its shape errors are answered here, not printed
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    except Exception:  # onnxruntime's own errors: a graph it cannot load, a shape it was not exported for
        return None
    if any(g.shape != tuple(e.shape) for g, e in zip(got, expected.values())):
        return None
    return max(float(np.abs(g.astype(np.float64) - e.double().numpy()).max()) if e.numel() else 0.0
               for g, e in zip(got, expected.values()))


def summary(name: str) -> dict:
    """Entry `name`'s layers as its default-config network (untrained) runs one example of its default data:
    {"name", "inputs" (name -> shape), "params", "rows"}, each row {"module", "type", "shape" of its output
    (of its first call: "calls" counts them; None if it did not run), "params" of its own}. The rows are the
    layers (modules without children) and the modules holding parameters of their own, in the order they ran."""
    objective, data = fresh(name)
    total = api.count_params(objective)
    if total == 0:
        why = f": its inference is {objective.not_exported}" if objective.not_exported else ""
        raise DeepAtlasError(f"{name} has no layers to summarize{why}")
    layers = [(path, m) for path, m in objective.named_modules() if path and "parametrizations" not in path.split(".")
              and (not [c for n, c in m.named_children() if n != "parametrizations"] or _own(m))]
    shapes, calls = {}, {}

    def hook(path: str):
        def record(module, args, output):
            shapes.setdefault(path, _shape(output))
            calls[path] = calls.get(path, 0) + 1
        return record

    handles = [m.register_forward_hook(hook(path)) for path, m in layers]
    try:
        inputs = objective.export_inputs(data, 1)
        with torch.no_grad():
            objective.infer(*inputs.values())
    finally:
        for handle in handles:
            handle.remove()
    order = [*shapes, *(path for path, _ in layers if path not in shapes)]  # as they ran; those that did not, last
    modules, counted, rows = dict(layers), set(), []
    for path in order:
        own = [p for p in _own(modules[path]) if id(p) not in counted]  # a tied weight once
        counted.update(map(id, own))
        rows.append({"module": path, "type": type(modules[path]).__name__, "shape": shapes.get(path),
                     "calls": calls.get(path, 0), "params": sum(p.numel() for p in own)})
    return {"name": name, "inputs": {k: tuple(v.shape) for k, v in inputs.items()}, "params": total, "rows": rows}


def _own(module: nn.Module) -> list[nn.Parameter]:
    """The parameters a module holds itself, those behind a parametrization (weight = f(original)) included."""
    own = list(module.parameters(recurse=False))
    return own + list(module.parametrizations.parameters()) if parametrize.is_parametrized(module) else own


def _shape(output) -> str:
    """"(1, 10)" for a tensor; several, comma-separated, for a tuple, list or dict of them."""
    if isinstance(output, Tensor):
        return f"({', '.join(map(str, output.shape))})"
    if isinstance(output, dict):
        return ", ".join(f"{k}: {_shape(v)}" for k, v in output.items())
    if isinstance(output, (tuple, list)):
        return ", ".join(_shape(v) for v in output if v is not None)
    return type(output).__name__
