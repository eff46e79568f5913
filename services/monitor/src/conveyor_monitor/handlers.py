"""Predictions and labels in; drift episodes out."""

from __future__ import annotations

import logging
from typing import Any

from conveyor_bus import Delivery
from conveyor_contracts.events import AliasMoved, FeedbackRecorded, PredictionServed
from conveyor_runtime import NotInRegistry, ProjectCache

from .adapters.registry import Profiles
from .adapters.repository import Repository
from .windows import Evaluator

log = logging.getLogger(__name__)


class Monitor:
    def __init__(self, projects: ProjectCache, repo: Repository, profiles: Profiles) -> None:
        self.projects = projects
        self.repo = repo
        self.profiles = profiles
        self.evaluator = Evaluator(repo)

    async def on_registry_events(self, batch: list[Delivery[Any]]) -> None:
        latest: dict[str, AliasMoved] = {}
        for d in batch:
            if isinstance(d.event, AliasMoved) and d.event.alias == "champion":
                latest[d.event.project] = d.event
        for move in latest.values():
            try:
                profile = await self.profiles.profile(move.project, move.to_version)
            except NotInRegistry as exc:
                # Permanent: the changelog must keep flowing (transient errors propagate and
                # the batch is redelivered).
                log.error("no reference profile for %s v%d: %s", move.project, move.to_version, exc)
                continue
            if await self.repo.set_reference(move.project, move.to_version, profile):
                log.info(
                    "%s: judging v%d against its training profile", move.project, move.to_version
                )

    async def on_predictions(self, batch: list[Delivery[PredictionServed]]) -> None:
        served = [
            d.event for d in batch if d.event.status == "ok" and d.event.model_version is not None
        ]
        await self.repo.add_observations(
            [
                (e.request_id, e.project, e.model_version, e.values, e.label, e.served_at)
                for e in served
                if e.model_version is not None
            ]
        )
        await self._evaluate({e.project for e in served})

    async def on_feedback(self, batch: list[Delivery[FeedbackRecorded]]) -> None:
        labeled = [d.event for d in batch if d.event.model_version is not None]
        await self.repo.add_labels(
            [
                (e.feedback_id, e.project, e.model_version, e.correct, e.predicted_at)
                for e in labeled
                if e.model_version is not None
            ]
        )
        await self._evaluate({e.project for e in labeled})

    async def _evaluate(self, projects: set[str]) -> None:
        for project in sorted(projects):
            known = self.projects.get(project)
            if known is None:
                continue
            opened = await self.evaluator.evaluate(project, known.spec.policies.drift)
            if opened is not None:
                log.warning(
                    "%s: drift episode %s opened (%s)", project, opened.episode_id, opened.kind
                )
