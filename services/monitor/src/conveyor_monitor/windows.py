"""Cut full windows from stored observations and labels, test them, open episodes.

Everything is derived from the database (cursors, windows, episodes), inside one transaction per
project under an advisory lock: a restart resumes exactly where the last evaluation stopped, and
replicas never evaluate the same window twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import asyncpg
import numpy as np

from conveyor_contracts import catalog
from conveyor_contracts.events import DriftDetected, FeatureDrift
from conveyor_contracts.project import DriftPolicy
from conveyor_db import enqueue

from .adapters.repository import SOURCE, Repository
from .domain.detectors import data_drift, episode_opens, performance_drift


class Evaluator:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def evaluate(self, project: str, policy: DriftPolicy) -> DriftDetected | None:
        async with self.repo.pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "monitor:" + project)
            ref = await con.fetchrow("SELECT * FROM refs WHERE project = $1", project)
            if ref is None:
                return None
            version = ref["model_version"]
            await self._data_windows(con, project, version, ref, policy)
            await self._performance_windows(con, project, version, ref, policy)
            return await self._maybe_open(con, project, version, ref, policy)

    async def _cursor(self, con: asyncpg.Connection, project: str, version: int, kind: str) -> int:
        return int(
            await con.fetchval(
                "SELECT coalesce(max(last_seq), 0) FROM cursors WHERE project = $1 "
                "AND model_version = $2 AND kind = $3",
                project,
                version,
                kind,
            )
        )

    async def _advance(
        self, con: asyncpg.Connection, project: str, version: int, kind: str, seq: int
    ) -> None:
        await con.execute(
            "INSERT INTO cursors (project, model_version, kind, last_seq) VALUES ($1,$2,$3,$4) "
            "ON CONFLICT (project, model_version, kind) DO UPDATE SET last_seq = $4",
            project,
            version,
            kind,
            seq,
        )

    async def _window(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        kind: str,
        started: datetime,
        ended: datetime,
        size: int,
        drifted: bool,
        evidence: dict[str, Any],
    ) -> None:
        await con.execute(
            "INSERT INTO windows (project, model_version, kind, started_at, ended_at, size, "
            "drifted, evidence) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            project,
            version,
            kind,
            started,
            ended,
            size,
            drifted,
            evidence,
        )

    async def _data_windows(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        ref: asyncpg.Record,
        policy: DriftPolicy,
    ) -> None:
        reference = np.asarray(ref["sample"], dtype=np.float64)
        names = list(ref["feature_names"])
        cursor = await self._cursor(con, project, version, "data")
        while True:
            rows = await con.fetch(
                "SELECT seq, values, served_at FROM observations WHERE project = $1 AND "
                "model_version = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                project,
                version,
                cursor,
                policy.window,
            )
            if len(rows) < policy.window:
                break
            window = np.asarray([r["values"] for r in rows], dtype=np.float64)
            if window.shape[1] != reference.shape[1]:
                cursor = rows[-1]["seq"]
                continue  # vectors of another feature set: not comparable with this reference
            verdict = data_drift(window, reference, names, policy)
            await self._window(
                con,
                project,
                version,
                "data",
                rows[0]["served_at"],
                rows[-1]["served_at"],
                len(rows),
                verdict.drifted,
                {"features": [f.model_dump() for f in verdict.features]},
            )
            cursor = rows[-1]["seq"]
        await self._advance(con, project, version, "data", cursor)

    async def _performance_windows(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        ref: asyncpg.Record,
        policy: DriftPolicy,
    ) -> None:
        cursor = await self._cursor(con, project, version, "performance")
        while True:
            rows = await con.fetch(
                "SELECT seq, correct, predicted_at FROM labels WHERE project = $1 AND "
                "model_version = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                project,
                version,
                cursor,
                policy.window,
            )
            if len(rows) < policy.window:
                break
            correct = sum(1 for r in rows if r["correct"])
            verdict = performance_drift(correct, len(rows), ref["holdout_accuracy"], policy)
            times = sorted(r["predicted_at"] for r in rows)
            await self._window(
                con,
                project,
                version,
                "performance",
                times[0],
                times[-1],
                len(rows),
                verdict.drifted,
                {
                    "accuracy": verdict.accuracy,
                    "p_value": verdict.p_value,
                    "reference_accuracy": ref["holdout_accuracy"],
                },
            )
            cursor = rows[-1]["seq"]
        await self._advance(con, project, version, "performance", cursor)

    async def _maybe_open(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        ref: asyncpg.Record,
        policy: DriftPolicy,
    ) -> DriftDetected | None:
        if await con.fetchval(
            "SELECT EXISTS (SELECT 1 FROM episodes WHERE project = $1 AND "
            "model_version = $2 AND state = 'open')",
            project,
            version,
        ):
            return None
        opened_since = await con.fetchval(
            "SELECT max(closed_at) FROM episodes WHERE project = $1 AND model_version = $2",
            project,
            version,
        )
        recent = (
            await con.fetch(
                "SELECT kind, started_at, drifted, evidence FROM windows WHERE project = $1 AND "
                "model_version = $2 AND ($3::timestamptz IS NULL OR ended_at > $3) "
                "ORDER BY id DESC LIMIT $4",
                project,
                version,
                opened_since,
                policy.n,
            )
        )[::-1]
        if not episode_opens([w["drifted"] for w in recent], policy):
            return None
        drifted = [w for w in recent if w["drifted"]]
        kinds = {w["kind"] for w in drifted}
        data = [w for w in drifted if w["kind"] == "data"]
        perf = [w for w in drifted if w["kind"] == "performance"]
        event = DriftDetected(
            episode_id=uuid4().hex,
            project=project,
            model_version=version,
            kind="data+performance" if len(kinds) == 2 else kinds.pop(),
            opened_at=datetime.now(UTC),
            onset_at=min(w["started_at"] for w in drifted),
            features=[FeatureDrift(**f) for f in data[-1]["evidence"]["features"]] if data else [],
            accuracy=perf[-1]["evidence"]["accuracy"] if perf else None,
            reference_accuracy=ref["holdout_accuracy"],
            windows=len(drifted),
        )
        await con.execute(
            "INSERT INTO episodes (episode_id, project, model_version, state, opened_at, "
            "onset_at, evidence) VALUES ($1,$2,$3,'open',$4,$5,$6)",
            event.episode_id,
            project,
            version,
            event.opened_at,
            event.onset_at,
            event.model_dump(mode="json"),
        )
        await enqueue(con, catalog.MONITOR_DRIFT, event, key=project, source=SOURCE)
        return event
