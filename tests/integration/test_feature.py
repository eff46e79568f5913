"""The feature service on the real broker and Postgres: rows once per record, enrichment equal
to featurize() over the entity's earlier records."""

from __future__ import annotations

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
        enriched = [catalog.PREDICTIONS_ENRICHED.adapter.validate_json(raw[0].value)]
        history = [
            PastRecord(r.record_id, r.event_time, {"amount": r.fields["amount"]}) for r in records
        ]
        assert enriched[0].values == featurize(spec, request.fields, at, history)
        assert enriched[0].values[names.index("payments_1h")] == 3.0
        assert enriched[0].values[names.index("amount_mean_1h")] == 20.0
        dead = await k.collect(
            catalog.PREDICTIONS_REQUESTS.dlq,
            lambda r: (
                headers_of(r).get("ce_id")
                and b"amount" in r.value
                and request.request_id.encode() not in r.value
            ),
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
