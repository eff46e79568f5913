"""What the client writes onto the platform's topics and asks of its services: topic names,
event types, the CloudEvents envelope and the bounds on ids. These mirror `conveyor_contracts`
(its catalog and envelope), which the client does not depend on; a test in the workspace holds
each of them equal to the contract's."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidArgument

_propagate: Any
try:  # an optional dependency (the `tracing` extra): looked for once, not at every request
    from opentelemetry import propagate as _propagate
except ImportError:
    _propagate = None

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
DEADLINE = "ce_deadline"  # RFC 3339 time after which an answer is of no use
REPLY_TO = "ce_replyto"  # a topic that gets a copy of the answer
MAX_ID_LENGTH = 200  # every id and name crossing the platform's edge
MAX_REASON_LENGTH = 500  # the trainer's bound on a run's reason
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True)
class Topic:
    """A topic the client produces to: its name, and what its events' envelope says."""

    subject: str
    major: int
    minor: int
    event_type: str

    @property
    def name(self) -> str:
        return f"{self.subject}.v{self.major}"

    @property
    def dataschema(self) -> str:
        return f"schemas/{self.subject}/v{self.major}.{self.minor}.json"


RECORDS_SUBMITTED = Topic("records.submitted", 1, 0, "conveyor.record.submitted")
PREDICTIONS_REQUESTS = Topic("predictions.requests", 1, 0, "conveyor.prediction.requested")
FEEDBACK_SUBMITTED = Topic("feedback.submitted", 1, 0, "conveyor.feedback.submitted")
TOPICS = (RECORDS_SUBMITTED, PREDICTIONS_REQUESTS, FEEDBACK_SUBMITTED)


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def headers(
    topic: Topic,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The CloudEvents Kafka binary binding's headers of one event on `topic` (the contracts'
    `Envelope.to_headers()`), with `extra` ones (a deadline, a reply topic, a traceparent)."""
    out = {
        "ce_id": event_id or new_id(),
        "ce_type": topic.event_type,
        "ce_source": source,
        "ce_time": (time or utcnow()).isoformat(),
        "ce_specversion": SPECVERSION,
        "content-type": CONTENT_TYPE,
        "ce_dataschema": topic.dataschema,
    }
    out.update(extra or {})
    return out


def kafka_headers(values: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in values.items()]


def encode(payload: Mapping[str, Any]) -> bytes:
    """An event's JSON value. A value JSON cannot carry (NaN, an object) is the caller's error,
    caught here rather than dead-lettered by the platform."""
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"the fields cannot be sent as JSON: {exc}") from exc


def check_id(value: Any, what: str) -> str:
    """`value` when it is an id the platform takes (text, 1 to 200 characters, no control
    characters); InvalidArgument saying what is wrong otherwise."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be text, not {type(value).__name__}")
    if not value:
        raise InvalidArgument(f"{what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH}")
    if _CONTROL.search(value):
        raise InvalidArgument(f"{what} {value[:40]!r} contains a control character")
    return value


def check_reason(value: Any, what: str = "reason") -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be text, not {type(value).__name__}")
    if len(value) > MAX_REASON_LENGTH:
        raise InvalidArgument(
            f"{what} is {len(value)} characters long; at most {MAX_REASON_LENGTH}"
        )
    if "\x00" in value:
        raise InvalidArgument(f"{what} contains a NUL character")
    return value


def check_fields(fields: Any, what: str = "fields") -> dict[str, Any]:
    if not isinstance(fields, Mapping):
        raise InvalidArgument(f"{what} must be a mapping of field names to values")
    for name in fields:
        if not isinstance(name, str):
            raise InvalidArgument(f"{what}: the field name {name!r} is not text")
    return dict(fields)


def entity_key(fields: Mapping[str, Any], key_field: str) -> str:
    """The Kafka key of a record or request: the value of the project's entity key, as text.
    The platform keys by entity so that one entity's messages keep their order."""
    if key_field not in fields:
        raise InvalidArgument(f"the fields lack the project's entity key {key_field!r}")
    value = fields[key_field]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidArgument(
            f"the entity key {key_field!r} must be text or an integer, not {type(value).__name__}"
        )
    return check_id(str(value), f"the entity key {key_field!r}")


def reply_topic(prefix: str) -> str:
    """A fresh reply topic's name under the services' required prefix."""
    name = f"{prefix}{new_id()}"
    if not TOPIC_NAME.fullmatch(name):
        raise InvalidArgument(f"reply prefix {prefix!r} does not make a valid topic name")
    return name


def traceparent() -> dict[str, str]:
    """The active span's W3C trace context, when OpenTelemetry's API is installed and a span is
    active (the services continue the trace); nothing otherwise."""
    if _propagate is None:
        return {}
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}
