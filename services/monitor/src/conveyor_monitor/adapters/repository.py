"""Observations, labels, references, windows and episodes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from conveyor_contracts import catalog
from conveyor_contracts.events import DriftResolved
from conveyor_db import Database, enqueue

from ..domain.detectors import LEGACY_PRECISION
from .notifier import notify

SOURCE = "conveyor/monitor"


# Each labeled request of project $1 with its newest label.
_TRUTH = (
    "WITH truth AS (SELECT DISTINCT ON (request_id) request_id, label FROM labels "
    " WHERE project = $1 AND request_id IS NOT NULL ORDER BY request_id, seq DESC)"
)


class Repository:
    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def pool(self) -> asyncpg.Pool:
        return self.db.pool

    async def add_observations(
        self, rows: list[tuple[str, str, int, list[float], str | None, datetime, str | None]]
    ) -> None:
        """(request id, project, version, values, predicted, served at, traceparent)."""
        if rows:
            await self.pool.executemany(
                "INSERT INTO observations (request_id, project, model_version, values, "
                "predicted, served_at, traceparent) VALUES ($1,$2,$3,$4,$5,$6,$7) "
                "ON CONFLICT DO NOTHING",
                rows,
            )

    async def add_labels(
        self, rows: list[tuple[str, str, int, bool, datetime, str | None, str, str]]
    ) -> None:
        """(feedback id, project, version, correct, predicted at, traceparent, request id,
        label)."""
        if rows:
            await self.pool.executemany(
                "INSERT INTO labels (feedback_id, project, model_version, correct, predicted_at, "
                "traceparent, request_id, label) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) "
                "ON CONFLICT DO NOTHING",
                rows,
            )

    async def add_shadow(self, rows: list[tuple[str, str, int, str | None, datetime]]) -> None:
        """(request id, project, challenger version, predicted, served at)."""
        if rows:
            await self.pool.executemany(
                "INSERT INTO shadow (request_id, project, model_version, predicted, served_at) "
                "VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING",
                rows,
            )

    async def compare(self, project: str) -> list[dict[str, Any]]:
        """Each shadowed version beside the version that answered the same requests: how often
        they agree, and their accuracy on the requests labeled so far (the newest label of a
        request counts)."""
        rows = await self.pool.fetch(
            f"{_TRUTH} "
            "SELECT s.model_version AS challenger, o.model_version AS champion, "
            " count(*) AS requests, avg((s.predicted = o.predicted)::int)::float8 AS agreement, "
            " count(t.label) AS labeled, "
            " (avg((s.predicted = t.label)::int) FILTER (WHERE t.label IS NOT NULL))::float8 "
            "  AS challenger_accuracy, "
            " (avg((o.predicted = t.label)::int) FILTER (WHERE t.label IS NOT NULL))::float8 "
            "  AS champion_accuracy "
            "FROM shadow s JOIN observations o ON o.request_id = s.request_id "
            "LEFT JOIN truth t ON t.request_id = s.request_id "
            "WHERE s.project = $1 GROUP BY s.model_version, o.model_version "
            "ORDER BY s.model_version, o.model_version",
            project,
        )
        return [dict(r) for r in rows]

    async def by_version(self, project: str, minutes: float | None = None) -> list[dict[str, Any]]:
        """Each version that answered requests (the champion, a canary's challenger) over the
        last `minutes` (all kept history without): requests, labeled so far, accuracy on them."""
        rows = await self.pool.fetch(
            f"{_TRUTH} "
            "SELECT o.model_version AS version, count(*) AS requests, "
            " count(t.label) AS labeled, "
            " (avg((o.predicted = t.label)::int) FILTER (WHERE t.label IS NOT NULL))::float8 "
            "  AS accuracy, min(o.served_at) AS first_served, max(o.served_at) AS last_served "
            "FROM observations o LEFT JOIN truth t ON t.request_id = o.request_id "
            "WHERE o.project = $1 "
            "AND ($2::float8 IS NULL OR o.served_at > now() - make_interval(secs => $2 * 60)) "
            "GROUP BY o.model_version ORDER BY o.model_version",
            project,
            minutes,
        )
        return [dict(r) for r in rows]

    async def label_coverage(self, minutes: float = 10.0) -> list[tuple[str, int, float]]:
        """Per project's judged version: the share of its predictions of the last `minutes`
        that have a label so far."""
        rows = await self.pool.fetch(
            "SELECT r.project, r.model_version, "
            "(SELECT count(*) FROM observations o WHERE o.project = r.project AND "
            " o.model_version = r.model_version AND "
            " o.served_at > now() - make_interval(mins => $1)) AS served, "
            "(SELECT count(*) FROM labels l WHERE l.project = r.project AND "
            " l.model_version = r.model_version AND "
            " l.predicted_at > now() - make_interval(mins => $1)) AS labeled "
            "FROM refs r",
            minutes,
        )
        return [
            (r["project"], r["model_version"], min(1.0, r["labeled"] / r["served"]))
            for r in rows
            if r["served"]
        ]

    async def reference_version(self, project: str) -> int | None:
        return await self.pool.fetchval(
            "SELECT model_version FROM refs WHERE project = $1", project
        )

    async def set_reference(
        self,
        project: str,
        version: int,
        profile: dict[str, Any],
        calibration: dict[str, Any],
        notify_urls: Sequence[str] = (),
    ) -> bool:
        """Judge the project's champion `version` against `profile` (with the detectors'
        `calibration` for it) from now on; open episodes of other versions close. False when
        this version was the reference already."""
        async with self.pool.acquire() as con, con.transaction():
            current = await con.fetchval(
                "SELECT model_version FROM refs WHERE project = $1 FOR UPDATE", project
            )
            if current == version:
                return False
            await con.execute(
                "INSERT INTO refs (project, model_version, feature_names, sample, "
                "holdout_accuracy, predictions, calibration, precision, holdout_rows) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
                "ON CONFLICT (project) DO UPDATE SET "
                "model_version = EXCLUDED.model_version, feature_names = EXCLUDED.feature_names,"
                " sample = EXCLUDED.sample, holdout_accuracy = EXCLUDED.holdout_accuracy, "
                "predictions = EXCLUDED.predictions, calibration = EXCLUDED.calibration, "
                "precision = EXCLUDED.precision, holdout_rows = EXCLUDED.holdout_rows, "
                "activated_at = now()",
                project,
                version,
                profile["feature_names"],
                profile["sample"],
                float(profile["holdout_accuracy"]),
                profile.get("predictions"),
                calibration,
                profile.get("precision", LEGACY_PRECISION),
                profile.get("holdout_rows"),
            )
            closed = await con.fetch(
                "UPDATE episodes SET state = 'closed', closed_at = now(), reason = $3 "
                "WHERE project = $1 AND model_version <> $2 AND state = 'open' "
                "RETURNING episode_id, model_version, closed_at",
                project,
                version,
                f"version {version} promoted",
            )
            for e in closed:
                event = DriftResolved(
                    episode_id=e["episode_id"],
                    project=project,
                    model_version=e["model_version"],
                    closed_at=e["closed_at"],
                    reason=f"version {version} promoted",
                )
                await enqueue(con, catalog.MONITOR_DRIFT, event, key=project, source=SOURCE)
                await notify(con, notify_urls, event)
            return True

    async def overview(self, project: str) -> dict[str, Any]:
        ref = await self.pool.fetchrow(
            "SELECT model_version, holdout_accuracy, holdout_rows, activated_at, "
            "cardinality(sample) AS rows, predictions, calibration FROM refs WHERE project = $1",
            project,
        )
        windows = await self.pool.fetch(
            "SELECT id, model_version, kind, detector, started_at, ended_at, size, drifted, "
            "evidence FROM windows WHERE project = $1 ORDER BY id DESC LIMIT 20",
            project,
        )
        episodes = await self.pool.fetch(
            "SELECT episode_id, model_version, state, opened_at, onset_at, closed_at, reason, "
            "evidence FROM episodes WHERE project = $1 ORDER BY opened_at DESC",
            project,
        )
        sequences = await self.pool.fetch(
            "SELECT model_version, kind, evidence, updated_at FROM sequences WHERE project = $1 "
            "AND model_version = $2 ORDER BY kind",
            project,
            ref["model_version"] if ref else None,
        )
        return {
            "project": project,
            "reference": dict(ref) if ref else None,
            "sequential": [dict(s) for s in sequences],
            "windows": [dict(w) for w in windows],
            "open_episode": next((dict(e) for e in episodes if e["state"] == "open"), None),
            "episodes": [dict(e) for e in episodes],
        }
