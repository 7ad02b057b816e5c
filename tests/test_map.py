"""`deepatlas map`: the relation graph as JSON (the contract), SVG, PNG and DOT; `map NAME` marks its neighbours."""
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from deepatlas import catalog
from deepatlas.tools import map as mapping

SVG = "{http://www.w3.org/2000/svg}"


def test_json_is_the_contract_and_every_relation_is_an_edge(cli_run):
    code, out, err = cli_run("map", "--json")
    assert code == 0, err
    graph = json.loads(out)
    assert set(graph) == {"nodes", "edges"}
    cards = catalog.cards()
    assert [n["name"] for n in graph["nodes"]] == [c.name for c in cards]
    for node, card in zip(graph["nodes"], cards):
        assert (node["family"], node["year"]) == (card.family, card.year)
    assert all(set(e) == {"source", "target", "kind", "reason"} for e in graph["edges"])
    relations = {(c.name, r.entry, r.kind, r.why) for c in cards for r in c.relations}
    assert {(e["source"], e["target"], e["kind"], e["reason"]) for e in graph["edges"]} == relations
    assert len(graph["edges"]) == len(relations)


def test_every_kind_has_a_style():
    assert tuple(mapping.KINDS) == catalog.RELATION_KINDS
    assert len({style[:2] for style in mapping.KINDS.values()}) == len(mapping.KINDS)  # colour and dash differ


def test_highlight_marks_exactly_the_neighbours():
    graph = mapping.graph("resnet")
    expected = {r.entry for r in catalog.card("resnet").relations}
    expected |= {c.name for c in catalog.cards() if any(r.entry == "resnet" for r in c.relations)}
    roles = {n.name: n.role for n in graph.nodes}
    assert roles.pop("resnet") == "selected"
    assert {name for name, role in roles.items() if role == "neighbour"} == expected
    assert {role for name, role in roles.items() if name not in expected} == {"faded"}
    assert all(not n.role for n in mapping.graph().nodes)
    around = mapping.graph("resnet", around=True)
    assert {n.name for n in around.nodes} == expected | {"resnet"}


def test_entries_of_one_cell_never_overlap():
    nodes = mapping.graph().nodes
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert abs(a.x - b.x) >= mapping.NODE_W or abs(a.y - b.y) >= mapping.NODE_H, (a.name, b.name)
    lanes = {family: (top, bottom) for family, top, bottom in mapping.graph().lanes}
    assert all(lanes[n.family][0] < n.y - mapping.NODE_H / 2 and n.y + mapping.NODE_H / 2 < lanes[n.family][1]
               for n in nodes)


def test_svg_is_well_formed_with_one_link_per_entry(cli_run, tmp_path):
    out = tmp_path / "map.svg"
    code, printed, err = cli_run("map", "vit", "--out", out)
    assert code == 0 and printed.strip() == str(out), err
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    links = root.iter(f"{SVG}a")
    by_name = {a.get("data-name"): a for a in links}
    assert sorted(by_name) == sorted(c.name for c in catalog.cards())
    card = catalog.card("vit")
    assert by_name["vit"].get("href") == mapping.paper_url(card) == "https://arxiv.org/abs/2010.11929"
    assert by_name["vit"].find(f".//{SVG}title").text == f"{card.title} ({card.year})"
    reasons = [t.text for g in root.iter(f"{SVG}g") if "edge" in g.get("class", "") for t in g.iter(f"{SVG}title")]
    assert len(reasons) == sum(len(c.relations) for c in catalog.cards())
    assert any(r.why in text for r in card.relations for text in reasons)
    atlas_links = mapping.svg(mapping.graph(), href=lambda name: f"entries/{name}.html")
    assert atlas_links.count('href="entries/') == len(catalog.cards())


def test_png_is_written(cli_run, tmp_path):
    out = tmp_path / "deep" / "map.png"
    code, _, err = cli_run("map", "gan", "--format", "png", "--out", out)
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def dot_statements(text: str) -> list[str]:
    """A small reader of DOT: the top-level graph, checked to be one `digraph NAME { ... }` whose braces balance
    (outside quoted strings); returns its statements, quoted strings kept."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|//[^\n]*|[{};\[\]]|[^\s{};\[\]"]+', text)
    tokens = [t for t in tokens if not t.startswith("//")]
    assert tokens[:3] == ["digraph", "deepatlas", "{"] and tokens[-1] == "}", tokens[:3]
    depth, statements, current = 0, [], []
    for i, token in enumerate(tokens[2:]):
        depth += {"{": 1, "}": -1}.get(token, 0)
        assert depth >= 0
        if depth == 0:
            assert i == len(tokens) - 3, "text after the digraph's closing brace"
        elif token in (";", "{", "}"):
            statements.append(" ".join(current))
            current = []
        else:
            current.append(token)
    assert depth == 0
    return [s for s in statements if s]


def test_dot_parses_as_one_digraph(cli_run, tmp_path):
    out = tmp_path / "map.dot"
    code, _, err = cli_run("map", "lstm", "--format", "dot", "--out", out)
    assert code == 0, err
    statements = dot_statements(out.read_text())
    edges = {tuple(s.split(" [")[0].split(" -> ")) for s in statements if " -> " in s}
    assert edges == {(f'"{c.name}"', f'"{r.entry}"') for c in catalog.cards() for r in c.relations}
    assert sum(s.startswith('subgraph "cluster_') for s in statements) == len({c.family for c in catalog.cards()})
    assert any(s.startswith('"lstm" [') and "penwidth=3" in s for s in statements)


@pytest.mark.parametrize("argv, message", [
    (["map", "resnt"], "unknown entry 'resnt'; did you mean resnet"),
    (["map", "--out", "map.txt"], "--out map.txt: name a .svg, .png, .dot or .json file"),
])
def test_bad_requests_are_one_line(refused, argv, message):
    refused(*argv, message=message)


def test_map_imports_no_torch(tmp_path):
    code = ("import sys\nfrom deepatlas import cli\n"
            f"assert cli.run(['map', '--out', {str(tmp_path / 'm.svg')!r}]) == 0\n"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning_fabric')"
            " or m.startswith('deepatlas.models.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.splitlines()[-1] == ""
