"""The transactional outbox: an event is written in the same transaction as the change it
announces, and a relay publishes it afterwards.

A crash between commit and publish loses nothing (the row waits in the table). Before producing
a batch the relay notes its rows in `outbox_attempts`, committed on its own; a relay that finds
noted rows still unpublished (its predecessor died between producing and marking them) first
reads the topic's tail and leaves out the events whose `ce_id` is there — so a crash publishes
nothing twice. (A broker that loses acknowledged records, or a tail deeper than the search,
would still let a repeat through; consumers stay idempotent on their natural ids.)

Several replicas of a service each run a relay on the same table: one drains at a time (a
transaction-scoped advisory lock per schema), so the events still reach their topics in the
order they were written. Relays that find the lock taken stand by and try again shortly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
from opentelemetry import metrics, propagate
from pydantic import BaseModel

from conveyor_contracts import TopicSpec, envelope_for

log = logging.getLogger(__name__)

_meter = metrics.get_meter("conveyor.outbox")
BACKLOG = _meter.create_gauge(
    "conveyor.outbox.backlog",
    unit="{event}",
    description="Events written to the outbox and not yet published (read every few seconds); "
    "every service but serving publishes through an outbox.",
)
OLDEST = _meter.create_gauge(
    "conveyor.outbox.oldest_age",
    unit="s",
    description="Age of the oldest unpublished outbox event (0 when none waits).",
)

# Publish (key, value, headers) messages to a topic, in order, and wait for every ack.
# Headers as a mapping of strings or as the client's own (name, bytes) pairs.
Publish = Callable[
    [str, Sequence[tuple[str | None, bytes, Mapping[str, str] | Sequence[Any]]]], Awaitable[None]
]
# Which of these event ids (`ce_id`) are on the topic already.
Published = Callable[[str, set[str]], Awaitable[set[str]]]

# The advisory lock a relay drains under: (this constant, hashtext of the service's schema).
RELAY_LOCK = 0x0C0B0C
# How often a relay standing by (another replica draining) asks for the lock again.
STANDBY_S = 0.5


async def enqueue(
    con: asyncpg.Connection,
    topic: TopicSpec,
    event: BaseModel,
    *,
    key: str | None,
    source: str,
    event_id: str | None = None,
) -> str:
    """Add an event to the outbox inside the caller's transaction; returns its id. The event
    carries the active trace context, if any: its consumers continue the trace that caused it."""
    envelope = envelope_for(topic, event, source=source, event_id=event_id)
    await con.execute(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4)",
        topic.name,
        key,
        event.model_dump_json().encode(),
        envelope.to_headers() | _trace_context(),
    )
    return envelope.id


async def enqueue_many(
    con: asyncpg.Connection,
    topic: TopicSpec,
    items: Sequence[tuple[str | None, BaseModel]],
    *,
    source: str,
    traces: Sequence[dict[str, str]] | None = None,
) -> None:
    """Add several events to the outbox in one round trip, inside the caller's transaction.
    Each carries its entry of `traces` (trace headers), else the active trace context."""
    rows = []
    current = _trace_context()
    for i, (key, event) in enumerate(items):
        envelope = envelope_for(topic, event, source=source)
        headers = envelope.to_headers() | (traces[i] if traces is not None else current)
        rows.append((key, event.model_dump_json().encode(), json.dumps(headers)))
    if not rows:
        return
    # One statement for the whole batch (ids in the given order), not one per event.
    keys, values, headers_json = zip(*rows, strict=True)
    await con.execute(
        "INSERT INTO outbox (topic, key, value, headers) SELECT $1, k, v, h::jsonb "
        "FROM unnest($2::text[], $3::bytea[], $4::text[]) WITH ORDINALITY AS x(k, v, h, i) "
        "ORDER BY i",
        topic.name,
        list(keys),
        list(values),
        list(headers_json),
    )


def _trace_context() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class OutboxRelay:
    """Drains the outbox in id order: publish a batch, wait for the acks, mark it published."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publish: Publish,
        published: Published | None = None,
        *,
        batch: int = 500,
        idle_s: float = 0.05,
        keep_published_s: float = 3600.0,
        service: str = "",
    ) -> None:
        self._pool = pool
        self._publish = publish
        self._published = published
        self._batch = batch
        self._idle_s = idle_s
        self._keep_s = keep_published_s
        self._task: asyncio.Task[None] | None = None
        self._attrs = {"service": service}
        self.published = 0
        self.standing_by = False  # another replica's relay held the lock at the last try

    async def drain_once(self) -> int:
        async with self._pool.acquire() as con, con.transaction():
            # Two relays draining side by side would each publish a batch, and the later rows
            # could reach the topic first: one at a time, in id order.
            self.standing_by = not await con.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))", RELAY_LOCK
            )
            if self.standing_by:
                return 0
            rows = await con.fetch(
                "SELECT o.id, o.topic, o.key, o.value, o.headers, a.id IS NOT NULL AS tried "
                "FROM outbox o LEFT JOIN outbox_attempts a ON a.id = o.id "
                "WHERE o.published_at IS NULL ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
                self._batch,
            )
            if not rows:
                return 0
            ids = [r["id"] for r in rows]
            rows = await self._not_yet_on_the_topic(rows)
            # Note the attempt where a crash cannot roll it back (its own transaction).
            await self._pool.execute(
                "INSERT INTO outbox_attempts (id) SELECT unnest($1::bigint[]) "
                "ON CONFLICT DO NOTHING",
                ids,
            )
            # One producer call per topic for the whole batch: handing the producer each
            # message from its own task costs several times the CPU when its buffer fills.
            by_topic: dict[str, list[tuple[str | None, bytes, dict[str, str]]]] = {}
            for r in rows:
                by_topic.setdefault(r["topic"], []).append(
                    (r["key"], bytes(r["value"]), dict(r["headers"]))
                )
            await asyncio.gather(*(self._publish(t, m) for t, m in by_topic.items()))
            await con.execute(
                "WITH done AS (DELETE FROM outbox_attempts WHERE id = ANY($1::bigint[])) "
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                ids,
            )
        self.published += len(rows)
        return len(ids)

    async def _not_yet_on_the_topic(self, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        """Rows an earlier attempt began to publish (`tried`: its relay died before marking them)
        may be on the topic already: those are left out, so a crash publishes nothing twice."""
        if self._published is None or not any(r["tried"] for r in rows):
            return rows
        wanted: dict[str, set[str]] = {}
        for r in rows:
            if r["tried"] and "ce_id" in r["headers"]:
                wanted.setdefault(r["topic"], set()).add(r["headers"]["ce_id"])
        already: set[str] = set()
        for topic, ce_ids in wanted.items():
            already |= await self._published(topic, ce_ids)
        if already:
            log.warning(
                "outbox: %d events were published before a restart; not again", len(already)
            )
        return [r for r in rows if r["headers"].get("ce_id") not in already]

    async def backlog(self) -> int:
        return int(
            await self._pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        )

    async def _measure(self) -> None:
        row = await self._pool.fetchrow(
            "SELECT count(*) AS waiting, coalesce(extract(epoch FROM now() - min(created_at)), 0) "
            "AS oldest FROM outbox WHERE published_at IS NULL"
        )
        BACKLOG.set(int(row["waiting"]), self._attrs)
        OLDEST.set(float(row["oldest"]), self._attrs)

    async def _run(self) -> None:
        last_cleanup = last_measure = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - last_measure > 5:
                    last_measure = loop.time()
                    await self._measure()
                if await self.drain_once() == 0:
                    await asyncio.sleep(STANDBY_S if self.standing_by else self._idle_s)
                if loop.time() - last_cleanup > 60:
                    last_cleanup = loop.time()
                    await self._pool.execute(
                        "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)",
                        self._keep_s,
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                await asyncio.sleep(1.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
