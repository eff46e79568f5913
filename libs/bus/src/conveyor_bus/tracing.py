"""Spans of the bus, when the process has a tracer provider (the `OTEL_*` variables ask for one).

Every record handled gets a span in its own trace: its parent is the `traceparent` the record
carries, and the record's `trace` holds this span's context, so whatever the handler produces in
answer to it (`Outgoing.cause = delivery.onward`) continues the trace one level down. The
record's own headers stay as they came (a dead letter keeps them). One
prediction is thus one tree across services: request → enrich → infer → response → monitor and
feedback. A span per batch links the records it handled. Without a tracer provider nothing here
runs: the hot path pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

_tracer = trace.get_tracer("conveyor.bus")


class _Record(Protocol):
    headers: dict[str, str]
    trace: dict[str, str]
    topic: str
    partition: int
    offset: int


def enabled() -> bool:
    """Whether spans would be recorded: an SDK tracer provider is installed."""
    from opentelemetry.sdk.trace import TracerProvider

    return isinstance(trace.get_tracer_provider(), TracerProvider)


@contextmanager
def batch_spans(service: str, topic: str, records: Sequence[_Record]) -> Iterator[Span]:
    """A span per record (its headers now carry it) and one for the batch, ended together."""
    start = time.time_ns()
    spans = []
    for r in records:
        parent = propagate.extract(r.headers)
        span = _tracer.start_span(
            f"{topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=start,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(r.partition),
                "messaging.kafka.offset": r.offset,
                "messaging.consumer.group.name": f"conveyor-{service}",
            },
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        r.trace = carrier
        spans.append(span)
    batch = _tracer.start_span(
        f"{topic} batch",
        kind=SpanKind.CONSUMER,
        start_time=start,
        links=[Link(s.get_span_context()) for s in spans if s.get_span_context().is_valid],
        attributes={"messaging.batch.message_count": len(records), "conveyor.service": service},
    )
    try:
        with trace.use_span(batch, end_on_exit=False):
            yield batch
    except BaseException as exc:
        for span in (*spans, batch):
            span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
        raise
    finally:
        end = time.time_ns()
        for span in (*spans, batch):
            span.end(end)
