"""Values typed on a command line or read from a CSV file, made the types the project's record
schema declares: `amount=12.5 foreign=false customer=c-17`, with no JSON quoting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .app import CliError, ExitCode

TRUE = frozenset({"true", "t", "yes", "y", "1"})
FALSE = frozenset({"false", "f", "no", "n", "0"})


def typed(kind: str | None, name: str, raw: str) -> Any:
    """`raw` as a value of the schema type `kind` (a field the schema does not know stays text:
    the service refuses it, saying why). A value that is not of its type is a usage error."""
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise CliError(f"{name}: {raw!r} is not an integer", ExitCode.USAGE) from None
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            raise CliError(f"{name}: {raw!r} is not a number", ExitCode.USAGE) from None
    if kind == "boolean":
        word = raw.strip().lower()
        if word in TRUE or word in FALSE:
            return word in TRUE
        raise CliError(f"{name}: {raw!r} is not true or false", ExitCode.USAGE)
    return raw  # string and timestamp (RFC 3339 text) as written


def field_types(spec: Mapping[str, Any]) -> dict[str, str]:
    """Each field of a project's record schema (a spec as the registry answers it) with its
    type."""
    fields = spec.get("record_schema", {}).get("fields", {})
    return {name: str(f.get("type")) for name, f in fields.items()}


def pairs(items: Iterable[str]) -> list[tuple[str, str]]:
    """`name=value` words split (before anything is asked of a service)."""
    out = []
    for item in items:
        name, equals, raw = item.partition("=")
        if not equals or not name:
            raise CliError(f"{item!r} is not name=value", ExitCode.USAGE)
        out.append((name, raw))
    return out


def assignments(items: Iterable[str], types: Mapping[str, str]) -> dict[str, Any]:
    """`name=value` words, each value made its field's type."""
    return {name: typed(types.get(name), name, raw) for name, raw in pairs(items)}


def row(values: Mapping[str, str | None], types: Mapping[str, str]) -> dict[str, Any]:
    """A CSV row typed: an empty cell is a value left out (the contract says whether it may
    be)."""
    return {
        name: typed(types.get(name), name, raw)
        for name, raw in values.items()
        if name and raw is not None and raw != ""
    }
