"""A request that came over HTTP is scored by the Kafka path's routing (champion, canary, shadow)
and published as its answers are, under an id that is a function of the request."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor_bus import Encoded, Outgoing
from conveyor_contracts import TopicSpec, catalog
from conveyor_contracts.events import PredictionEnriched, ProjectApplied
from conveyor_examples import load_project
from conveyor_runtime import ProjectCache
from conveyor_serving.adapters.onnx import OnnxSession
from conveyor_serving.domain.predictor import CHALLENGER, LoadedModel, Predictor, in_canary
from conveyor_serving.handlers import NotServed, Serving
from tests.models import make_model
from tests.unit.serving.test_answers import request

SPEC = load_project("fraud")
NAMES = SPEC.feature_names()
T = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _loaded(version: int, flip: bool = False) -> LoadedModel:
    m = make_model(SPEC, flip=flip)  # v1 says fraud for feature 0 > 0, a flipped one legit
    return LoadedModel("fraud", version, m.sha256, NAMES, ["legit", "fraud"], OnnxSession(m.onnx))


class FakeBus:
    def __init__(self) -> None:
        self.published: dict[str, list[Outgoing]] = {}

    async def publish_many(self, topic: TopicSpec, items: list[Outgoing], **_: Any) -> None:
        self.published.setdefault(topic.name, []).extend(items)


def _serving(mode: str = "off", share: float = 0.5) -> tuple[Serving, FakeBus]:
    serving_policy = SPEC.policies.serving.model_copy(
        update={"challenger": mode, "canary_share": share}
    )
    policies = SPEC.policies.model_copy(update={"serving": serving_policy})
    spec = SPEC.model_copy(update={"policies": policies})
    projects = ProjectCache()
    projects.apply(ProjectApplied(project="fraud", project_version=1, spec=spec))
    predictor = Predictor()
    predictor.swap(_loaded(1))
    predictor.swap(_loaded(2, flip=True), CHALLENGER)
    bus = FakeBus()
    return Serving(predictor, None, bus, projects), bus  # type: ignore[arg-type]


def _request(entity: str = "c-7", names: list[str] = NAMES) -> PredictionEnriched:
    values = [0.0] * len(names)
    values[0] = 3.0
    return request(f"r-{entity}", entity, names, values, T)


async def test_the_champions_answer_is_published_under_the_requests_id_and_returned():
    serving, bus = _serving()
    asked = _request()
    value = await serving.answer(asked, time.perf_counter(), "abc")
    answer = catalog.PREDICTIONS_RESPONSES.adapter.validate_json(value)
    assert (answer.request_id, answer.entity_id, answer.status) == ("r-c-7", "c-7", "ok")
    assert (answer.model_version, answer.label) == (1, "fraud")
    assert answer.values == asked.values and answer.feature_names == NAMES
    assert answer.requested_at == T and answer.latency_ms >= 0
    (out,) = bus.published[catalog.PREDICTIONS_RESPONSES.name]
    assert (out.key, out.event_id) == ("r-c-7", "abc/served")
    assert isinstance(out.event, Encoded) and out.event.value == value
    assert catalog.PREDICTIONS_SHADOW.name not in bus.published


async def test_a_shadow_challenger_answers_beside_it():
    serving, bus = _serving("shadow")
    value = await serving.answer(_request(), time.perf_counter(), "abc")
    assert catalog.PREDICTIONS_RESPONSES.adapter.validate_json(value).model_version == 1
    (shadow,) = bus.published[catalog.PREDICTIONS_SHADOW.name]
    assert (shadow.key, shadow.event_id) == ("r-c-7", "abc/shadow")
    assert isinstance(shadow.event, Encoded)
    said = catalog.PREDICTIONS_SHADOW.adapter.validate_json(shadow.event.value)
    assert (said.model_version, said.label) == (2, "legit")


async def test_a_canary_entity_gets_the_challengers_answer():
    serving, bus = _serving("canary", 0.5)
    entities = [f"c-{i}" for i in range(20)]
    for entity in entities:
        value = await serving.answer(_request(entity), time.perf_counter(), entity)
        answer = catalog.PREDICTIONS_RESPONSES.adapter.validate_json(value)
        assert answer.model_version == (2 if in_canary(entity, 0.5) else 1)
    assert len(bus.published[catalog.PREDICTIONS_RESPONSES.name]) == len(entities)
    assert {in_canary(e, 0.5) for e in entities} == {True, False}


async def test_nothing_is_published_for_a_request_no_model_scores():
    serving, bus = _serving()
    with pytest.raises(NotServed, match="do not match"):
        await serving.answer(_request(names=NAMES[::-1]), time.perf_counter(), "abc")
    other = _request().model_copy(update={"project": "other"})
    with pytest.raises(NotServed, match="no model is loaded for project 'other'"):
        await serving.answer(other, time.perf_counter(), "abc")
    assert bus.published == {}


def test_the_summary_names_each_projects_versions_and_the_challengers_mode(monkeypatch):
    serving, _ = _serving("canary", 0.25)
    assert serving.summary() == {
        "projects": {
            "fraud": {"champion": 1, "challenger": 2, "mode": "canary", "canary_share": 0.25}
        },
        "more": 0,
    }
    shadow, _ = _serving("shadow")
    assert shadow.summary()["projects"]["fraud"]["mode"] == "shadow"
    # Bounded: past the limit, projects are counted, not named.
    monkeypatch.setattr("conveyor_serving.handlers.SUMMARY_PROJECTS", 0)
    assert shadow.summary() == {"projects": {}, "more": 1}
