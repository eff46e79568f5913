"""The audit log: what audit.events carries, kept once per event id, read newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from conveyor_bus import Delivery
from conveyor_contracts.events import AuditRecorded

COLUMNS = "id, at, actor, role, via, action, project, target, reason, request_id, details, source"


async def keep(pool: asyncpg.Pool, batch: list[Delivery[AuditRecorded]]) -> None:
    """Keep each entry once: one delivered again (a redelivery, a relay's retry) has the same
    event id."""
    await pool.executemany(
        "INSERT INTO audit_log (event_id, at, actor, role, via, action, project, target, reason, "
        "request_id, details, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        "ON CONFLICT (event_id) DO NOTHING",
        [
            (
                d.event_id,
                e.at,
                e.actor,
                e.role,
                e.via,
                e.action,
                e.project,
                e.target,
                e.reason,
                e.request_id,
                e.details,
                d.headers.get("ce_source", ""),
            )
            for d in batch
            for e in (d.event,)
        ],
    )


async def entries(
    pool: asyncpg.Pool,
    *,
    project: str | None,
    actor: str | None,
    action: str | None,
    since: datetime | None,
    before: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first, each filter applied when given; `before`: only entries older than that
    entry id (the cursor of the page before)."""
    rows = await pool.fetch(
        f"SELECT {COLUMNS} FROM audit_log WHERE ($1::text IS NULL OR project = $1) "
        "AND ($2::text IS NULL OR actor = $2) "
        "AND ($3::text IS NULL OR action = $3 OR starts_with(action, $3 || '.')) "
        "AND ($4::timestamptz IS NULL OR at >= $4) AND ($5::bigint IS NULL OR id < $5) "
        "ORDER BY id DESC LIMIT $6",
        project,
        actor,
        action,
        since,
        before,
        limit,
    )
    return [dict(r) for r in rows]
