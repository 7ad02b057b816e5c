"""`deepatlas atlas --out DIR`: the catalog as a static site, opened from disk with no server and no network.

    DIR/index.html                the map (every entry a link) and the entries by family
    DIR/entries/NAME.html         one page per entry: card, paper, key equations, config, bars, measurements,
                                  figures, relations and the commands that train, evaluate and use it
    DIR/leaderboards/TASK.html    one page per leaderboard task (the results store of `deepatlas leaderboard`)
    DIR/guide.html                the decision guide: `recommend`'s answer for every kind of data and goal
    DIR/assets/                   the figures of the README that belong to an entry

Every page carries its CSS inline and links only relatively, so the folder can be zipped, mailed or opened from
a USB stick. Cards are read statically; each entry's module is imported for its config's fields (a few seconds).
"""
from __future__ import annotations

import ast
import dataclasses
import html
import re
import shutil
from pathlib import Path

from deepatlas import api, catalog
from deepatlas.tools import leaderboard, recommend
from deepatlas.tools import map as mapping

REPO = Path(catalog.__file__).resolve().parents[2]
"""the source checkout, whose README and docs/ hold the figures (absent in an installed wheel: no figures)"""

USE = {  # task: how a trained run in {run} is used, the input as the README's examples give it
    "classification": "predict {run} rows.csv          # a CSV with the training table's columns",
    "image_classification": "predict {run} digit.png",
    "sequence": "predict {run} series.csv --steps 10   # a forecasting run (--data sine or your series CSV)",
    "tree": 'predict {run} "(3+4)*2"',
    "translation": 'predict {run} "Saturday, Nov 21, 2026"',
    "embedding": "predict {run} --neighbours kitten",
    "detection": "predict {run} scene.png --out annotated.png",
    "segmentation": "predict {run} scene.png --out annotated.png",
    "rl": "predict {run} --render episode.gif   # plays one test episode",
    "pde": "predict {run} points.csv   # columns x,t: the solution u(x, t) at each point (or one point: 0.5,0.25)",
    "trajectory": "predict {run} series.csv   # columns series id, time, value...: each series continued (--steps N)",
}

CSS = """
body { margin: 0; font: 15px/1.5 system-ui, "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1d1d1f;
       background: #fafafa; }
nav { background: #1f3a5f; padding: 10px 24px; }
nav a { color: #fff; margin-right: 22px; text-decoration: none; font-weight: 600; }
nav a:hover { text-decoration: underline; }
main { max-width: 1080px; margin: 0 auto; padding: 12px 24px 40px; }
main.wide { max-width: none; }
h1 { margin: 18px 0 4px; font-size: 28px; }
h2 { margin-top: 30px; border-bottom: 1px solid #ddd; padding-bottom: 4px; font-size: 20px; }
h3 { margin: 18px 0 6px; font-size: 16px; }
a { color: #0b5cad; }
.meta, .note { color: #666; }
.note { font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 14px; background: #fff; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
pre { background: #f1f3f6; border: 1px solid #dde2ea; padding: 10px 12px; overflow-x: auto; font-size: 13px; }
pre.eq { background: #fffbea; border-color: #eadfa8; }
code { font-size: 13px; }
dl.card dt { font-weight: 600; margin-top: 8px; }
dl.card dd { margin: 2px 0 0 0; }
.map { overflow-x: auto; border: 1px solid #ddd; background: #fff; }
.map svg { display: block; }
.figures { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; max-width: 480px; }
figure img { max-width: 100%; border: 1px solid #ddd; background: #fff; image-rendering: pixelated; }
figcaption { font-size: 13px; color: #555; }
.kind { white-space: nowrap; font-weight: 600; }
.builds_on { color: #0072B2; } .variant_of { color: #A8457F; } .uses { color: #007A5A; }
.alternative_to { color: #B34700; }
ul.entries { list-style: none; padding: 0; columns: 2; column-gap: 32px; }
ul.entries li { break-inside: avoid; margin-bottom: 6px; }
"""


def esc(value) -> str:
    return html.escape(str(value))


def _page(title: str, body: str, depth: int, boards: list[str], wide: bool = False) -> str:
    """A whole HTML page, `depth` folders below DIR (its links climb back), its menu naming the leaderboards."""
    up = "../" * depth
    nav = (f'<a href="{up}index.html">deepatlas atlas</a><a href="{up}index.html#entries">entries</a>'
           f'<a href="{up}guide.html">decision guide</a>'
           + "".join(f'<a href="{up}leaderboards/{esc(t)}.html">{esc(t)}</a>' for t in boards))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{esc(title)} · deepatlas</title><style>{CSS}</style></head>\n'
            f'<body><nav>{nav}</nav><main{" class=wide" if wide else ""}>\n{body}\n</main></body></html>\n')


NUMERIC = {"rank", "value", "train s", "params", "latency ms", "peak MB", "seed", "budget s"}


def _table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are HTML already (escaped before); the columns of numbers align right."""
    numeric = {i for i, h in enumerate(head) if h in NUMERIC}
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>\n" for r in rows)
    return f"<table><tr>{cells}</tr>\n{body}</table>"


def _link(name: str, folder: str = "") -> str:
    """A link to an entry's page, `folder` the way from this page to the entries' ("": a page among them)."""
    return f'<a href="{folder}{esc(name)}.html">{esc(name)}</a>'


def _number(value, spec: str) -> str:
    """A measurement as the table shows it; "–" where the run could not measure it (None)."""
    return "–" if value is None else format(value, spec)


# ---- the model file's docstring -------------------------------------------------------------------------------

def docstring(card: catalog.Card) -> str:
    """The top-of-file docstring of the entry's module, read without importing it."""
    path = catalog._source(card.module)
    if path is None or not path.is_file():
        return ""
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _blocks(doc: str) -> list[tuple[str, str]]:
    """The docstring as ("eq", text) for its indented blocks (the equations) and ("p", text) for its prose."""
    blocks, current, kind = [], [], ""
    for line in doc.splitlines() + [""]:
        indented = line.startswith("    ") or (line.startswith("  ") and kind == "eq")
        if not line.strip() or (current and indented != (kind == "eq")):
            if current:
                blocks.append((kind, "\n".join(current) if kind == "eq" else " ".join(s.strip() for s in current)))
            current, kind = [], ""
        if line.strip():
            kind = kind or ("eq" if indented else "p")
            current.append(line)
    return blocks


def _doc_html(blocks: list[tuple[str, str]]) -> str:
    import textwrap
    return "\n".join(f'<pre class="eq">{esc(textwrap.dedent(text))}</pre>' if kind == "eq" else f"<p>{esc(text)}</p>"
                     for kind, text in blocks)


# ---- figures: the README's images that name an entry ----------------------------------------------------------

def figures() -> dict[str, list[tuple[Path, str]]]:
    """entry name -> [(image file, caption)]: each `![alt](docs/...)` image of the README whose alt text or caption
    (the text after it, up to the table cell's end) names the entry as a word."""
    readme = REPO / "README.md"
    if not readme.is_file():
        return {}
    names = {c.name for c in catalog.cards()}
    found: dict[str, list[tuple[Path, str]]] = {}
    for alt, target, after in re.findall(r"!\[([^\]]*)\]\((docs/[^)\s]+)\)([^|\n]*)", readme.read_text()):
        path = REPO / target
        caption = " ".join((after.strip() or alt).replace("`", "").split())
        words = set(re.findall(r"\w+", f"{alt} {after}".lower()))
        for name in sorted(names & words):
            if path.is_file():
                found.setdefault(name, []).append((path, caption))
    return found


# ---- pages ----------------------------------------------------------------------------------------------------

def _commands(entry: catalog.Entry) -> str:
    run = f"runs/{entry.name}"
    lines = [f"deepatlas train {entry.name} --out {run}      # the default recipe on {entry.data.data}",
             f"deepatlas eval {run}"]
    if hasattr(entry.objective, "sample"):  # what a generative run gives is drawn, not predicted
        lines.append(f"deepatlas sample {run} -n 64")
    elif entry.task == "generation" and hasattr(entry.objective, "predict"):
        lines.append(f"deepatlas predict {run} digit.png")
    elif entry.task == "language_model" and hasattr(entry.build, "generate"):
        lines.append(f'deepatlas predict {run} "def " --length 80')
    elif entry.task in USE:
        lines.append("deepatlas " + USE[entry.task].format(run=run))
    lines.append(f"deepatlas info {entry.name}            # every setting; change one with --set key=value")
    return "<pre>" + esc("\n".join(lines)) + "</pre>"


def _rows_table(rows: list[dict], show_entry: bool, ranks: dict[int, int]) -> str:
    """Leaderboard rows, each with its rank on its board, and its entry (a board's page) or board (an entry's)."""
    head = ["rank", "entry" if show_entry else "board", "metric", "value", "train s", "params", "latency ms",
            "peak MB", "seed", "date", "commit"]
    body = []
    for r in rows:
        where = _link(r["name"], "../entries/") if show_entry else \
            f'<a href="../leaderboards/{esc(r["task"])}.html">{esc(r["task"])}</a> on {esc(r["data"])}'
        settings = " ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items())
        where += f" <span class=note>{esc(settings)}</span>" if settings else ""
        arrow = "↑" if r["direction"] == "max" else "↓"
        body.append([str(ranks[id(r)]), where, f"{esc(r['metric'])} {arrow}", _number(r["value"], ".4g"),
                     _number(r["seconds"], ".1f"), _number(r["params"], ","), _number(r["latency_ms"], ".3g"),
                     _number(r["peak_mb"], ".0f"), esc(r["seed"]), esc(r["date"]), esc(r["commit"])])
    return _table(head, body)


def _ranks(rows: list[dict]) -> dict[int, int]:
    """Each row's place on its board (rows come best first within each task, data and metric)."""
    ranks, place = {}, {}
    for r in rows:
        key = (r["task"], r["data"], r["metric"])
        place[key] = place.get(key, 0) + 1
        ranks[id(r)] = place[key]
    return ranks


def entry_page(entry: catalog.Entry, all_rows: list[dict], figs: list[tuple[str, str]], boards: list[str]) -> str:
    """The page of one entry; `figs` are (assets path relative to DIR, caption)."""
    c = entry
    doc = _blocks(docstring(c))
    equations = [b for b in doc if b[0] == "eq"][:3]
    parts = [f"<h1>{esc(c.title)}</h1>",
             f'<p class="meta"><code>{esc(c.name)}</code> · {esc(c.family)} · {c.year} · task {esc(c.task)} · '
             f"default data {esc(c.data.data)}</p>",
             f"<p>{esc(c.summary)}</p>",
             f'<dl class="card"><dt>Use it for</dt><dd>{esc(c.when_to_use)}</dd>'
             f"<dt>Not for</dt><dd>{esc(c.when_not)}</dd></dl>",
             "<h2>Paper</h2>",
             f'<p>{esc(c.paper)} <a href="{esc(mapping.paper_url(c))}">read the paper</a></p>']
    if equations:
        parts += ["<h2>Key equations</h2>", _doc_html(equations)]
    if doc:
        parts.append(f"<details><summary>The idea, from the top of <code>{esc(c.module)}</code></summary>"
                     f"{_doc_html(doc[1:])}</details>")
    parts += ["<h2>Use it</h2>", _commands(entry)]

    parts.append("<h2>Bars</h2><p class=note>each a promise that the default recipe reaches it on the held-out test "
                 "split within its budget on a 2-core CPU (<code>deepatlas bench</code> checks)</p>")
    parts.append(_table(["metric", "goal", "data and settings", "budget s"], [
        [esc(b.metric), esc(b.goal_text()),
         esc(b.describe(c.data.data).split(" on ", 1)[1].rsplit(" in ", 1)[0]), f"{b.budget_s:g}"] for b in c.bars],
        ))
    mine = [r for r in all_rows if r["name"] == c.name]
    parts.append("<h2>Measured</h2>")
    if mine:
        ranks = _ranks(all_rows)
        parts += [f"<p class=note>{esc(leaderboard.MEASURED_ON)}; rank is the place on its board</p>",
                  _rows_table(mine, show_entry=False, ranks=ranks)]
    else:
        parts.append("<p class=note>no leaderboard rows recorded yet (<code>deepatlas bench "
                     f"{esc(c.name)} --record</code>)</p>")
    if figs:
        parts.append("<h2>Figures</h2><div class=figures>" + "".join(
            f'<figure><img src="../{esc(src)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
            for src, caption in figs) + "</div>")

    parts.append("<h2>Relations</h2>")
    graph = mapping.graph(c.name, around=True)
    parts.append('<div class="map">' + mapping.svg(graph, href=lambda name: f"{name}.html") + "</div>")
    out_rows = [[f'<span class="kind {r.kind}">{esc(r.kind.replace("_", " "))}</span>', _link(r.entry),
                 esc(r.why + (f" ({r.later})" if r.later else ""))] for r in c.relations]
    in_rows = [[_link(o.name), f'<span class="kind {r.kind}">{esc(r.kind.replace("_", " "))}</span> {esc(c.name)}',
                esc(r.why)] for o in catalog.cards() for r in o.relations if r.entry == c.name]
    parts.append(_table(["this entry…", "entry", "why"], out_rows))
    if in_rows:
        parts.append(_table(["entry", "relation", "why"], in_rows))

    config = entry.config()
    helps = api.field_help(type(config))
    parts += ["<h2>Config</h2><p class=note>the model's settings (<code>--set key=value</code>); the defaults are "
              "the small preset the bar is measured with</p>",
              _table(["field", "default", "meaning"], [[f"<code>{esc(f.name)}</code>", esc(getattr(config, f.name)),
                                                        esc(helps.get(f.name, ""))]
                                                       for f in dataclasses.fields(config)])]
    train_help = api.field_help(catalog.Train)
    keys = [f.name for f in dataclasses.fields(c.train) if entry.train_keys is None or f.name in entry.train_keys]
    parts += ["<h3>Training recipe</h3>",
              _table(["setting", "default", "meaning"], [[f"<code>{esc(k)}</code>", esc(getattr(c.train, k)),
                                                          esc(train_help.get(k, ""))] for k in keys])]
    if c.notes:
        parts.append(f"<h3>Notes</h3><p>{esc(c.notes)}</p>")
    return _page(c.title, "\n".join(parts), 1, boards)


def index_page(cards: tuple[catalog.Card, ...], boards: list[str]) -> str:
    svg = mapping.svg(mapping.graph(), href=lambda name: f"entries/{name}.html")
    parts = ["<h1>deepatlas: an atlas of deep learning</h1>",
             f"<p>{len(cards)} landmark architectures, each implemented from its paper, trainable with one command on "
             "data that needs no download, and measured. The map places them by family (rows) and year (columns); "
             "click an entry for its page, hover an edge for why two entries relate (the map scrolls sideways, from "
             f"{min(c.year for c in cards)} to {max(c.year for c in cards)}). "
             '<a href="guide.html">The decision guide</a> answers "what should I use for this data and goal?".</p>',
             f'<div class="map">{svg}</div>', '<h2 id="entries">Entries by family</h2>']
    for family in catalog.FAMILIES:
        members = [c for c in cards if c.family == family]
        if members:
            parts.append(f"<h3>{esc(family)}</h3><ul class=entries>" + "".join(
                f"<li>{_link(c.name, 'entries/')} <span class=meta>{c.year}</span> {esc(c.title)}<br>"
                f"<span class=note>{esc(c.summary)}</span></li>" for c in members) + "</ul>")
    if boards:
        parts.append("<h2>Leaderboards</h2><ul>" + "".join(
            f'<li><a href="leaderboards/{esc(t)}.html">{esc(t)}</a></li>' for t in boards) + "</ul>")
    return _page("atlas", "\n".join(parts), 0, boards, wide=True)


def leaderboard_page(task: str, boards: list[str]) -> str:
    rows = leaderboard.rows(task)
    ranks = _ranks(rows)
    parts = [f"<h1>Leaderboard: {esc(task)}</h1>", f"<p class=note>{esc(leaderboard.MEASURED_ON)}</p>",
             "<p>Each board is one embedded dataset and one metric; every entry that can run on the data is "
             "trained with its default recipe, only the data changed, capped at its bar's budget. Refresh with "
             "<code>deepatlas bench --all --record</code>.</p>"]
    sections = list(dict.fromkeys((r["data"], r["metric"], r["direction"]) for r in rows))
    for data, metric, direction in sections:
        mine = [r for r in rows if (r["data"], r["metric"]) == (data, metric)]
        parts += [f"<h2>{esc(data)} · {esc(metric)} ({'higher' if direction == 'max' else 'lower'} is better)</h2>",
                  _rows_table(mine, show_entry=True, ranks=ranks)]
    cannot = leaderboard.unable(task)
    if cannot:
        parts.append("<h2>Cannot run</h2><ul>" + "".join(
            f"<li>{_link(u['name'], '../entries/')} on {esc(u['data'])}: {esc(u.get('why', ''))}</li>"
            for u in cannot) + "</ul>")
    return _page(f"leaderboard {task}", "\n".join(parts), 1, boards)


def guide_page(boards: list[str]) -> str:
    guide = recommend.decision_guide()
    parts = ["<h1>Decision guide</h1>",
             "<p>What <code>deepatlas recommend --data KIND --goal GOAL</code> answers for each kind of data and "
             "goal, without constraints. Add <code>--budget</code>, <code>--max-params</code>, <code>--latency</code>, "
             "<code>--labels</code> or <code>--need</code> to rule entries out, or <code>--data PATH</code> to ask "
             "about your own file.</p>",
             f"<p><b>The rule.</b> {esc(recommend.RULE)}</p>",
             f"<p class=note>{esc(leaderboard.MEASURED_ON)}</p>"]
    kinds = list(dict.fromkeys(g["data"] for g in guide))
    parts.append("<p>" + " · ".join(f'<a href="#{esc(k)}">{esc(k)}</a>' for k in kinds) + "</p>")
    for kind in kinds:
        parts.append(f'<h2 id="{esc(kind)}">{esc(kind)}</h2>')
        for g in (g for g in guide if g["data"] == kind):
            board = f" <span class=note>(measured on {esc(g['board'])})</span>" if g.get("board") else ""
            parts.append(f"<h3>{esc(kind)} → {esc(g['goal'])}{board}</h3><ol>" + "".join(
                f"<li>{_link(r['name'], 'entries/')}: {esc(r['reason'])}</li>" for r in g["ranked"]) + "</ol>")
            if g["excluded"]:
                parts.append("<p>Ruled out:</p><ul>" + "".join(
                    f"<li>{_link(x['name'], 'entries/')}: {esc(x['why'])}</li>" for x in g["excluded"]) + "</ul>")
    return _page("decision guide", "\n".join(parts), 0, boards)


def build(out: Path) -> dict:
    """Write the site into `out`; returns {"index": path, "pages": count}."""
    cards = catalog.cards()
    rows = leaderboard.rows()
    boards = sorted({r["task"] for r in rows})
    figs = figures()
    for folder in ("entries", "leaderboards", "assets"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    pages = {out / "index.html": index_page(cards, boards), out / "guide.html": guide_page(boards)}
    for task in boards:
        pages[out / "leaderboards" / f"{task}.html"] = leaderboard_page(task, boards)
    for c in cards:
        shown = []
        for path, caption in figs.get(c.name, []):
            shutil.copyfile(path, out / "assets" / path.name)
            shown.append((f"assets/{path.name}", caption))
        pages[out / "entries" / f"{c.name}.html"] = entry_page(catalog.get(c.name), rows, shown, boards)
    for path, text in pages.items():
        path.write_text(text, encoding="utf-8")
    return {"index": out / "index.html", "pages": len(pages)}
