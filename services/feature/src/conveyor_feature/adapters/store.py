"""Online store (entity histories) and offline store (feature rows) in one schema, so a record's
state change, its row and the row's announcement commit together."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from conveyor_contracts import catalog
from conveyor_contracts.events import FeatureRowComputed
from conveyor_db import Database, enqueue_many

from ..domain.features import PastRecord


@dataclass(frozen=True)
class NewRow:
    record_id: str
    entity_id: str
    event_time: datetime
    kept: dict[str, object]
    names: list[str]
    values: list[float]
    label: str | None
    revision: int = 0  # 0: first computed; more: revised by late records


@dataclass(frozen=True)
class State:
    """An entity's newest record: what its plain features read online."""

    entity_id: str
    record_id: str
    event_time: datetime
    fields: dict[str, object]


@dataclass(frozen=True)
class StoredRow:
    entity_id: str
    event_time: datetime
    names: list[str]
    values: list[float]
    label: str | None
    revision: int


class FeatureStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def histories(self, project: str, entities: list[str]) -> dict[str, list[PastRecord]]:
        rows = await self.db.pool.fetch(
            "SELECT entity_id, record_id, event_time, values FROM entity_events "
            "WHERE project = $1 AND entity_id = ANY($2::text[])",
            project,
            entities,
        )
        out: dict[str, list[PastRecord]] = defaultdict(list)
        for r in rows:
            out[r["entity_id"]].append(PastRecord(r["record_id"], r["event_time"], r["values"]))
        return out

    async def states(self, project: str, entities: list[str]) -> dict[str, State]:
        rows = await self.db.pool.fetch(
            "SELECT entity_id, record_id, event_time, fields FROM entity_state "
            "WHERE project = $1 AND entity_id = ANY($2::text[])",
            project,
            entities,
        )
        return {
            r["entity_id"]: State(r["entity_id"], r["record_id"], r["event_time"], r["fields"])
            for r in rows
        }

    async def stored_rows(self, project: str, record_ids: list[str]) -> dict[str, StoredRow]:
        rows = await self.db.pool.fetch(
            "SELECT record_id, entity_id, event_time, feature_names, values, label, revision "
            "FROM rows WHERE project = $1 AND record_id = ANY($2::text[])",
            project,
            record_ids,
        )
        return {r["record_id"]: _stored(r) for r in rows}

    async def newest_event_time(self, project: str) -> datetime | None:
        value: datetime | None = await self.db.pool.fetchval(
            "SELECT max(event_time) FROM entity_state WHERE project = $1", project
        )
        return value

    async def append(
        self,
        project: str,
        project_version: int,
        rows: list[NewRow],
        revised: list[NewRow],
        states: list[State],
    ) -> int:
        """Store records and their rows once, revise rows late records changed, move entities'
        state forward (never back: an older record does not replace a newer one); announce new
        and revised rows — all in one transaction. Returns how many rows were new."""
        if not rows:
            return 0
        async with self.db.pool.acquire() as con, con.transaction():
            inserted = await con.fetch(
                "INSERT INTO entity_events (project, entity_id, record_id, event_time, values) "
                "SELECT $1, e, r, t, v::jsonb FROM unnest($2::text[], $3::text[], "
                "$4::timestamptz[], $5::text[]) AS x(e, r, t, v) "
                "ON CONFLICT DO NOTHING RETURNING record_id",
                project,
                [r.entity_id for r in rows],
                [r.record_id for r in rows],
                [r.event_time for r in rows],
                [json.dumps(r.kept) for r in rows],
            )
            new = {i["record_id"] for i in inserted}
            fresh = [r for r in rows if r.record_id in new]
            if not fresh:
                return 0
            await con.executemany(
                "INSERT INTO rows (project, record_id, entity_id, project_version, event_time, "
                "feature_names, values, label) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) "
                "ON CONFLICT DO NOTHING",
                [
                    (
                        project,
                        r.record_id,
                        r.entity_id,
                        project_version,
                        r.event_time,
                        r.names,
                        r.values,
                        r.label,
                    )
                    for r in fresh
                ],
            )
            if revised:
                await con.executemany(
                    "UPDATE rows SET values = $3, revision = $4, written_at = now() "
                    "WHERE project = $1 AND record_id = $2 AND revision < $4",
                    [(project, r.record_id, r.values, r.revision) for r in revised],
                )
            if states:
                await con.execute(
                    "INSERT INTO entity_state (project, entity_id, record_id, event_time, fields) "
                    "SELECT $1, e, r, t, f::jsonb FROM unnest($2::text[], $3::text[], "
                    "$4::timestamptz[], $5::text[]) AS x(e, r, t, f) "
                    "ON CONFLICT (project, entity_id) DO UPDATE SET record_id = EXCLUDED.record_id,"
                    " event_time = EXCLUDED.event_time, fields = EXCLUDED.fields, "
                    "written_at = now() WHERE (entity_state.event_time, entity_state.record_id) "
                    "< (EXCLUDED.event_time, EXCLUDED.record_id)",
                    project,
                    [x.entity_id for x in states],
                    [x.record_id for x in states],
                    [x.event_time for x in states],
                    [json.dumps(x.fields) for x in states],
                )
            await enqueue_many(
                con,
                catalog.FEATURES_ROWS,
                [
                    (
                        r.entity_id,
                        FeatureRowComputed(
                            project=project,
                            project_version=project_version,
                            record_id=r.record_id,
                            entity_id=r.entity_id,
                            event_time=r.event_time,
                            feature_names=r.names,
                            values=r.values,
                            label=r.label,
                            revision=r.revision,
                        ),
                    )
                    for r in [*fresh, *revised]
                ],
                source="conveyor/feature",
            )
        return len(fresh)

    async def training_set(
        self, project: str, labels: list[tuple[str, datetime]]
    ) -> list[StoredRow | None]:
        """Point in time: for each (entity, t), the entity's newest row at or before t, never a
        later one (None: there is none)."""
        rows = await self.db.pool.fetch(
            "SELECT x.i, r.entity_id, r.event_time, r.feature_names, r.values, r.label, "
            "r.revision FROM unnest($2::text[], $3::timestamptz[]) WITH ORDINALITY AS x(e, t, i) "
            "LEFT JOIN LATERAL (SELECT * FROM rows WHERE project = $1 AND entity_id = x.e "
            "AND event_time <= x.t ORDER BY event_time DESC, record_id DESC LIMIT 1) r ON true "
            "ORDER BY x.i",
            project,
            [e for e, _ in labels],
            [t for _, t in labels],
        )
        return [None if r["entity_id"] is None else _stored(r) for r in rows]

    async def prune(self, project: str, keep_s: float) -> int:
        """Forget records older than `keep_s` before the project's newest event time."""
        result = await self.db.pool.execute(
            "DELETE FROM entity_events WHERE project = $1 AND event_time < "
            "(SELECT max(event_time) FROM entity_events WHERE project = $1) "
            "- make_interval(secs => $2)",
            project,
            keep_s,
        )
        return int(result.split()[-1])

    async def row_count(self, project: str) -> int:
        return int(
            await self.db.pool.fetchval("SELECT count(*) FROM rows WHERE project = $1", project)
        )


def _stored(r: asyncpg.Record) -> StoredRow:
    return StoredRow(
        r["entity_id"],
        r["event_time"],
        list(r["feature_names"]),
        list(r["values"]),
        r["label"],
        r["revision"],
    )
