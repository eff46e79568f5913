"""What the client writes onto the platform's topics is what `conveyor_contracts` defines: the
same topic names, event types, CloudEvents headers and payloads, and the same bounds. The
client does not depend on the contracts; these tests keep the two from drifting apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from conveyor_client import _wire, config
from conveyor_contracts import DEADLINE, REPLY_TO, Envelope, catalog, envelope, reply_refusal
from conveyor_contracts.events import (
    MAX_ID_LENGTH,
    FeedbackSubmitted,
    PredictionRequested,
    RecordSubmitted,
)
from conveyor_runtime import ServiceSettings
from tests.unit.client.fakes import FakeKafka
from tests.unit.client.support import Services

PAIRS = [
    (_wire.RECORDS_SUBMITTED, catalog.RECORDS_SUBMITTED, RecordSubmitted),
    (_wire.PREDICTIONS_REQUESTS, catalog.PREDICTIONS_REQUESTS, PredictionRequested),
    (_wire.FEEDBACK_SUBMITTED, catalog.FEEDBACK_SUBMITTED, FeedbackSubmitted),
]
PROJECT = {"project": "fraud", "project_version": 1, "spec": {"entity_key": "customer"}}


def test_topics_types_and_schemas_are_the_catalogs():
    for mine, spec, event in PAIRS:
        assert mine.name == spec.name
        assert mine.dataschema == spec.dataschema
        assert mine.event_type == event.type_name
        assert spec.schema is event


def test_headers_are_the_contracts_envelope():
    when = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    extra = {DEADLINE: (when + timedelta(seconds=5)).isoformat(), REPLY_TO: "replies.abc"}
    for mine, spec, event in PAIRS:
        ours = _wire.headers(mine, source="shop/checkout", event_id="e-1", time=when, extra=extra)
        theirs = Envelope(
            id="e-1",
            type=event.type_name,
            source="shop/checkout",
            time=when,
            dataschema=spec.dataschema,
            extra=extra,
        ).to_headers()
        assert ours == theirs
        assert list(ours) == list(theirs)  # the same order too


def test_constants_and_bounds_are_the_contracts():
    assert (_wire.DEADLINE, _wire.REPLY_TO) == (DEADLINE, REPLY_TO)
    assert _wire.SPECVERSION == envelope.SPECVERSION
    assert _wire.CONTENT_TYPE == envelope.CONTENT_TYPE
    assert _wire.MAX_ID_LENGTH == MAX_ID_LENGTH
    assert _wire.TOPIC_NAME.pattern == envelope.TOPIC_NAME.pattern
    assert config.DEFAULT_REPLY_PREFIX == ServiceSettings.model_fields["reply_topic_prefix"].default
    topic = _wire.reply_topic(config.DEFAULT_REPLY_PREFIX)
    assert reply_refusal(topic, config.DEFAULT_REPLY_PREFIX) is None  # the services copy to it


async def test_what_the_client_sends_validates_as_the_contracts_events():
    def answer(request, headers):
        return {
            "request_id": request["request_id"],
            "project": "fraud",
            "entity_id": "c-1",
            "status": "ok",
            "label": "legit",
            "probabilities": {"legit": 0.9, "fraud": 0.1},
            "model_version": 3,
            "requested_at": request["requested_at"],
            "served_at": datetime.now(UTC).isoformat(),
            "latency_ms": 1.5,
        }

    services = Services()
    services.on("registry", "GET", "/projects/fraud", httpx.Response(200, json=PROJECT))
    kafka = FakeKafka(answer)
    async with services.client(source="shop/checkout") as conveyor:
        conveyor._kafka = kafka  # type: ignore[assignment]
        sent = await conveyor.submit_records(
            "fraud", [{"customer": "c-1", "amount": 3.5}], via="kafka"
        )
        assert sent.queued == 1
        prediction = await conveyor.predict(
            "fraud", {"customer": "c-1", "amount": 3.5}, timeout=5, request_id="q-1"
        )
        assert prediction.label == "legit" and prediction.request_id == "q-1"
        await conveyor.send_feedback("fraud", "q-1", "legit", feedback_id="f-1", via="kafka")
    by_topic = {
        name: (msg, spec, event)
        for name, msg in kafka.sent
        for _, spec, event in PAIRS
        if spec.name == name
    }
    assert set(by_topic) == {spec.name for _, spec, _ in PAIRS}
    for (_key, value, headers), spec, event in by_topic.values():
        decoded = spec.adapter.validate_json(value)
        assert isinstance(decoded, event)
        expected = envelope.envelope_for(
            spec, decoded, source="shop/checkout", event_id=headers["ce_id"]
        )
        theirs = expected.to_headers()
        theirs["ce_time"] = headers["ce_time"]
        assert {k: v for k, v in headers.items() if k not in (DEADLINE, REPLY_TO)} == theirs
        assert datetime.fromisoformat(headers["ce_time"]).tzinfo is not None
    record = by_topic[catalog.RECORDS_SUBMITTED.name]
    assert record[0][0] == "c-1"  # keyed by the entity, as the catalog says
    request = by_topic[catalog.PREDICTIONS_REQUESTS.name]
    assert request[0][0] == "c-1"
    assert request[0][2][REPLY_TO] == kafka.reply.topic
    deadline = datetime.fromisoformat(request[0][2][DEADLINE])
    assert timedelta(seconds=4) < deadline - datetime.now(UTC) <= timedelta(seconds=5)
    decoded = PredictionRequested.model_validate_json(request[0][1])
    assert decoded.request_id == "q-1" and decoded.fields == {"customer": "c-1", "amount": 3.5}
    feedback = by_topic[catalog.FEEDBACK_SUBMITTED.name]
    assert feedback[0][0] == "q-1"  # keyed by the request id
    assert FeedbackSubmitted.model_validate_json(feedback[0][1]).feedback_id == "f-1"
