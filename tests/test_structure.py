"""The structure later entries rely on: the layer order, cards read without importing, a CLI that starts
without torch, a broken model file that breaks only its own entry, tasks as objects, declared protocols."""
import ast
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepatlas import api, catalog, cli
from deepatlas.errors import DeepAtlasError

PACKAGE = Path(catalog.__file__).parent

def stated_layers() -> list[set[str]]:
    """The layer order docs/architecture.md states: its "Layers" table, top row the highest, as the top-level
    names in each row's first cell (`engine/` -> engine, `api.py` -> api, `models/<family>/<arch>.py` -> models)."""
    page = (PACKAGE.parent.parent / "docs" / "architecture.md").read_text()
    table = page.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return [{name.split("/")[0].removesuffix(".py") for name in re.findall(r"`([^`]+)`", row)} for row in reversed(rows)]


LAYERS = stated_layers()


def layer_of(module: str) -> int:
    """'deepatlas.engine.loop' -> the index of the layer holding 'engine'."""
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every deepatlas module `path` imports, at any depth of the file (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("deepatlas")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepatlas"):
            if node.module == "deepatlas":  # from deepatlas import api, catalog: each name is a module
                found += [(node.lineno, f"deepatlas.{a.name}" if a.name not in ("__version__",) else "deepatlas")
                          for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def test_every_import_follows_the_layer_order():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("deepatlas", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for line, target in imports_of(path):
            if layer_of(target) > layer_of(module):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not wrong, "imports against the layer order (docs/architecture.md):\n" + "\n".join(wrong)


def test_the_stated_order_covers_every_top_level_module():
    assert LAYERS[0] == {"catalog", "protocols", "errors", "memory", "cores"} and LAYERS[-1] == {"cli"}
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.glob("*")
            if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert tops == set().union(*LAYERS)


def test_the_layering_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from deepatlas.engine.loop import fit\n")
    [(line, target)] = imports_of(bad)
    assert line == 2 and layer_of(target) > layer_of("deepatlas.models.x")


def test_static_cards_equal_the_registered_entries():
    for card in catalog.cards():
        entry = catalog.get(card.name)
        assert catalog.card_json(card) == catalog.card_json(entry), card.name
        assert entry.module == card.module
    assert [c.name for c in catalog.cards()] == [e.name for e in catalog.entries()]
    assert len(catalog.MODULES) == len(set(catalog.MODULES)) == len(catalog.cards())


def test_every_model_module_is_listed():
    on_disk = {".".join(("deepatlas", *p.relative_to(PACKAGE).with_suffix("").parts))
               for p in (PACKAGE / "models").rglob("*.py") if "register(Entry(" in p.read_text()}
    assert on_disk == set(catalog.MODULES)


def _modules_after(argv: list[str]) -> set[str]:
    code = ("import sys, contextlib, io\nfrom deepatlas import cli\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    code = cli.run({argv!r})\n"
            "assert code == 0, code\nprint('\\n'.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "--json"], ["list", "--family", "vision"]])
def test_cheap_commands_import_neither_torch_nor_lightning(argv):
    loaded = _modules_after(argv)
    assert not {m for m in loaded if m.split(".")[0] in ("torch", "lightning_fabric", "lightning")}
    assert not {m for m in loaded if m.startswith("deepatlas.models.")}


def test_info_imports_only_its_own_entry():
    loaded = _modules_after(["info", "mlp"])
    assert {m for m in loaded if m.startswith("deepatlas.models.") and m.count(".") == 3} == \
        {"deepatlas.models.feedforward.mlp"}
    assert "lightning_fabric" not in loaded


def test_a_broken_model_module_breaks_only_its_own_entry(monkeypatch, capsys):
    real_import = catalog.importlib.import_module
    monkeypatch.delitem(catalog._REGISTRY, "vgg", raising=False)

    def import_module(name):
        if name == "deepatlas.models.vision.vgg":
            raise NameError("name 'Conv' is not defined")
        return real_import(name)

    monkeypatch.setattr(catalog.importlib, "import_module", import_module)
    with pytest.raises(DeepAtlasError, match=r"vgg: its module deepatlas.models.vision.vgg failed to import "
                                             r"\(NameError: name 'Conv' is not defined\)"):
        catalog.get("vgg")
    assert catalog.get("lenet").name == "lenet"
    assert cli.run(["list", "--family", "vision"]) == 0 and "vgg" in capsys.readouterr().out
    assert cli.run(["info", "vgg"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failed to import" in err


def test_every_entry_names_a_task_whose_loop_its_objective_supports():
    from deepatlas.protocols import OwnLoop, Supervised
    from deepatlas.tasks import get_task
    for entry in catalog.entries():
        task = get_task(entry.task)
        assert task.name == entry.task and entry.data.data in task.embedded()
        objective = entry.objective(entry.build(entry.config()))
        assert isinstance(objective, OwnLoop if task.loop == "own" else Supervised), entry.name


def test_engine_api_and_cli_never_branch_on_task_names():
    from deepatlas.tasks import TASK_MODULES
    sniffed = set(TASK_MODULES) | {"classes", "continuation", "game", "interactive"}
    for path in [*(PACKAGE / "engine").glob("*.py"), PACKAGE / "api.py", PACKAGE / "cli.py"]:
        strings = {n.value for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & sniffed, f"{path.name} names {strings & sniffed}"


def test_loop_and_api_check_capabilities_by_protocol_not_by_name():
    for path in [*(PACKAGE / "engine").glob("*.py"), PACKAGE / "api.py"]:
        calls = [n.func.id for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        assert "hasattr" not in calls, path.name


def test_list_json_keeps_its_contract(capsys):
    assert cli.run(["list", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found) == len(catalog.MODULES)
    for card in found:
        assert {"name", "title", "family", "year", "paper", "summary", "when_to_use", "related", "bar"} <= set(card)
        assert set(card["bar"]) == {"metric", "goal", "direction", "budget_s"}


def test_predictions_render_without_the_cli_knowing_their_kind():
    from io import StringIO

    from rich.console import Console

    from deepatlas.tasks.predictions import ClassProbabilities, Continuations, Episodes, Prediction
    shown = {}
    for prediction in (ClassProbabilities([{"input": "a", "predicted": "x", "probabilities": {"x": 0.7, "y": 0.3}}]),
                       Continuations([{"input": "The ", "predicted": "The cat", "continuation": "cat"}]),
                       Episodes([{"input": "tictactoe", "predicted": "draw", "game": "X|O|X"}]),
                       Prediction([{"input": "2+2", "predicted": "4"}])):
        console = Console(file=StringIO(), width=120)
        prediction.show(console)
        shown[type(prediction).__name__] = console.file.getvalue()
        assert json.loads(json.dumps(prediction.to_json())) == prediction.rows
    assert "p(x)" in shown["ClassProbabilities"] and "0.7000" in shown["ClassProbabilities"]
    assert "The cat" in shown["Continuations"] and "X|O|X" in shown["Episodes"] and "4" in shown["Prediction"]
    assert api.predict.__doc__ and "Prediction" in api.predict.__doc__


def _attributes_read(source: str, of: str) -> set[str]:
    """Every X in `<...>.{of}.X` or `{of}.X` in `source`."""
    found = set()
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Attribute):
            owner = n.value.attr if isinstance(n.value, ast.Attribute) else getattr(n.value, "id", None)
            if owner == of:
                found.add(n.attr)
    return found


def test_own_loop_entries_declare_every_training_setting_their_loop_reads():
    from deepatlas.tasks import get_task
    for entry in catalog.entries():
        if get_task(entry.task).loop != "own":
            assert entry.train_keys is None, entry.name
            continue
        source = Path(sys.modules[catalog.card(entry.name).module].__file__).read_text()
        read = _attributes_read(source, "train") - {"__call__"}
        assert read | {"stop_at"} <= set(entry.train_keys), entry.name  # the engine's context reads stop_at
        assert set(entry.train_keys) <= {f.name for f in catalog.dataclasses.fields(catalog.Train)}


def test_every_task_declares_the_data_options_its_data_module_reads():
    from deepatlas.tasks import TASK_MODULES, get_task
    fields = {f.name for f in catalog.dataclasses.fields(catalog.Data)}
    for name in TASK_MODULES:
        task = get_task(name)
        read = _attributes_read(Path(task.module.__file__).read_text(), "options") & fields
        assert read - {"data"} == set(task.options) or (read - {"data"} <= set(task.options)
                                                         and name in ("search",)), name


def test_set_names_its_part_and_refuses_keys_a_run_never_reads():
    mlp, ppo, vit = catalog.get("mlp"), catalog.get("ppo"), catalog.get("vit")
    def parts(model, train, data, **phases):
        return {"model": model, "train": train, "data": data, **phases}
    assert api.split_overrides(mlp, {"lr": "0.1", "width": "8"}) == parts({"width": "8"}, {"lr": "0.1"}, {})
    assert api.split_overrides(mlp, {"train.lr": "0.1", "model.width": "8", "data.data": "wine"}) == \
        parts({"width": "8"}, {"lr": "0.1"}, {"data": "wine"})
    assert api.split_overrides(vit, {"model.image_size": "16"}) == parts({"image_size": "16"}, {}, {})
    assert api.split_overrides(vit, {"image_size": "16"}) == parts({}, {}, {"image_size": "16"})  # the data's
    for bad, message in [({"train.data": "5"}, r"train.data: data is a data setting of mlp \(data.data\)"),
                         ({"train.lrr": "5"}, "unknown setting 'train.lrr' for mlp; did you mean lr"),
                         ({"opt.lr": "1"}, "name a part as model.KEY"),
                         ({"model.lr": "1"}, r"model.lr: lr is a train setting of mlp \(train.lr\)"),
                         ({"window": "5"}, r"mlp never reads window; valid: .* \(model\), epochs, steps, .* "
                                           r"\(train\), data, task, missing, drop, keep \(data\)")]:
        with pytest.raises(DeepAtlasError, match=message):
            api.split_overrides(mlp, bad)
    assert api.split_overrides(ppo, {"lr": "3e-4", "stop_at": "400", "envs": "4"}) == \
        parts({"envs": "4"}, {"lr": "3e-4", "stop_at": "400"}, {})
    for key in ("epochs", "train.batch_size", "data.image_size"):
        with pytest.raises(DeepAtlasError, match=r"ppo never reads \w+; valid: .*envs.* \(model\), lr, stop_at "
                                                 r"\(train\), data \(data\)"):
            api.split_overrides(ppo, {key: "3"})
    assert cli.run(["train", "ppo", "--set", "epochs=3"]) == 2


def test_a_steps_budget_draws_its_examples_once_per_seeded_run():
    import torch
    from torch.utils.data import TensorDataset

    from deepatlas.engine.loop import within_steps
    examples = TensorDataset(torch.arange(1000))
    assert within_steps(examples, catalog.Train()) is examples                      # steps=0: all
    assert within_steps(examples, catalog.Train(steps=100, batch_size=32, epochs=1)) is examples  # 3200 > 1000
    torch.manual_seed(3)
    drawn = within_steps(examples, catalog.Train(steps=10, batch_size=16, epochs=2))  # 10 steps of 16 over 2 passes
    torch.manual_seed(3)
    again = within_steps(examples, catalog.Train(steps=10, batch_size=16, epochs=2))
    assert len(drawn) == 80 and drawn.indices == again.indices and len(set(drawn.indices)) == 80


def test_config_json_records_three_parts_and_a_0_1_run_still_loads(tmp_path):
    run = tmp_path / "run"
    api.train("perceptron", out=run, overrides={"epochs": "2"})
    saved = json.loads((run / "config.json").read_text())
    assert {"model", "train", "options", "phases", "data"} <= set(saved) and saved["train"]["epochs"] == 2
    assert saved["options"]["data"] == "iris_setosa" and "recipe" not in saved
    before = api.evaluate(run)
    old = {k: v for k, v in saved.items() if k not in ("train", "options", "phases")}
    old["recipe"] = {**saved["options"], **{k: v for k, v in saved["train"].items() if k != "steps"}}
    old["model"] = {**saved["model"], "train_windows": 38_400}  # a 0.1 training budget in a Config (GPT's)
    (run / "config.json").write_text(json.dumps(old))  # as deepatlas 0.1 wrote it
    assert api.evaluate(run) == before  # the budget is left out: it shaped training, not the network
    assert api.saved_settings(old) == api.Settings(catalog.Train(**saved["train"]), catalog.Data(**saved["options"]))


def test_a_new_domain_needs_only_its_task_data_and_model_modules(tmp_path, monkeypatch, capsys):
    """docs/architecture.md's "Add a domain" example, copied out of the page: three files and one line in each
    registry; then the CLI lists, trains, evaluates and predicts the new domain's entry, and the model fits the
    curve far better than its mean (the variance of sin(3x) on [-1, 1] is about 0.5)."""
    from deepatlas import tasks
    page = (PACKAGE.parent.parent / "docs" / "architecture.md").read_text()
    for block in re.findall(r"```python\n(# (toy_\w+\.py).*?)```", page, flags=re.S):
        (tmp_path / block[1]).write_text(block[0])
    assert sorted(p.name for p in tmp_path.glob("toy_*.py")) == ["toy_data.py", "toy_model.py", "toy_task.py"]
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(tasks.TASK_MODULES, "curve", "toy_task")
    monkeypatch.setattr(catalog, "MODULES", (*catalog.MODULES, "toy_model"))
    catalog.cards.cache_clear()
    try:
        assert cli.run(["list", "--family", "dynamics"]) == 0 and "curve_mlp" in capsys.readouterr().out
        run = tmp_path / "run"
        assert cli.run(["train", "curve_mlp", "--out", str(run), "--set", "width=16"]) == 0
        assert json.loads((run / "metrics.json").read_text())["test"]["loss"] < 0.05
        (tmp_path / "points.csv").write_text("x,y\n0.1,0.2955\n-0.5,-0.9975\n")
        capsys.readouterr()
        assert cli.run(["eval", str(run), "--data", str(tmp_path / "points.csv"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["loss"] < 0.05
        assert cli.run(["predict", str(run), "0.5", "--json"]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["input"] == "x=0.5" and abs(float(row["predicted"]) - 0.997) < 0.2
    finally:
        catalog.cards.cache_clear()
        catalog._REGISTRY.pop("curve_mlp", None)


def test_every_numeric_setting_declares_its_range_and_every_default_is_in_it():
    """Train, Data and every entry's Config: a number field without a `Range` would let --set, create_model or a
    crafted config.json through unchecked."""
    for cls in (catalog.Train, catalog.Data, *(e.config for e in catalog.entries())):
        missing = [k for k, r in catalog.ranges(cls).items() if r is None]
        assert not missing, f"{cls.__module__}.{cls.__name__}: no Range on {missing}"
        default = cls()
        catalog.apply_overrides(default, {f.name: getattr(default, f.name) for f in dataclasses.fields(default)})


def test_values_out_of_range_are_refused_everywhere_they_enter():
    with pytest.raises(DeepAtlasError, match="width=0: must be ≥ 1"):
        api.create_model("mlp", width=0)
    with pytest.raises(DeepAtlasError, match="dropout=1.5"):
        api.create_model("mlp", dropout=1.5)
    with pytest.raises(DeepAtlasError, match="config.json: train.lr=-1"):
        api.saved_settings({"train": {"lr": -1}, "options": {}}, "config.json")
