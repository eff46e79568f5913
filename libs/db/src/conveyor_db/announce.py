"""Announcements by reference: the cheap outbox for a stream of events that restate stored rows.

The outbox (outbox.py) copies every event into a table and marks it published afterwards — two
writes of each event beside the row it announces, and a read back. For a high-volume stream whose
events are the stored rows themselves (ingest's `records.accepted`), that is most of the work.
Here the transaction that stores a batch of rows adds one row to `announcements` naming their
keys, unique within the note's scope (ingest's: record ids within a project); after the
commit the service publishes the events it still holds in memory and deletes that row:

- the owner publishes a note under its row lock (`FOR UPDATE SKIP LOCKED`) and deletes it in the
  same transaction, so no one else publishes it meanwhile, and a crash leaves it in place;
- notes are published in order by one task, at most `depth` waiting: the service stores the next
  batch while the previous one is being acknowledged;
- a note older than `grace_s` that no one holds was left by a process that died (or one far
  behind): `sweep` rebuilds its events from the stored rows, leaves out those already on the
  topic — an event's id is derived from its row's key, so a rebuilt event has the id of the one
  that may have gone out — publishes the rest and deletes the note.

So a crash at any point loses no announcement and repeats none (within the topic tail the sweep
searches, as for the outbox relay). The table, in the service's schema:

    CREATE TABLE announcements (
        id bigserial PRIMARY KEY, topic text NOT NULL, keys text[] NOT NULL,
        scope text NOT NULL DEFAULT '', created_at timestamptz NOT NULL DEFAULT now());
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from opentelemetry import metrics

from .database import Database
from .outbox import Publish, Published

log = logging.getLogger(__name__)

PENDING = metrics.get_meter("conveyor.announce").create_gauge(
    "conveyor.announce.backlog",
    unit="{event}",
    description="Stored rows not yet announced, by topic (read every few seconds).",
)

# (key, value, headers), the headers as the client sends them: (name, bytes) pairs, so a batch's
# shared headers are encoded once, not once a message.
Message = tuple[str | None, bytes, list[tuple[str, bytes]]]
# The events of stored rows, by their (scope, key) pairs, as they were first announced (same
# `ce_id`s).
Rebuild = Callable[[asyncpg.Connection, list[tuple[str, str]]], Awaitable[list[Message]]]


class Announcer:
    def __init__(
        self,
        db: Database,
        topic: str,
        publish: Publish,
        published: Published,
        rebuild: Rebuild,
        *,
        depth: int = 2,
        grace_s: float = 5.0,
    ) -> None:
        self.topic = topic
        self._db = db
        self._publish = publish
        self._published = published
        self._rebuild = rebuild
        self._grace_s = grace_s
        self._queue: asyncio.Queue[tuple[int, list[Message]]] = asyncio.Queue(depth)
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.swept = 0

    async def note(self, con: asyncpg.Connection, keys: Sequence[str], scope: str = "") -> int:
        """Inside the transaction that stores the rows of `keys` (unique within `scope`: the
        same key may name rows of two scopes): their announcement is owed."""
        return int(
            await con.fetchval(
                "INSERT INTO announcements (topic, keys, scope) VALUES ($1, $2, $3) RETURNING id",
                self.topic,
                list(keys),
                scope,
            )
        )

    async def announce(self, note: int, messages: list[Message]) -> None:
        """After the commit: publish a note's events, in order after those announced before;
        waits while `depth` notes wait."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"announce-{self.topic}")
        await self._queue.put((note, messages))

    async def _run(self) -> None:
        while True:
            note, messages = await self._queue.get()
            try:
                await self._announce(note, messages)
            except Exception:
                log.exception(
                    "announcing %d events failed; the sweep takes them over", len(messages)
                )
            finally:
                self._queue.task_done()

    async def _announce(self, note: int, messages: list[Message]) -> None:
        async with self._db.pool.acquire() as con, con.transaction():
            mine = await con.fetchval(
                "SELECT id FROM announcements WHERE id = $1 FOR UPDATE SKIP LOCKED", note
            )
            if mine is None:
                return  # a sweep took it over
            await self._publish(self.topic, messages)
            await con.execute("DELETE FROM announcements WHERE id = $1", note)
        self.published += len(messages)

    async def sweep(self, limit: int = 20) -> int:
        """Announce what notes older than `grace_s` owe (nobody holds them); returns how many
        events went out."""
        async with self._db.pool.acquire() as con, con.transaction():
            notes = await con.fetch(
                "SELECT id, scope, keys FROM announcements WHERE topic = $1 "
                "AND created_at < now() - make_interval(secs => $2) "
                "ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
                self.topic,
                self._grace_s,
                limit,
            )
            if not notes:
                return 0
            messages = await self._rebuild(con, [(n["scope"], k) for n in notes for k in n["keys"]])
            ids = [_ce_id(m[2]) for m in messages]
            already = await self._published(self.topic, {i for i in ids if i is not None})
            messages = [m for m, i in zip(messages, ids, strict=True) if i not in already]
            await self._publish(self.topic, messages)
            await con.execute(
                "DELETE FROM announcements WHERE id = ANY($1::bigint[])", [n["id"] for n in notes]
            )
        log.warning(
            "announced %d events that a stopped process owed (%d were out already)",
            len(messages),
            len(already),
        )
        sent = len(messages)
        self.swept += sent
        return sent

    async def backlog(self) -> int:
        """Rows stored and not yet announced."""
        waiting = await self._db.pool.fetchval(
            "SELECT coalesce(sum(cardinality(keys)), 0) FROM announcements WHERE topic = $1",
            self.topic,
        )
        PENDING.set(int(waiting), {"topic": self.topic})
        return int(waiting)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Publish what waits (what does not go out in `timeout_s` is left to a later sweep)."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.warning("announcements left to the next sweep: %d notes", self._queue.qsize())
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None


def _ce_id(headers: list[tuple[str, bytes]]) -> str | None:
    return next((v.decode() for k, v in headers if k == "ce_id"), None)
