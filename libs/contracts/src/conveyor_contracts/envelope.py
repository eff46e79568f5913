"""CloudEvents 1.0 Kafka binary binding: the event's attributes travel as `ce_*` headers, the
payload is the JSON value. W3C `traceparent` / `tracestate` ride along when a span is active."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .catalog import TopicSpec
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
