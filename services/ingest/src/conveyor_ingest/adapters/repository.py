"""The raw log: each record stored once, its announcement in the same transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg

from conveyor_contracts import catalog
from conveyor_contracts.events import RecordAccepted
from conveyor_db import Database, enqueue_many

from ..domain.contract import Accepted


class RawLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def store(
        self, project: str, project_version: int, records: list[Accepted], sources: list[str]
    ) -> tuple[list[str], int]:
        """Store new records and enqueue RecordAccepted for them; returns (new ids, duplicates)."""
        if not records:
            return [], 0
        now = datetime.now(UTC)
        async with self.db.pool.acquire() as con, con.transaction():
            inserted = await con.fetch(
                "INSERT INTO raw_records (record_id, project, project_version, entity_id, "
                "event_time, fields, source, ingested_at) "
                "SELECT r.id, $1, $2, r.entity, r.t, r.f::jsonb, r.s, $7 FROM unnest("
                "$3::text[], $4::text[], $5::timestamptz[], $6::text[], $8::text[]) "
                "AS r(id, entity, t, f, s) ON CONFLICT (record_id) DO NOTHING RETURNING record_id",
                project,
                project_version,
                [r.record_id for r in records],
                [r.entity_id for r in records],
                [r.event_time for r in records],
                [json.dumps(r.fields) for r in records],
                now,
                sources,
            )
            new_ids = {row["record_id"] for row in inserted}
            events = [
                (
                    r.entity_id,
                    RecordAccepted(
                        project=project,
                        project_version=project_version,
                        record_id=r.record_id,
                        entity_id=r.entity_id,
                        event_time=r.event_time,
                        ingested_at=now,
                        fields=r.fields,
                    ),
                )
                for r in _first_of_each(records)
                if r.record_id in new_ids
            ]
            await enqueue_many(con, catalog.RECORDS_ACCEPTED, events, source="conveyor/ingest")
            duplicates = len(records) - len(events)
            if duplicates:
                await con.execute(
                    "INSERT INTO duplicates (project, count) VALUES ($1, $2) ON CONFLICT (project)"
                    " DO UPDATE SET count = duplicates.count + EXCLUDED.count",
                    project,
                    duplicates,
                )
        return [r.record_id for _k, r in events], duplicates

    async def reject(self, rows: list[tuple[str | None, str, str, object]]) -> None:
        """Keep rejected records (project, source, reason, payload) for the data team."""
        if rows:
            await self.db.pool.executemany(
                "INSERT INTO rejects (project, source, reason, payload) VALUES ($1, $2, $3, $4)",
                [(p, s, reason, _jsonable(payload)) for p, s, reason, payload in rows],
            )

    async def counts(self, project: str) -> dict[str, int]:
        pool: asyncpg.Pool = self.db.pool
        return {
            "accepted": int(
                await pool.fetchval("SELECT count(*) FROM raw_records WHERE project = $1", project)
            ),
            "rejected": int(
                await pool.fetchval("SELECT count(*) FROM rejects WHERE project = $1", project)
            ),
            "duplicates": int(
                await pool.fetchval(
                    "SELECT coalesce(max(count), 0) FROM duplicates WHERE project = $1", project
                )
            ),
        }


def _first_of_each(records: list[Accepted]) -> list[Accepted]:
    seen: set[str] = set()
    out = []
    for r in records:
        if r.record_id not in seen:
            seen.add(r.record_id)
            out.append(r)
    return out


def _jsonable(payload: object) -> object:
    try:
        json.dumps(payload)
        return payload
    except (TypeError, ValueError):
        return repr(payload)
