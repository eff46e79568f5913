"""Predictions, labels and waiting feedback. A join and its announcement commit together, under
a per-request lock, so a label and its prediction arriving at the same moment still meet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from opentelemetry import metrics

from conveyor_bus import tracing
from conveyor_contracts import catalog
from conveyor_contracts.events import FeedbackRecorded, FeedbackSubmitted
from conveyor_db import Database, enqueue_many

from ..domain.join import InvalidFeedback, Prediction, join

SOURCE = "conveyor/feedback"
LABEL_DELAY = metrics.get_meter("conveyor.feedback").create_histogram(
    "conveyor.label.delay",
    unit="s",
    description="Time from a prediction to the label that judges it, by project.",
    explicit_bucket_boundaries_advisory=[1, 10, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400],
)


async def _lock(con: asyncpg.Connection, request_ids: list[str]) -> None:
    for request_id in sorted(set(request_ids)):  # one order everywhere: no deadlocks
        await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "request:" + request_id)


def _prediction(row: asyncpg.Record) -> Prediction:
    return Prediction(
        row["request_id"],
        row["project"],
        row["entity_id"],
        row["model_version"],
        list(row["feature_names"]),
        list(row["values"]),
        row["predicted"],
        row["served_at"],
        row["traceparent"],
    )


class Repository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_predictions(self, predictions: list[Prediction]) -> int:
        """Store predictions once; join any feedback that was waiting for them."""
        if not predictions:
            return 0
        async with self.db.pool.acquire() as con, con.transaction():
            await _lock(con, [p.request_id for p in predictions])
            await con.executemany(
                "INSERT INTO predictions (request_id, project, entity_id, model_version, "
                "feature_names, values, predicted, served_at, traceparent) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING",
                [
                    (
                        p.request_id,
                        p.project,
                        p.entity_id,
                        p.model_version,
                        p.feature_names,
                        p.values,
                        p.predicted,
                        p.served_at,
                        p.traceparent,
                    )
                    for p in predictions
                ],
            )
            waiting = await con.fetch(
                "DELETE FROM pending WHERE request_id = ANY($1::text[]) "
                "RETURNING payload, traceparent, sent_by",
                [p.request_id for p in predictions],
            )
            feedback = [FeedbackSubmitted.model_validate_json(bytes(w["payload"])) for w in waiting]
            traces = [w["traceparent"] for w in waiting]
            senders = [w["sent_by"] for w in waiting]
            return len(await self._record(con, feedback, traces, senders))

    async def add_feedback(
        self,
        feedback: list[FeedbackSubmitted],
        traceparents: list[str | None] | None = None,
        sent_by: str | None = None,
    ) -> tuple[list[FeedbackRecorded], list[str], list[tuple[str, str]]]:
        """Join what can be joined now, keep the rest waiting. `traceparents`: the trace each
        feedback arrived in; `sent_by`: the caller who sent them over HTTP. Returns (recorded,
        waiting feedback ids, refused (feedback id, reason))."""
        if not feedback:
            return [], [], []
        traces = traceparents or [None] * len(feedback)
        async with self.db.pool.acquire() as con, con.transaction():
            await _lock(con, [f.request_id for f in feedback])
            known = {
                r["request_id"]
                for r in await con.fetch(
                    "SELECT request_id FROM predictions WHERE request_id = ANY($1::text[])",
                    [f.request_id for f in feedback],
                )
            }
            waiting = [
                (f, t) for f, t in zip(feedback, traces, strict=True) if f.request_id not in known
            ]
            await con.executemany(
                "INSERT INTO pending (feedback_id, request_id, project, label, submitted_at, "
                "payload, traceparent, sent_by) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) "
                "ON CONFLICT DO NOTHING",
                [
                    (
                        f.feedback_id,
                        f.request_id,
                        f.project,
                        f.label,
                        f.submitted_at,
                        f.model_dump_json().encode(),
                        t,
                        sent_by,
                    )
                    for f, t in waiting
                ],
            )
            refused: list[tuple[str, str]] = []
            now = [(f, t) for f, t in zip(feedback, traces, strict=True) if f.request_id in known]
            recorded = await self._record(
                con, [f for f, _ in now], [t for _, t in now], [sent_by] * len(now), refused
            )
            return recorded, [f.feedback_id for f, _ in waiting], refused

    async def _record(
        self,
        con: asyncpg.Connection,
        feedback: list[FeedbackSubmitted],
        traceparents: list[str | None],
        senders: list[str | None],
        refused: list[tuple[str, str]] | None = None,
    ) -> list[FeedbackRecorded]:
        """Join and announce each label: `feedback.recorded` continues the trace the label came
        in, through a span that links to the span that served the prediction."""
        if not feedback:
            return []
        rows = await con.fetch(
            "SELECT request_id, project, entity_id, model_version, feature_names, values, "
            "predicted, served_at, traceparent FROM predictions "
            "WHERE request_id = ANY($1::text[])",
            [f.request_id for f in feedback],
        )
        predictions = {r["request_id"]: _prediction(r) for r in rows}
        now = datetime.now(UTC)
        recorded: list[FeedbackRecorded] = []
        traces: list[dict[str, str]] = []
        for f, traceparent, sender in zip(feedback, traceparents, senders, strict=True):
            prediction = predictions[f.request_id]
            try:
                event = join(prediction, f, now)
            except InvalidFeedback as exc:
                if refused is not None:
                    refused.append((f.feedback_id, str(exc)))
                continue
            delay_s = (now - event.predicted_at).total_seconds()
            inserted = await con.fetchval(
                "INSERT INTO labels (feedback_id, request_id, project, label, correct, "
                "submitted_at, labeled_at, delay_s, sent_by) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
                "ON CONFLICT DO NOTHING RETURNING true",
                f.feedback_id,
                f.request_id,
                f.project,
                f.label,
                event.correct,
                f.submitted_at,
                now,
                delay_s,
                sender,
            )
            if inserted:  # a duplicate feedback id changes nothing
                recorded.append(event)
                LABEL_DELAY.record(delay_s, {"project": f.project})
                with tracing.span(
                    "feedback join",
                    parent=traceparent,
                    links=[prediction.traceparent] if prediction.traceparent else [],
                    attributes={"conveyor.request_id": f.request_id, "conveyor.project": f.project},
                ):
                    traces.append(tracing.context_headers())
        await enqueue_many(
            con,
            catalog.FEEDBACK_RECORDED,
            [(e.request_id, e) for e in recorded],
            source=SOURCE,
            traces=traces,
        )
        return recorded

    async def expire(self, horizon_s: float) -> list[tuple[bytes, str, str]]:
        """Remove feedback that waited past the horizon: (payload, request id, feedback id)."""
        rows = await self.db.pool.fetch(
            "DELETE FROM pending WHERE received_at < now() - make_interval(secs => $1) "
            "RETURNING payload, request_id, feedback_id",
            horizon_s,
        )
        return [(bytes(r["payload"]), r["request_id"], r["feedback_id"]) for r in rows]

    async def stats(self, project: str) -> dict[str, Any]:
        row = await self.db.pool.fetchrow(
            "SELECT count(*) AS labels, avg(correct::int) AS correct_share, "
            "avg(delay_s) AS mean_delay_s FROM (SELECT DISTINCT ON (request_id) correct, delay_s "
            "FROM labels WHERE project = $1 "
            "ORDER BY request_id, submitted_at DESC, labeled_at DESC) newest",
            project,
        )
        pending = await self.db.pool.fetchval(
            "SELECT count(*) FROM pending WHERE project = $1", project
        )
        corrections = await self.db.pool.fetchval(
            "SELECT count(*) - count(DISTINCT request_id) FROM labels WHERE project = $1", project
        )
        delays = await self.db.pool.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY delay_s) AS p50, "
            "percentile_cont(0.9) WITHIN GROUP (ORDER BY delay_s) AS p90 "
            "FROM labels WHERE project = $1",
            project,
        )
        return {
            "labels": row["labels"],
            "correct_share": row["correct_share"],
            "mean_label_delay_s": row["mean_delay_s"],
            "p50_label_delay_s": delays["p50"],
            "p90_label_delay_s": delays["p90"],
            "waiting": pending,
            "corrections": corrections,
        }

    async def history(self, project: str, request_id: str) -> list[dict[str, Any]]:
        """Every label given for one prediction, in the order they were given; the last one
        counts, corrections keep the ones before it."""
        rows = await self.db.pool.fetch(
            "SELECT feedback_id, label, correct, submitted_at, labeled_at, delay_s, sent_by "
            "FROM labels "
            "WHERE project = $1 AND request_id = $2 ORDER BY submitted_at, labeled_at, feedback_id",
            project,
            request_id,
        )
        return [dict(r) | {"current": i == len(rows) - 1} for i, r in enumerate(rows)]
