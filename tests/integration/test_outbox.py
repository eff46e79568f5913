"""The outbox relay after a crash in the middle of publishing: what reached the topic is not
published again, what did not is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from conveyor_bus import published_ids
from conveyor_contracts import catalog
from conveyor_contracts.events import TrainingRunFinished
from conveyor_db import Database, DatabaseSettings, OutboxRelay, enqueue_many
from tests.support import Kafka, headers_of

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


async def test_a_relay_that_died_mid_publish_sends_the_rest_and_nothing_twice(kafka, database_url):
    topic = catalog.TRAINER_RUNS
    project = f"outbox-{uuid.uuid4().hex[:8]}"
    db = Database(DatabaseSettings(database_url=database_url), "relaytest", None, outbox=True)
    await db.connect()
    try:
        events = [
            TrainingRunFinished(
                project=project,
                run_id=f"run-{i}",
                status="failed",
                trigger="test",
                reason=str(i),
                started_at=NOW,
                finished_at=NOW,
            )
            for i in range(5)
        ]
        async with db.pool.acquire() as con, con.transaction():
            await enqueue_many(con, topic, [(project, e) for e in events], source="test")
        rows = await db.pool.fetch("SELECT id, key, value, headers FROM outbox ORDER BY id")
        # The crash: the relay noted its batch, produced the first three, died before marking.
        await db.pool.execute(
            "INSERT INTO outbox_attempts (id) SELECT unnest($1::bigint[])", [r["id"] for r in rows]
        )
        async with Kafka(kafka.bootstrap_servers) as k:
            for r in rows[:3]:
                await k.producer.send_and_wait(
                    topic.name,
                    bytes(r["value"]),
                    key=r["key"].encode(),
                    headers=[(h, v.encode()) for h, v in r["headers"].items()],
                )
            sent: list[tuple[str, list]] = []

            async def publish(name: str, messages: list) -> None:
                sent.append((name, messages))
                for key, value, headers in messages:
                    await k.producer.send_and_wait(
                        name,
                        value,
                        key=key.encode(),
                        headers=[(h, v.encode()) for h, v in headers.items()],
                    )

            async def published(name: str, ids: set[str]) -> set[str]:
                return await published_ids(kafka.bootstrap_servers, name, ids)

            relay = OutboxRelay(db.pool, publish, published)
            assert await relay.drain_once() == 5
            assert [m[2]["ce_id"] for _, ms in sent for m in ms] == [
                r["headers"]["ce_id"] for r in rows[3:]
            ]
            assert (
                await db.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                == 0
            )
            assert await db.pool.fetchval("SELECT count(*) FROM outbox_attempts") == 0
            on_topic = await k.collect(topic.name, lambda r: project.encode() in r.value, 5)
            assert sorted(headers_of(r)["ce_id"] for r in on_topic) == sorted(
                r["headers"]["ce_id"] for r in rows
            )
            # A relay that never crashed publishes without looking at the topic.
            async with db.pool.acquire() as con, con.transaction():
                await enqueue_many(con, topic, [(project, events[0])], source="test")
            sent.clear()
            assert await relay.drain_once() == 1 and len(sent[0][1]) == 1
    finally:
        await db.close()
