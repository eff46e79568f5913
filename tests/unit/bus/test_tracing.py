"""A record's span and the trace context its answers carry on, under the sampler in force."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler
from opentelemetry.util._once import Once

from conveyor_bus import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@dataclass
class Record:
    key: bytes | None
    partition: int
    offset: int
    timestamp: int


@pytest.fixture
def traced() -> Iterator[callable]:
    """Install a provider with the given sampler; the spans it exports are returned."""
    exporter = InMemorySpanExporter()

    def install(sampler: Sampler) -> InMemorySpanExporter:
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace.set_tracer_provider(provider)
        return exporter

    yield install
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def batch(headers: list[dict[str, str]]) -> list[dict[str, str]]:
    now = int(time.time() * 1000)
    records = [Record(b"k", 0, i, now) for i in range(len(headers))]
    with tracing.batch_spans("serving", "predictions.enriched", records, headers) as traces:
        return [dict(t) for t in traces]


def test_an_unsampled_parents_record_continues_its_trace_unsampled_and_records_nothing(traced):
    exporter = traced(ParentBased(ALWAYS_ON))  # the default sampler, as OTEL_* leave it

    unsampled, random_bit, sampled = batch(
        [
            {"traceparent": f"00-{TRACE}-{PARENT}-00", "tracestate": "vendor=1"},
            {"traceparent": f"00-{TRACE}-{PARENT}-02"},  # W3C level 2: a random trace id
            {"traceparent": f"00-{TRACE}-{PARENT}-01"},
        ]
    )

    version, trace_id, span_id, flags = unsampled["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "00")
    assert span_id not in (PARENT, "0" * 16) and len(span_id) == 16
    assert unsampled["tracestate"] == "vendor=1"
    assert random_bit["traceparent"].endswith("-02")
    assert random_bit["traceparent"].split("-")[2] != span_id  # a span id of its own
    # Only the sampled record's span was recorded (with its batch's and its stages), as its
    # context says; nothing hangs from the unsampled ones.
    exported = exporter.get_finished_spans()
    (mine,) = [s for s in exported if s.name == "predictions.enriched process"]
    assert sampled["traceparent"] == f"00-{TRACE}-{mine.context.span_id:016x}-01"
    assert {"predictions.enriched batch", "decode"} <= {s.name for s in exported}
    unsampled_ids = {int(c["traceparent"].split("-")[2], 16) for c in (unsampled, random_bit)}
    assert not any(s.parent and s.parent.span_id in unsampled_ids for s in exported)
    assert mine.parent is not None and f"{mine.parent.span_id:016x}" == PARENT


def test_a_sampler_that_keeps_unsampled_parents_children_is_asked(traced):
    exporter = traced(ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))

    (context,) = batch([{"traceparent": f"00-{TRACE}-{PARENT}-00"}])

    (mine,) = [s for s in exporter.get_finished_spans() if s.name.endswith("process")]
    assert context["traceparent"] == f"00-{TRACE}-{mine.context.span_id:016x}-01"


def test_an_unreadable_or_missing_parent_starts_a_trace_through_the_sampler(traced):
    exporter = traced(ParentBased(ALWAYS_ON))

    contexts = batch([{}, {"traceparent": "00-not-a-parent-00"}])

    recorded = [s for s in exporter.get_finished_spans() if s.name.endswith("process")]
    assert len(recorded) == 2 and all(s.parent is None for s in recorded)
    assert {c["traceparent"].split("-")[1] for c in contexts} == {
        f"{s.context.trace_id:032x}" for s in recorded
    }
