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
from opentelemetry import metrics

from conveyor_bus import tracing
from conveyor_contracts import catalog
from conveyor_contracts.events import DriftDetected, DriftResolved, FeatureDrift
from conveyor_contracts.project import DriftPolicy
from conveyor_db import enqueue

from .adapters.notifier import notify
from .adapters.repository import SOURCE, Repository
from .domain.detectors import (
    Reference,
    data_drift,
    episode_closes,
    episode_opens,
    performance_drift,
    prediction_codes,
    reference_from_profile,
    window_size,
)

_meter = metrics.get_meter("conveyor.monitor")
DRIFT_EFFECT = _meter.create_gauge(
    "conveyor.drift.effect",
    unit="1",
    description="Last data window's drift per feature: Wasserstein distance over the "
    "reference's standard deviation.",
)
DRIFT_STATISTIC = _meter.create_gauge(
    "conveyor.drift.statistic",
    unit="1",
    description="Last data window's test statistic per feature (Kolmogorov-Smirnov for numeric "
    "features, chi-squared for categorical ones and the predicted classes).",
)
DRIFT_PSI = _meter.create_gauge(
    "conveyor.drift.psi",
    unit="1",
    description="Last data window's population stability index per feature.",
)
DRIFT_ALPHA = _meter.create_gauge(
    "conveyor.drift.alpha",
    unit="1",
    description="The calibrated false discovery rate the judged version's windows are tested at.",
)
WINDOW_ACCURACY = _meter.create_gauge(
    "conveyor.window.accuracy",
    unit="1",
    description="Accuracy of the judged version on its last window of labels.",
)
WINDOWS = _meter.create_counter(
    "conveyor.drift.windows",
    unit="{window}",
    description="Windows tested, by project, kind (data, performance) and verdict.",
)
EPISODES = _meter.create_counter(
    "conveyor.drift.episodes",
    unit="{episode}",
    description="Drift episodes opened, by project and kind.",
)
KINDS = ("data", "performance")
LINKED_TRACES = 16  # requests (and labels) an episode's span links to


class Evaluator:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._references: dict[str, tuple[int, datetime, Reference]] = {}

    def reference(self, ref: asyncpg.Record) -> Reference:
        """The prepared reference of a `refs` row, kept until the row changes."""
        key = (ref["model_version"], ref["activated_at"])
        cached = self._references.get(ref["project"])
        if cached is None or cached[:2] != key:
            prepared = reference_from_profile(ref)
            cached = self._references[ref["project"]] = (*key, prepared)
        return cached[2]

    async def evaluate(
        self, project: str, policy: DriftPolicy
    ) -> DriftDetected | DriftResolved | None:
        """Test every full window that arrived, then open an episode (k of n drifted) or close
        the open one (`recover` clean windows in a row)."""
        async with self.repo.pool.acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "monitor:" + project)
            ref = await con.fetchrow("SELECT * FROM refs WHERE project = $1", project)
            if ref is None:
                return None
            version = ref["model_version"]
            reference = self.reference(ref)
            calibration = ref["calibration"] or {}
            window = int(
                calibration.get("window") or window_size(policy, reference.tests(), reference.rows)
            )
            alpha = float(calibration.get("alpha", policy.alpha))
            DRIFT_ALPHA.set(alpha, {"project": project, "version": str(version)})
            await self._data_windows(con, project, version, reference, policy, window, alpha)
            await self._performance_windows(con, project, version, ref, policy, window)
            opened = await self._maybe_open(con, project, version, ref, policy, alpha)
            return opened or await self._maybe_close(con, project, version, policy)

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
        reference: Reference,
        policy: DriftPolicy,
        size: int,
        alpha: float,
    ) -> None:
        cursor = await self._cursor(con, project, version, "data")
        while True:
            rows = await con.fetch(
                "SELECT seq, values, predicted, served_at FROM observations WHERE project = $1 "
                "AND model_version = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                project,
                version,
                cursor,
                size,
            )
            if len(rows) < size:
                break
            window = np.asarray([r["values"] for r in rows], dtype=np.float64)
            if window.shape[1] != len(reference.names):
                cursor = rows[-1]["seq"]
                continue  # vectors of another feature set: not comparable with this reference
            predicted = prediction_codes([r["predicted"] for r in rows], reference.classes)
            verdict = data_drift(window, reference, policy, predicted, alpha=alpha)
            attrs = {"project": project, "version": str(version)}
            for f in verdict.features:
                DRIFT_EFFECT.set(f.effect, attrs | {"feature": f.feature})
                DRIFT_STATISTIC.set(f.statistic, attrs | {"feature": f.feature})
                DRIFT_PSI.set(f.psi, attrs | {"feature": f.feature})
            WINDOWS.add(1, attrs | {"kind": "data", "drifted": str(verdict.drifted).lower()})
            await self._window(
                con,
                project,
                version,
                "data",
                rows[0]["served_at"],
                rows[-1]["served_at"],
                len(rows),
                verdict.drifted,
                {"alpha": alpha, "features": [f.model_dump() for f in verdict.features]},
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
        size: int,
    ) -> None:
        cursor = await self._cursor(con, project, version, "performance")
        while True:
            rows = await con.fetch(
                "SELECT seq, correct, predicted_at FROM labels WHERE project = $1 AND "
                "model_version = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                project,
                version,
                cursor,
                size,
            )
            if len(rows) < size:
                break
            correct = sum(1 for r in rows if r["correct"])
            verdict = performance_drift(correct, len(rows), ref["holdout_accuracy"], policy)
            attrs = {"project": project, "version": str(version)}
            WINDOW_ACCURACY.set(verdict.accuracy, attrs)
            WINDOWS.add(1, attrs | {"kind": "performance", "drifted": str(verdict.drifted).lower()})
            times = sorted(r["predicted_at"] for r in rows)
            served = await con.fetchval(
                "SELECT count(*) FROM observations WHERE project = $1 AND model_version = $2 "
                "AND served_at BETWEEN $3 AND $4",
                project,
                version,
                times[0],
                times[-1],
            )
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
                    # labeled share of the predictions served over the window's span, so far
                    "label_coverage": min(1.0, len(rows) / served) if served else None,
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
        alpha: float,
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
        # k of n per kind: plentiful clean data windows must not dilute drifted performance
        # windows (labels come slower than predictions), nor the other way round.
        drifted: list[asyncpg.Record] = []
        for kind in KINDS:
            recent = (
                await con.fetch(
                    "SELECT id, kind, started_at, ended_at, drifted, evidence FROM windows "
                    "WHERE project = $1 AND model_version = $2 AND kind = $3 AND "
                    "($4::timestamptz IS NULL OR ended_at > $4) ORDER BY id DESC LIMIT $5",
                    project,
                    version,
                    kind,
                    opened_since,
                    policy.n,
                )
            )[::-1]
            if episode_opens([w["drifted"] for w in recent], policy):
                drifted.extend(w for w in recent if w["drifted"])
        if not drifted:
            return None
        drifted.sort(key=lambda w: w["id"])
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
            window_ids=[w["id"] for w in drifted],
            alpha=alpha,
        )
        causes = await self._causes(con, project, version, drifted)
        # The episode is a trace of its own, linked to sampled requests (and labels) of the
        # windows that opened it; the trainer's run continues it.
        with tracing.span(
            "drift episode",
            root=True,
            links=causes,
            attributes={
                "conveyor.project": project,
                "conveyor.model_version": version,
                "conveyor.episode_id": event.episode_id,
                "conveyor.drift.kind": event.kind,
            },
        ):
            await con.execute(
                "INSERT INTO episodes (episode_id, project, model_version, state, opened_at, "
                "onset_at, evidence) VALUES ($1,$2,$3,'open',$4,$5,$6)",
                event.episode_id,
                project,
                version,
                event.opened_at,
                event.onset_at,
                event.model_dump(mode="json")
                | {"traces": causes, "trace": tracing.current_traceparent()},
            )
            await enqueue(con, catalog.MONITOR_DRIFT, event, key=project, source=SOURCE)
            await notify(con, policy.notify, event)
        EPISODES.add(1, {"project": project, "kind": event.kind})
        return event

    async def _maybe_close(
        self, con: asyncpg.Connection, project: str, version: int, policy: DriftPolicy
    ) -> DriftResolved | None:
        episode = await con.fetchrow(
            "SELECT episode_id, evidence FROM episodes WHERE project = $1 AND model_version = $2 "
            "AND state = 'open'",
            project,
            version,
        )
        if episode is None:
            return None
        since = max(episode["evidence"].get("window_ids") or [0])
        for kind in str(episode["evidence"]["kind"]).split("+"):  # each kind that drifted
            later = await con.fetch(
                "SELECT drifted FROM windows WHERE project = $1 AND model_version = $2 AND "
                "kind = $3 AND id > $4 ORDER BY id DESC LIMIT $5",
                project,
                version,
                kind,
                since,
                policy.recover,
            )
            if not episode_closes([w["drifted"] for w in later][::-1], policy):
                return None
        reason = f"recovered: {policy.recover} clean windows in a row"
        closed_at = await con.fetchval(
            "UPDATE episodes SET state = 'closed', closed_at = now(), reason = $2 "
            "WHERE episode_id = $1 RETURNING closed_at",
            episode["episode_id"],
            reason,
        )
        event = DriftResolved(
            episode_id=episode["episode_id"],
            project=project,
            model_version=version,
            closed_at=closed_at,
            reason=reason,
        )
        await enqueue(con, catalog.MONITOR_DRIFT, event, key=project, source=SOURCE)
        await notify(con, policy.notify, event)
        return event

    async def _causes(
        self, con: asyncpg.Connection, project: str, version: int, drifted: list[asyncpg.Record]
    ) -> list[str]:
        """Traceparents of sampled predictions (data windows) and labels (performance windows)
        in the drifted windows: what an SRE walks to from the episode."""
        out: list[str] = []
        for kind, table, at in (
            ("data", "observations", "served_at"),
            ("performance", "labels", "predicted_at"),
        ):
            spans = [(w["started_at"], w["ended_at"]) for w in drifted if w["kind"] == kind]
            if not spans:
                continue
            rows = await con.fetch(
                f"SELECT traceparent FROM {table} WHERE project = $1 AND model_version = $2 "
                f"AND {at} BETWEEN $3 AND $4 AND traceparent LIKE '%-01' "
                f"ORDER BY seq DESC LIMIT $5",
                project,
                version,
                min(s for s, _ in spans),
                max(e for _, e in spans),
                LINKED_TRACES,
            )
            out.extend(r["traceparent"] for r in rows)
        return out
