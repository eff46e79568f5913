"""The feature store's guarantees on the real broker and Postgres: late records revise rows to
what an in-order stream gives, training sets are point in time (a value written just after a
label never leaks into it), online values report their status, state never moves back."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import RecordAccepted
from conveyor_feature.bootstrap import FeatureSettings, bootstrap
from tests.support import Kafka, running, unique_project, until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _record(project: str, rid: str, entity: str, seconds: float, amount: float, **extra):
    at = T0 + timedelta(seconds=seconds)
    fields = {
        "customer": entity,
        "ts": at.isoformat(),
        "amount": amount,
        "merchant": "fuel",
        "hour": 12,
        "foreign": False,
        "outcome": "legit",
    } | extra
    return RecordAccepted(
        project=project,
        project_version=1,
        record_id=rid,
        entity_id=entity,
        event_time=at,
        ingested_at=datetime.now(UTC),
        fields=fields,
    )


async def _rows(runtime, project: str) -> dict[str, list[float]]:
    rows = await runtime.db.pool.fetch(
        "SELECT record_id, values FROM rows WHERE project = $1", project
    )
    return {r["record_id"]: list(r["values"]) for r in rows}


async def test_out_of_order_records_give_the_rows_of_an_in_order_stream(kafka, database_url):
    ordered, shuffled = unique_project("ino"), unique_project("ooo")
    runtime = bootstrap(
        FeatureSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    rng = random.Random(5)
    plan = [  # (id, entity, seconds, amount): two entities, within the allowed lateness
        (f"r{i:02d}", f"c-{i % 2}", i * 97.0 + rng.random(), round(rng.uniform(5, 200), 2))
        for i in range(24)
    ]
    late_order = plan[:]
    rng.shuffle(late_order)
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        for spec in (ordered, shuffled):
            await k.apply(spec)
            await until(lambda s=spec: runtime.projects.get(s.name), what="the project")
        for rid, entity, seconds, amount in plan:
            await k.send(
                catalog.RECORDS_ACCEPTED,
                _record(ordered.name, rid, entity, seconds, amount),
                key=entity,
            )
        # One at a time, each its own batch, so every late record meets rows already written.
        for n, (rid, entity, seconds, amount) in enumerate(late_order, start=1):
            await k.send(
                catalog.RECORDS_ACCEPTED,
                _record(shuffled.name, rid, entity, seconds, amount),
                key=entity,
            )
            await until(
                lambda n=n: _count(api, shuffled.name, n), what=f"{n} rows of the shuffled stream"
            )
        await until(lambda: _count(api, ordered.name, len(plan)), what="the in-order rows")
        want, got = await _rows(runtime, ordered.name), await _rows(runtime, shuffled.name)
        assert got == want
        # Each revision of a row is one more announcement (a row can be revised more than once).
        revisions = await runtime.db.pool.fetchval(
            "SELECT sum(revision) FROM rows WHERE project = $1", shuffled.name
        )
        assert revisions > 0  # the shuffle made late records, and they revised rows
        states = await runtime.db.pool.fetch(
            "SELECT project, entity_id, record_id, fields FROM entity_state "
            "WHERE project = ANY($1::text[]) ORDER BY entity_id, project",
            [ordered.name, shuffled.name],
        )
        assert [s["record_id"] for s in states] == ["r22", "r22", "r23", "r23"]
        # The announcements carry every revision; the highest of each id equals the row.
        events = await k.collect(
            catalog.FEATURES_ROWS.name,
            lambda e: e.project == shuffled.name,
            len(plan) + revisions,
            decode=catalog.FEATURES_ROWS,
        )
        assert len({(e.record_id, e.revision) for e in events}) == len(events)  # each once
        newest = {}
        for e in sorted(events, key=lambda e: e.revision):
            newest[e.record_id] = e.values
        assert newest == want


async def _count(api, project: str, n: int) -> bool:
    return (await api.get(f"/projects/{project}/rows/count")).json()["count"] >= n


async def test_training_sets_are_point_in_time_and_online_values_have_a_status(kafka, database_url):
    spec = unique_project("pit").model_copy(update={"feature_ttl_s": 60.0})
    name = spec.name
    names = spec.feature_names()
    runtime = bootstrap(
        FeatureSettings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=database_url)
    )
    async with Kafka(kafka.bootstrap_servers) as k, running(runtime) as api:
        await k.apply(spec)
        await until(lambda: runtime.projects.get(name), what="the project")
        # The trap: a value that changes a millisecond after the label's moment (t = 100 s).
        await k.send(catalog.RECORDS_ACCEPTED, _record(name, "before", "c-1", 0, 10.0), key="c-1")
        await k.send(
            catalog.RECORDS_ACCEPTED, _record(name, "trap", "c-1", 100.001, 9999.0), key="c-1"
        )
        await until(lambda: _count(api, name, 2), what="two rows")
        labels = [
            {"entity_id": "c-1", "at": (T0 + timedelta(seconds=50)).isoformat(), "label": "fraud"},
            {"entity_id": "c-1", "at": (T0 + timedelta(seconds=100)).isoformat(), "label": "fraud"},
            {"entity_id": "c-1", "at": (T0 - timedelta(seconds=1)).isoformat(), "label": "legit"},
            {"entity_id": "c-1", "at": (T0 + timedelta(seconds=101)).isoformat(), "label": "x"},
        ]
        r = await api.post(f"/projects/{name}/training-set", json={"labels": labels})
        inside, expired, before, after = r.json()
        assert inside["status"] == "present" and inside["as_of"].startswith("2026-03-01T12:00:00")
        assert inside["values"][names.index("log_amount")] == pytest.approx(math.log1p(10.0))
        # 100 s after the only earlier row: past the 60 s TTL, and the trap is never used.
        assert expired["status"] == "expired" and expired["values"] is None
        assert before["status"] == "missing" and before["as_of"] is None
        assert after["status"] == "present"
        assert after["values"][names.index("log_amount")] == pytest.approx(math.log1p(9999.0))

        # An older record arriving late never replaces the entity's newer state.
        await k.send(catalog.RECORDS_ACCEPTED, _record(name, "older", "c-1", 50, 50.0), key="c-1")
        await until(lambda: _count(api, name, 3), what="three rows")
        state = await runtime.db.pool.fetchrow(
            "SELECT record_id, fields FROM entity_state WHERE project = $1", name
        )
        assert state["record_id"] == "trap" and state["fields"]["amount"] == 9999.0

        async def online(entity: str, seconds: float) -> dict:
            at = (T0 + timedelta(seconds=seconds)).isoformat()
            r = await api.get(f"/projects/{name}/entities/{entity}/features", params={"at": at})
            return {f["name"]: f for f in r.json()["features"]}

        fresh = await online("c-1", 130)
        assert fresh["log_amount"]["status"] == "present"
        assert fresh["log_amount"]["value"] == pytest.approx(math.log1p(9999.0))
        assert fresh["payments_1h"]["value"] == 3.0
        stale = await online("c-1", 100.001 + 61)
        assert stale["log_amount"]["status"] == "expired" and stale["log_amount"]["value"] == 0.0
        assert stale["since_last_s"]["status"] == "expired"
        unknown = await online("c-404", 130)
        assert {f["status"] for f in unknown.values()} == {"missing"}

        fresh = (await api.get(f"/projects/{name}/freshness")).json()
        newest = T0 + timedelta(seconds=100.001)
        assert datetime.fromisoformat(fresh["newest_event_time"]) == newest
        assert fresh["freshness_s"] == pytest.approx(
            (datetime.now(UTC) - newest).total_seconds(), abs=60
        )
