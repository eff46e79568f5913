"""The one use case behind both of the feature service's ways in: prediction requests checked
against the data contract, merged with the entity's online state and featurized over its
history — with the store faked, and the Kafka handler shown to answer with what it computes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor_bus import Delivery, Outgoing
from conveyor_contracts import TopicSpec, catalog
from conveyor_contracts.events import PredictionEnriched, PredictionRequested, ProjectApplied
from conveyor_examples import load_project
from conveyor_feature.adapters.store import State
from conveyor_feature.domain.features import PastRecord, featurize
from conveyor_feature.enrichment import NO_TIME_ZONE, Asked, Vector, enrich
from conveyor_feature.handlers import Features
from conveyor_runtime import ProjectCache

SPEC = load_project("fraud").model_copy(update={"feature_ttl_s": 3600.0})
NAMES = SPEC.feature_names()
T = datetime(2026, 3, 1, 12, tzinfo=UTC)
NEWEST = {"amount": 20.0, "merchant": "fuel", "hour": 12, "foreign": False}
HISTORY = [
    PastRecord("a", T - timedelta(minutes=30), {"amount": 10.0}),
    PastRecord("b", T - timedelta(minutes=10), {"amount": 20.0}),
]


class FakeStore:
    """c-7 has two records, the newest ten minutes before T; c-8 has none."""

    def __init__(self, state_time: datetime = T - timedelta(minutes=10)) -> None:
        self.state_time = state_time
        self.calls: list[tuple[str, list[str]]] = []

    async def histories(self, project: str, entities: list[str]) -> dict[str, list[PastRecord]]:
        self.calls.append(("histories", entities))
        return {e: list(HISTORY) for e in entities if e == "c-7"}

    async def states(self, project: str, entities: list[str]) -> dict[str, State]:
        self.calls.append(("states", entities))
        return {e: State(e, "b", self.state_time, dict(NEWEST)) for e in entities if e == "c-7"}


def _at(minutes: int = 0) -> str:
    return (T + timedelta(minutes=minutes)).isoformat()


async def test_a_full_request_is_featurized_over_the_entitys_earlier_records():
    store = FakeStore()
    fields = {"customer": "c-7", "ts": _at(), "amount": 99.0, "merchant": "online", "hour": 1}
    fields |= {"foreign": True}
    (vector,) = await enrich(SPEC, store, [Asked(fields, T)])
    assert vector == Vector("c-7", featurize(SPEC, fields, T, HISTORY))
    assert vector.values[NAMES.index("payments_1h")] == 2.0
    assert vector.values[NAMES.index("amount_mean_1h")] == 15.0
    assert vector.values[NAMES.index("log_amount")] == pytest.approx(math.log1p(99.0))
    assert store.calls == [("histories", ["c-7"])]  # every plain field sent: no state read


async def test_fields_left_out_come_from_the_online_state_and_sent_ones_win():
    store = FakeStore()
    (vector,) = await enrich(SPEC, store, [Asked({"customer": "c-7", "hour": 3}, T)])
    assert isinstance(vector, Vector)
    assert vector.values == featurize(SPEC, NEWEST | {"hour": 3}, T, HISTORY)
    assert vector.values[NAMES.index("hour")] == 3.0
    assert vector.values[NAMES.index("merchant=fuel")] == 1.0
    assert ("states", ["c-7"]) in store.calls


async def test_a_state_older_than_the_ttl_is_not_used():
    store = FakeStore(state_time=T - timedelta(hours=2))
    (vector,) = await enrich(SPEC, store, [Asked({"customer": "c-7"}, T)])
    assert isinstance(vector, Vector)
    assert vector.values == featurize(SPEC, {"customer": "c-7"}, T, HISTORY)
    assert vector.values[NAMES.index("log_amount")] == 0.0  # the default


async def test_the_event_time_field_wins_over_requested_at():
    store = FakeStore()
    later = T + timedelta(minutes=50)  # a's record is then over the hour
    (vector,) = await enrich(SPEC, store, [Asked({"customer": "c-7", "ts": _at(50)}, T)])
    assert isinstance(vector, Vector)
    assert vector.values[NAMES.index("payments_1h")] == 1.0
    assert vector.values == featurize(SPEC, NEWEST | {"ts": later}, later, HISTORY)


async def test_refusals_are_reasons_in_place_and_the_others_are_enriched():
    store = FakeStore()
    asked = [
        Asked({"amount": 1.0}, T),  # no entity key
        Asked({"customer": "c-7", "amount": "12"}, T),
        Asked({"customer": "c-7", "colour": "red"}, T),
        Asked({"customer": "c-8"}, T),
        Asked({"customer": "c-7", "amount": float("nan")}, T),
        Asked({"customer": "c-7"}, T.replace(tzinfo=None)),  # naive, and no event-time field
        Asked(["not", "an", "object"], T),
    ]
    results = await enrich(SPEC, store, asked)
    assert len(results) == len(asked)
    reasons = [r for r in results if isinstance(r, str)]
    assert len(reasons) == 6
    assert "customer: required" in str(results[0])
    assert "amount: '12' is not a number" in str(results[1])
    assert "colour: not a field of project" in str(results[2])
    assert results[3] == Vector("c-8", featurize(SPEC, {}, T, []))
    assert "amount: nan is not a finite number" in str(results[4])
    assert results[5] == NO_TIME_ZONE
    assert results[6] == "record: expected a JSON object, got list"
    assert store.calls[0] == ("histories", ["c-8"])  # only what passed reaches the store


async def test_nothing_passing_reads_nothing():
    store = FakeStore()
    assert await enrich(SPEC, store, [Asked({"amount": 1.0}, T)]) == ["customer: required"]
    assert store.calls == []


async def test_max_bytes_bounds_a_request_however_its_size_is_known():
    store = FakeStore()
    big = {"customer": "c-7", "merchant": "x" * 5000}
    (reason,) = await enrich(SPEC, store, [Asked(big, T)])  # measured
    assert isinstance(reason, str) and "over the limit of 4096" in reason
    (reason,) = await enrich(SPEC, store, [Asked(big, T, size=5100)])  # as received
    assert isinstance(reason, str) and "over the limit of 4096" in reason
    # A size over the limit as received (an envelope around it, say) is measured again.
    (vector,) = await enrich(SPEC, store, [Asked({"customer": "c-7"}, T, size=10**6)])
    assert isinstance(vector, Vector)


class FakeBus:
    def __init__(self) -> None:
        self.published: dict[str, list[Outgoing]] = {}

    async def publish_many(self, topic: TopicSpec, items: list[Outgoing], **_: Any) -> None:
        self.published.setdefault(topic.name, []).extend(items)

    async def topic_exists(self, topic: str) -> bool:
        return False


def _delivery(request: PredictionRequested, offset: int) -> Delivery[PredictionRequested]:
    value = request.model_dump_json().encode()
    headers = {"ce_id": f"sent-{offset}"}
    return Delivery(request, headers, "c-7", "predictions.requests.v1", 0, offset, value)


async def test_the_kafka_handler_publishes_what_the_use_case_computes():
    projects = ProjectCache()
    projects.apply(ProjectApplied(project=SPEC.name, project_version=3, spec=SPEC))
    store, bus = FakeStore(), FakeBus()
    features = Features(projects, store, bus)  # type: ignore[arg-type]
    good = PredictionRequested(project=SPEC.name, fields={"customer": "c-7"}, requested_at=T)
    bad = PredictionRequested(project=SPEC.name, fields={"amount": 1.0}, requested_at=T)
    rejections = await features.on_requests([_delivery(good, 1), _delivery(bad, 2)])

    (vector,) = await enrich(SPEC, FakeStore(), [Asked(good.fields, T)])
    assert isinstance(vector, Vector)
    (out,) = bus.published[catalog.PREDICTIONS_ENRICHED.name]
    assert isinstance(out.event, PredictionEnriched)
    assert (out.key, out.event_id) == ("c-7", "sent-1/enriched")
    assert (out.event.entity_id, out.event.values) == (vector.entity_id, vector.values)
    assert out.event.feature_names == NAMES and out.event.project_version == 3
    (rejection,) = rejections
    assert rejection.delivery.offset == 2 and rejection.error == "customer: required"
    (answer,) = bus.published[catalog.PREDICTIONS_RESPONSES.name]
    assert answer.event_id == "sent-2/served"
