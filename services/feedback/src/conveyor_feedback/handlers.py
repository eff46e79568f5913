"""Predictions and labels in; joined labels out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from conveyor_bus import Bus, Delivery, Rejection
from conveyor_contracts import catalog, envelope_for
from conveyor_contracts.events import FeedbackSubmitted, PredictionServed
from conveyor_runtime import ProjectCache, UnknownProject

from .adapters.repository import Repository
from .domain.join import InvalidFeedback, Prediction, check

log = logging.getLogger(__name__)


class Feedback:
    def __init__(
        self, projects: ProjectCache, repo: Repository, bus: Bus, horizon_s: float
    ) -> None:
        self.projects = projects
        self.repo = repo
        self.bus = bus
        self.horizon_s = horizon_s

    def validate(self, feedback: FeedbackSubmitted) -> None:
        """Raises UnknownProject or InvalidFeedback."""
        check(self.projects.require(feedback.project).spec, feedback)

    async def on_responses(self, batch: list[Delivery[PredictionServed]]) -> None:
        await self.repo.add_predictions(
            [
                Prediction(
                    e.request_id,
                    e.project,
                    e.entity_id,
                    e.model_version,
                    e.feature_names,
                    e.values,
                    e.label,
                    e.served_at,
                    d.headers.get("traceparent"),
                )
                for d, e in ((d, d.event) for d in batch)
                if e.status == "ok"
            ]
        )

    async def on_submitted(self, batch: list[Delivery[FeedbackSubmitted]]) -> list[Rejection]:
        rejections, good = [], []
        for d in batch:
            try:
                self.validate(d.event)
                good.append(d)
            except (UnknownProject, InvalidFeedback) as exc:
                rejections.append(Rejection(d, str(exc), "validate"))
        _, _, refused = await self.repo.add_feedback(
            [d.event for d in good], [d.onward.get("traceparent") for d in good]
        )
        by_id = {d.event.feedback_id: d for d in good}
        rejections.extend(Rejection(by_id[fid], why, "join") for fid, why in refused)
        return rejections

    async def sweep(self) -> int:
        """Dead-letter feedback whose prediction never came within the horizon."""
        expired = await self.repo.expire(self.horizon_s)
        for payload, request_id, feedback_id in expired:
            event = FeedbackSubmitted.model_validate_json(payload)
            headers = envelope_for(
                catalog.FEEDBACK_SUBMITTED, event, source="conveyor/feedback", event_id=feedback_id
            ).to_headers() | {
                "dlq_error": f"no prediction {request_id} within {self.horizon_s:g}s",
                "dlq_stage": "join",
                "dlq_source_topic": catalog.FEEDBACK_SUBMITTED.name,
                "dlq_failed_at": datetime.now(UTC).isoformat(),
            }
            await self.bus.publish_raw(
                catalog.FEEDBACK_SUBMITTED.dlq, payload, key=request_id, headers=headers
            )
        return len(expired)
