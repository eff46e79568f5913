"""Examples in, triggers in."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from conveyor_bus import Delivery, Rejection
from conveyor_contracts.events import (
    DriftDetected,
    DriftResolved,
    FeatureRowComputed,
    FeedbackRecorded,
    StartTraining,
)
from conveyor_runtime import ProjectCache

from .adapters.repository import ActiveRun, Repository
from .domain.examples import materialize
from .domain.policy import episode_ready
from .runs import Runs, Trigger

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, projects: ProjectCache, repo: Repository, runs: Runs) -> None:
        self.projects = projects
        self.repo = repo
        self.runs = runs

    async def on_examples(
        self, batch: list[Delivery[FeatureRowComputed]] | list[Delivery[FeedbackRecorded]]
    ) -> None:
        """Labeled feature rows and feedback (the exact vector the model scored, with the true
        label), each stored once with the topic, partition and offset it was read at."""
        examples = (materialize(d.event, d.topic, d.partition, d.offset) for d in batch)
        await self.repo.add_examples([e for e in examples if e is not None])

    async def on_requests(self, batch: list[Delivery[StartTraining]]) -> list[Rejection]:
        rejections = []
        for d in batch:
            known = self.projects.get(d.event.project)
            if known is None:
                rejections.append(Rejection(d, f"unknown project {d.event.project!r}", "validate"))
                continue
            if await self.repo.record_request(d.event.request_id, d.event.project):
                try:
                    await self.runs.start(
                        known,
                        Trigger(
                            "request",
                            d.event.requested_by,
                            d.event.reason,
                            request_id=d.event.request_id,
                        ),
                        traceparent=d.onward.get("traceparent"),
                    )
                except ActiveRun as exc:
                    log.info("training request %s not started: %s", d.event.request_id, exc)
        return rejections

    async def on_drift(self, batch: list[Delivery[DriftDetected | DriftResolved]]) -> None:
        for d in batch:
            e = d.event
            known = self.projects.get(e.project)
            if isinstance(e, DriftDetected):
                if known is not None and known.spec.policies.retrain.on_drift:
                    await self.repo.record_episode(
                        e.episode_id,
                        e.project,
                        e.onset_at,
                        e.opened_at,
                        d.onward.get("traceparent"),
                    )
            else:
                await self.repo.close_episode(e.episode_id, e.reason)

    async def check_episodes(self) -> None:
        """Start the retraining run of each pending episode whose policy allows it now."""
        for episode in await self.repo.pending_episodes():
            known = self.projects.get(episode["project"])
            if known is None:
                continue
            policy = known.spec.policies.retrain
            new_rows = await self.repo.count_since(
                known.spec.name, known.spec.feature_names(), episode["onset_at"]
            )
            now = datetime.now(UTC)
            readiness = episode_ready(
                policy,
                new_rows,
                await self.repo.last_finished(known.spec.name),
                now,
                await self.repo.active(known.spec.name),
                await self.repo.runs_finished_since(known.spec.name, now - timedelta(days=1)),
            )
            if not readiness.ready:
                continue
            try:
                await self.runs.start(
                    known,
                    Trigger("drift", "monitor", episode_id=episode["episode_id"]),
                    since=episode["onset_at"],
                    traceparent=episode["traceparent"],
                )
            except ActiveRun:
                continue
