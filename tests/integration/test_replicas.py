"""Several replicas of a service on one database: their outbox relays still publish every event
once and in the order it was written, and a trainer replica that starts (or looks for runs left
behind) fails only the runs of processes that are gone, never those of a live replica."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import pytest

from conveyor_contracts import catalog
from conveyor_db import Database, DatabaseSettings, OutboxRelay, enqueue_many, package_migrations
from conveyor_feedback.bootstrap import FeedbackSettings
from conveyor_feedback.bootstrap import bootstrap as feedback
from conveyor_runtime import Runtime
from conveyor_trainer.adapters.repository import Repository
from tests.support import run_finished, running, until

pytestmark = pytest.mark.integration


async def test_two_relays_on_one_outbox_publish_every_event_once_in_order(database_url):
    settings = DatabaseSettings(database_url=database_url)
    # Two processes of one service: a pool each, one table.
    first = Database(settings, "replicated", None, outbox=True)
    second = Database(settings, "replicated", None, outbox=True)
    await first.connect()
    await second.connect()
    published: list[str] = []
    stood_by: list[int] = []
    jitter = random.Random(7)

    async def publish(topic: str, messages: list) -> None:
        # A broker's acknowledgement takes a moment, never quite the same.
        await asyncio.sleep(jitter.uniform(0.001, 0.01))
        published.extend(headers["ce_id"] for _, _, headers in messages)

    relays = [OutboxRelay(db.pool, publish, batch=20, idle_s=0.01) for db in (first, second)]
    try:
        project = f"replicas-{uuid.uuid4().hex[:8]}"
        for start in range(0, 300, 50):  # written over time, as a service writes them
            async with first.pool.acquire() as con, con.transaction():
                await enqueue_many(
                    con,
                    catalog.TRAINER_RUNS,
                    [
                        (f"{project}-{i % 5}", run_finished(project, i))
                        for i in range(start, start + 50)
                    ],
                    source="test",
                )
            if start == 0:
                for relay in relays:
                    relay.start()

        async def drained() -> bool:
            stood_by.extend(i for i, r in enumerate(relays) if r.standing_by)
            return len(published) >= 300 and not await first.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )

        await until(drained, 60, "every event published")
    finally:
        for relay in relays:
            await relay.stop()
        await first.close()
        await second.close()
    written = [
        r["headers"]["ce_id"]
        for r in await _rows(database_url, "SELECT headers FROM replicated.outbox ORDER BY id")
    ]
    assert published == written  # each once, in the order written
    assert stood_by, "the two relays never met: the test proves nothing"


async def _rows(database_url: str, query: str) -> list:
    db = Database(DatabaseSettings(database_url=database_url), "replicated", None)
    await db.connect()
    try:
        return list(await db.pool.fetch(query))
    finally:
        await db.close()


async def test_a_trainer_replica_fails_only_the_runs_of_processes_that_are_gone(database_url):
    settings = DatabaseSettings(database_url=database_url)
    dbs = [Database(settings, "trainer", package_migrations("conveyor_trainer")) for _ in range(2)]
    for db in dbs:
        await db.connect()
    live, other = Repository(dbs[0]), Repository(dbs[1])
    try:
        await live.hold_alive()
        await live.open_run("run-live", "p-live", "request", {})
        await other.hold_alive()  # a second replica starts, and looks for abandoned runs
        assert await other.abandon_interrupted() == []
        assert (await other.run("run-live"))["status"] == "running"

        gone = Repository(dbs[1])  # a process that opened a run and died
        await gone.hold_alive()
        await gone.open_run("run-gone", "p-gone", "request", {})
        await gone.release_alive()
        assert await other.abandon_interrupted() == [("p-gone", None)]
        assert (await other.run("run-gone"))["status"] == "failed"
        assert (await other.run("run-live"))["status"] == "running"

        await live.release_alive()  # the first replica is gone too
        assert await other.abandon_interrupted() == [("p-live", None)]
    finally:
        for repo in (live, other):
            await repo.release_alive()
        for db in dbs:
            await db.close()


async def test_two_replicas_of_a_service_are_ready_once_their_group_shares_the_partitions(
    kafka, database_url
):
    def replica() -> Runtime:
        return feedback(
            FeedbackSettings(
                kafka_bootstrap_servers=kafka.bootstrap_servers,
                database_url=database_url,
                http_port=0,
            )
        )

    async def ready(api: httpx.AsyncClient) -> dict | None:
        answer = await api.get("/readyz")
        return answer.json() if answer.status_code == 200 else None

    async with running(replica()) as first, running(replica()) as second:
        bodies = [await until(lambda a=api: ready(a), 60, "ready") for api in (first, second)]

        async def shared() -> bool:
            nonlocal bodies
            bodies = [(await api.get("/readyz")).json() for api in (first, second)]
            return all(
                sorted((b["assigned"][consumer] or []) + (c["assigned"][consumer] or []))
                == list(range(topic.partitions))
                for b, c in [bodies]
                for consumer, topic in CONSUMED.items()
            )

        await until(shared, 60, "the two replicas sharing every partition once")
    for body in bodies:
        assert body["ready"] and body["problems"] == []
        assert set(body["assigned"]) == set(CONSUMED)


# What the feedback service reads as a group, as /readyz names its consumers.
CONSUMED = {
    f"feedback:{t.name}": t for t in (catalog.PREDICTIONS_RESPONSES, catalog.FEEDBACK_SUBMITTED)
}
