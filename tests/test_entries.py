"""Every registered entry, for free: a complete card, a bar, a recipe, a model that builds from
its defaults, finite forward and backward passes, a loss that drops on a fixed batch, and tests."""
from deepatlas.tasks import get_task
import dataclasses
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import deepatlas
from deepatlas import api, catalog
from deepatlas.tasks.classification import Classification

ENTRIES = [e.name for e in catalog.entries()]


def test_catalog_is_not_empty():
    assert {"perceptron", "mlp", "residual_mlp"} <= set(ENTRIES)


@pytest.mark.parametrize("name", ENTRIES)
def test_card_is_complete(name):
    entry = catalog.get(name)
    card = entry.card()
    for key in ("name", "title", "family", "year", "paper", "summary", "when_to_use", "related", "bar"):
        assert card[key] not in (None, "", []), key
    assert entry.family in catalog.FAMILIES
    assert 1940 < entry.year < 2030
    assert all(r in ENTRIES for r in entry.related), "related entries must exist"
    assert set(card["bar"]) == {"metric", "goal", "direction", "budget_s"}
    for bar in entry.bars:
        assert bar.direction in ("max", "min") and bar.budget_s > 0
        _, settings = api.settings_for(entry, bar.overrides)  # every key is a setting the run reads
        on = api.form_for(entry, settings.options.data)  # a bar on another task's data measures the entry's form
        assert settings.options.data in get_task(on.task).embedded()
        if bar.over:  # a margin over another entry's run: that entry and its settings exist
            other = catalog.get(bar.over["entry"])
            _, theirs = api.settings_for(other, {k: v for k, v in bar.over.items() if k != "entry"})
            assert theirs.options.data in get_task(other.task).embedded()
    assert not entry.bar.overrides, "the main bar runs the recipe as it is"
    assert entry.data.data in get_task(entry.task).embedded(), "default recipe must train on embedded data"


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_has_its_own_tests(name):
    entry = catalog.get(name)
    text = "".join(p.read_text() for p in Path(__file__).parent.glob(f"test_{entry.family}*.py"))
    assert f'"{name}"' in text, f"tests/test_{entry.family}*.py must test {name}"


@pytest.mark.parametrize("name", ENTRIES)
def test_config_fields_are_documented(name):
    entry = catalog.get(name)
    docs = catalog.field_help(entry.config)
    assert set(docs) == {f.name for f in dataclasses.fields(entry.config)}
    keys = api.settings_keys(entry)  # the settings this entry's run reads (ppo's own `steps` is its config's)
    shadowed = {f.name for f in dataclasses.fields(entry.config)} & {*keys["train"], *keys["data"]}
    assert shadowed <= {"image_size"}, f"a bare --set {shadowed} would reach the settings, never the config: rename"


@pytest.mark.parametrize("name", ENTRIES)
def test_builds_runs_and_learns_a_fixed_batch(name, tmp_path):
    entry = catalog.get(name)
    torch.manual_seed(0)
    if get_task(entry.task).loop == "own":  # the loop is the algorithm: a short real run through the engine instead
        result = deepatlas.train(name, max_time=2, out=tmp_path / "run")
        value = result["test"][entry.bar.metric]
        assert torch.isfinite(torch.tensor(value)) and (tmp_path / "run" / "model.safetensors").exists()
        assert deepatlas.evaluate(tmp_path / "run")[entry.bar.metric] == pytest.approx(value)  # seeded episodes
        return  # whether it learns is its own test's business (tests/test_rl*.py, test_evolution*.py)
    dataset = get_task(entry.task).load(entry.data)
    fields = {f.name for f in dataclasses.fields(entry.config)}
    model = deepatlas.create_model(name, **{k: v for k, v in dataset.dims.items() if k in fields})
    objective = entry.objective(model).train()
    train_set = objective.prepare(dataset) or dataset.train  # e.g. GloVe trains on co-occurrence counts
    batch = next(iter(DataLoader(train_set, batch_size=64, collate_fn=getattr(train_set, "collate", None))))
    if getattr(objective, "manual_optimization", False):  # it steps its own optimizers (a GAN's two players)
        optimizers = {k: torch.optim.Adam(p, lr=1e-3) for k, p in objective.optimizer_groups().items()}
        stepped = []

        def optimize(name, loss):
            optimizers[name].zero_grad()
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for g in optimizers[name].param_groups for p in g["params"]
                       if p.grad is not None)
            optimizers[name].step()
            stepped.append(name)

        loss, _ = objective.training_step(batch, optimize)
        assert torch.isfinite(loss) and set(stepped) == set(optimizers)
        return  # whether it learns is its own test's business: adversarial losses do not simply fall
    if isinstance(objective, Classification):  # a classifier: one score per class
        scores = model(batch[0])
        assert scores.shape == (64, dataset.dims["n_classes"])
        assert torch.isfinite(scores).all()
    loss, _ = objective.training_step(batch)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt = torch.optim.SGD(model.parameters(), lr=1.0) if name == "perceptron" else torch.optim.Adam(model.parameters(), lr=3e-3)

    def measured() -> dict[str, float]:
        """The training loss and logs on the batch, without dropout, the same random draws (masks, negatives) each time."""
        torch.manual_seed(1)
        with torch.no_grad():
            loss, logs = objective.eval().training_step(batch)
        objective.train()
        return {**{k: float(v) for k, v in logs.items()}, "loss": loss.item()}

    first = measured()
    for _ in range(30):
        loss, _ = objective.training_step(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = measured()
    if first["loss"] > 0:
        assert final["loss"] < 0.9 * first["loss"]
    else:  # a criterion that is zero at its zero init (the perceptron's): its mistakes must drop
        assert final["accuracy"] > first["accuracy"]
