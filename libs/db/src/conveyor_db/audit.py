"""The audit log's one way in: an entry is written to the outbox in the transaction of the change
it records, so it is published exactly when the change commits (and never for one rolled back);
the registry keeps what `audit.events` carries, once per event id."""

from __future__ import annotations

import asyncpg

from conveyor_contracts import catalog
from conveyor_contracts.events import AuditRecorded

from .outbox import enqueue


async def record(con: asyncpg.Connection, entry: AuditRecorded, *, source: str) -> str:
    """Write `entry` inside the caller's transaction; its event id."""
    return await enqueue(con, catalog.AUDIT_EVENTS, entry, key=entry.project, source=source)
