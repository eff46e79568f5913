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

import generated  # tools/generated.py: what the generators share
from generated import cell as _cell
from generated import schema_type as _type

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


def _fields(schema: dict[str, Any], components: dict[str, Any]) -> list[str]:
    """A table of an object body's fields."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return generated.field_table(schema) or [f"Body: {_type(schema)}.", ""]


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
    return generated.stale(render)


if __name__ == "__main__":
    sys.exit(generated.main(render, sys.argv[1:]))
