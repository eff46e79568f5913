"""Episodes to the project's webhooks, at least once.

An episode opened or closed is written to `notifications` (one row per URL) in the transaction
that opens or closes it, and delivered from there: POSTed as JSON with an `Idempotency-Key`
(the episode id and the event) until the receiver answers 2xx, with backoff between attempts,
in order per receiver (an episode's close never arrives before its opening).
A monitor that crashes before delivering posts after its restart; a receiver that was down gets
the episode when it is back (within `MAX_ATTEMPTS`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
import httpx
from opentelemetry import metrics

from conveyor_contracts.events import DriftDetected, DriftResolved
from conveyor_db import Database

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BACKOFF_S = 1.0  # doubles per attempt, capped at MAX_BACKOFF_S
MAX_BACKOFF_S = 300.0
BATCH = 50

NOTIFICATIONS = metrics.get_meter("conveyor.monitor").create_counter(
    "conveyor.notifications",
    unit="{notification}",
    description="Webhook deliveries of drift episodes, by outcome (delivered, retry, failed).",
)


async def notify(
    con: asyncpg.Connection, urls: Sequence[str], event: DriftDetected | DriftResolved
) -> None:
    """Queue `event` for every URL, in the caller's transaction."""
    if urls:
        payload = event.model_dump(mode="json")
        await con.executemany(
            "INSERT INTO notifications (episode_id, event, url, payload) VALUES ($1,$2,$3,$4) "
            "ON CONFLICT DO NOTHING",
            [(event.episode_id, event.type, url, payload) for url in urls],
        )


class Notifier:
    def __init__(self, db: Database, *, timeout_s: float = 5.0) -> None:
        self.db = db
        self.client = httpx.AsyncClient(timeout=timeout_s)

    async def deliver(self) -> int:
        """Post every notification that is due; returns how many were delivered."""
        due = await self.db.pool.fetch(
            "SELECT id, episode_id, event, url, payload, attempts FROM notifications n "
            "WHERE delivered_at IS NULL AND failed_at IS NULL AND NOT EXISTS ("
            " SELECT 1 FROM notifications e WHERE e.url = n.url AND e.id < n.id AND"
            " e.delivered_at IS NULL AND e.failed_at IS NULL AND e.next_at > now()) "
            "AND next_at <= now() ORDER BY id LIMIT $1",
            BATCH,
        )
        delivered = 0
        stalled: set[str] = set()  # receivers that refused one: the rest wait, in order
        for n in due:
            if n["url"] in stalled:
                continue
            error = await self._post(n)
            if error is None:
                delivered += 1
                NOTIFICATIONS.add(1, {"outcome": "delivered"})
                await self.db.pool.execute(
                    "UPDATE notifications SET delivered_at = now(), attempts = attempts + 1, "
                    "last_error = NULL WHERE id = $1",
                    n["id"],
                )
                continue
            stalled.add(n["url"])
            attempts = n["attempts"] + 1
            gave_up = attempts >= MAX_ATTEMPTS
            NOTIFICATIONS.add(1, {"outcome": "failed" if gave_up else "retry"})
            log.warning(
                "webhook %s for episode %s: %s (attempt %d%s)",
                n["url"],
                n["episode_id"],
                error,
                attempts,
                ", giving up" if gave_up else "",
            )
            await self.db.pool.execute(
                "UPDATE notifications SET attempts = $2, last_error = $3, "
                "next_at = now() + make_interval(secs => $4), "
                "failed_at = CASE WHEN $5 THEN now() END WHERE id = $1",
                n["id"],
                attempts,
                error,
                min(BACKOFF_S * 2 ** (attempts - 1), MAX_BACKOFF_S),
                gave_up,
            )
        return delivered

    async def _post(self, n: asyncpg.Record) -> str | None:
        try:
            r = await self.client.post(
                n["url"],
                json=n["payload"],
                headers={
                    "Idempotency-Key": f"{n['episode_id']}:{n['event']}",
                    "User-Agent": "conveyor-monitor",
                },
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if r.is_success:
            return None
        return f"HTTP {r.status_code}: {r.text[:200]}"

    async def close(self) -> None:
        await self.client.aclose()
