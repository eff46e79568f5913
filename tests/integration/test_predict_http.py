"""Predictions from raw fields over HTTP, on the real broker and Postgres: serving asks the feature
service (over HTTP, with its own token) to enrich the request with the Kafka path's code, scores
it as the Kafka path does, publishes the answer where feedback and the monitor read answers, and
returns it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import (
    PredictionRequested,
    PredictionServed,
    RecordAccepted,
    derived_id,
)
from conveyor_feature.bootstrap import FeatureSettings
from conveyor_feature.bootstrap import bootstrap as feature_bootstrap
from conveyor_feature.domain.features import PastRecord, featurize
from conveyor_feedback.bootstrap import FeedbackSettings
from conveyor_feedback.bootstrap import bootstrap as feedback_bootstrap
from conveyor_serving.bootstrap import ServingSettings
from conveyor_serving.bootstrap import bootstrap as serving_bootstrap
from tests.integration.test_serving import FakeSource, _move
from tests.models import make_model
from tests.support import (
    TOKENS,
    Kafka,
    Listener,
    bearer,
    headers_of,
    running,
    unique_project,
    until,
)

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
SERVED = "conveyor.prediction.served"


def _record(project: str, rid: str, minutes: int, amount: float) -> RecordAccepted:
    at = T0 + timedelta(minutes=minutes)
    fields = {"customer": "c-7", "ts": at.isoformat(), "amount": amount, "merchant": "fuel"}
    fields |= {"hour": 12, "foreign": False, "outcome": "legit"}
    return RecordAccepted(
        project=project,
        project_version=1,
        record_id=rid,
        entity_id="c-7",
        event_time=at,
        ingested_at=datetime.now(UTC),
        fields=fields,
    )


async def test_raw_fields_in_an_answer_out_as_on_kafka(kafka, database_url):
    spec, idle = unique_project("http"), unique_project("idle")  # idle: no model
    name, names = spec.name, spec.feature_names()
    model = make_model(spec)
    settings = {"kafka_bootstrap_servers": kafka.bootstrap_servers}
    stored = settings | {"database_url": database_url}
    feature = feature_bootstrap(FeatureSettings(**stored))
    async with (
        Kafka(kafka.bootstrap_servers) as k,
        Listener(feature.http, lifespan="on") as feature_service,
    ):
        feature_url = feature_service.url
        serving = serving_bootstrap(
            # The serving's own token: an application's role, which may submit.
            ServingSettings(**settings, feature_url=feature_url, conveyor_token=TOKENS["an-app"]),
            source=FakeSource({1: model}),
        )
        async with (
            running(serving, as_user="an-app") as api,
            running(feedback_bootstrap(FeedbackSettings(**stored)), as_user="an-app") as feedback,
        ):
            for s in (spec, idle):
                await k.apply(s)
            move = _move(name, 1, model)
            await k.send(catalog.REGISTRY_EVENTS, move, key=name)

            async def loaded() -> bool:
                return (await api.get("/models")).json().get(name, {}).get("version") == 1

            await until(loaded, 30, "the champion loaded")
            await until(lambda: feature.projects.get(idle.name), 30, "the feature service")
            await until(lambda: serving.projects.get(idle.name), 30, "serving knows the projects")
            records = [_record(name, "a", 0, 10.0), _record(name, "b", 10, 20.0)]
            for r in records:
                await k.send(catalog.RECORDS_ACCEPTED, r, key="c-7")
            await k.collect(
                catalog.FEATURES_ROWS.name,
                lambda e: e.project == name,
                2,
                decode=catalog.FEATURES_ROWS,
            )

            # Raw fields in: merchant, hour and foreign left out come from c-7's newest record,
            # the aggregates from its records before `ts`.
            at = T0 + timedelta(minutes=25)
            fields = {"customer": "c-7", "ts": at.isoformat(), "amount": 3000.0}
            request_id = f"h-{uuid.uuid4().hex[:12]}"
            body = {"fields": fields, "request_id": request_id}
            r = await api.post(f"/projects/{name}/predict", json=body)
            assert r.status_code == 200, r.text
            answer = PredictionServed.model_validate_json(r.content)
            assert (answer.request_id, answer.project, answer.entity_id) == (
                request_id,
                name,
                "c-7",
            )
            assert (answer.status, answer.model_version) == ("ok", 1)
            assert answer.label in ("legit", "fraud") and answer.feature_names == names
            assert set(answer.probabilities) == {"legit", "fraud"}
            assert answer.served_at >= answer.requested_at and answer.latency_ms > 0
            history = [
                PastRecord(x.record_id, x.event_time, {"amount": x.fields["amount"]})
                for x in records
            ]
            newest = {"merchant": "fuel", "hour": 12, "foreign": False}
            assert answer.values == featurize(spec, newest | fields, at, history)
            assert answer.values[names.index("payments_1h")] == 2.0
            assert answer.values[names.index("merchant=fuel")] == 1.0

            # The same fields on Kafka: the same vector, and the same answer.
            asked = PredictionRequested(
                project=name,
                request_id=f"k-{uuid.uuid4().hex[:12]}",
                fields=fields,
                requested_at=answer.requested_at,
            )
            await k.send(catalog.PREDICTIONS_REQUESTS, asked, key="c-7")
            (on_kafka,) = await k.collect(
                catalog.PREDICTIONS_RESPONSES.name,
                lambda a: a.request_id == asked.request_id,
                1,
                decode=catalog.PREDICTIONS_RESPONSES,
            )
            assert on_kafka.values == answer.values and on_kafka.feature_names == names
            assert (on_kafka.label, on_kafka.model_version) == (answer.label, 1)
            assert on_kafka.probabilities == answer.probabilities

            # The answer is on predictions.responses, keyed and identified as on Kafka, under
            # an id that is a function of the request: sent again, it is the same event.
            again = await api.post(f"/projects/{name}/predict", json=body)
            assert again.status_code == 200, again.text
            assert PredictionServed.model_validate_json(again.content).values == answer.values
            published = await k.collect(
                catalog.PREDICTIONS_RESPONSES.name,
                lambda m: request_id.encode() in m.value,
                2,
            )
            expected_id = derived_id(SERVED, name, request_id) + "/served"
            assert [headers_of(m)["ce_id"] for m in published] == [expected_id] * 2
            assert {m.key for m in published} == {request_id.encode()}
            assert published[0].value == r.content

            # Feedback joins a label to it, as to an answer to a Kafka request.
            label = {"project": name, "request_id": request_id, "label": "fraud"}
            assert (await feedback.post("/feedback", json=label)).status_code == 202

            async def joined() -> list:
                got = await feedback.get(f"/projects/{name}/predictions/{request_id}/labels")
                return got.json() if got.status_code == 200 else []

            (labelled,) = await until(joined, 30, "the label joined to the HTTP answer")
            assert labelled["correct"] == (answer.label == "fraud")

            # Without a request id, one is made.
            r = await api.post(f"/projects/{name}/predict", json={"fields": {"customer": "c-8"}})
            assert r.status_code == 200, r.text
            made = r.json()["request_id"]
            assert len(made) == 32 and int(made, 16) >= 0 and r.json()["entity_id"] == "c-8"

            # Refusals: the data contract's, with its reasons; a project no one knows; one
            # without a model; a time without a zone; no token; a role that may not submit.
            url = f"/projects/{name}/predict"
            for refused, reason in (
                ('{"customer":"c-7","amount":"12"}', "amount: '12' is not a number"),
                ('{"amount":1.0}', "customer: required"),
                ('{"customer":"c-7","colour":"red"}', "colour: not a field of project"),
                ('{"customer":"c-7","amount":NaN}', "amount: nan is not a finite number"),
                ('{"customer":"c-7","merchant":"' + "x" * 5000 + '"}', "over the limit of 4096"),
            ):
                r = await api.post(
                    url,
                    content='{"fields":' + refused + "}",
                    headers={"Content-Type": "application/json"},
                )
                assert r.status_code == 422, r.text
                assert reason in r.json()["detail"], r.json()
            r = await api.post("/projects/nope/predict", json={"fields": {"customer": "c-7"}})
            assert r.status_code == 404 and "unknown project 'nope'" in r.json()["detail"]
            r = await api.post(
                f"/projects/{idle.name}/predict", json={"fields": {"customer": "c-7"}}
            )
            assert r.status_code == 503 and "no model is loaded" in r.json()["detail"]
            assert r.headers["Retry-After"] == "2"
            naive = {"fields": {"customer": "c-7"}, "requested_at": "2026-03-01T12:00:00"}
            assert (await api.post(f"/projects/{name}/predict", json=naive)).status_code == 422
            anonymous = await api.post(url, json=body, headers={"Authorization": ""})
            assert anonymous.status_code == 401
            viewer = await api.post(url, json=body, headers=bearer("a-viewer"))
            assert viewer.status_code == 403
            # The feature service's own endpoint takes a token too.
            async with httpx.AsyncClient(base_url=feature_url) as direct:
                enrich = {"requests": [{"fields": {"customer": "c-7"}}]}
                r = await direct.post(f"/projects/{name}/enrich", json=enrich)
                assert r.status_code == 401
                r = await direct.post(
                    f"/projects/{name}/enrich", json=enrich, headers=bearer("an-app")
                )
                assert r.status_code == 200 and r.json()["results"][0]["status"] == "ok"

            # With the feature service down, serving says so and when to try again; nothing
            # is published for the request.
            await feature_service.stop()
            down = {"fields": {"customer": "c-7"}, "request_id": f"d-{uuid.uuid4().hex[:12]}"}
            r = await api.post(url, json=down)
            assert r.status_code == 503 and r.headers["Retry-After"] == "2"
            assert "the feature service cannot be reached" in r.json()["detail"]
            assert not [
                m
                for m in await k.snapshot(catalog.PREDICTIONS_RESPONSES.name)
                # (`or b""`: a tombstone, another test's hostile input on the shared topic)
                if down["request_id"].encode() in (m.value or b"")
            ]
