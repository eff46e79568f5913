"""What the generators of committed files share (tools/http_reference.py, tools/reference.py):
comparing with what is committed, writing what changed, the `export|check` command line, and
JSON Schema shown as Markdown."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
Render = Callable[[], dict[Path, str]]


def stale(render: Render) -> list[str]:
    """The files that differ from a fresh export (empty when all are current)."""
    return [
        str(path.relative_to(ROOT))
        for path, text in render().items()
        if not path.exists() or path.read_text() != text
    ]


def write(render: Render) -> list[str]:
    """Write the files that differ from a fresh export; their names."""
    written = []
    for path, text in render().items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(str(path.relative_to(ROOT)))
    return written


def main(render: Render, argv: list[str]) -> int:
    """`export` (the default) writes; `check` fails, naming them, when files are out of date."""
    if (argv[0] if argv else "export") == "check":
        if out_of_date := stale(render):
            print("out of date (run `make schemas`):", *out_of_date, sep="\n  ")
            return 1
        return 0
    for name in write(render):
        print("wrote", name)
    return 0


def cell(text: str | None) -> str:
    """Text as one Markdown table cell."""
    return " ".join((text or "").split()).replace("|", "\\|")


def schema_type(schema: dict[str, Any]) -> str:
    """A JSON Schema's type in a few words: a referenced schema by its name."""
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    for combined in ("anyOf", "oneOf"):
        if combined in schema:
            return " \\| ".join(schema_type(s) for s in schema[combined])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {schema_type(schema.get('items', {}))}"
    if kind == "object" or "additionalProperties" in schema:
        return "object"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    text = str(kind or "any")
    if fmt := schema.get("format"):
        text += f" ({fmt})"
    return text


def field_table(schema: dict[str, Any]) -> list[str]:
    """An object schema's fields as a table (one level; nested objects are named by type), or
    nothing when it declares none."""
    properties = schema.get("properties")
    if not properties:
        return []
    required = set(schema.get("required", []))
    lines = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in properties.items():
        lines.append(
            f"| `{name}` | {schema_type(prop)} | {'yes' if name in required else 'no'} | "
            f"{cell(prop.get('description'))} |"
        )
    return [*lines, ""]
