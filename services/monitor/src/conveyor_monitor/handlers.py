"""Predictions and labels in; drift episodes out."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opentelemetry import metrics

from conveyor_bus import Delivery
from conveyor_contracts.events import (
    AliasMoved,
    DriftDetected,
    FeedbackRecorded,
    PredictionServed,
)
from conveyor_contracts.project import DriftPolicy
from conveyor_runtime import NotInRegistry, ProjectCache

from .adapters.registry import Profiles
from .adapters.repository import Repository
from .domain.detectors import LEGACY_HOLDOUT_ROWS, calibrate, reference_from_profile
from .domain.sequential import data_sequence, label_threshold, paths
from .windows import Evaluator

log = logging.getLogger(__name__)

LABEL_COVERAGE = metrics.get_meter("conveyor.monitor").create_gauge(
    "conveyor.label.coverage",
    unit="1",
    description="Share of the last 10 minutes' predictions of the judged version with a label.",
)


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
            if await self.repo.reference_version(move.project) == move.to_version:
                continue  # a redelivery: calibrated already
            known = self.projects.get(move.project)
            policy = known.spec.policies.drift if known else DriftPolicy()
            try:
                profile = await self.profiles.profile(move.project, move.to_version)
            except NotInRegistry as exc:
                # Permanent: the changelog must keep flowing (transient errors propagate and
                # the batch is redelivered).
                log.error("no reference profile for %s v%d: %s", move.project, move.to_version, exc)
                continue
            calibration = await asyncio.to_thread(self._calibrate, profile, policy)
            if await self.repo.set_reference(
                move.project, move.to_version, profile, calibration, policy.notify
            ):
                log.info(
                    "%s: judging v%d against its training profile (window %d, alpha %.2g, "
                    "finds a %.2f std shift; sequential thresholds %s)",
                    move.project,
                    move.to_version,
                    calibration["window"],
                    calibration["alpha"],
                    calibration["detectable_shift"],
                    {k: round(calibration[k]["threshold"], 1) for k in ("sequential", "labels")}
                    if "sequential" in calibration
                    else "off",
                )

    @staticmethod
    def _calibrate(profile: dict[str, Any], policy: DriftPolicy) -> dict[str, Any]:
        """The window rule's level and the sequential detectors' thresholds, each path with its
        share of the budgets."""
        reference = reference_from_profile(profile)
        shared = paths(policy.window_rule, policy.sequential)
        windows = calibrate(
            reference,
            policy.model_copy(
                update={"false_alarms_per_million": policy.false_alarms_per_million / shared}
            ),
        )
        out: dict[str, Any] = windows.as_dict()
        if policy.sequential:
            _, data = data_sequence(
                reference,
                step=policy.step,
                false_alarms_per_million=policy.false_alarms_per_million / shared,
            )
            labels = label_threshold(
                float(profile["holdout_accuracy"]),
                int(profile.get("holdout_rows") or LEGACY_HOLDOUT_ROWS),
                policy.label_false_alarms_per_million / shared,
            )
            out |= {"sequential": data.as_dict(), "labels": labels.as_dict()}
        return out

    async def on_predictions(self, batch: list[Delivery[PredictionServed]]) -> None:
        rows = [
            (
                e.request_id,
                e.project,
                e.model_version,
                e.values,
                e.label,
                e.served_at,
                d.headers.get("traceparent"),
            )
            for d, e in ((d, d.event) for d in batch)
            if e.status == "ok" and e.model_version is not None
        ]
        await self.repo.add_observations(rows)
        await self._evaluate({r[1] for r in rows})

    async def on_feedback(self, batch: list[Delivery[FeedbackRecorded]]) -> None:
        rows = [
            (
                e.feedback_id,
                e.project,
                e.model_version,
                e.correct,
                e.predicted_at,
                d.headers.get("traceparent"),
                e.request_id,
                e.label,
            )
            for d, e in ((d, d.event) for d in batch)
            if e.model_version is not None
        ]
        await self.repo.add_labels(rows)
        await self._evaluate({r[1] for r in rows})

    async def on_shadow(self, batch: list[Delivery[PredictionServed]]) -> None:
        """A challenger's answers in shadow mode, compared with the champion's on request."""
        await self.repo.add_shadow(
            [
                (e.request_id, e.project, e.model_version, e.label, e.served_at)
                for e in (d.event for d in batch)
                if e.status == "ok" and e.model_version is not None
            ]
        )

    async def measure_coverage(self) -> None:
        for project, version, share in await self.repo.label_coverage():
            LABEL_COVERAGE.set(share, {"project": project, "version": str(version)})

    async def _evaluate(self, projects: set[str]) -> None:
        for project in sorted(projects):
            known = self.projects.get(project)
            if known is None:
                continue
            change = await self.evaluator.evaluate(project, known.spec.policies.drift)
            if isinstance(change, DriftDetected):
                log.warning(
                    "%s: drift episode %s opened (%s)", project, change.episode_id, change.kind
                )
            elif change is not None:
                log.info(
                    "%s: drift episode %s closed (%s)", project, change.episode_id, change.reason
                )
