"""The outbox relay, and announcements by reference, after a crash in the middle of publishing:
what reached the topic is not published again, what did not is."""

from __future__ import annotations

import uuid

import pytest

from conveyor_bus import published_ids
from conveyor_contracts import catalog
from conveyor_db import Announcer, Database, DatabaseSettings, Message, OutboxRelay, enqueue_many
from tests.support import Kafka, headers_of, run_finished

pytestmark = pytest.mark.integration


async def test_a_relay_that_died_mid_publish_sends_the_rest_and_nothing_twice(kafka, database_url):
    topic = catalog.TRAINER_RUNS
    project = f"outbox-{uuid.uuid4().hex[:8]}"
    db = Database(DatabaseSettings(database_url=database_url), "relaytest", None, outbox=True)
    await db.connect()
    try:
        events = [run_finished(project, i) for i in range(5)]
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


# --- announcements by reference (conveyor_db.announce) -------------------------------------------


async def test_announcements_owed_by_a_dead_process_are_swept_once_and_a_live_owner_skips_them(
    kafka, database_url
):
    """Rows stored with their announcement owed: the owner publishes and clears its note; a note
    left by a process that died mid-publish is swept after the grace period — what reached the
    topic is left out, the rest published — and an owner whose note a sweep took publishes
    nothing."""
    name = f"announce-{uuid.uuid4().hex[:8]}"
    db = Database(DatabaseSettings(database_url=database_url), "announcetest", None)
    await db.connect()
    await db.pool.execute(
        "CREATE TABLE announcements (id bigserial PRIMARY KEY, topic text NOT NULL, "
        "keys text[] NOT NULL, scope text NOT NULL DEFAULT '', "
        "created_at timestamptz NOT NULL DEFAULT now());"
        "CREATE TABLE stored (key text PRIMARY KEY)"
    )

    def message(key: str) -> Message:
        value = f'{{"name":"{name}","key":"{key}"}}'.encode()
        return (key, value, [("ce_id", f"{name}-{key}".encode())])

    async def rebuild(con, keys: list[tuple[str, str]]) -> list[Message]:
        assert {scope for scope, _ in keys} == {""}
        rows = await con.fetch(
            "SELECT key FROM stored WHERE key = ANY($1) ORDER BY key", [k for _, k in keys]
        )
        return [message(r["key"]) for r in rows]

    async def store(keys: list[str]) -> int:
        async with db.pool.acquire() as con, con.transaction():
            await con.executemany("INSERT INTO stored VALUES ($1)", [(k,) for k in keys])
            return await announcer.note(con, keys)

    async def age(seconds: float) -> None:
        await db.pool.execute(
            "UPDATE announcements SET created_at = created_at - make_interval(secs => $1)", seconds
        )

    try:
        async with Kafka(kafka.bootstrap_servers) as k:
            sent: list[str] = []

            async def publish(topic: str, messages: list) -> None:
                for key, value, headers in messages:
                    sent.append(key)
                    await k.producer.send_and_wait(topic, value, key=key.encode(), headers=headers)

            async def published(topic: str, ids: set[str]) -> set[str]:
                return await published_ids(kafka.bootstrap_servers, topic, ids)

            announcer = Announcer(db, name, publish, published, rebuild, grace_s=60)
            # The owner's way: stored, announced after the commit, note cleared.
            await announcer.announce(await store(["a1", "a2"]), [message("a1"), message("a2")])
            await announcer.stop()
            assert sent == ["a1", "a2"] and announcer.published == 2
            assert await db.pool.fetchval("SELECT count(*) FROM announcements") == 0

            # A process died after its commit, having produced the first of its three events.
            await store(["b1", "b2", "b3"])
            await publish(name, [message("b1")])
            sent.clear()
            assert await announcer.sweep() == 0  # within the grace period: its owner may live
            await age(61)  # past the grace period
            assert await announcer.sweep() == 2
            assert sent == ["b2", "b3"]

            # A sweep takes over an owner's note (say the owner fell behind): the owner, when it
            # gets there, finds the note gone and publishes nothing.
            note = await store(["c1"])
            await age(61)
            assert await announcer.sweep() == 1
            sent.clear()
            await announcer.announce(note, [message("c1")])
            await announcer.stop()
            assert sent == [] and await announcer.backlog() == 0

            on_topic = await k.collect(name, lambda r: name.encode() in r.value, 6)
            assert sorted(r.key.decode() for r in on_topic) == ["a1", "a2", "b1", "b2", "b3", "c1"]
    finally:
        await db.close()
