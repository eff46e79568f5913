"""Export the reference pages drawn from the code: the command line, the settings, the metrics,
the topics and events, and the AsyncAPI document.

    python tools/reference.py export   # writes docs/reference/*.md
    python tools/reference.py check    # fails when the committed pages differ from the code

Each page is generated rather than written, as docs/http.md is (tools/http_reference.py): a
command's option, a setting's default, a metric's labels or a topic's schema cannot change
without its page changing with it, and a test holds the committed pages to the code.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import generated  # tools/generated.py: what the generators share

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reference"
SERVICES = ("ingest", "feature", "trainer", "registry", "serving", "monitor", "feedback")
# Where each process's settings class is defined: a service's bootstrap module, the console's
# settings module (it is no stream service, and has no bootstrap).
SETTINGS_MODULES = {s: f"conveyor_{s}.bootstrap" for s in SERVICES} | {
    "console": "conveyor_console.settings"
}


def _prose(text: str) -> str:
    """Text from the code, made safe for Markdown: outside `code`, `*`, `_` and `<` are meant
    literally (an env pattern like CONVEYOR_*, a <placeholder>)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("\\", "\\\\").replace("*", "\\*").replace("_", "\\_")
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts)


def _cell(text: object) -> str:
    return _prose(" ".join(str(text or "").split())).replace("|", "\\|")


def _generated(tool_note: str) -> list[str]:
    return [f"Generated from the code by `tools/reference.py` (`make schemas`); {tool_note}", ""]


# --- the command line -----------------------------------------------------------------------


def _commands(command: Any, context: Any) -> Iterator[tuple[Any, Any]]:
    """The command and every visible command under it, each with its context."""
    import typer

    yield command, context
    if hasattr(command, "list_commands"):
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, typer.Context(sub, info_name=name, parent=context))


def _param_row(param: Any, context: Any) -> str | None:
    """An argument's or option's line, as `--help` shows it (its default and bounds included)."""
    record = param.get_help_record(context)
    if record is None:
        return None
    usage, help_text = record
    return f"| `{usage}` | {param.param_type_name} | {_cell(help_text)} |"


def cli_page() -> str:
    import typer

    from conveyor_cli.main import app

    root = typer.main.get_command(app)
    lines = [
        "# Command-line reference",
        "",
        *_generated(
            "each entry is what `conveyor COMMAND --help` says. How to use the command, its "
            "output and exit codes: [the `conveyor` command](../cli.md)."
        ),
    ]
    for command, context in _commands(root, typer.Context(root, info_name="conveyor")):
        lines += [f"## `{context.command_path}`", ""]
        if command.help:
            lines += [_prose(command.help.strip()), ""]
        rows = [row for p in command.params if (row := _param_row(p, context))]
        if rows:
            lines += ["| usage | kind | what |", "|---|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"


# --- settings ---------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        text = " or ".join(named)
        return text + (" (optional)" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (list, tuple, set):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"JSON object of {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(annotation, type):
        return {
            "str": "text",
            "int": "integer",
            "float": "number",
            "bool": "boolean",
            "SecretStr": "secret text",
            "Path": "path",
            "PosixPath": "path",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`" if value else "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _env(cls: Any, name: str) -> str:
    prefix = cls.model_config.get("env_prefix", "") or ""
    return (prefix + name).upper()


def _description(cls: Any, name: str) -> str:
    """A field's description, or the one it had where a parent class declared it (a service
    that only changes a default keeps the meaning)."""
    for klass in cls.__mro__:
        field = getattr(klass, "model_fields", {}).get(name)
        if field is not None and field.description:
            return str(field.description)
    return ""


def _settings_rows(cls: Any, names: list[str]) -> list[str]:
    lines = ["| variable | type | default | what |", "|---|---|---|---|"]
    for name in names:
        field = cls.model_fields[name]
        if not _description(cls, name):
            raise ValueError(f"{cls.__name__}.{name} has no description")
        lines.append(
            f"| `{_env(cls, name)}` | {_cell(_type_name(field.annotation))} | "
            f"{_cell(_default(field))} | {_cell(_description(cls, name))} |"
        )
    return [*lines, ""]


def settings_classes() -> dict[str, Any]:
    """Each service's settings class, and the console's, by name."""
    out = {}
    for service, where in SETTINGS_MODULES.items():
        module = importlib.import_module(where)
        out[service] = next(
            value
            for name, value in vars(module).items()
            if name.endswith("Settings") and getattr(value, "__module__", "") == module.__name__
        )
    return out


def settings_page() -> str:
    from conveyor_bus import KafkaSettings
    from conveyor_db import DatabaseSettings
    from conveyor_runtime import ServiceSettings

    common = ServiceSettings.model_fields
    groups = (
        ("Kafka", KafkaSettings, "where the broker is, and how to connect to it"),
        ("PostgreSQL", DatabaseSettings, "the database every service keeps its own schema in"),
        ("HTTP, callers and requests", None, "the API, who may call it, and the edges' bounds"),
    )
    lines = [
        "# Settings",
        "",
        *_generated(
            "each service reads these environment variables (names are case-insensitive; "
            "no prefix: one process, one service). Tracing and the export of metrics are set "
            "by the standard `OTEL_*` variables ([Health, tracing and "
            "metrics](../observability.md)); the command line and the client library find the "
            "platform through `CONVEYOR_*` variables ([the Python client](../client.md))."
        ),
        "## Every service",
        "",
    ]
    taken: set[str] = set()
    for title, cls, what in groups:
        names = [
            n for n in common if (cls is None and n not in taken) or (cls and n in cls.model_fields)
        ]
        taken |= set(names)
        lines += [f"### {title}", "", f"{what[0].upper()}{what[1:]}.", ""]
        lines += _settings_rows(ServiceSettings, names)
    for service, cls in settings_classes().items():
        own = [
            n
            for n, f in cls.model_fields.items()
            if n not in common or _default(f) != _default(common[n])
        ]
        lines += [f"## {service}", ""]
        if own:
            lines += [
                f"`{cls.__name__}`: its own settings, and the shared ones whose default it "
                "changes.",
                "",
                *_settings_rows(cls, own),
            ]
        else:
            lines += ["The shared settings only.", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- metrics ----------------------------------------------------------------------------------

_INSTRUMENTS = {
    "create_counter": "counter",
    "create_up_down_counter": "gauge",
    "create_histogram": "histogram",
    "create_gauge": "gauge",
    "create_observable_gauge": "gauge",
    "create_observable_counter": "counter",
    "create_observable_up_down_counter": "gauge",
}
_RECORDING = {"add", "record", "set"}


class _File:
    """One module's syntax tree, with each node's enclosing function."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text())
        self.scope: dict[ast.AST, ast.AST] = {}
        # ast.walk visits outer functions before the ones they hold: the innermost wins.
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if inner is not node:
                        self.scope[inner] = node

    def _assigned(self, target: str, where: ast.AST) -> list[ast.expr]:
        def values(root: ast.AST) -> list[ast.expr]:
            return [
                n.value
                for n in ast.walk(root)
                if isinstance(n, ast.Assign) and any(ast.unparse(t) == target for t in n.targets)
            ]

        return values(self.scope.get(where, self.tree)) or values(self.tree)

    def labels(self, node: ast.expr, where: ast.AST) -> set[str]:
        """The attribute names a recording passes: dict literals, their unions, and names
        bound to those. Anything else is refused, so that a metric's labels stay readable."""
        if isinstance(node, ast.Dict):
            keys = set()
            for key in node.keys:
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    raise ValueError(f"{self.path}: a label name that is not a literal")
                keys.add(key.value)
            return keys
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.labels(node.left, where) | self.labels(node.right, where)
        if isinstance(node, ast.Name | ast.Attribute):
            found = self._assigned(ast.unparse(node), where)
            if found:
                return set().union(*(self.labels(v, where) for v in found))
        raise ValueError(f"{self.path}:{node.lineno}: labels {ast.unparse(node)} not readable")

    def function(self, name: str) -> ast.AST:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return node
        raise ValueError(f"{self.path}: callback {name} not found")


def _prometheus(name: str, kind: str, unit: str) -> str:
    base = name.replace(".", "_") + ("_seconds" if unit == "s" else "")
    return base + ("_total" if kind == "counter" else "")


def metrics() -> list[dict[str, Any]]:
    """Every instrument the services create: its Prometheus name, type, labels, help and the
    package that records it."""
    found: dict[str, dict[str, Any]] = {}
    paths = sorted([*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")])
    for path in paths:
        source = _File(path)
        for node in ast.walk(source.tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _INSTRUMENTS
            ):
                continue
            kwargs = {k.arg: k.value for k in node.keywords}
            name = ast.literal_eval(node.args[0])
            unit = ast.literal_eval(kwargs["unit"]) if "unit" in kwargs else ""
            kind = _INSTRUMENTS[node.func.attr]
            labels: set[str] = set()
            if "callbacks" in kwargs:
                for callback in kwargs["callbacks"].elts:  # type: ignore[attr-defined]
                    fn = source.function(ast.unparse(callback).rsplit(".", 1)[-1])
                    for call in ast.walk(fn):
                        if (
                            isinstance(call, ast.Call)
                            and ast.unparse(call.func).endswith("Observation")
                            and len(call.args) > 1
                        ):
                            labels |= source.labels(call.args[1], call)
            else:
                variable = _bound_to(source.tree, node)
                for call in ast.walk(source.tree):
                    if (
                        isinstance(call, ast.Call)
                        and isinstance(call.func, ast.Attribute)
                        and call.func.attr in _RECORDING
                        and ast.unparse(call.func.value) == variable
                        and len(call.args) > 1
                    ):
                        labels |= source.labels(call.args[1], call)
            package = path.relative_to(ROOT).parts[3]
            found[name] = {
                "name": _prometheus(name, kind, unit),
                "type": kind,
                "unit": unit,
                "labels": sorted(labels),
                "help": ast.literal_eval(kwargs["description"]),
                "package": package,
            }
    return sorted(found.values(), key=lambda m: m["name"])


def _bound_to(tree: ast.AST, call: ast.Call) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and node.value is call:
            return ast.unparse(node.targets[0])
    raise ValueError(f"instrument {ast.unparse(call.args[0])} is not bound to a name")


def metrics_page() -> str:
    lines = [
        "# Metrics",
        "",
        *_generated(
            "every instrument the services create, by its Prometheus name. Every service "
            "serves them at `/metrics`; they are recorded through OpenTelemetry's API, so they "
            "also go out over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A histogram "
            "`NAME` is scraped as `NAME_bucket`, `NAME_sum` and `NAME_count`; a metric from "
            "`conveyor_bus` is recorded by every service's consumers and producers."
        ),
        "| metric | type | labels | recorded by | what it says |",
        "|---|---|---|---|---|",
    ]
    for m in metrics():
        labels = ", ".join(f"`{label}`" for label in m["labels"])
        lines.append(
            f"| `{m['name']}` | {m['type']} | {labels} | `{m['package']}` | {_cell(m['help'])} |"
        )
    return "\n".join(lines) + "\n"


# --- topics, events and headers ---------------------------------------------------------------

ENVELOPE = {
    "ce_id": "the event's id, unique per producer: a message delivered twice with the same id "
    "is applied once (absent: derived from the topic, partition and offset it was read at)",
    "ce_type": "the event type (below)",
    "ce_source": "who produced it (`conveyor-<service>`, or the application)",
    "ce_time": "when it was produced (RFC 3339)",
    "ce_specversion": "the CloudEvents version, `1.0`",
    "ce_dataschema": "the payload's JSON Schema, as its path in the repository",
    "content-type": "the payload's format, `application/json`",
    "traceparent": "W3C Trace Context: the consumer's work joins the producer's trace",
    "tracestate": "W3C Trace Context, vendor state (carried when present)",
    "ce_deadline": "on prediction requests: an RFC 3339 time after which the answer is "
    '`status: "error"`, `"deadline exceeded"`, instead of a late one',
    "ce_replyto": "on prediction requests: a topic of the application's that also receives the "
    "answer; it must start with `REPLY_TOPIC_PREFIX`, exist, and not be a platform topic",
}
DEAD_LETTER = {
    "dlq_error": "why the message was refused (naming the failing values)",
    "dlq_exception": "the type of the failure (a validation error, a handler's exception, or "
    "the check that refused it)",
    "dlq_stage": "where it failed: `decode`, `validate`, `quality`, `enrich`, `infer`, "
    "`reply`, `join` or `handle`",
    "dlq_source_topic": "the topic it was read from",
    "dlq_source_partition": "its partition",
    "dlq_source_offset": "its offset",
    "dlq_consumer_group": "the consumer group that refused it (a broadcast consumer: its service)",
    "dlq_failed_at": "when it was refused (RFC 3339)",
}


def _headers_of_the_code() -> tuple[set[str], set[str]]:
    from datetime import UTC, datetime

    from conveyor_bus.bus import DLQ_HEADERS
    from conveyor_contracts.envelope import FORWARDED_HEADERS, shared_headers

    envelope = {"ce_id", *shared_headers("t", "s", datetime.now(UTC), "d"), *FORWARDED_HEADERS}
    return envelope, set(DLQ_HEADERS)


def _event_types(spec: Any) -> list[tuple[str, str]]:
    schema = spec.schema
    if typing.get_origin(schema) is typing.Annotated:
        schema = typing.get_args(schema)[0]
    members = typing.get_args(schema) or (schema,)
    return [(m.type_name, " ".join((m.__doc__ or "").split())) for m in members]


def _anchor(spec: Any) -> str:
    return f"asyncapi.md#{spec.subject.replace('.', '-')}"


def topics_page() -> str:
    from conveyor_contracts import CATALOG
    from conveyor_contracts.schemas import topics_table

    envelope, dead_letter = _headers_of_the_code()
    if envelope != set(ENVELOPE) or dead_letter != set(DEAD_LETTER):
        raise ValueError(
            "headers without a meaning here, or meanings of headers the code no longer sets: "
            f"{sorted(envelope ^ set(ENVELOPE))} {sorted(dead_letter ^ set(DEAD_LETTER))}"
        )
    table = topics_table()
    for spec in CATALOG:
        table = table.replace(f"]({spec.subject}/v{spec.version}.json)", f"]({_anchor(spec)})")
    lines = [
        "# Topics and events",
        "",
        *_generated(
            "the topic catalog (`conveyor_contracts.catalog`) creates the topics and makes "
            "this table, `schemas/topics.md`, the JSON Schemas in `schemas/` and the AsyncAPI "
            "document ([rendered here](asyncapi.md)). What an application sends and reads, "
            "with examples: [For applications](../applications.md)."
        ),
        "## Topics",
        "",
        table.split("\n\nEvery topic `T`")[0],
        "",
        "## Event types",
        "",
        "The `ce_type` header of each topic's events; a topic whose payload is one of several "
        "events tells them apart by the payload's `type` field too.",
        "",
        "| topic | `ce_type` | the event |",
        "|---|---|---|",
    ]
    for spec in CATALOG:
        for type_name, doc in _event_types(spec):
            lines.append(f"| `{spec.name}` | `{type_name}` | {_cell(doc)} |")
    lines += [
        "",
        "## Headers",
        "",
        "Every message is a CloudEvents 1.0 event in Kafka's binary binding: the payload is "
        "the event as JSON (UTF-8), its attributes travel as headers. Keys are UTF-8 strings "
        "(the topics' `key` above).",
        "",
        "| header | what |",
        "|---|---|",
        *(f"| `{name}` | {_cell(what)} |" for name, what in ENVELOPE.items()),
        "",
        "## Dead letters",
        "",
        "Every topic `T` has a dead-letter topic `T.dlq` (1 partition, kept forever). A dead "
        "letter is the original message, its value bytes and headers untouched, with these "
        "headers added (and `dlq_truncated_bytes`, the value's length, when the value was cut "
        "to fit the broker's largest message):",
        "",
        "| header | what |",
        "|---|---|",
        *(f"| `{name}` | {_cell(what)} |" for name, what in DEAD_LETTER.items()),
    ]
    return "\n".join(lines) + "\n"


# --- the AsyncAPI document --------------------------------------------------------------------


def _field_table(schema: dict[str, Any]) -> list[str]:
    return generated.field_table(schema) or [f"A {generated.schema_type(schema)}.", ""]


def asyncapi_page() -> str:
    from conveyor_contracts import CATALOG
    from conveyor_contracts.schemas import asyncapi, render

    document = asyncapi()
    files = render()
    lines = [
        "# AsyncAPI",
        "",
        *_generated(
            f"the AsyncAPI {document['asyncapi']} document `schemas/asyncapi.json`, rendered. "
            "The document and the payloads' JSON Schemas are exported from the topic catalog by "
            "`make schemas`, and the official AsyncAPI parser accepts the document "
            "(`tools/asyncapi`, a unit test)."
        ),
        f"{document['info']['description']} Content type: `{document['defaultContentType']}`.",
        "",
        "## Channels",
        "",
        "| channel | address | partitions | retention (ms) | message | what |",
        "|---|---|---|---|---|---|",
    ]
    for cid, channel in document["channels"].items():
        kafka = channel["bindings"]["kafka"]
        retention = kafka["topicConfiguration"]["retention.ms"]
        lines.append(
            f"| `{cid}` | `{channel['address']}` | {kafka['partitions']} | "
            f"{'forever' if retention < 0 else retention} | [{cid}](#{cid}) | "
            f"{_cell(channel['description'])} |"
        )
    lines += ["", "## Operations", "", "| operation | action | channel |", "|---|---|---|"]
    for oid, op in document["operations"].items():
        channel = op["channel"]["$ref"].rsplit("/", 1)[-1]
        lines.append(f"| `{oid}` | {op['action']} | [{channel}](#{channel}) |")
    lines += ["", "## Messages", ""]
    messages = document["components"]["messages"]
    for spec in CATALOG:
        cid = spec.subject.replace(".", "-")
        message = messages[cid]
        payload = json.loads(files[message["payload"]["schema"]["$ref"]])
        lines += [
            f"### {cid}",
            "",
            f"On `{spec.name}`; payload `{message['payload']['schema']['$ref']}` "
            f"(JSON Schema, {message['payload']['schemaFormat'].rsplit('=', 1)[-1]}); key: "
            f"{message['bindings']['kafka']['key']['description']}; headers: "
            + ", ".join(f"`{h}`" for h in message["headers"]["properties"])
            + ".",
            "",
        ]
        lines += _field_table(payload)
        for name, definition in payload.get("$defs", {}).items():
            lines += [
                f"`{name}`"
                + (
                    f": {_cell(definition.get('description'))}"
                    if definition.get("description")
                    else ""
                ),
                "",
            ]
            lines += _field_table(definition)
    return "\n".join(lines).rstrip() + "\n"


# --- export and check -------------------------------------------------------------------------


def render() -> dict[Path, str]:
    return {
        OUT / "cli.md": cli_page(),
        OUT / "settings.md": settings_page(),
        OUT / "metrics.md": metrics_page(),
        OUT / "topics.md": topics_page(),
        OUT / "asyncapi.md": asyncapi_page(),
    }


def check() -> list[str]:
    """The files that differ from a fresh export (empty when all are current)."""
    return generated.stale(render)


if __name__ == "__main__":
    sys.exit(generated.main(render, sys.argv[1:]))
