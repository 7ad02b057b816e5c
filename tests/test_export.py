"""`deepatlas export --format onnx` and `deepatlas info --summary`: every entry whose inference is one forward pass
exports a file that onnxruntime runs to PyTorch's outputs within 1e-4; every other entry refuses in one line that
says what its inference is instead."""
import json
import sys

import numpy as np
import onnxruntime
import pytest
import torch

from deepatlas import api
from deepatlas.errors import DeepAtlasError
from deepatlas.tools import export

ENTRIES = [c.name for c in api.cards()]


def run_onnx(path, inputs: dict) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(inputs)
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_exports_what_pytorch_computes_or_says_why_not(name, tmp_path):
    """An untrained network of the default config, through the code path `deepatlas export` takes."""
    torch.manual_seed(0)
    objective, data = export.fresh(name)
    out = tmp_path / f"{name}.onnx"
    if objective.not_exported:
        with pytest.raises(DeepAtlasError) as refused:
            export.write(name, objective, data, out)
        line = str(refused.value)
        assert line == f"{name}: inference is {objective.not_exported}, not one forward pass; nothing to export"
        assert "\n" not in line and not list(tmp_path.iterdir())
        return
    result = export.write(name, objective, data, out)
    assert result["file"] == str(out) and result["max_abs_diff"] <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # one file, nothing partial left
    # checked again here, on another batch size where the batch axis is free
    inputs = objective.export_inputs(data, 3 if result["dynamic_batch"] else export.BATCH)
    with torch.no_grad():
        expected = objective.infer(*inputs.values())
    expected = list(expected.values()) if isinstance(expected, dict) else [expected]
    got = run_onnx(out, inputs)
    assert len(got) == len(expected) == len(result["outputs"])
    for g, e in zip(got, expected):
        assert g.shape == tuple(e.shape)
        assert np.abs(g.astype(np.float64) - e.double().numpy()).max() <= 1e-4, name


def test_a_refusal_names_what_inference_is_instead(tmp_path):
    objective, data = export.fresh("alphazero")
    with pytest.raises(DeepAtlasError, match="^alphazero: inference is a tree search .*, not one forward pass; "
                                             "nothing to export$"):
        export.write("alphazero", objective, data, tmp_path / "alphazero.onnx")


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """Two short trained runs: an mlp (a forward pass) and an rbm (a Gibbs sampler)."""
    root = tmp_path_factory.mktemp("export-runs")
    for name in ("mlp", "rbm"):
        api.train(name, out=root / name, overrides={"epochs": "1"})
    return root


def test_cli_exports_a_trained_run_and_the_file_predicts_what_the_run_does(cli_run, short_runs):
    run = short_runs / "mlp"
    code, out, err = cli_run("export", run, "--format", "onnx")
    assert code == 0, err
    assert f"wrote {run / 'model.onnx'}" in out and "inputs:  input (batch, 30)" in out
    assert "outputs: output (batch, 2)" in out and "max abs difference from PyTorch" in out
    predictor = api.load(run)
    rows = predictor.objective.export_inputs(predictor.task.load(predictor.entry.data), 20)["input"]  # its own data
    [logits] = run_onnx(run / "model.onnx", {"input": rows})
    assert np.array_equal(logits.argmax(-1), predictor(rows).argmax(-1).numpy())
    code, out, _ = cli_run("export", run, "--out", short_runs / "elsewhere" / "mlp.onnx")
    assert code == 0 and (short_runs / "elsewhere" / "mlp.onnx").exists()


def test_cli_refuses_in_one_line(refused, short_runs, monkeypatch):
    refused("export", short_runs / "rbm", message="rbm: inference is Gibbs sampling", watch=[short_runs / "rbm"])
    refused("export", short_runs / "mlp", "--format", "tflite", message="--format tflite: deepatlas exports onnx",
            watch=[short_runs / "mlp"])
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    refused("export", short_runs / "mlp", "--out", short_runs / "x.onnx",
            message="export needs onnx: pip install 'deepatlas[export]'", watch=[short_runs])


def test_info_summary_lists_layers_shapes_and_parameters(cli_run):
    code, out, err = cli_run("info", "lenet", "--summary")
    assert code == 0, err
    assert "lenet, default config, on input (1, 1, 16, 16)" in out
    assert "model.features.0" in out and "Conv2d" in out and "(1, 6, 16, 16)" in out
    total = api.count_params(api.create_model("lenet"))
    assert f"total: {total:,} parameters" in out
    code, out, _ = cli_run("info", "gpt", "--summary", "--json")
    summary = json.loads(out)
    assert summary["params"] == sum(r["params"] for r in summary["rows"])  # the tied head's weight counted once
    assert summary["rows"][-1]["module"] == "model.head" and summary["rows"][-1]["shape"] == "(1, 32, 109)"
