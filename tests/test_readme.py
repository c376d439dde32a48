"""The README's CRD reference is generated from crds/ and must not drift; every path its
Architecture section names exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from kubemaas_operator import crd_reference

ROOT = Path(__file__).resolve().parents[1]


def test_crd_reference_matches_crds() -> None:
    readme = (ROOT / "README.md").read_text()
    expected = crd_reference.splice(readme, crd_reference.render(ROOT / "crds"))
    assert readme == expected, "README CRD reference is stale: run `make docs`"


def _cel_messages(node: Any) -> Iterator[str]:
    """Every x-kubernetes-validations message (or rule) anywhere in a CRD document."""
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield str(rule.get("message") or rule["rule"])
        for value in node.values():
            yield from _cel_messages(value)
    elif isinstance(node, list):
        for value in node:
            yield from _cel_messages(value)


def test_reference_names_every_cel_rule() -> None:
    readme = (ROOT / "README.md").read_text()
    messages = [m for path in sorted((ROOT / "crds").glob("*.yaml"))
                for doc in yaml.safe_load_all(path.read_text()) for m in _cel_messages(doc)]
    assert len(messages) >= 10  # both CRDs' rules were found
    missing = [m for m in messages if crd_reference._cell(m) not in readme]
    assert missing == []


def _architecture() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]


def test_architecture_names_only_paths_that_exist() -> None:
    paths = set(re.findall(r"`((?:operator|runtime|crds|charts|tests|examples|bench)/[^`*<> ]*)`", _architecture()))
    assert len(paths) >= 10
    assert sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists()) == []


def test_architecture_answers_where_new_things_go() -> None:
    text = _architecture()
    for question in ("new ModelService spec field", "new compression variant", "new serving protocol"):
        assert question in text


def test_readme_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
