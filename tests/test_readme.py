"""The README's catalog table is generated from the registry; this keeps the two in sync."""
from pathlib import Path

from deepatlas import catalog

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_catalog_table_matches_registry():
    text = README.read_text()
    start, end = "<!-- catalog:start -->", "<!-- catalog:end -->"
    assert start in text and end in text
    table = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == catalog.markdown_table().strip(), "regenerate it with `deepatlas list --markdown`"


def test_readme_test_command_is_what_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text()
