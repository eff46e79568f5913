"""Ingest on the real broker and Postgres: Kafka and HTTP paths, dead letters, duplicates."""

from __future__ import annotations

import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import RecordAccepted, RecordSubmitted
from conveyor_ingest.bootstrap import IngestSettings, bootstrap
from tests.support import Kafka, headers_of, running, unique_project, until

pytestmark = pytest.mark.integration

GOOD = {
    "customer": "c-1",
    "ts": "2026-01-01T10:00:00+00:00",
    "amount": 12.5,
    "merchant": "fuel",
    "hour": 9,
    "foreign": False,
    "outcome": "legit",
}


async def test_records_over_kafka_and_http(kafka, database_url):
    spec = unique_project("ing")
    name = spec.name
    runtime = bootstrap(
        IngestSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project to be known")
        first = RecordSubmitted(project=name, record_id="r-1", fields=GOOD)
        await k.send(catalog.RECORDS_SUBMITTED, first, key="c-1")
        await k.send(catalog.RECORDS_SUBMITTED, first, key="c-1")  # a duplicate
        await k.send(
            catalog.RECORDS_SUBMITTED,
            RecordSubmitted(
                project=name, record_id="r-bad", fields=GOOD | {"amount": -5, "merchant": "casino"}
            ),
            key="c-1",
        )
        await k.send(
            catalog.RECORDS_SUBMITTED,
            RecordSubmitted(project="no-such-project", fields=GOOD),
            key="c-1",
        )
        await k.send_raw(catalog.RECORDS_SUBMITTED.name, b'{"project": ', key="c-9")
        await k.send(
            catalog.RECORDS_SUBMITTED,
            RecordSubmitted(project=name, record_id="r-2", fields=GOOD | {"customer": "c-2"}),
            key="c-2",
        )

        r = await api.post(f"/projects/{name}/records", json={"fields": GOOD | {"amount": 7.0}})
        assert r.status_code == 201 and len(r.json()["accepted"]) == 1
        again = await api.post(f"/projects/{name}/records", json={"fields": GOOD | {"amount": 7.0}})
        assert again.json() == {"accepted": [], "duplicates": 1}
        r = await api.post(
            f"/projects/{name}/records/batch",
            json={
                "records": [
                    {"fields": GOOD | {"amount": 8.0}},
                    {"fields": GOOD | {"hour": 30}},
                    {"fields": GOOD | {"foreign": "yes", "merchant": "casino"}},
                ]
            },
        )
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "2 of 3 records" in detail["message"] and "none of the batch" in detail["message"]
        assert detail["errors"][0] == {"index": 1, "problems": ["hour: 30 is above the maximum 23"]}
        assert len(detail["errors"][1]["problems"]) == 2
        r = await api.post("/projects/nope/records", json={"fields": GOOD})
        assert r.status_code == 404 and "unknown project 'nope'" in r.text
        r = await api.post(
            f"/projects/{name}/records",
            content=b"{oops",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422

        accepted = await k.collect(
            catalog.RECORDS_ACCEPTED.name,
            lambda e: e.project == name,
            3,
            decode=catalog.RECORDS_ACCEPTED,
        )
        assert sorted(e.record_id for e in accepted if e.record_id.startswith("r-")) == [
            "r-1",
            "r-2",
        ]
        assert all(isinstance(e, RecordAccepted) and e.project_version == 1 for e in accepted)
        dead = await k.collect(
            catalog.RECORDS_SUBMITTED.dlq, lambda r: r.key in (b"c-1", b"c-9"), 3
        )
        reasons = [headers_of(d)["dlq_error"] for d in dead]
        assert any(
            "amount: -5 is below the minimum 0" in x and "merchant: 'casino'" in x for x in reasons
        )
        assert any("unknown project 'no-such-project'" in x for x in reasons)
        assert any(
            headers_of(d)["dlq_stage"] == "decode" and d.value == b'{"project": ' for d in dead
        )
        stats = (await api.get(f"/projects/{name}/records/stats")).json()
        assert stats["accepted"] == 3 and stats["duplicates"] == 2
        # Nothing more than one event per stored record, even after the duplicates.
        await until(lambda: runtime.relay is not None and runtime.relay.published >= 3)
        rows = await runtime.db.pool.fetchval("SELECT count(*) FROM outbox WHERE key IS NOT NULL")
        assert rows == 3
