"""Examples, runs, training requests and drift episodes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from conveyor_contracts import catalog
from conveyor_contracts.events import AuditRecorded, TrainingRunFinished
from conveyor_db import Database, enqueue, record_audit

from ..domain.examples import Example

RUN_COLUMNS = (
    "run_id, project, trigger, trigger_info, experiment_id, variant, status, reason, params, "
    "metrics, champion_metrics, model_version, promoted, training_rows, started_at, "
    "finished_at, duration_s, logs"
)


class ActiveRun(Exception):
    """The project already has a run in progress."""


# The advisory lock each trainer process holds while it lives: (this constant, hashtext of its
# instance id). A run whose owner's lock nobody holds was left by a process that is gone.
ALIVE_LOCK = 0x0C0B0D


class Repository:
    def __init__(self, db: Database, instance: str | None = None) -> None:
        self.db = db
        self.instance = instance or uuid.uuid4().hex  # this process, as the owner of its runs
        self._alive: asyncpg.Connection | None = None

    async def hold_alive(self) -> None:
        """Hold this process's lock on a connection of its own for as long as it runs: the
        other replicas know its runs are under way (see `abandon_interrupted`)."""
        if self._alive is None:
            self._alive = await asyncpg.connect(self.db.settings.database_url)
            await self._alive.execute(
                "SELECT pg_advisory_lock($1, hashtext($2))", ALIVE_LOCK, self.instance
            )

    async def release_alive(self) -> None:
        if self._alive is not None:
            await self._alive.close()
            self._alive = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.db.pool

    async def add_examples(self, examples: list[Example]) -> None:
        """Each example once (a redelivery or a second copy on the topic changes nothing); a
        feature row's higher revision replaces its values."""
        if examples:
            await self.pool.executemany(
                "INSERT INTO examples (project, example_id, source, observed_at, feature_names, "
                'values, label, topic, "partition", "offset", revision) '
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (project, example_id) "
                "DO UPDATE SET values = EXCLUDED.values, feature_names = EXCLUDED.feature_names, "
                'topic = EXCLUDED.topic, "partition" = EXCLUDED."partition", '
                '"offset" = EXCLUDED."offset", revision = EXCLUDED.revision '
                "WHERE examples.revision < EXCLUDED.revision",
                [e.row() for e in examples],
            )

    async def examples(
        self, project: str, names: list[str], limit: int, since: datetime | None = None
    ) -> list[asyncpg.Record]:
        """The most recent `limit` examples (observed since `since`), returned oldest first."""
        rows = await self.pool.fetch(
            'SELECT example_id, observed_at, values, label, topic, "partition", "offset" '
            "FROM examples WHERE project = $1 "
            "AND feature_names = $2 AND ($3::timestamptz IS NULL OR observed_at >= $3) "
            "ORDER BY observed_at DESC, example_id DESC LIMIT $4",
            project,
            names,
            since,
            limit,
        )
        return rows[::-1]

    async def example_stats(self, project: str) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT source, count(*) AS n FROM examples WHERE project = $1 GROUP BY source", project
        )
        by_source = {r["source"]: int(r["n"]) for r in rows}
        return {"count": sum(by_source.values()), **by_source}

    async def count_since(self, project: str, names: list[str], since: datetime) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM examples WHERE project = $1 AND feature_names = $2 "
                "AND observed_at >= $3",
                project,
                names,
                since,
            )
        )

    async def count_arrived_since(self, project: str, names: list[str], since: datetime) -> int:
        """Examples that reached the trainer since `since` (wall clock, whatever their event
        time): what a scheduled run counts as new."""
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM examples WHERE project = $1 AND feature_names = $2 "
                "AND arrived_at >= $3",
                project,
                names,
                since,
            )
        )

    # --- runs -----------------------------------------------------------------------------------

    async def open_run(
        self,
        run_id: str,
        project: str,
        trigger: str,
        trigger_info: dict[str, Any],
        experiment_id: str | None = None,
        variant: dict[str, Any] | None = None,
        status: str = "running",
        audit: AuditRecorded | None = None,
    ) -> None:
        """Open a run, with its audit entry if it has one; one `running` run per project
        (ActiveRun). A run that will not train is opened `skipped` and finished at once, to
        record why."""
        try:
            async with self.pool.acquire() as con, con.transaction():
                await con.execute(
                    "INSERT INTO runs (run_id, project, trigger, trigger_info, experiment_id, "
                    "variant, status, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    run_id,
                    project,
                    trigger,
                    trigger_info,
                    experiment_id,
                    variant,
                    status,
                    self.instance,
                )
                if audit is not None:
                    await record_audit(con, audit, source="conveyor/trainer")
        except asyncpg.UniqueViolationError as exc:
            raise ActiveRun(f"project {project!r} already has a run in progress") from exc

    async def finish_run(
        self, event: TrainingRunFinished, params: dict[str, Any], logs: str
    ) -> None:
        """Close the run and announce it, in one transaction."""
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(
                "UPDATE runs SET status = $2, reason = $3, params = $4, metrics = $5, "
                "champion_metrics = $6, model_version = $7, promoted = $8, training_rows = $9, "
                "finished_at = $10, logs = $11, "
                "duration_s = extract(epoch FROM $10 - started_at) WHERE run_id = $1",
                event.run_id,
                event.status,
                event.reason,
                params,
                event.metrics,
                event.champion_metrics,
                event.model_version,
                event.promoted,
                event.training_rows,
                event.finished_at,
                logs,
            )
            await enqueue(
                con, catalog.TRAINER_RUNS, event, key=event.project, source="conveyor/trainer"
            )

    async def runs(
        self, project: str, experiment_id: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """The project's newest `limit` runs (of one experiment, when given), oldest first."""
        rows = await self.pool.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 "
            "AND ($2::text IS NULL OR experiment_id = $2) "
            "ORDER BY started_at DESC, run_id DESC LIMIT $3",
            project,
            experiment_id,
            limit,
        )
        return [dict(r) for r in reversed(rows)]

    async def runs_by_id(self, run_ids: list[str]) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ANY($1::text[])", run_ids
        )
        by_id = {r["run_id"]: dict(r) for r in rows}
        return [by_id[i] for i in run_ids if i in by_id]

    async def runs_started_since(self, project: str, since: datetime) -> int:
        """Runs that trained (or are training): what the daily budget counts."""
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM runs WHERE project = $1 AND status <> 'skipped' "
                "AND started_at >= $2",
                project,
                since,
            )
        )

    async def last_started(self, project: str) -> datetime | None:
        return await self.pool.fetchval(
            "SELECT max(started_at) FROM runs WHERE project = $1 AND status <> 'skipped'", project
        )

    # --- the regression set ---------------------------------------------------------------------

    async def regression_set(self, project: str) -> tuple[str, list[str]] | None:
        row = await self.pool.fetchrow(
            "SELECT set_id, example_ids FROM regression_sets WHERE project = $1", project
        )
        return (row["set_id"], list(row["example_ids"])) if row else None

    async def regression_set_by_id(self, set_id: str) -> list[str] | None:
        ids = await self.pool.fetchval(
            "SELECT example_ids FROM regression_sets WHERE set_id = $1", set_id
        )
        return list(ids) if ids is not None else None

    async def pin_regression_set(
        self, project: str, set_id: str, run_id: str, ids: list[str]
    ) -> None:
        """The first pin stays: the set is fixed once a project has one."""
        await self.pool.execute(
            "INSERT INTO regression_sets (project, set_id, run_id, example_ids) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (project) DO NOTHING",
            project,
            set_id,
            run_id,
            ids,
        )

    async def examples_by_id(
        self, project: str, names: list[str], ids: list[str]
    ) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT example_id, observed_at, values, label FROM examples WHERE project = $1 "
            "AND feature_names = $2 AND example_id = ANY($3::text[]) "
            "ORDER BY observed_at, example_id",
            project,
            names,
            ids,
        )

    async def run(self, run_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1", run_id)
        return dict(row) if row else None

    async def last_finished(self, project: str) -> datetime | None:
        return await self.pool.fetchval(
            "SELECT max(finished_at) FROM runs WHERE project = $1 AND status <> 'skipped'", project
        )

    async def active(self, project: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE project = $1 AND status = 'running')",
                project,
            )
        )

    async def set_run_version(self, run_id: str, version: int) -> None:
        await self.pool.execute(
            "UPDATE runs SET model_version = $2 WHERE run_id = $1", run_id, version
        )

    async def abandon_interrupted(self) -> list[tuple[str, int | None]]:
        """Runs left 'running' by a process that died: they will never finish. Their
        (project, pending version). A run whose owner still holds its lock (another replica,
        alive) is left alone."""
        rows = await self.pool.fetch(
            "UPDATE runs SET status = 'failed', reason = 'interrupted: the trainer restarted', "
            "finished_at = now() WHERE status = 'running' AND (owner IS NULL OR NOT EXISTS ("
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = $1::int4::oid AND objid = hashtext(runs.owner)::oid AND objsubid = 2"
            ")) RETURNING project, model_version",
            ALIVE_LOCK,
        )
        return [(r["project"], r["model_version"]) for r in rows]

    # --- triggers -------------------------------------------------------------------------------

    async def record_request(self, request_id: str, project: str) -> bool:
        """True the first time a request id is seen."""
        inserted = await self.pool.fetchval(
            "INSERT INTO requests (request_id, project) VALUES ($1, $2) ON CONFLICT DO NOTHING "
            "RETURNING true",
            request_id,
            project,
        )
        return bool(inserted)

    async def record_episode(
        self,
        episode_id: str,
        project: str,
        onset_at: datetime,
        opened_at: datetime,
        traceparent: str | None = None,
    ) -> None:
        await self.pool.execute(
            "INSERT INTO episodes (episode_id, project, onset_at, opened_at, state, traceparent) "
            "VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT DO NOTHING",
            episode_id,
            project,
            onset_at,
            opened_at,
            traceparent,
        )

    async def close_episode(self, episode_id: str, note: str) -> None:
        await self.pool.execute(
            "UPDATE episodes SET state = 'closed', note = $2 WHERE episode_id = $1 "
            "AND state = 'pending'",
            episode_id,
            note,
        )

    async def pending_episodes(self) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT episode_id, project, onset_at, traceparent FROM episodes "
            "WHERE state = 'pending' "
            "ORDER BY opened_at"
        )

    async def start_episode(self, episode_id: str, run_id: str) -> bool:
        """Claim the episode for a run: true only for the first claim."""
        return bool(
            await self.pool.fetchval(
                "UPDATE episodes SET state = 'started', run_id = $2 WHERE episode_id = $1 "
                "AND state = 'pending' RETURNING true",
                episode_id,
                run_id,
            )
        )
