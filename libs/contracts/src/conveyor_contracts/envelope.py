"""CloudEvents 1.0 Kafka binary binding: the event's attributes travel as `ce_*` headers, the
payload is the JSON value. W3C `traceparent` / `tracestate` ride along when a span is active."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .catalog import CATALOG, DLQ_SUFFIX, TopicSpec
from .events import new_id, utcnow

SPECVERSION = "1.0"
TRACE_HEADERS = ("traceparent", "tracestate")  # W3C Trace Context
# CloudEvents extension attributes an application may set on a prediction request; they travel
# with it through enrichment to serving.
DEADLINE = "ce_deadline"  # RFC 3339 time after which an answer is no use: "deadline exceeded"
REPLY_TO = "ce_replyto"  # a topic that also gets the answer (predictions.responses always does)
FORWARDED_HEADERS = (*TRACE_HEADERS, DEADLINE, REPLY_TO)
CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Envelope:
    id: str
    type: str
    source: str
    time: datetime
    dataschema: str | None
    extra: Mapping[str, str]

    def to_headers(self) -> dict[str, str]:
        headers = {"ce_id": self.id} | shared_headers(
            self.type, self.source, self.time, self.dataschema
        )
        headers.update(self.extra)
        return headers


def shared_headers(
    type_: str, source: str, time: datetime, dataschema: str | None
) -> dict[str, str]:
    """Every header but `ce_id`: the same for all events of one type produced in one batch."""
    headers = {
        "ce_type": type_,
        "ce_source": source,
        "ce_time": time.isoformat(),
        "ce_specversion": SPECVERSION,
        "content-type": CONTENT_TYPE,
    }
    if dataschema:
        headers["ce_dataschema"] = dataschema
    return headers


def envelope_for(
    topic: TopicSpec,
    event: Any,
    *,
    source: str,
    event_id: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> Envelope:
    return Envelope(
        id=event_id or new_id(),
        type=type(event).type_name,
        source=source,
        time=utcnow(),
        dataschema=topic.dataschema,
        extra=dict(extra or {}),
    )


def decode_headers(raw: Iterable[tuple[str, bytes | None]] | Mapping[str, Any]) -> dict[str, str]:
    """Headers as text: a Kafka client's (name, bytes) pairs (a value that is not UTF-8 read with
    replacement characters; a null one left out), or a mapping of values made text."""
    if type(raw) is list or type(raw) is tuple:  # the client's own form, on every record
        try:  # the common case first: every value UTF-8 bytes
            return {k: v.decode() for k, v in raw}
        except (AttributeError, UnicodeDecodeError):  # a null, text, or not UTF-8
            pass
        try:
            return {k: v.decode("utf-8", "replace") for k, v in raw if v is not None}
        except AttributeError:  # a value already text
            pass
    items = raw.items() if isinstance(raw, Mapping) else raw
    return {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        for k, v in items
        if v is not None
    }


TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name
PLATFORM_TOPICS = frozenset(name for spec in CATALOG for name in (spec.name, spec.dlq))


def reply_refusal(topic: str, prefix: str) -> str | None:
    """Why answers may not be copied to `topic`, or None: a reply topic is an application's, so
    it starts with the configured prefix and is never one of the platform's own (else anyone
    who can send a request could write answers into any topic, a changelog included)."""
    shown = topic[:100]
    if not TOPIC_NAME.fullmatch(topic):
        return f"reply-to topic {shown!r} is not a valid topic name"
    if topic in PLATFORM_TOPICS or topic.endswith(DLQ_SUFFIX):
        return f"reply-to topic {shown!r} is one of the platform's topics"
    if not prefix or not topic.startswith(prefix):
        return f"reply-to topic {shown!r} does not start with {prefix!r}"
    return None
