"""Export every service's OpenAPI document, and the HTTP reference page drawn from them.

    python tools/http_reference.py export   # writes schemas/http/<service>.json and docs/http.md
    python tools/http_reference.py check    # fails when the committed files differ from the code

The services describe their own endpoints (FastAPI builds the document from the code), so the
page is generated rather than written: it cannot fall behind an endpoint's body or answers.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("ingest", "feature", "trainer", "registry", "serving", "monitor", "feedback")
HEALTH = {"/healthz", "/readyz", "/metrics"}


def documents() -> dict[str, dict[str, Any]]:
    """Each service's OpenAPI document, from its app as built (nothing is started)."""
    out = {}
    for service in SERVICES:
        module = importlib.import_module(f"conveyor_{service}.bootstrap")
        out[service] = module.bootstrap().http.openapi()
    return out


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    for combined in ("anyOf", "oneOf"):
        if combined in schema:
            return " \\| ".join(_type(s) for s in schema[combined])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
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


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _fields(schema: dict[str, Any], components: dict[str, Any]) -> list[str]:
    """A table of an object body's fields (one level; nested objects are named by type)."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    properties = schema.get("properties")
    if not properties:
        return [f"Body: {_type(schema)}.", ""]
    required = set(schema.get("required", []))
    lines = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in properties.items():
        lines.append(
            f"| `{name}` | {_type(prop)} | {'yes' if name in required else 'no'} | "
            f"{_cell(prop.get('description'))} |"
        )
    lines.append("")
    return lines


def _what(operation: dict[str, Any]) -> str:
    """The description's first sentence, else FastAPI's summary (the function's name)."""
    description = " ".join(operation.get("description", "").split())
    if description:
        return description.split(". ")[0].rstrip(".") + "."
    return str(operation.get("summary", ""))


def _needs_token(operation: dict[str, Any]) -> bool:
    return "401" in operation.get("responses", {})


def page(docs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# HTTP APIs",
        "",
        "Generated from the services' own OpenAPI documents by `tools/http_reference.py`",
        "(`make schemas`); each document is also committed in `schemas/http/<service>.json`,",
        "and a running service serves it at `/openapi.json` with Swagger UI at `/docs`.",
        "Operations marked **token** need `Authorization: Bearer <token>` whose role allows",
        "them (the role table is in [contracts](contracts.md)). Every service also answers",
        "`GET /healthz` (liveness) and `GET /readyz` (readiness, 503 with the reasons), which",
        "are left out below.",
        "",
    ]
    for service, doc in docs.items():
        components = doc.get("components", {}).get("schemas", {})
        lines += [f"## {service}", ""]
        lines += ["| method | path | token | what |", "|---|---|---|---|"]
        operations = [
            (path, method, op)
            for path, methods in doc["paths"].items()
            if path not in HEALTH
            for method, op in methods.items()
        ]
        for path, method, op in operations:
            lines.append(
                f"| {method.upper()} | `{path}` | {'**token**' if _needs_token(op) else ''} | "
                f"{_cell(_what(op))} |"
            )
        lines.append("")
        for path, method, op in operations:
            lines += [f"### {method.upper()} `{path}`", ""]
            if description := op.get("description"):
                lines += [" ".join(description.split()), ""]
            for parameter in op.get("parameters", []):
                if parameter.get("in") == "query":
                    lines.append(
                        f"- query `{parameter['name']}`: {_type(parameter.get('schema', {}))}"
                        + (
                            f" — {_cell(parameter.get('description'))}"
                            if parameter.get("description")
                            else ""
                        )
                    )
            if any(p.get("in") == "query" for p in op.get("parameters", [])):
                lines.append("")
            body = op.get("requestBody", {}).get("content", {})
            if "application/json" in body:
                lines += _fields(body["application/json"].get("schema", {}), components)
            lines += ["Answers:", ""]
            lines += [
                f"- {code}: {_cell(answer.get('description'))}"
                for code, answer in sorted(op.get("responses", {}).items())
            ]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render() -> dict[Path, str]:
    docs = documents()
    files = {
        ROOT / "schemas" / "http" / f"{service}.json": json.dumps(doc, indent=2, sort_keys=True)
        + "\n"
        for service, doc in docs.items()
    }
    files[ROOT / "docs" / "http.md"] = page(docs)
    return files


def check() -> list[str]:
    """The files that differ from a fresh export (empty when all are current)."""
    return [
        str(path.relative_to(ROOT))
        for path, text in render().items()
        if not path.exists() or path.read_text() != text
    ]


def export() -> list[str]:
    written = []
    for path, text in render().items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(str(path.relative_to(ROOT)))
    return written


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "export"
    if command == "check":
        stale = check()
        if stale:
            print("out of date (run `make schemas`):", *stale, sep="\n  ")
            sys.exit(1)
    else:
        for name in export():
            print("wrote", name)
