"""The README's CRD reference is generated from crds/ and must not drift."""

from __future__ import annotations

from pathlib import Path

from kubemaas_operator import crd_reference

ROOT = Path(__file__).resolve().parents[1]


def test_crd_reference_matches_crds() -> None:
    readme = (ROOT / "README.md").read_text()
    expected = crd_reference.splice(readme, crd_reference.render(ROOT / "crds"))
    assert readme == expected, "README CRD reference is stale: run `make docs`"


def test_reference_names_every_cel_rule() -> None:
    rendered = crd_reference.render(ROOT / "crds")
    assert "Validation rules (CEL" in rendered
    assert "### ModelService" in rendered
    assert "### TrainingJob" in rendered


def test_readme_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
