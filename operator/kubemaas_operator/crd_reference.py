"""Render the CRD reference in the README from the CRD schemas themselves.

``python -m kubemaas_operator.crd_reference`` rewrites the README section between the
markers; a test fails when the README and ``crds/`` disagree, so the reference cannot
drift from what the API server enforces.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

START = "<!-- crd-reference:start -->"
END = "<!-- crd-reference:end -->"


def _constraints(schema: dict[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "len ≥"), ("maxLength", "len ≤"),
                       ("minItems", "items ≥"), ("maxItems", "items ≤")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    return "; ".join(parts)


def _type(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = str(schema.get("type", "object"))
    if kind == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    return kind


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def walk(schema: dict[str, Any], path: str, required: bool) -> Iterator[tuple[str, str, bool, str, str]]:
    """Yield (path, type, required, constraints, description) for every field under ``schema``."""
    yield path, _type(schema), required, _constraints(schema), str(schema.get("description", ""))
    props: dict[str, Any] = schema.get("properties", {})
    if not props and schema.get("type") == "array":
        props = schema.get("items", {}).get("properties", {})
        needed = set(schema.get("items", {}).get("required", []))
        prefix = f"{path}[]"
    else:
        needed = set(schema.get("required", []))
        prefix = path
    for name, sub in props.items():
        yield from walk(sub, f"{prefix}.{name}", name in needed)


def _rules(schema: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, str(rule.get("message") or rule["rule"])
    for name, sub in schema.get("properties", {}).items():
        yield from _rules(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _rules(schema["items"], f"{path}[]")


def render_crd(crd: dict[str, Any]) -> str:
    """The Markdown reference of one CRD: names, printer columns, spec and status fields, CEL rules."""
    names = crd["spec"]["names"]
    version = next(v for v in crd["spec"]["versions"] if v.get("storage", True))
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    lines = [f"### {names['kind']} (`{crd['spec']['group']}/{version['name']}`)", ""]
    short = ", ".join(names.get("shortNames", []))
    lines.append(f"`kubectl get {names['plural']}`" + (f" (short: `{short}`)" if short else "") + ".")
    columns = [c["name"] for c in version.get("additionalPrinterColumns", [])]
    if columns:
        lines.append("Printer columns: " + ", ".join(columns) + ".")
    lines.append("")
    for part in ("spec", "status"):
        if part not in root.get("properties", {}):
            continue
        lines += [f"**{part}**", "", "| field | type | required | constraints | description |", "|---|---|---|---|---|"]
        for path, kind, req, cons, desc in walk(root["properties"][part], part, False):
            if path == part:
                continue
            lines.append(f"| `{path}` | {kind} | {'yes' if req else ''} | {_cell(cons)} | {_cell(desc)} |")
        lines.append("")
    rules = list(_rules(root, ""))
    if rules:
        lines += ["Validation rules (CEL, enforced by the API server):", ""]
        lines += [f"- `{path.lstrip('.') or '(root)'}`: {_cell(msg)}" for path, msg in rules]
        lines.append("")
    return "\n".join(lines)


def render(crd_dir: Path) -> str:
    """The reference of every CRD in ``crd_dir`` (sorted by file name)."""
    docs = []
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                docs.append(render_crd(doc))
    return "\n".join(docs)


def splice(readme: str, reference: str) -> str:
    """The README with the text between the markers replaced; raises ValueError when they are missing."""
    if START not in readme or END not in readme:
        raise ValueError(f"README lacks the markers {START} and {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference.rstrip()}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kubemaas_operator.crd_reference [ROOT]``: rewrite ROOT/README.md's reference."""
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0]) if args else Path.cwd()
    readme = root / "README.md"
    readme.write_text(splice(readme.read_text(), render(root / "crds")))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
