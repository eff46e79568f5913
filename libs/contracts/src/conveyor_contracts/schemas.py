"""Export the catalog's schemas, and check the committed ones.

    python -m conveyor_contracts.schemas export [--dir schemas]
    python -m conveyor_contracts.schemas check  [--dir schemas]
    python -m conveyor_contracts.schemas strimzi --cluster NAME [--replicas 3] [--namespace NS]

`export` writes `schemas/<subject>/v<major>.<minor>.json` for every topic, the AsyncAPI 3.1
document `schemas/asyncapi.json` and the topic table `schemas/topics.md`. `check` fails when the
committed files differ from a fresh export, or when a subject's newest version cannot read a
message of an older version of the same major (see `compat.py`). `strimzi` writes the catalog's
topics as Strimzi `KafkaTopic` resources (YAML, on stdout) for an operator to own (see
`strimzi.py`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from .catalog import CATALOG, TopicSpec
from .compat import backward_problems


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def subject_schema(spec: TopicSpec) -> dict[str, Any]:
    schema = spec.json_schema()
    schema["$id"] = spec.dataschema
    schema.setdefault("title", spec.subject)
    schema["description"] = spec.description
    return schema


def _retention(ms: int) -> str:
    return "forever" if ms < 0 else f"{ms // 86_400_000} d"


def topics_table() -> str:
    lines = [
        "| topic | key | schema | partitions | retention | producers | consumers | what |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in CATALOG:
        lines.append(
            f"| `{s.name}` | {s.key} | [v{s.version}]({s.subject}/v{s.version}.json) | "
            f"{s.partitions} | {_retention(s.retention_ms)} | {', '.join(s.producers)} | "
            f"{', '.join(s.consumers)} | {s.description} |"
        )
    lines.append("")
    lines.append(
        "Every topic `T` has a dead-letter topic `T.dlq` (1 partition, kept forever): the "
        "original bytes and headers plus `dlq_error`, `dlq_stage`, `dlq_source_topic`, "
        "`dlq_source_partition`, `dlq_source_offset`, `dlq_consumer_group`, "
        "`dlq_failed_at`."
    )
    return "\n".join(lines) + "\n"


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for s in CATALOG:
        cid = s.subject.replace(".", "-")
        messages[cid] = {
            "name": s.subject,
            "title": s.subject,
            "contentType": "application/json",
            # The payload files are pydantic's JSON Schema, whose `discriminator` is OpenAPI's
            # object form, not the AsyncAPI Schema's string: named as JSON Schema, it is an
            # annotation AsyncAPI tools accept. Draft-07 is the JSON Schema they support; the
            # files use nothing newer than `$defs`, a container their $refs point into.
            "payload": {
                "schemaFormat": "application/schema+json;version=draft-07",
                "schema": {"$ref": f"{s.subject}/v{s.version}.json"},
            },
            "headers": {
                "type": "object",
                "properties": {
                    h: {"type": "string"}
                    for h in (
                        "ce_id",
                        "ce_type",
                        "ce_source",
                        "ce_time",
                        "ce_specversion",
                        "ce_dataschema",
                        "traceparent",
                    )
                },
            },
            "bindings": {"kafka": {"key": {"type": "string", "description": s.key}}},
        }
        channels[cid] = {
            "address": s.name,
            "description": s.description,
            "messages": {cid: {"$ref": f"#/components/messages/{cid}"}},
            "bindings": {
                "kafka": {
                    "partitions": s.partitions,
                    "topicConfiguration": {"retention.ms": s.retention_ms},
                }
            },
        }
        for role, action in (("producers", "send"), ("consumers", "receive")):
            for who in getattr(s, role):
                op = re.sub(r"[^A-Za-z0-9]+", "-", f"{who}-{action}-{s.subject}")
                operations[op] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{cid}"},
                    "summary": f"{who} {action}s {s.name}",
                }
    return {
        "asyncapi": "3.1.0",
        "info": {
            "title": "Conveyor",
            "version": "0.1.0",
            "description": "Every topic of the Conveyor platform, from its catalog.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render() -> dict[str, str]:
    """Every file of the export: relative path -> text."""
    files = {f"{s.subject}/v{s.version}.json": _dump(subject_schema(s)) for s in CATALOG}
    files["asyncapi.json"] = _dump(asyncapi())
    files["topics.md"] = topics_table()
    return files


def export(root: Path) -> list[str]:
    written = []
    for rel, text in render().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(rel)
    return written


def _version(path: Path) -> tuple[int, int]:
    major, minor = path.stem.removeprefix("v").split(".")
    return int(major), int(minor)


def check(root: Path) -> list[str]:
    problems = []
    for rel, text in render().items():
        path = root / rel
        if not path.exists():
            problems.append(f"{rel}: missing (run `make schemas`)")
        elif path.read_text() != text:
            problems.append(f"{rel}: differs from the code (run `make schemas`)")
    for spec in CATALOG:
        versions = sorted((root / spec.subject).glob(f"v{spec.major}.*.json"), key=_version)
        newest = json.loads(versions[-1].read_text()) if versions else None
        for older in versions[:-1]:
            for p in backward_problems(json.loads(older.read_text()), newest or {}):
                problems.append(f"{spec.subject} v{spec.version} cannot read {older.name}: {p}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conveyor_contracts.schemas")
    parser.add_argument("command", choices=["export", "check", "strimzi"])
    parser.add_argument("--dir", type=Path, default=Path("schemas"))
    parser.add_argument("--cluster", default="conveyor-kafka", help="strimzi: the Kafka's name")
    parser.add_argument("--replicas", type=int, default=3, help="strimzi: replicas per topic")
    parser.add_argument("--namespace", default=None, help="strimzi: the topics' namespace")
    args = parser.parse_args(argv)
    if args.command == "strimzi":
        import yaml

        from .strimzi import kafka_topics

        topics = kafka_topics(args.cluster, replicas=args.replicas, namespace=args.namespace)
        sys.stdout.write(yaml.safe_dump_all(topics, sort_keys=False))
        return 0
    if args.command == "export":
        written = export(args.dir)
        print(f"{len(written)} files written to {args.dir}" if written else "schemas up to date")
        problems = check(args.dir)
    else:
        problems = check(args.dir)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
