"""A service that starts with work already waiting first catches up with registry.events, so it
judges that work by the projects the changelog declares: nothing valid is dead-lettered as
"unknown project" because the records consumer happened to run before the changelog consumer."""

from __future__ import annotations

import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import RecordSubmitted
from conveyor_ingest.bootstrap import IngestSettings, bootstrap
from tests.support import Kafka, running, unique_project, until

pytestmark = pytest.mark.integration

FIELDS = {
    "ts": "2026-01-01T10:00:00+00:00",
    "amount": 12.5,
    "merchant": "fuel",
    "hour": 9,
    "foreign": False,
}


async def test_work_waiting_at_start_is_judged_after_the_changelog(kafka, database_url):
    spec = unique_project("cl")
    name = spec.name
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        for i in range(50):
            record = RecordSubmitted(
                project=name, record_id=f"{name}-{i}", fields=FIELDS | {"customer": f"c-{i}"}
            )
            await k.send(catalog.RECORDS_SUBMITTED, record, key=f"c-{i}")
        runtime = bootstrap(
            IngestSettings(
                kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url
            )
        )
        async with running(runtime) as api:
            await until(runtime.caught_up.is_set, 30, "the changelog read to its end")
            assert (await api.get("/healthz")).json()["status"] == "ok"
            await until(
                lambda: _accepted(api, name, 50), 30, "all 50 waiting records to be accepted"
            )
        dead = await k.snapshot(catalog.RECORDS_SUBMITTED.dlq)
        assert not [d for d in dead if name.encode() in d.value]


async def _accepted(api, name: str, n: int) -> bool:
    return (await api.get(f"/projects/{name}/records/stats")).json().get("accepted", 0) >= n
