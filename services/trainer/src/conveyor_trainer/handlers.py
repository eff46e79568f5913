"""Examples in, triggers in."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from conveyor_auth import from_kafka
from conveyor_bus import Delivery, Rejection
from conveyor_contracts.events import (
    DriftDetected,
    DriftResolved,
    FeatureRowComputed,
    FeedbackRecorded,
    StartTraining,
)
from conveyor_runtime import KnownProject, ProjectCache

from .adapters.repository import ActiveRun, Repository
from .domain.examples import materialize
from .domain.policy import Readiness, may_start, schedule_due
from .runs import OverBudget, Runs, Trigger

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
                trigger = Trigger(
                    "request",
                    d.event.requested_by,
                    d.event.reason,
                    request_id=d.event.request_id,
                    actor=from_kafka(d.event.requested_by),
                )
                try:
                    await self.runs.start(known, trigger, traceparent=d.onward.get("traceparent"))
                except (ActiveRun, OverBudget) as exc:
                    # The requester learns why from trainer.runs, as for any run.
                    await self.runs.decline(known, trigger, f"not started: {exc}")
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
            new_rows = await self.repo.count_since(
                known.spec.name, known.spec.feature_names(), episode["onset_at"]
            )
            now = datetime.now(UTC)
            readiness = await self._may_start(known, new_rows, now, "onset")
            if not readiness.ready:
                continue
            try:
                await self.runs.start(
                    known,
                    Trigger("drift", "monitor", episode_id=episode["episode_id"]),
                    since=episode["onset_at"],
                    traceparent=episode["traceparent"],
                )
            except (ActiveRun, OverBudget):
                continue

    async def check_schedules(self) -> None:
        """Start the scheduled run of each project whose `every_s` has passed since its last
        run started, when its policy allows it now (the run trains on the newest rows)."""
        now = datetime.now(UTC)
        for known in self.projects.all():
            policy = known.spec.policies.retrain
            if policy.every_s is None:
                continue  # no schedule: no query on each poll
            last = await self.repo.last_started(known.spec.name)
            if not schedule_due(policy, last, now):
                continue
            new_rows = await self.repo.count_arrived_since(
                known.spec.name,
                known.spec.feature_names(),
                last or datetime.min.replace(tzinfo=UTC),
            )
            readiness = await self._may_start(known, new_rows, now, "the last run")
            if not readiness.ready:
                continue
            try:
                await self.runs.start(
                    known, Trigger("schedule", "scheduler", f"every {policy.every_s:g}s")
                )
            except (ActiveRun, OverBudget):
                continue

    async def _may_start(
        self, known: KnownProject, new_rows: int, now: datetime, rows_since: str
    ) -> Readiness:
        name = known.spec.name
        return may_start(
            known.spec.policies.retrain,
            new_rows,
            await self.repo.last_finished(name),
            now,
            await self.repo.active(name),
            await self.repo.runs_started_since(name, now - timedelta(days=1)),
            rows_since,
        )
