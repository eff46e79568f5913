"""What serving reported it could not load (serving.events), kept per version."""

from __future__ import annotations

from typing import Any

import asyncpg

from conveyor_bus import Delivery
from conveyor_contracts.events import ModelLoadFailed

_COLUMNS = "alias, sha256, reason, replica, occurred_at"
_ORDER = "ORDER BY occurred_at, event_id"


async def record(pool: asyncpg.Pool, batch: list[Delivery[ModelLoadFailed]]) -> None:
    """Keep each report once (a report delivered again has the same event id)."""
    await pool.executemany(
        "INSERT INTO load_failures (event_id, project, version, alias, sha256, reason, replica, "
        "occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
        [
            (
                d.event_id,
                d.event.project,
                d.event.version,
                d.event.alias,
                d.event.sha256,
                d.event.reason,
                d.event.replica,
                d.event.occurred_at,
            )
            for d in batch
        ],
    )


async def of_version(
    con: asyncpg.Pool | asyncpg.Connection, project: str, version: int
) -> list[dict[str, Any]]:
    """The version's reported load failures, oldest first."""
    rows = await con.fetch(
        f"SELECT {_COLUMNS} FROM load_failures WHERE project = $1 AND version = $2 {_ORDER}",
        project,
        version,
    )
    return [dict(r) for r in rows]


async def of_project(con: asyncpg.Connection, project: str) -> dict[int, list[dict[str, Any]]]:
    """Every version's reported load failures, oldest first."""
    rows = await con.fetch(
        f"SELECT version, {_COLUMNS} FROM load_failures WHERE project = $1 {_ORDER}", project
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        failure = dict(r)
        out.setdefault(failure.pop("version"), []).append(failure)
    return out
