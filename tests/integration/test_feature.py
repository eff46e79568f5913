"""The feature service on the real broker and Postgres: rows once per record, enrichment equal
to featurize() over the entity's earlier records."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import PredictionRequested, RecordAccepted
from conveyor_feature.bootstrap import FeatureSettings, bootstrap
from conveyor_feature.domain.features import PastRecord, featurize
from tests.support import Kafka, headers_of, running, unique_project, until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _record(project: str, rid: str, minutes: int, amount: float, label: str | None = "legit"):
    fields = {
        "customer": "c-7",
        "ts": (T0 + timedelta(minutes=minutes)).isoformat(),
        "amount": amount,
        "merchant": "fuel",
        "hour": 12,
        "foreign": False,
    }
    if label:
        fields["outcome"] = label
    return RecordAccepted(
        project=project,
        project_version=1,
        record_id=rid,
        entity_id="c-7",
        event_time=T0 + timedelta(minutes=minutes),
        ingested_at=datetime.now(UTC),
        fields=fields,
    )


async def test_rows_and_enrichment(kafka, database_url):
    spec = unique_project("feat")
    name = spec.name
    runtime = bootstrap(
        FeatureSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project")
        records = [
            _record(name, "a", 0, 10.0),
            _record(name, "c", 20, 30.0),
            _record(name, "b", 10, 20.0, label=None),
        ]
        for r in [*records, records[0]]:  # out of order, and one redelivered
            await k.send(catalog.RECORDS_ACCEPTED, r, key="c-7")
        rows = await k.collect(
            catalog.FEATURES_ROWS.name, lambda e: e.project == name, 3, decode=catalog.FEATURES_ROWS
        )
        by_id = {r.record_id: r for r in rows}
        assert sorted(by_id) == ["a", "b", "c"]
        assert by_id["b"].label is None and by_id["a"].label == "legit"
        names = spec.feature_names()
        assert by_id["a"].values[names.index("payments_1h")] == 0.0
        assert (await api.get(f"/projects/{name}/rows/count")).json() == {"count": 3}

        at = T0 + timedelta(minutes=25)
        request = PredictionRequested(
            project=name,
            fields={
                "customer": "c-7",
                "ts": at.isoformat(),
                "amount": 99.0,
                "merchant": "online",
                "hour": 1,
                "foreign": True,
            },
        )
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        await k.send(
            catalog.PREDICTIONS_REQUESTS,
            request,
            key="c-7",
            traceparent=trace,
            ce_deadline="2030-01-01T00:00:00+00:00",
            ce_replyto="my-replies",
            ce_id=f"{request.request_id}-sent",
        )
        bad = PredictionRequested(project=name, fields={"amount": 1.0})
        await k.send(catalog.PREDICTIONS_REQUESTS, bad, key="x")
        raw = await k.collect(
            catalog.PREDICTIONS_ENRICHED.name, lambda r: request.request_id.encode() in r.value, 1
        )
        # The request's trace, deadline and reply-to travel on to serving.
        forwarded = headers_of(raw[0])
        assert forwarded["traceparent"] == trace
        assert forwarded["ce_deadline"] == "2030-01-01T00:00:00+00:00"
        assert forwarded["ce_replyto"] == "my-replies"
        # Its id is the request's, derived: enriched again after a crash, it is the same event,
        # and so is serving's answer to it.
        assert forwarded["ce_id"] == f"{request.request_id}-sent/enriched"
        enriched = [catalog.PREDICTIONS_ENRICHED.adapter.validate_json(raw[0].value)]
        history = [
            PastRecord(r.record_id, r.event_time, {"amount": r.fields["amount"]}) for r in records
        ]
        assert enriched[0].values == featurize(spec, request.fields, at, history)
        assert enriched[0].values[names.index("payments_1h")] == 3.0
        assert enriched[0].values[names.index("amount_mean_1h")] == 20.0
        dead = await k.collect(
            catalog.PREDICTIONS_REQUESTS.dlq,
            lambda r: bad.request_id.encode() in r.value,
            1,
        )
        assert "customer: required" in headers_of(dead[0])["dlq_error"]

        online = (
            await api.get(f"/projects/{name}/entities/c-7/features", params={"at": at.isoformat()})
        ).json()
        assert online["values"][names.index("payments_1h")] == 3.0
        ts = (
            await api.post(
                f"/projects/{name}/training-set",
                json={
                    "labels": [
                        {
                            "entity_id": "c-7",
                            "at": (T0 + timedelta(minutes=15)).isoformat(),
                            "label": "fraud",
                        }
                    ]
                },
            )
        ).json()
        # Point in time: the newest row at or before minute 15 is b's (minute 10), which saw a.
        assert ts[0]["status"] == "present" and ts[0]["as_of"] == (
            T0 + timedelta(minutes=10)
        ).isoformat().replace("+00:00", "Z")
        assert ts[0]["values"][names.index("payments_1h")] == 1.0
        assert ts[0]["values"][names.index("amount_mean_1h")] == 10.0
        # b came after c but within the allowed lateness: c's row was revised to what an
        # in-order stream gives (a and b before it).
        c = await runtime.db.pool.fetchrow(
            "SELECT values, revision FROM rows WHERE project = $1 AND record_id = 'c'", name
        )
        assert c["values"][names.index("payments_1h")] == 2.0
        assert c["values"][names.index("amount_mean_1h")] == 15.0


def _request_json(project: str, request_id: str, fields: str) -> bytes:
    """A PredictionRequested written by hand: its fields as JSON text an application may send."""
    return (
        f'{{"request_id":"{request_id}","project":"{project}","fields":{fields},'
        '"requested_at":"2026-03-01T12:30:00+00:00"}'
    ).encode()


async def test_poison_requests_are_refused_with_an_answer_and_the_requests_after_them_enriched(
    kafka, database_url
):
    """Requests are checked against the data contract as records are: each of these reached
    featurization or Postgres unchecked (a NUL in the entity id, an integer beyond a float), or
    got an `ok` answer made of defaults (a wrong type). Each is dead-lettered once with the
    reason, and its application gets an error answer for its request id."""
    spec = unique_project("feat")
    name = spec.name
    runtime = bootstrap(
        FeatureSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    at = '"ts":"2026-03-01T12:25:00+00:00"'
    poison = {
        "q-nul": ('{"customer":"c-7\\u0000",' + at + "}", "customer: contains a NUL character"),
        "q-int": (
            '{"customer":"c-7","amount":1' + "0" * 400 + "," + at + "}",
            "amount: an integer of about 401 digits is beyond the limit",
        ),
        "q-type": ('{"customer":"c-7","amount":"12",' + at + "}", "amount: '12' is not a number"),
        "q-nan": ('{"customer":"c-7","amount":NaN}', "amount: nan is not a finite number"),
        "q-ts": ('{"customer":"c-7","ts":1e30}', "ts: 1e+30 epoch seconds is not a time"),
        "q-extra": ('{"customer":"c-7","colour":"red"}', "colour: not a field of project"),
        "q-none": ('{"amount":1.0}', "customer: required"),
        "q-key": ('{"customer":"c-' + "7" * 16_384 + '"}', "does not match"),
    }
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime):
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project")
        for r in (_record(name, "a", 0, 10.0), _record(name, "b", 10, 20.0)):
            await k.send(catalog.RECORDS_ACCEPTED, r, key="c-7")
        await k.collect(
            catalog.FEATURES_ROWS.name, lambda e: e.project == name, 2, decode=catalog.FEATURES_ROWS
        )
        envelope = PredictionRequested(project=name, fields={})
        for request_id, (fields, _) in poison.items():
            await k.send_json(
                catalog.PREDICTIONS_REQUESTS,
                envelope,
                _request_json(name, request_id, fields),
                "c-7",
            )
        good = PredictionRequested(
            project=name,
            request_id="q-good",
            # the label is ignored, the other fields come from the online state
            fields={"customer": "c-7", "ts": (T0 + timedelta(minutes=25)).isoformat()}
            | {"outcome": "fraud"},
        )
        await k.send(catalog.PREDICTIONS_REQUESTS, good, key="c-7")

        enriched = await k.collect(
            catalog.PREDICTIONS_ENRICHED.name,
            lambda e: e.project == name,
            1,
            decode=catalog.PREDICTIONS_ENRICHED,
        )
        assert enriched[0].request_id == "q-good" and enriched[0].entity_id == "c-7"
        names = spec.feature_names()
        assert enriched[0].values[names.index("payments_1h")] == 2.0
        # the plain fields left out came from the entity's newest record (b: 20.0)
        assert enriched[0].values[names.index("log_amount")] == pytest.approx(math.log1p(20.0))

        dead = await k.collect(
            catalog.PREDICTIONS_REQUESTS.dlq, lambda r: name.encode() in r.value, len(poison)
        )
        reasons = {
            next(q for q in poison if f'"{q}"'.encode() in d.value): headers_of(d) for d in dead
        }
        assert sorted(reasons) == sorted(poison)
        for request_id, (_, expected) in poison.items():
            assert expected in reasons[request_id]["dlq_error"], request_id
            assert reasons[request_id]["dlq_stage"] == "validate"

        answers = await k.collect(
            catalog.PREDICTIONS_RESPONSES.name,
            lambda e: e.project == name,
            len(poison),
            decode=catalog.PREDICTIONS_RESPONSES,
        )
        by_id = {a.request_id: a for a in answers}
        assert sorted(by_id) == sorted(poison)
        for request_id, (_, expected) in poison.items():
            answer = by_id[request_id]
            assert answer.status == "error" and expected in (answer.error or ""), answer
            assert "\x00" not in answer.entity_id
        assert by_id["q-type"].entity_id == "c-7" and by_id["q-nul"].entity_id == ""
        # Dead-lettered once: nothing more comes in a second
        with pytest.raises(AssertionError, match=f"found {len(poison)} of {len(poison) + 1}"):
            await k.collect(
                catalog.PREDICTIONS_REQUESTS.dlq,
                lambda r: name.encode() in r.value,
                len(poison) + 1,
                timeout_s=1.5,
            )
