"""`deepatlas recommend`: which entries to use for a kind of data and a goal, ranked by what was measured.

The rule (`RULE`), in full:
1. Candidates are the entries whose task does the goal on that kind of data (`ROUTES`, one line per pair), or
   that run on that task through a form (the transformer's encoder on series), or that were measured on the
   route's boards (a mask detector's masks scored as a segmentation).
2. A constraint rules an entry out, with the reason: `budget` (its measured training seconds on the reference
   board), `max_params`, `latency` (its measured milliseconds per input), `labels` (few labels: more than
   `PARAMS_PER_LABEL` parameters per labelled example overfit them), `need` (a property its card says its
   architecture has by construction, `Card.offers`).
3. The rest are ranked by their measured value on the route's reference board (its first), best first; equal
   values go to the entry that trained faster. Entries with no measurement there come last, newest first.
Nothing else moves an entry: no hand-set score. `--try` trains the top three on the user's data through
`compare`, each within a third of the budget, and ranks them again by what it measured.

It reads the cards and the leaderboards' store, and imports no torch unless it trains (`--try`).
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from deepatlas import catalog
from deepatlas.errors import DeepAtlasError, option
from deepatlas.tools import leaderboard

ROUTES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    # (data kind, goal): (tasks whose entries do it, boards: the embedded datasets, the first ranks)
    ("table", "classify"): (("classification",), ("breast_cancer", "iris_setosa", "digits")),
    # the table entries regress a numeric target (`train --task regression`); no embedded board regresses yet
    ("table", "regress"): (("classification",), ("breast_cancer", "iris_setosa", "digits")),
    ("image", "classify"): (("image_classification",), ("digits", "rotated-digits")),
    ("image", "detect"): (("detection",), ("shapes",)),
    ("image", "segment"): (("segmentation",), ("shapes",)),
    ("image", "generate"): (("generation",), ("digits",)),
    ("points", "generate"): (("generation",), ("8gaussians",)),
    ("audio", "generate"): (("generation",), ("tones",)),
    ("sequence", "forecast"): (("sequence", "irregular"), ("sine",)),  # irregular: series on their own stamps
    ("sequence", "regress"): (("sequence",), ("adding-200", "adding-50")),
    ("sequence", "tag"): (("sequence",), ("future-tagging",)),
    ("sequence", "memorize"): (("sequence",), ("copy-100",)),
    ("tree", "classify"): (("tree",), ("expressions",)),
    ("text", "translate"): (("translation",), ("dates",)),
    ("text", "embed"): (("embedding",), ("planted-semantics",)),
    ("text", "generate"): (("language_model",), ("stdlib-text",)),
    ("text", "classify"): (("language_model",), ("planted-topics",)),
    ("env", "control"): (("rl",), ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "tictactoe")),
    ("table", "search"): (("search",), ("digits",)),
    ("graph", "classify"): (("graph",), ("sbm", "karate")),  # a graph's nodes, from a few labelled ones
    ("graph", "classify-graphs"): (("graph",), ("structure",)),  # whole graphs (a TUDataset folder)
    ("graph", "regress"): (("graph",), ("molecules",)),  # a value per graph (a molecule's property)
}
KINDS = ("image", "table", "sequence", "text", "graph", "points", "video", "env", "audio", "tree")
NEEDS = {"invariance": "its output is unchanged by construction under a group of input transformations",
         "uncertainty": "it gives a calibrated predictive distribution, not only a point prediction",
         "interpretability": "a reader can see how it decides (a weight per input feature)",
         "irregular-times": "it reads each series at its own irregular time stamps and predicts at any time"}
PARAMS_PER_LABEL = 1000
"""--labels N rules out entries with more parameters than this per labelled example (they overfit N examples)"""
TRIED = 3
RULE = ("Candidates do the goal on that kind of data; a constraint rules an entry out (with the reason); the rest "
        "are ranked by their measured value on the reference board, best first, equal values to the faster "
        "training; unmeasured entries last. No hand-set scores.")
IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _kinds_for(kind: str) -> list[str]:
    return sorted(goal for k, goal in ROUTES if k == kind)


def route(kind: str, goal: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tasks and boards for (kind, goal); one line saying what exists instead when nothing does."""
    if kind not in KINDS:
        raise DeepAtlasError(f"{option('data')} {kind}: a kind ({', '.join(KINDS)}) or a path to your file or folder")
    if (kind, goal) in ROUTES:
        return ROUTES[kind, goal]
    goals = _kinds_for(kind)
    kinds = sorted({k for k, g in ROUTES if g == goal})
    instead = (f"for {kind} data: {', '.join(goals)}" if goals else f"no entry reads {kind} data yet") + \
        (f"; {goal} works on {', '.join(kinds)} data" if kinds else
         f"; goals that exist: {', '.join(sorted({g for _, g in ROUTES}))}")
    raise DeepAtlasError(f"nothing does {goal} on {kind} data yet ({instead})")


def inspect(path: str) -> dict:
    """What a user's file or folder holds, read without training: {kind, goal (a guess), and what was counted}."""
    p = Path(path)
    if not p.exists():
        if re.fullmatch(r"[A-Za-z0-9_/]+-v\d+", path):  # a gymnasium id
            return {"path": path, "kind": "env", "goal": "control"}
        raise DeepAtlasError(f"{option('data')} {path}: no such file or folder, nor a kind ({', '.join(KINDS)})")
    if p.is_dir() and any(p.glob("*_A.txt")):  # a TUDataset: many graphs, a class or a value each
        labels = next(p.glob("*_graph_labels.txt"), None)
        graphs = len(labels.read_text().split()) if labels else None
        return {"path": path, "kind": "graph", "goal": "classify-graphs" if labels else "regress", "graphs": graphs}
    if p.is_dir() and (p / "edges.csv").is_file():
        return _inspect_edges(p / "edges.csv", path)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file()]
        pictures = [f for f in files if f.suffix.lower() in IMAGES]
        if any(f.suffix == ".json" for f in files) or (p / "labels").is_dir():
            return {"path": path, "kind": "image", "goal": "detect", "images": len(pictures)}
        if (p / "masks").is_dir():
            return {"path": path, "kind": "image", "goal": "segment", "images": len(pictures)}
        classes = sorted({f.parent.name for f in pictures if f.parent != p})
        if pictures:
            return {"path": path, "kind": "image", "goal": "classify", "images": len(pictures), "classes": len(classes)}
        raise DeepAtlasError(f"{path}: a folder with no images (expected one sub-folder of images per class, a COCO "
                             f"or YOLO folder, or images/ and masks/)")
    suffix = p.suffix.lower()
    if suffix == ".csv" and (p.parent / "nodes.csv").is_file() and p.name != "nodes.csv":
        return _inspect_edges(p, path)
    if suffix == ".csv":
        return _inspect_csv(p)
    if suffix in (".txt", ".md", ".text"):
        text = p.read_text(errors="replace")
        return {"path": path, "kind": "text", "goal": "generate", "characters": len(text), "lines": text.count("\n")}
    if suffix in IMAGES:
        return {"path": path, "kind": "image", "goal": "classify", "images": 1}
    if suffix in (".graphml", ".gml", ".edgelist"):
        return {"path": path, "kind": "graph", "goal": "classify"}
    if suffix in (".ply", ".obj", ".off", ".xyz", ".pcd"):
        return {"path": path, "kind": "points", "goal": "classify"}
    if suffix in (".mp4", ".avi", ".mov", ".mkv"):
        return {"path": path, "kind": "video", "goal": "classify"}
    if suffix == ".wav":
        return {"path": path, "kind": "audio", "goal": "generate"}
    try:  # a text file by any name (a licence, a book)
        text = p.read_bytes()[:1_000_000].decode("utf-8")
        return {"path": path, "kind": "text", "goal": "generate", "characters": len(text), "lines": text.count("\n")}
    except UnicodeDecodeError:
        raise DeepAtlasError(f"{path}: cannot tell what kind of data a {suffix or 'suffix-less'} file holds; name the "
                             f"kind with {option('data')} ({', '.join(KINDS)})") from None


def _inspect_edges(edges: Path, path: str) -> dict:
    """An edge list (source,target[,weight]) with nodes.csv beside it: node classification on one graph."""
    with open(edges, errors="replace") as f:
        count = sum(1 for line in f if line.strip()) - 1
    with open(edges.parent / "nodes.csv", errors="replace") as f:
        nodes = sum(1 for line in f if line.strip()) - 1
    return {"path": path, "kind": "graph", "goal": "classify", "nodes": nodes, "edges": count}


def _inspect_csv(p: Path) -> dict:
    """A table (rows, columns, the last column's classes) or a series (one number column, or a date column and
    numbers): which one decides the guessed goal."""
    with open(p, newline="", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        body = [row for row in reader if row]
    if not header or not body:
        raise DeepAtlasError(f"{p}: an empty CSV (a header line and rows expected)")

    def numeric(i: int) -> bool:
        cells = [r[i] for r in body[:200] if i < len(r) and r[i].strip()]
        return bool(cells) and all(re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", c.strip()) for c in cells)

    lengths = [len(r) for r in body]
    width = max(set(lengths), key=lengths.count)  # the rows' own width: a first line may be no header of names
    numbers = [i for i in range(width) if numeric(i)]
    dated = bool(re.match(r"\d{4}-\d{2}", body[0][0])) if body[0] else False
    info = {"path": str(p), "rows": len(body), "columns": width}
    if len(header) != width:
        info["note"] = f"the first line has {len(header)} fields, the rows {width}: not a header of column names"
    if (dated and width <= 3) or (width == 1 and numbers):
        return {**info, "kind": "sequence", "goal": "forecast"}
    last = [r[-1] for r in body if len(r) == width]
    classes = len(set(last))
    regress = width - 1 in numbers and classes > 20
    return {**info, "kind": "table", "goal": "regress" if regress else "classify",
            "target": header[-1] if len(header) == width else None, "classes": None if regress else classes}


def recommend(data: str, goal: str | None = None, budget: float | None = None, max_params: int | None = None,
              latency: float | None = None, labels: int | None = None, needs: tuple[str, ...] = ()) -> dict:
    """{data: what was read, goal, board, ranked: [{name, rank, reason, evidence}], excluded: [{name, why}], rule}."""
    found = {"kind": data} if data in KINDS else inspect(data)
    kind, goal = found["kind"], goal or found.get("goal")
    other = {"table": "sequence", "sequence": "table"}.get(kind)
    if "path" in found and other and (kind, goal) not in ROUTES and (other, goal) in ROUTES:
        kind = found["kind"] = other  # a CSV is a table or a series: the goal you give says which (yearly counts)
        found = {k: v for k, v in found.items() if k not in ("target", "classes")}
    if goal is None:
        raise DeepAtlasError(f"{option('goal')}: say what to do with {kind} data ({', '.join(_kinds_for(kind))})")
    if kind == "table" and goal == "regress":
        found["task"] = "regression"
    tasks, boards = route(kind, goal)
    for need in needs:
        if need not in NEEDS:
            raise DeepAtlasError(f"{option('need')} {need}: one of {', '.join(NEEDS)}")
    measured = {r["name"] for t in tasks for d in boards for r in leaderboard.rows(t, d)}  # scored as the task's
    cards = [c for c in catalog.cards() if {c.task, *c.also} & set(tasks) or c.name in measured]
    reference = boards[0]
    metric = _ranking_metric(tasks[0], reference, {c.name for c in cards})
    ranked, excluded = [], []
    for card in cards:
        evidence = [r for t in dict.fromkeys(map(leaderboard.board_task, tasks)) for d in boards
                    for r in leaderboard.rows(t, d) if r["name"] == card.name and _recipe(r)]
        main = next((r for r in evidence if r["data"] == reference and r["metric"] == metric), None)
        cannot = next((u["why"] for t in tasks for u in leaderboard.unable(t, reference) if u["name"] == card.name),
                      None)  # recorded as unable to run there: out, with the reason it gave
        why = f"cannot run on {reference}: {cannot}" if main is None and cannot else \
            _ruled_out(card, main, budget, max_params, latency, labels, needs)
        if why:
            excluded.append({"name": card.name, "why": why})
        else:
            ranked.append({"name": card.name, "card": card, "main": main, "evidence": evidence})
    ranked.sort(key=lambda r: _order(r["main"], r["card"]))
    return {"data": found, "goal": goal, "board": reference, "measured_on": leaderboard.MEASURED_ON, "rule": RULE,
            "ranked": [{"name": r["name"], "rank": i, "reason": _reason(r["card"], r["main"], reference, budget,
                                                                       max_params, latency, labels, needs),
                        "value": r["main"]["value"] if r["main"] else None,
                        "metric": r["main"]["metric"] if r["main"] else None, "evidence": r["evidence"]}
                       for i, r in enumerate(ranked, 1)],
            "excluded": excluded}


def _recipe(row: dict) -> bool:
    """A row of an entry's own recipe on a board: its default one, or the settings a bar of its sets for that data
    (BERT's recipe for classifying sentences), not a variant (`mode=cbow`) measured beside it."""
    return not row["overrides"] or (row["source"] == "bench" and row["data"] != catalog.card(row["name"]).data.data)


def _ranking_metric(task: str, data: str, names: set[str]) -> str | None:
    """The metric a board ranks by: the one most candidates were measured by there; a tie goes to a bar's metric on
    that board, then to the scale-free MASE (a forecast's error against the naive forecast), then by name."""
    stored = [r["metric"] for r in leaderboard.rows(task, data) if r["name"] in names and _recipe(r)]
    if not stored:
        return None
    bars = leaderboard.bar_metrics(task, data)
    return min(set(stored), key=lambda m: (-stored.count(m), m not in bars, m != "mase", m))


def _order(main: dict | None, card) -> tuple:
    if main is None:
        return (1, -card.year, card.name)
    return (0, -main["value"] if main["direction"] == "max" else main["value"], main["seconds"])


def _ruled_out(card, main, budget, max_params, latency, labels, needs) -> str:
    for need in needs:
        if need not in card.offers:
            return f"does not offer {need}"
    if main is None and (budget or max_params or latency or labels):
        return "not measured on this board, so its cost is unknown (record it with `deepatlas bench --record`)"
    if main is None:
        return ""
    if budget is not None and main["seconds"] > budget:
        return f"trained in {main['seconds']:.0f} s on {main['data']}, over the budget of {budget:g} s"
    if max_params is not None and main["params"] > max_params:
        return f"{main['params']:,} parameters, over {max_params:,}"
    if latency is not None and main["latency_ms"] is not None and main["latency_ms"] > latency:
        return f"{main['latency_ms']:.2f} ms per input, over {latency:g} ms"
    if labels is not None and main["params"] > PARAMS_PER_LABEL * labels:
        return (f"{main['params']:,} parameters for {labels:,} labels: over {PARAMS_PER_LABEL:,} a label, it would "
                f"overfit them")
    return ""


def _reason(card, main, reference, budget, max_params, latency, labels, needs) -> str:
    met = [f"offers {n}" for n in needs]
    if main is not None:
        met += [f"{main['seconds']:.0f} s ≤ {budget:g} s"] if budget is not None else []
        met += [f"{main['params']:,} ≤ {max_params:,} parameters"] if max_params is not None else []
        met += [f"{main['latency_ms']:.2f} ≤ {latency:g} ms"] if latency is not None and main["latency_ms"] else []
        met += [f"{main['params'] / labels:.0f} parameters a label"] if labels is not None else []
        settings = "".join(f" {k}={v}" for k, v in main["overrides"].items())
        measured = f"{main['metric']} {main['value']:.4g} on {reference}{' with' + settings if settings else ''} in " \
                   f"{main['seconds']:.0f} s"
    else:
        measured = f"not measured on {reference}"
    return f"{measured}{'; meets ' + ', '.join(met) if met else ''}. {card.when_to_use}"


def try_top(answer: dict, data: str, budget: float | None, seed: int = 0, out: str | Path = "runs/recommend",
            target: str | None = None, column: str | None = None) -> dict:
    """Train the top TRIED candidates on the user's `data` through `compare`, each within a third of the budget,
    and rank them again by what was measured: {tried: compare's rows, reranked: [{name, rank, value, metric}]}."""
    from deepatlas.tools.compare import compare
    if answer["data"].get("path") is None:
        raise DeepAtlasError(f"{option('try')} trains on your data: give {option('data')} a path to your file or folder")
    names = [r["name"] for r in answer["ranked"][:TRIED]]
    if not names:
        raise DeepAtlasError("no candidate is left to try; loosen the constraints")
    each = budget / len(names) if budget else None
    rows = compare(names, data=data, seed=seed, out=out, target=target or answer["data"].get("target"),
                   column=column, task=answer["data"].get("task"), max_time=each)
    metric, direction = rows[0]["metric"], rows[0]["direction"]
    order = sorted(rows, key=lambda r: (-r[f"test_{metric}"] if direction == "max" else r[f"test_{metric}"],
                                        r["train_seconds"]))
    return {"tried": rows, "metric": metric, "direction": direction,
            "reranked": [{"name": r["name"], "rank": i, "value": r[f"test_{metric}"], "metric": metric,
                          "train_seconds": r["train_seconds"]} for i, r in enumerate(order, 1)]}


def decision_guide() -> list[dict]:
    """Every route answered without constraints, for the atlas: [{data, goal, ranked: [{name, reason}], excluded}]."""
    guide = []
    for kind, goal in ROUTES:
        answer = recommend(kind, goal)
        guide.append({"data": kind, "goal": goal, "board": answer["board"],
                      "ranked": [{"name": r["name"], "reason": r["reason"]} for r in answer["ranked"]],
                      "excluded": answer["excluded"]})
    return guide


def to_json(answer: dict) -> str:
    return json.dumps(answer, indent=2, default=str)
