"""Cut full windows from stored observations and labels, test them, step the sequential
detectors, open and close episodes.

Everything is derived from the database (cursors, windows, the sequential detectors' state,
episodes), inside one transaction per project under an advisory lock: a restart resumes exactly
where the last evaluation stopped, with the evidence it had, and replicas never evaluate the same
window or step twice.
"""

from __future__ import annotations

import copy
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
    LEGACY_HOLDOUT_ROWS,
    MULTIVARIATE,
    PREDICTION,
    Reference,
    data_drift,
    episode_closes,
    episode_opens,
    performance_drift,
    prediction_codes,
    reference_from_profile,
    window_size,
)
from .domain.sequential import DataSequence, ErrorSequence, Evidence, data_sequence, released

_meter = metrics.get_meter("conveyor.monitor")
DRIFT_EFFECT = _meter.create_gauge(
    "conveyor.drift.effect",
    unit="1",
    description="Last data window's effect size per test: Wasserstein distance over the "
    "reference's standard deviation (numeric features), Jensen-Shannon distance (categorical "
    "ones and `prediction`), reconstruction-error increase (the multivariate test).",
)
DRIFT_STATISTIC = _meter.create_gauge(
    "conveyor.drift.statistic",
    unit="1",
    description="Last data window's test statistic per test (Kolmogorov-Smirnov for numeric "
    "features, chi-squared for categorical ones and the predicted classes, Mann-Whitney for "
    "the multivariate test).",
)
DRIFT_PSI = _meter.create_gauge(
    "conveyor.drift.psi",
    unit="1",
    description="Last data window's population stability index per test.",
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
DRIFT_EVIDENCE = _meter.create_gauge(
    "conveyor.drift.evidence",
    unit="1",
    description="The sequential detectors' accumulated evidence (largest log-likelihood ratio) "
    "over its threshold, by kind (data, performance): an alarm at 1.",
)
KINDS = ("data", "performance")
LINKED_TRACES = 16  # requests (and labels) an episode's span links to
LABEL_BATCH = 5_000  # labels read at once by the sequential detector
LEADERS = 5  # tests an alarm names


def _leaders(evidence: Evidence, reference: Reference) -> list[FeatureDrift]:
    """The tests with the most evidence, as the features of an alarm: the statistic is the
    test's accumulated log-likelihood ratio, its p-value the bound exp(-statistic)."""
    kinds = {g.name: g.kind for g in reference.groups} | {
        PREDICTION: "prediction",
        MULTIVARIATE: "multivariate",
    }
    out = []
    for test, level in evidence.leaders[:LEADERS]:
        bound = min(1.0, float(np.exp(-max(level, 0.0))))
        out.append(
            FeatureDrift(
                feature=test,
                kind=kinds.get(test, "numeric"),
                statistic=level,
                p_value=bound,
                q_value=bound,
                effect=level / evidence.threshold,
                material=True,
                drifted=level >= evidence.threshold,
            )
        )
    return out


class Evaluator:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._references: dict[str, tuple[int, datetime, Reference, DataSequence | None]] = {}

    def prepared(self, ref: asyncpg.Record) -> tuple[Reference, DataSequence | None]:
        """The prepared reference of a `refs` row and a fresh sequential data detector for it
        (None when its calibration has none), kept until the row changes."""
        key = (ref["model_version"], ref["activated_at"])
        cached = self._references.get(ref["project"])
        if cached is None or cached[:2] != key:
            reference = reference_from_profile(ref)
            sequential = (ref["calibration"] or {}).get("sequential")
            sequence = (
                data_sequence(
                    reference,
                    step=int(sequential["step"]),
                    false_alarms_per_million=1.0,
                    threshold=float(sequential["threshold"]),
                )[0]
                if sequential
                else None
            )
            cached = self._references[ref["project"]] = (*key, reference, sequence)
        return cached[2], cached[3]

    def reference(self, ref: asyncpg.Record) -> Reference:
        return self.prepared(ref)[0]

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
            reference, template = self.prepared(ref)
            calibration = ref["calibration"] or {}
            window = int(
                calibration.get("window") or window_size(policy, reference.tests(), reference.rows)
            )
            alpha = float(calibration.get("alpha", policy.alpha))
            DRIFT_ALPHA.set(alpha, {"project": project, "version": str(version)})
            held = bool(
                await con.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM episodes WHERE project = $1 AND "
                    "model_version = $2 AND state = 'open')",
                    project,
                    version,
                )
            )
            alarms: list[int] = []  # ids of the sequential detectors' alarm windows
            if policy.sequential and template is not None:
                alarms += await self._sequential_data(
                    con, project, version, reference, template, held, policy.recover * window
                )
            if policy.sequential and "labels" in calibration:
                alarms += await self._sequential_labels(
                    con, project, version, ref, held, policy.recover * window
                )
            await self._data_windows(con, project, version, reference, policy, window, alpha)
            await self._performance_windows(con, project, version, ref, policy, window)
            opened = await self._maybe_open(con, project, version, ref, policy, alpha, alarms)
            return opened or await self._maybe_close(con, project, version, policy, window)

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

    async def _resume(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        kind: str,
        sequence: DataSequence | ErrorSequence,
        held: bool,
    ) -> int:
        """Bring `sequence` to its stored state; returns where it got to."""
        row = await con.fetchrow(
            "SELECT last_seq, state FROM sequences WHERE project = $1 AND model_version = $2 "
            "AND kind = $3",
            project,
            version,
            kind,
        )
        if row is not None:
            sequence.restore(row["state"])
        if held and not sequence.held:
            sequence.hold()  # an episode the window rule opened: the baseline stops learning
        return int(row["last_seq"]) if row is not None else 0

    async def _save_sequence(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        kind: str,
        cursor: int,
        state: dict[str, Any],
        evidence: Evidence | None,
    ) -> None:
        shown = (
            {
                "statistic": evidence.statistic,
                "threshold": evidence.threshold,
                "at_rest": evidence.at_rest,
                "leaders": [{"test": t, "evidence": v} for t, v in evidence.leaders[:LEADERS]],
                "held": state["held"],
                "rested": state["rested"],
                "steps": state["steps"],
            }
            if evidence is not None
            else {"held": state["held"], "rested": state["rested"], "steps": state["steps"]}
        )
        await con.execute(
            "INSERT INTO sequences (project, model_version, kind, last_seq, state, evidence) "
            "VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (project, model_version, kind) DO UPDATE SET "
            "last_seq = $4, state = $5, evidence = CASE WHEN $7 THEN $6 ELSE "
            "sequences.evidence || $6 END, updated_at = now()",
            project,
            version,
            kind,
            cursor,
            state,
            shown,
            evidence is not None,
        )

    async def _alarm_window(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        kind: str,
        table: str,
        at: str,
        seq: int,
        units: int,
        evidence: Evidence,
        features: list[FeatureDrift],
    ) -> int:
        """An alarm of a sequential detector, kept as a drifted window spanning the run of its
        evidence (from where its CUSUM last left zero)."""
        span = max(1, evidence.onset * units)
        times = await con.fetch(
            f"SELECT {at} AS at FROM {table} WHERE project = $1 AND model_version = $2 "
            f"AND seq <= $3 ORDER BY seq DESC LIMIT $4",
            project,
            version,
            seq,
            span,
        )
        moments = sorted(r["at"] for r in times)
        window_id = await con.fetchval(
            "INSERT INTO windows (project, model_version, kind, detector, started_at, ended_at, "
            "size, drifted, evidence) VALUES ($1,$2,$3,'sequential',$4,$5,$6,true,$7) "
            "RETURNING id",
            project,
            version,
            kind,
            moments[0],
            moments[-1],
            len(moments),
            {
                "statistic": evidence.statistic,
                "threshold": evidence.threshold,
                "features": [f.model_dump() for f in features],
            },
        )
        WINDOWS.add(
            1,
            {"project": project, "version": str(version), "kind": kind, "drifted": "true"},
        )
        return int(window_id)

    async def _sequential_data(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        reference: Reference,
        template: DataSequence,
        held: bool,
        recovery: int,
    ) -> list[int]:
        """Every `step` new observations are one step of the data side's CUSUMs; returns the
        ids of the alarms' windows."""
        sequence = copy.deepcopy(template)
        sequence.recovery_steps = max(1, recovery // sequence.step_rows)
        cursor = await self._resume(con, project, version, "data", sequence, held)
        step, evidence, alarms = sequence.step_rows, None, []
        while True:
            rows = await con.fetch(
                "SELECT seq, values, predicted FROM observations WHERE project = $1 "
                "AND model_version = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                project,
                version,
                cursor,
                step,
            )
            if len(rows) < step:
                break
            cursor = rows[-1]["seq"]
            x = np.asarray([r["values"] for r in rows], dtype=np.float64)
            if x.shape[1] != len(reference.names):
                continue  # vectors of another feature set: not comparable with this reference
            predicted = prediction_codes([r["predicted"] for r in rows], reference.classes)
            evidence = sequence.observe(x, predicted)
            if evidence.alarm:
                features = _leaders(evidence, reference)
                alarms.append(
                    await self._alarm_window(
                        con,
                        project,
                        version,
                        "data",
                        "observations",
                        "served_at",
                        cursor,
                        step,
                        evidence,
                        features,
                    )
                )
        if evidence is not None:
            DRIFT_EVIDENCE.set(
                evidence.statistic / evidence.threshold,
                {"project": project, "version": str(version), "kind": "data"},
            )
        await self._save_sequence(con, project, version, "data", cursor, sequence.state(), evidence)
        return alarms

    async def _sequential_labels(
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        ref: asyncpg.Record,
        held: bool,
        recovery: int,
    ) -> list[int]:
        """Every label is one step of the label side's CUSUMs; returns the ids of the alarms'
        windows."""
        holdout = int(ref["holdout_rows"] or LEGACY_HOLDOUT_ROWS)
        sequence = ErrorSequence(
            errors=(1 - float(ref["holdout_accuracy"])) * holdout,
            n=holdout,
            threshold=float(ref["calibration"]["labels"]["threshold"]),
            recovery_labels=recovery,
        )
        cursor = await self._resume(con, project, version, "performance", sequence, held)
        evidence, alarms = None, []
        while True:
            rows = await con.fetch(
                "SELECT seq, correct FROM labels WHERE project = $1 AND model_version = $2 "
                "AND seq > $3 ORDER BY seq LIMIT $4",
                project,
                version,
                cursor,
                LABEL_BATCH,
            )
            for r in rows:
                evidence = sequence.observe(not r["correct"])
                if evidence.alarm:
                    alarms.append(
                        await self._alarm_window(
                            con,
                            project,
                            version,
                            "performance",
                            "labels",
                            "predicted_at",
                            r["seq"],
                            1,
                            evidence,
                            [],
                        )
                    )
            if rows:
                cursor = rows[-1]["seq"]
            if len(rows) < LABEL_BATCH:
                break
        if evidence is not None:
            DRIFT_EVIDENCE.set(
                evidence.statistic / evidence.threshold,
                {"project": project, "version": str(version), "kind": "performance"},
            )
        await self._save_sequence(
            con, project, version, "performance", cursor, sequence.state(), evidence
        )
        return alarms

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
            verdict = performance_drift(
                correct,
                len(rows),
                ref["holdout_accuracy"],
                policy,
                ref["holdout_rows"] or LEGACY_HOLDOUT_ROWS,
            )
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
        alarms: list[int],
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
        drifted: list[asyncpg.Record] = list(
            await con.fetch(
                "SELECT id, kind, started_at, ended_at, drifted, evidence FROM windows "
                "WHERE id = ANY($1::bigint[])",
                alarms,
            )
        )
        for kind in KINDS if policy.window_rule else ():
            recent = (
                await con.fetch(
                    "SELECT id, kind, started_at, ended_at, drifted, evidence FROM windows "
                    "WHERE project = $1 AND model_version = $2 AND kind = $3 AND "
                    "detector = 'window' AND ($4::timestamptz IS NULL OR ended_at > $4) "
                    "ORDER BY id DESC LIMIT $5",
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
            accuracy=next(
                (w["evidence"]["accuracy"] for w in reversed(perf) if "accuracy" in w["evidence"]),
                None,
            ),
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
        self,
        con: asyncpg.Connection,
        project: str,
        version: int,
        policy: DriftPolicy,
        window: int,
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
                "kind = $3 AND detector = 'window' AND id > $4 ORDER BY id DESC LIMIT $5",
                project,
                version,
                kind,
                since,
                policy.recover,
            )
            if not episode_closes([w["drifted"] for w in later][::-1], policy):
                return None
        # the sequential evidence (both kinds: both stopped learning) has been at rest for as
        # long as the windows took
        sequences = await con.fetch(
            "SELECT kind, state FROM sequences WHERE project = $1 AND model_version = $2 "
            "FOR UPDATE",
            project,
            version,
        )
        if policy.sequential and any(
            s["state"]["held"] and int(s["state"].get("rested", 0)) < policy.recover * window
            for s in sequences
        ):
            return None
        for s in sequences:
            await con.execute(
                "UPDATE sequences SET state = $4 WHERE project = $1 AND model_version = $2 "
                "AND kind = $3",
                project,
                version,
                s["kind"],
                released(s["state"]),
            )
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
