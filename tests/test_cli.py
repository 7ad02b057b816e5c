"""The CLI as a user runs it: every verb, the JSON shapes of DESIGN.md, one-line errors with exit 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer

import deepatlas

CARD_KEYS = {"name", "title", "family", "year", "paper", "summary", "when_to_use", "related", "bar"}
BENCH_KEYS = {"name", "metric", "value", "goal", "direction", "passed", "seconds", "params"}


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory):
    data = load_breast_cancer()
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    lines = [",".join(data.feature_names) + ",target"]
    lines += [",".join(map(str, row)) + f",{data.target_names[t]}" for row, t in zip(data.data[:5], data.target[:5])]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_help_for_every_verb(cli_run):
    for verb in ("list", "info", "train", "eval", "predict", "bench"):
        code, out, _ = cli_run(verb, "--help")
        assert code == 0 and "Usage" in out
    code, out, _ = cli_run()
    assert code == 0 and "train" in out


def test_list_json_shape(cli_run):
    code, out, _ = cli_run("list", "--json")
    cards = json.loads(out)
    assert code == 0 and isinstance(cards, list)
    assert {c["name"] for c in cards} >= {"perceptron", "mlp", "residual_mlp"}
    for card in cards:
        assert CARD_KEYS <= set(card)
        assert set(card["bar"]) == {"metric", "goal", "direction", "budget_s"}
        assert card["bar"]["direction"] in ("max", "min") and isinstance(card["related"], list)
    code, out, _ = cli_run("list", "--family", "feedforward")
    assert code == 0 and "residual_mlp" in out
    code, out, _ = cli_run("list", "--family", "tracking")
    assert code == 0 and "no entries in family tracking yet" in out


def test_info(cli_run):
    code, out, _ = cli_run("info", "residual_mlp", "--json")
    assert code == 0 and json.loads(out)["name"] == "residual_mlp"
    code, out, _ = cli_run("info", "mlp")
    assert code == 0 and "Rumelhart" in out and "batch_size" in out and "hidden layers" in out


def test_train_eval_predict(cli_run, tmp_path, rows_csv):
    run = tmp_path / "run"
    code, out, err = cli_run("train", "mlp", "--set", "epochs=3", "--set", "width=16", "--seed", "1", "--out", run)
    assert code == 0, err
    assert "test:\n  loss: " in out and str(run) in out
    assert json.loads((run / "config.json").read_text())["model"]["width"] == 16

    code, out, _ = cli_run("eval", run, "--json")
    metrics, saved = json.loads(out), json.loads((run / "metrics.json").read_text())
    assert code == 0 and metrics.pop("baseline") == saved["baseline"] and metrics == saved["test"]
    code, out, _ = cli_run("eval", run, "--data", rows_csv, "--json")
    assert code == 0 and 0 <= json.loads(out)["accuracy"] <= 1

    code, out, _ = cli_run("predict", run, rows_csv, "--json", "--out", tmp_path / "p.csv")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 5 and all(list(r["probabilities"]) == ["malignant", "benign"] for r in rows)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    assert all(r["predicted"] == max(r["probabilities"], key=r["probabilities"].get) for r in rows)
    code, out, _ = cli_run("predict", run, rows_csv, "--out", tmp_path / "p.csv")
    assert code == 0 and "p(benign)" in out
    assert (tmp_path / "p.csv").read_text().count("\n") == 6


def test_train_on_users_csv(cli_run, tmp_path):
    lines = ["x,shape,label"] + [f"{i % 7},{'round' if i % 2 else 'square'},{'a' if i % 2 else 'b'}" for i in range(80)]
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    code, out, err = cli_run("train", "mlp", "--data", tmp_path / "mine.csv", "--target", "label",
                             "--set", "epochs=15", "--set", "lr=0.01", "--out", tmp_path / "r")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["test"]["accuracy"] == 1.0  # shape gives label


def test_bench_json(cli_run, tmp_path):
    code, out, err = cli_run("bench", "perceptron", "--json", tmp_path / "b.json")
    assert code == 0, err
    [result] = json.loads((tmp_path / "b.json").read_text())
    assert BENCH_KEYS <= set(result)
    assert result["name"] == "perceptron" and result["metric"] == "accuracy" and result["direction"] == "max"
    assert result["passed"] is True and result["value"] == 1.0 and result["params"] == 10


def test_compare_trains_then_reuses_and_charts(cli_run, tmp_path):
    argv = ["compare", "perceptron", "mlp", "mlp:width=4,depth=1", "--data", "iris", "--out", tmp_path / "cmp",
            "--json", tmp_path / "c.json"]
    code, out, err = cli_run(*argv)
    assert code == 0, err
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [r["name"] for r in rows] == ["perceptron", "mlp", "mlp:width=4,depth=1"] and not any(r["reused"] for r in rows)
    assert rows[2]["params"] < rows[1]["params"]  # a variant is its own run, with its own settings
    for r in rows:
        assert {"test_accuracy", "params", "train_seconds", "latency_ms"} <= set(r) and r["latency_ms"] > 0
    assert rows[1]["test_accuracy"] > 0.8 and rows[0]["params"] == 4 * 3 + 3
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = cli_run(*argv)
    assert code == 0 and all(r["reused"] for r in json.loads((tmp_path / "c.json").read_text()))


def errors():
    return [
        (["info", "mpl"], "unknown entry 'mpl'; did you mean mpc, mlp"),
        (["train", "resnet_mlp"], "unknown entry"),
        (["train", "mlp", "--set", "widht=3"], "unknown setting 'widht' for mlp; did you mean width?"),
        (["train", "mlp", "--set", "zzz=3"], "valid: activation"),
        (["train", "mlp", "--set", "in_features=3"], "set from the data"),
        (["train", "--resume", "somewhere", "--set", "lr=1"], "drop the name, --data, --target, --column, --task and --set"),
        (["train", "mlp", "--set", "width=wide"], "width=wide: expected an integer"),
        (["train", "mlp", "--set", "optimizer=adam"], "must be one of adamw, sgd"),
        (["train", "mlp", "--set", "width"], "expected key=value"),
        (["train", "mlp", "--data", "nothere.csv", "--target", "y"], "nothere.csv: no such file"),
        (["train", "mlp", "--out", "/proc/deepatlas-run"], "cannot write in /proc"),
        (["list", "--family", "vision2"], "unknown family"),
        (["eval", "no/such/run"], "no such run directory"),
        (["bench"], "name entries to benchmark"),
        (["train", "mlp", "--no-such-flag"], "No such option"),
        (["train", "mlp", "--precision", "7-bit"], "Precision '7-bit' is invalid"),
        (["compare", "mlp", "lenet"], "compare needs entries of one task"),
        (["compare", "mlp", "mlp:width"], "write variants as NAME:key=value"),
    ]


@pytest.mark.parametrize("argv,message", errors())
def test_bad_input_is_one_line_and_exit_2(cli_run, argv, message):
    code, out, err = cli_run(*argv)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_bad_files_are_one_line_and_exit_2(cli_run, mlp_run, tmp_path):
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("config.json", "model.safetensors"):
        (run / name).write_bytes((mlp_run / name).read_bytes())
    (tmp_path / "cols.csv").write_text("radius,texture\n1,2\n")
    (tmp_path / "bad.csv").write_text("mean radius\n\"unterminated\n")
    cases = [(["predict", mlp_run, tmp_path / "cols.csv"], "missing column(s) 'mean radius'"),
             (["predict", mlp_run, tmp_path / "bad.csv"], "bad.csv")]
    for argv, message in cases:
        code, _, err = cli_run(*argv)
        assert code == 2 and message in err and err.count("\n") == 1, err

    (run / "model.safetensors").write_bytes(b"\x00garbage")  # corrupt
    code, _, err = cli_run("eval", run)
    assert code == 2 and "not a valid safetensors file" in err and err.count("\n") == 1

    config = json.loads((mlp_run / "config.json").read_text())
    config["model"]["width"] = 999  # weights from another config: foreign
    (run / "config.json").write_text(json.dumps(config))
    (run / "model.safetensors").write_bytes((mlp_run / "model.safetensors").read_bytes())
    code, _, err = cli_run("eval", run)
    assert code == 2 and "do not match" in err and err.count("\n") == 1


def test_ddp_on_cpu_produces_a_loadable_run(tmp_path):
    """Two processes over gloo, launched by Fabric from the real console script."""
    exe = Path(sys.executable).parent / "deepatlas"
    run = tmp_path / "ddp"
    proc = subprocess.run([str(exe), "train", "mlp", "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu",
                           "--set", "epochs=2", "--out", str(run)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = deepatlas.load(run).model
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.8
    assert model is not None
    for f in run.rglob("*"):  # no pickle (protocols 2-5) nor torch.save zip under DDP
        assert f.read_bytes()[:2] not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK"), f
