"""The `deepatlas` command: parse, call the API (and the tools built on it), print. No logic lives here.

It imports only `deepatlas.api` at start, which is cheap: `--help` and `list` import neither torch nor
Lightning, and `info NAME` imports only that entry's module.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepatlas import api, cores, errors
from deepatlas.errors import DeepAtlasError

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)  # piped: do not cut names


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(api.VERSION, prog_name="deepatlas")
@click.option("--debug", is_flag=True, envvar="DEEPATLAS_DEBUG", help="on an internal error, print the traceback")
@click.pass_context
def app(ctx, debug):
    """deepatlas: the landmark architectures of deep learning, runnable, tested and measured."""
    ctx.obj = {"debug": debug}


def _pairs(pairs: list[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeepAtlasError(f"--set {pair}: expected key=value")
        result[key.strip()] = value.strip()
    return result


def _share_cores() -> None:
    """Before torch loads: take the cores other processes leave free (see deepatlas/cores.py)."""
    threads = cores.choose_threads()
    if threads is not None:
        print(f"threads: {threads} of {cores.cores()} cores, the others are busy (set OMP_NUM_THREADS to choose)",
              file=sys.stderr)


def _json(obj) -> None:
    print(json.dumps(obj, indent=2))


@app.command("list")
@click.option("--family", help="only this family")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array of cards")
@click.option("--markdown", is_flag=True, help="print the README's catalog table")
def list_(family, as_json, markdown):
    """List the architectures in the catalog."""
    found = api.family_cards(family)
    if as_json:
        return _json([api.card_json(c) for c in found])
    if markdown:
        return print(api.markdown_table(found))
    if not found:
        return out.print(f"no entries in family {family} yet")
    table = Table("name", "family", "year", "title", "bar")
    for e in found:
        table.add_row(e.name, e.family, str(e.year), e.title, "\n".join(b.describe(e.data.data) for b in e.bars))
    out.print(table)


@app.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print the card as JSON")
@click.option("--summary", is_flag=True, help="print the layers instead: module, output shape and parameters for one "
                                               "example of the default data, default config")
def info(name, as_json, summary):
    """Show an architecture's card, its config fields, training settings and data options."""
    if summary:
        return _layer_summary(name, as_json)
    entry = api.get(name)
    card = entry.card()
    if as_json:
        return _json(card)
    out.print(f"[bold]{entry.title}[/bold] ({entry.name}, {entry.family}, {entry.year})")
    out.print(f"paper: {card['paper']}")
    out.print(f"\n{entry.summary}\n\n[bold]use it for[/bold] {entry.when_to_use}\n[bold]not for[/bold] {entry.when_not}")
    for r in entry.relations:
        out.print(f"{r.kind.replace('_', ' ')} [bold]{r.entry}[/bold]: {r.why}" + (f" ({r.later})" if r.later else ""))
    if entry.notes:
        out.print(f"\n[bold]notes[/bold] {escape(entry.notes)}\n")
    receptive_field = getattr(entry.build(entry.config()), "receptive_field", None)
    if receptive_field is not None:  # convolutional sequence models see a bounded past
        out.print(f"receptive field (default config): {receptive_field} steps")
    for b in entry.bars:
        out.print(f"bar (test split): {b.describe(entry.data.data)}")
    from deepatlas.tools import leaderboard
    for r in leaderboard.rows_for(entry.name):  # its last recorded evaluations, the solver's NFE where it counts one
        settings = "".join(f" {k}={v}" for k, v in r["overrides"].items())
        out.print(f"measured ({r['date']}): {r['task']}/{r['data']}{settings} {r['metric']} {r['value']:g} in "
                  f"{r['seconds']:.0f} s" + (f", NFE {r['nfe']:g}" if "nfe" in r else ""))
    keys = api.settings_keys(entry)
    parts = [("model (--set [model.]key=value)", entry.config(), None),
             ("train (--set [train.]key=value)", entry.train, keys["train"]),
             ("data (--set [data.]key=value)", entry.data, keys["data"]),
             *[(f"phase {name}, before training (--set {name}.key=value)", settings, keys[name])
               for name, settings in entry.phases.items()]]
    for form in entry.forms:  # the same architecture through another task's contract
        on = api.form_for(entry, task=form.task)
        out.print(f"also runs on the {form.task} task: its embedded data "
                  f"({', '.join(api.task_of(on).embedded())}) takes this form, e.g. --data {form.data.data}")
        parts += [(f"model on {form.task}", form.config(), None),
                  (f"train on {form.task}", form.train, api.settings_keys(on)["train"])]
    for title, obj, shown in parts:
        table = Table("field", "default", "meaning", title=escape(title), title_justify="left")
        docs = api.field_help(type(obj))
        for f in dataclasses.fields(obj):
            if shown is None or f.name in shown:
                table.add_row(f.name, str(getattr(obj, f.name)), docs.get(f.name, ""))
        out.print(table)


def _layer_summary(name: str, as_json: bool) -> None:
    from deepatlas.tools.export import summary
    _share_cores()
    result = summary(name)
    if as_json:
        return _json(result)
    inputs = ", ".join(f"{k} ({', '.join(map(str, shape))})" for k, shape in result["inputs"].items())
    table = Table("module", "type", "output shape", "parameters", title=f"{name}, default config, on {inputs}",
                  title_justify="left")
    for r in result["rows"]:
        shape = "not run" if r["shape"] is None else r["shape"] + (f" ×{r['calls']}" if r["calls"] > 1 else "")
        table.add_row(r["module"], r["type"], shape, f"{r['params']:,}")
    out.print(table)
    out.print(f"total: {result['params']:,} parameters")


@app.command()
@click.argument("name", required=False)
@click.option("--data", help="embedded dataset name or a path to your file")
@click.option("--env", help="rl: a gymnasium environment id (CartPole-v1, Pendulum-v1, ...)")
@click.option("--target", help="label column of a CSV file")
@click.option("--column", help="value column of a CSV time series (forecasting)")
@click.option("--task", help="tables: regression or classification of the --target (default: regression for a "
                             "numeric target with many values); an entry that also runs on other tasks: the task "
                             "(transformer: sequence, for your series)")
@click.option("--max-time", type=float, help="stop training after this many seconds")
@click.option("--set", "set_", multiple=True, metavar="KEY=VALUE", help="override a model, train or data setting (model.width=64, train.lr=3e-4, data.window=20; "
                   "the part may be left out where the key is unambiguous)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (same seed, same run; 0 to 2^32-1)")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="run directory (default runs/NAME-TIME)")
@click.option("--resume", type=click.Path(path_type=Path), help="continue this run from its last checkpoint")
@click.option("--accelerator", default="auto", show_default=True, help="cpu, gpu, mps or auto")
@click.option("--devices", default="1", show_default=True, help="devices per node (a number or auto)")
@click.option("--strategy", default="auto", show_default=True, help="auto, ddp, fsdp, ...")
@click.option("--num-nodes", type=int, default=1, show_default=True, help="machines")
@click.option("--precision", default="32-true", show_default=True, help="32-true, bf16-mixed, 16-mixed, ...")
def train(name, data, env, target, column, task, max_time, set_, seed, out_dir, resume, accelerator, devices, strategy,
          num_nodes, precision):
    """Train an architecture's default recipe (or your data) and write a run directory. On your own file the
    training is fitted to it: early stopping within --max-time (default: the entry's bar budget)."""
    _share_cores()
    scaling = api.Scaling(accelerator, int(devices) if devices.isdigit() else devices, strategy, num_nodes, precision)
    result = api.train(name, data=data, env=env, target=target, column=column, task=task, overrides=_pairs(set_),
                       seed=seed, out=out_dir, max_time=max_time, resume=resume, scaling=scaling)
    if "test" not in result:  # a DDP worker other than rank 0
        return
    length = f"{result['epochs']} epochs" if "epochs" in result else f"{result['steps']} steps"
    out.print(f"[bold]{result['name']}[/bold]: {result['status']} after {length}, {result['seconds']}s")
    _show_metrics("test", result["test"], result.get("baseline", {}))
    out.print(f"run: {result['run_dir']}")


def _show_metrics(title: str, metrics: dict, baseline: dict) -> None:
    """One line per metric, the trivial baseline's value beside it, so a user sees at once whether it learned."""
    if title:
        out.print(f"{title}:")
    for k, v in metrics.items():
        beside = f"   (baseline {baseline[k]:.4f})" if isinstance(baseline.get(k), (int, float)) else ""
        out.print(f"  {k}: {v:.4f}{beside}", highlight=False)
    if baseline:  # and its values that no metric of this run shares a name with
        rest = "  ".join(f"{k} {v:.4f}" for k, v in baseline.items() if k != "baseline" and k not in metrics)
        out.print(f"  baseline: {baseline['baseline']}" + (f" ({rest})" if rest else ""), highlight=False)


@app.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--data", help="a CSV with the target column (default: the run's test split)")
@click.option("--episodes", type=int, help="rl and evolution runs: test episodes to average (default 20)")
@click.option("--json", "as_json", is_flag=True, help="print metrics as JSON")
def eval_(run_dir, data, episodes, as_json):
    """Evaluate a trained run on its held-out test split (rl: its test episodes) or on your file."""
    if episodes is not None and not 1 <= episodes <= 10_000:
        raise DeepAtlasError(f"--episodes {episodes}: play 1 to 10,000 episodes")
    metrics = api.evaluate(run_dir, data=data, episodes=episodes, with_baseline=True)
    baseline = metrics.pop("baseline")
    if as_json:
        return _json({**metrics, **({"baseline": baseline} if baseline else {})})
    _show_metrics("", metrics, baseline)


@app.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1)
@click.option("--neighbours", "words", multiple=True, metavar="WORD",
              help="embedding runs: list the nearest words of WORD (repeatable)")
@click.option("--out", "out_file", type=click.Path(path_type=Path),
              help="also write predictions to this CSV; detection/segmentation: draw them into this PNG")
@click.option("--render", "render_file", type=click.Path(path_type=Path),
              help="rl runs: save the played test episode as this animated GIF")
@click.option("--json", "as_json", is_flag=True, help="print predictions as JSON")
@click.option("--plot", "plot_file", type=click.Path(path_type=Path),
              help="save a plot to this PNG: the attention heat map (models with attention), the forecast (series); "
                   "one file per input, numbered")
@click.option("--steps", type=int, help="series: how many values to forecast (default 10)")
@click.option("--threshold", type=float, help="detection, segmentation: the lowest score kept (default 0.5)")
@click.option("--length", type=int, help="text: tokens to generate")
@click.option("--temperature", type=float, help="text: sampling temperature (0: greedy)")
@click.option("--top-k", "top_k", type=int, help="text: sample among the k likeliest tokens (0: all)")
@click.option("--seed", type=int, help="text: random seed of the sampling")
@click.option("--reverse", is_flag=True, default=None,
              help="image translation (cyclegan): translate B → A instead of A → B")
@click.option("--node", help="graph runs: the id of a node to classify (several: comma-separated)")
@click.option("--nodes", help="graph runs: a file of node ids to classify, one a line (a CSV: its first column)")
def predict(run_dir, inputs, words, out_file, as_json, plot_file, render_file, **options):
    """Predict for each input: a CSV of rows, an image or folder, a series CSV, a text to translate or to
    continue, a sentence to classify, or (--neighbours) a word's nearest neighbours. rl runs take no input:
    they play one test episode (--render GIF) or, for a board game, show a game against the perfect player."""
    inputs = (*inputs, *words)
    for flag, path in (("--out", out_file), ("--render", render_file), ("--plot", plot_file)):
        api.check_output(path, flag)
    if render_file is not None:
        result = api.predict(run_dir, inputs[0] if inputs else None, render=render_file, **options)
    else:
        drawn = out_file is not None and out_file.suffix.lower() == ".png"  # annotated images, not a CSV
        result = api.predict_many(run_dir, list(inputs), out=out_file if drawn else None, **options)
        if drawn:
            several = len(inputs) > 1 or len(result.rows) > 1
            print(f"drawn: {out_file}" + (" (numbered: one file per image)" if several else ""), file=sys.stderr)
            out_file = None
    if as_json:
        return _json(result.to_json())
    result.show(out)
    if out_file:
        result.save(out_file)
    if plot_file:
        for path in result.plot(plot_file):
            out.print(f"plot: {path}")


@app.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-n", "n", type=int, help="how many samples (default 64; with --interpolate, rows: default 8)")
@click.option("--out", "out_file", type=click.Path(path_type=Path),
              help="PNG file (images, toy2d) or folder of WAV files (audio); default inside RUN_DIR")
@click.option("--interpolate", is_flag=True, help="decode lines between pairs of test images' latent codes (VAE)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (same seed, same samples)")
@click.option("--steps", type=int, help="diffusion and score models: denoising steps (default: the run's)")
@click.option("--sampler", help="diffusion and score models: ddim or ancestral (ddpm), langevin (ncsn), pc or ode "
                                "(score_sde)")
@click.option("--trajectory", is_flag=True, help="diffusion and score models: also the sampling chain as a GIF")
@click.option("--mix", is_flag=True, help="stylegan: a style-mixing grid, sources B's coarse/middle/fine styles over "
                                          "sources A (-n: columns B, default 5)")
def sample(run_dir, n, out_file, interpolate, seed, steps, sampler, trajectory, mix):
    """Generate from a trained generative model: a PNG grid of images, a scatter over a toy density, or WAV files."""
    result = api.sample(run_dir, n=n, out=out_file, interpolate=interpolate, seed=seed, steps=steps, sampler=sampler,
                        trajectory=trajectory, mix=mix)
    files = result["files"]
    what = "interpolation rows" if interpolate else "style-mixing columns" if mix else "samples"
    shown = files[0] if len(files) == 1 else f"{len(files)} files in {Path(files[0]).parent}"
    if len(files) > 1 and files[0].endswith(".png"):  # a grid, then each image (and the chain's GIF) beside it
        shown = f"{files[0]} (and {len(files) - 1} files beside it: each image, and any trajectory GIF)"
    out.print(f"{result['n']} {what} -> {shown}")


@app.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="benchmark every entry")
@click.option("--json", "json_file", type=click.Path(path_type=Path), help="write the results to this JSON file")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
@click.option("--record", is_flag=True, help="also measure latency and memory, store the rows for the leaderboards "
                                             "and run each entry on its task's other boards")
def bench(names, all_, json_file, seed, record):
    """Train each default recipe fresh and check its bar on the held-out test split."""
    from deepatlas.tools.bench import bench as run_bench
    chosen = [c.name for c in api.cards()] if all_ else list(names or [])
    if not chosen:
        raise DeepAtlasError("name entries to benchmark, or give --all")
    api.check_seed(seed)
    api.check_output(json_file, "--json")
    _share_cores()
    for name in chosen:
        api.card(name)  # fail on a bad name before hours of training
    results = []
    table = Table("name", "metric", "value", "goal", "seconds", "budget", "with eval", "params", "passed")
    for r in (r for name in chosen for r in run_bench(name, seed=seed, record=record, say=out.print)):
        results.append(r)
        shown = r["name"] + "".join(f" {k}={v}" for k, v in r["overrides"].items())
        table.add_row(shown, r["metric"], f"{r['value']:.4f}", f"{'≥' if r['direction'] == 'max' else '≤'} {r['goal']:g}",
                      f"{r['seconds']:.1f}", f"{r['budget_s']:g}", f"{r['wall_s']:.0f} s", f"{r['params']:,}",
                      "[green]yes[/green]" if r["passed"] else "[red]no[/red]")
        if json_file:
            json_file.write_text(json.dumps(results, indent=2) + "\n")
    out.print(table)


@app.command()
@click.argument("task", required=False)
@click.option("--data", help="only the board on this embedded dataset")
@click.option("--json", "as_json", is_flag=True, help="print the rows as a JSON array")
def leaderboard(task, data, as_json):
    """Every entry measured on every embedded dataset of its task (recorded by `bench --all --record`)."""
    from deepatlas.tools import leaderboard as boards
    boards.check(task, data)
    found = boards.rows(task, data)
    if as_json:
        return _json(found)
    groups: dict[tuple, list] = {}
    for r in found:
        groups.setdefault((r["task"], r["data"], r["metric"], r["direction"]), []).append(r)
    for (task_, data_, metric, direction), group in groups.items():
        better = "higher" if direction == "max" else "lower"
        table = Table("#", "name", f"{metric} ({better} is better)", "train s", "params", "latency ms", "peak MiB",
                      title=f"{task_} on {data_}", title_justify="left")
        for rank, r in enumerate(group, 1):
            shown = r["name"] + "".join(f" {k}={v}" for k, v in r["overrides"].items())
            table.add_row(str(rank), shown, f"{r['value']:.4g}", f"{r['seconds']:.1f}", f"{r['params']:,}",
                          "–" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}", f"{r['peak_mb']:.0f}")
        out.print(table)
    for u in boards.unable(task, data):
        out.print(f"{u['name']} cannot run on {u['task']} {u['data']}: {escape(u['why'])}", highlight=False)
    out.print(f"[dim]{boards.MEASURED_ON}[/dim]")


@app.command()
@click.option("--data", required=True, help="the kind of data (image, table, sequence, text, graph, points, video, env, "
                                            "audio, tree) or a path to your file or folder, which is inspected")
@click.option("--goal", help="classify, regress, forecast, detect, segment, generate, translate, embed, control, ... "
                             "(default: guessed from your file)")
@click.option("--budget", type=float, help="training seconds at most (as measured on the leaderboards' CPU)")
@click.option("--max-params", type=int, help="parameters at most")
@click.option("--latency", type=float, help="milliseconds per input at most")
@click.option("--labels", type=int, help="how many labelled examples you have (few labels rule out large models)")
@click.option("--need", "needs", multiple=True, help="invariance, uncertainty or interpretability (repeatable)")
@click.option("--try", "try_", is_flag=True, help="train the top three on your data (within --budget) and rank again")
@click.option("--target", help="--try on a CSV: its label column (default: the last)")
@click.option("--column", help="--try on a CSV series: its value column")
@click.option("--seed", type=int, default=0, show_default=True, help="--try: random seed")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("runs/recommend"), show_default=True,
              help="--try: where its runs go")
@click.option("--json", "as_json", is_flag=True, help="print {ranked, excluded, ...} as JSON")
def recommend(data, goal, budget, max_params, latency, labels, needs, try_, target, column, seed, out_dir, as_json):
    """Which entries to use for your data and goal: a ranked list with the reason and the measured evidence."""
    from deepatlas.tools import recommend as advice
    answer = advice.recommend(data, goal, budget, max_params, latency, labels, tuple(needs))
    if try_:
        api.check_seed(seed)
        api.check_output(out_dir, "--out", "folder")
        _share_cores()
        answer["try"] = advice.try_top(answer, data, budget, seed, out_dir, target, column)
    if as_json:
        return print(advice.to_json(answer))
    shown = ", ".join(f"{k} {v}" for k, v in answer["data"].items() if k not in ("kind", "goal", "path") and v)
    out.print(f"[bold]{answer['data']['kind']}[/bold] data{f' ({shown})' if shown else ''}, goal "
              f"[bold]{answer['goal']}[/bold]: ranked by what was measured on {answer['board']}", highlight=False)
    table = Table("#", "name", "why (measured, constraints met, the card's use)", "evidence (leaderboard rows)")
    for r in answer["ranked"]:
        shown = {}  # one row a board: the ranking metric where it was measured
        for e in r["evidence"]:
            if e["data"] not in shown or e["metric"] == r["metric"]:
                shown[e["data"]] = e
        evidence = "\n".join(f"{e['data']}: {e['metric']} {e['value']:.4g}, {e['seconds']:.0f} s, {e['params']:,} params"
                              for e in shown.values())
        table.add_row(str(r["rank"]), r["name"], escape(r["reason"]), evidence or "none recorded")
    out.print(table)
    for x in answer["excluded"]:
        out.print(f"ruled out [bold]{x['name']}[/bold]: {escape(x['why'])}", highlight=False)
    if try_:
        tried = answer["try"]
        out.print(f"\n[bold]tried on your data[/bold] ({tried['metric']}, "
                  f"{'higher' if tried['direction'] == 'max' else 'lower'} is better):")
        before = {r["name"]: r["rank"] for r in answer["ranked"]}
        for r in tried["reranked"]:
            out.print(f"  {r['rank']}. {r['name']}: {r['metric']} {r['value']:.4g} in {r['train_seconds']:.0f} s "
                      f"(ranked {before[r['name']]} from the leaderboards)", highlight=False)
    out.print(f"[dim]rule: {answer['rule']} Boards {answer['measured_on']}.[/dim]")


@app.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--data", help="dataset for every entry (default: each entry's own)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("runs/compare"), show_default=True,
              help="where the runs go (a finished run with the same settings is reused)")
@click.option("--chart", type=click.Path(path_type=Path), help="PNG chart path (default OUT/compare.png)")
@click.option("--json", "json_file", type=click.Path(path_type=Path), help="write the rows to this JSON file")
@click.option("--target", help="label column of a CSV file")
@click.option("--column", help="value column of a CSV time series (forecasting)")
@click.option("--task", help="tables: regression or classification of the --target")
@click.option("--max-time", type=float, help="stop each entry's training after this many seconds")
@click.option("--record", is_flag=True, help="measure each fresh run as `bench --record` does (in a child process) "
                                             "and store its rows in the leaderboards (embedded data only)")
def compare(names, data, seed, out_dir, chart, json_file, target, column, task, max_time, record):
    """Train (or reuse) several entries of one task on the same data and compare them."""
    from deepatlas.tools import compare as comparing
    api.check_seed(seed)
    for flag, path, kind in (("--out", out_dir, "folder"), ("--chart", chart, "file"), ("--json", json_file, "file")):
        api.check_output(path, flag, kind)
    _share_cores()
    rows = comparing.compare(list(names), data=data, seed=seed, out=out_dir, target=target, column=column, task=task,
                             max_time=max_time, record=record, say=out.print)
    metric, direction = rows[0]["metric"], rows[0]["direction"]
    table = Table("name", f"test {metric}", "params", "train s", "latency ms", "run")
    for r in sorted(rows, key=lambda r: -r[f"test_{metric}"] if direction == "max" else r[f"test_{metric}"]):
        table.add_row(r["name"], f"{r[f'test_{metric}']:.4f}", f"{r['params']:,}", f"{r['train_seconds']:.1f}",
                      "–" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}",
                      r["run_dir"] + (" (reused)" if r["reused"] else ""))
    out.print(table)
    chart = chart or out_dir / "compare.png"
    comparing.chart(rows, metric, chart, direction)
    out.print(f"chart: {chart}")
    if json_file:
        json_file.write_text(json.dumps(rows, indent=2) + "\n")


@app.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--second", is_flag=True, help="let the agent move first")
def play(run_dir, second):
    """Play a board game against a trained agent (alphazero on tic-tac-toe) in the terminal."""
    api.play(run_dir, human_first=not second, ask=lambda prompt: click.prompt(prompt, prompt_suffix=""), say=out.print)


@app.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="onnx", show_default=True, help="file format (onnx)")
@click.option("--out", "out_file", type=click.Path(path_type=Path), help="file to write (default RUN_DIR/model.onnx)")
def export(run_dir, fmt, out_file):
    """Write a trained network as an ONNX file, checked at once: onnxruntime runs it on a test batch of the run's
    data and its outputs are compared with PyTorch's. Entries whose inference is not one forward pass (samplers,
    tree search, planners) say so."""
    from deepatlas.tools import export as exporting
    _share_cores()
    result = exporting.export(run_dir, fmt, out_file)
    out.print(f"wrote {result['file']} ({result['exporter']} exporter)")
    for kind in ("inputs", "outputs"):
        shown = ", ".join(f"{name} ({', '.join(map(str, shape))})" for name, shape in result[kind].items())
        out.print(f"  {kind + ':':<9}{shown}", highlight=False)
    if result["note"]:
        out.print(f"  note:    {escape(result['note'])}", highlight=False)
    if not result["dynamic_batch"]:
        out.print(f"  the batch size is fixed at {result['checked_on']}: tracing fixed it", highlight=False)
    out.print(f"checked with onnxruntime on {result['checked_on']} test examples: max abs difference from PyTorch "
              f"{result['max_abs_diff']:.2e}", highlight=False)


@app.command("map")
@click.argument("name", required=False)
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot", "json"]),
              help="svg (default; entries link to their papers), png, dot (graphviz) or json")
@click.option("--out", "out_file", type=click.Path(path_type=Path), help="file to write (default map.FORMAT here)")
@click.option("--json", "as_json", is_flag=True, help="print {nodes, edges} as JSON instead of writing a file")
def map_(name, fmt, out_file, as_json):
    """Draw how the entries relate: lanes by family, columns by year, edges by kind (builds on, variant of, uses,
    alternative to). With NAME, its neighbourhood is highlighted and the rest faded."""
    from deepatlas.tools import map as mapping
    if as_json:
        return _json(mapping.graph(name).to_json())
    out_file, fmt = mapping.choose(out_file, fmt)
    api.check_output(out_file, "--out")
    mapping.write(out_file, fmt, name)
    print(out_file)


@app.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("atlas"), show_default=True,
              help="folder to write the site into")
def atlas(out_dir):
    """Write the atlas as a static site that opens from disk: the map, a page per entry, the leaderboards and the
    decision guide."""
    from deepatlas.tools import atlas as site
    api.check_output(out_dir, "--out", "folder")
    built = site.build(out_dir)
    out.print(f"{built['pages']} pages; open {built['index']}")


def user_error(err: BaseException) -> str | None:
    """The one line for an error that the user's input or environment causes (a missing or unreadable file, a disk
    that is full, memory that ran out, a file that does not decode), or None for a bug."""
    if isinstance(err, DeepAtlasError):
        return str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch's, on an accelerator
        return f"out of memory ({str(err).splitlines()[0] if str(err) else 'the request is larger than this machine'})"
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    decode = (UnicodeError, json.JSONDecodeError)
    if isinstance(err, decode) or type(err).__name__ in ("DecompressionBombError", "SafetensorError", "Error") and \
            type(err).__module__.split(".")[0] in ("PIL", "safetensors", "csv", "wave", "_csv"):
        return f"cannot decode the input ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return None


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code: every user error is one line on stderr and code 2; an
    internal error (a bug) is a short report and code 1, with the traceback under --debug."""
    argv = sys.argv[1:] if argv is None else argv
    errors.SPELL_AS_FLAGS = True  # messages name the flags typed here, not the API's keywords
    try:
        return _run(argv)
    finally:
        errors.SPELL_AS_FLAGS = False


def _run(argv: list[str]) -> int:
    try:
        app.main(args=argv, prog_name="deepatlas", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:  # bare `deepatlas`: show the help
        print(err.ctx.get_help() if err.ctx else err.format_message())
    except click.UsageError as err:
        print(f"error: {err.format_message()}", file=sys.stderr)
        return 2
    except (click.Abort, KeyboardInterrupt) as err:  # click turns Ctrl-C into Abort
        run_dir = str(err.__cause__ if isinstance(err, click.Abort) else err)
        kept = (f"the last checkpoint is kept; continue with `deepatlas train --resume {run_dir}`" if run_dir
                else "nothing was kept")
        print(f"interrupted: {kept}", file=sys.stderr)
        return 130
    except Exception as err:
        line = user_error(err)
        if line is not None:
            print(f"error: {' '.join(line.split())}", file=sys.stderr)
            return 2
        if "--debug" in argv or os.environ.get("DEEPATLAS_DEBUG"):
            traceback.print_exc()
        else:
            where = traceback.extract_tb(err.__traceback__)[-1]
            print(f"internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
                  f"  at {Path(where.filename).name}:{where.lineno}. This is a bug in deepatlas {api.VERSION}: please "
                  f"report it with the output of `deepatlas --debug {' '.join(argv)}`", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
