"""Relations as data (issue 19, part 1): every card's typed edges to other entries, each with its reason."""
from __future__ import annotations

import json

import pytest

from deepatlas import catalog
from deepatlas.catalog import RELATION_KINDS, Card, Relation

CARDS = {c.name: c for c in catalog.cards()}


@pytest.mark.parametrize("name", sorted(CARDS))
def test_every_entry_has_typed_edges_to_known_entries_with_a_reason(name):
    card = CARDS[name]
    assert card.relations, f"{name} has no relation"
    for r in card.relations:
        assert r.kind in RELATION_KINDS and r.entry in CARDS and r.entry != name, r
        assert r.why and "\n" not in r.why and len(r.why) <= 120, r
    assert len({(r.kind, r.entry) for r in card.relations}) == len(card.relations), "an edge twice"


def test_related_is_the_union_of_the_edges():
    for card in CARDS.values():
        assert set(card.related) == {r.entry for r in card.relations}
    assert catalog.get("gru").related == CARDS["gru"].related  # the imported entry reads the same


def test_builds_on_is_acyclic_and_never_points_to_a_later_year_without_saying_why():
    edges = {name: [r.entry for r in c.relations if r.kind == "builds_on"] for name, c in CARDS.items()}
    for name, card in CARDS.items():
        for r in card.relations:
            if r.kind == "builds_on" and CARDS[r.entry].year > card.year:
                assert r.later, f"{name} ({card.year}) builds on the later {r.entry} without saying why"
    state = {}

    def visit(name, path):
        assert state.get(name) != "open", f"builds_on cycle: {' -> '.join(path + [name])}"
        if state.get(name) == "done":
            return
        state[name] = "open"
        for target in edges[name]:
            visit(target, path + [name])
        state[name] = "done"

    for name in edges:
        visit(name, [])


def test_the_checks_catch_a_cycle_and_an_unexplained_later_parent():
    """The property the test above asserts, on a broken graph: it must fail there."""
    a = Card(name="a", title="", family="feedforward", year=2000, paper=None, summary="", when_to_use="",
             when_not="", bar=None, relations=[Relation("builds_on", "b", "x")])
    b = Card(name="b", title="", family="feedforward", year=2010, paper=None, summary="", when_to_use="",
             when_not="", bar=None, relations=[Relation("builds_on", "a", "y")])
    saved = dict(CARDS)
    try:
        CARDS.clear()
        CARDS.update(a=a, b=b)
        with pytest.raises(AssertionError, match="later b without saying why|builds_on cycle"):
            test_builds_on_is_acyclic_and_never_points_to_a_later_year_without_saying_why()
    finally:
        CARDS.clear()
        CARDS.update(saved)


def test_list_json_carries_the_edges(cli_run):
    code, out, _ = cli_run("list", "--json")
    cards = {c["name"]: c for c in json.loads(out)}
    assert code == 0
    assert {"kind": "builds_on", "entry": "seq2seq", "why": "replaces recurrence with attention in the encoder-decoder"} \
        in cards["transformer"]["relations"]
    assert all(c["relations"] and set(c["related"]) == {r["entry"] for r in c["relations"]} for c in cards.values())
