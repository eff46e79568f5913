"""Online store (entity histories) and offline store (feature rows) in one schema, so a record's
state change, its row and the row's announcement commit together."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

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

    async def append(self, project: str, project_version: int, rows: list[NewRow]) -> int:
        """Store records and their rows once; announce the new rows. Returns how many were new."""
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
                        ),
                    )
                    for r in fresh
                ],
                source="conveyor/feature",
            )
        return len(fresh)

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
