"""A training run from start to finish: examples → fit → ONNX gate → register → promotion gate."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from conveyor_bus import tracing
from conveyor_contracts.events import TrainingRunFinished
from conveyor_runtime import KnownProject

from .adapters.registry import Registry, encode
from .adapters.repository import Repository, digest
from .domain import training
from .domain.policy import Paired, promotion

log = logging.getLogger(__name__)


class Runs:
    """Starts runs (one per project at a time) and executes them in the background."""

    def __init__(self, repo: Repository, registry: Registry) -> None:
        self.repo = repo
        self.registry = registry
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(
        self,
        known: KnownProject,
        trigger: str,
        since: datetime | None = None,
        episode_id: str | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Open a run and execute it in the background; raises ActiveRun if one is going.
        The run is a span in the trace of what caused it (`traceparent`, else the active span:
        an HTTP request's, say); the version it registers and promotes continues it."""
        run_id = uuid4().hex
        await self.repo.open_run(run_id, known.spec.name, trigger)
        if episode_id is not None and not await self.repo.start_episode(episode_id, run_id):
            await self._finish(
                known,
                run_id,
                trigger,
                datetime.now(UTC),
                "skipped",
                "the episode already has its run",
                logs="",
            )
            return run_id
        task = asyncio.create_task(
            self._traced(known, run_id, trigger, since, traceparent), name=f"run-{run_id[:8]}"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return run_id

    async def _traced(
        self,
        known: KnownProject,
        run_id: str,
        trigger: str,
        since: datetime | None,
        traceparent: str | None,
    ) -> None:
        with tracing.span(
            "training run",
            parent=traceparent,
            attributes={
                "conveyor.project": known.spec.name,
                "conveyor.run_id": run_id,
                "conveyor.trigger": trigger,
            },
        ):
            await self._execute(known, run_id, trigger, since)

    async def _execute(
        self, known: KnownProject, run_id: str, trigger: str, since: datetime | None
    ) -> None:
        started = datetime.now(UTC)
        spec, policy = known.spec, known.spec.policies
        logs: list[str] = []
        try:
            rows = await self.repo.examples(
                spec.name, spec.feature_names(), policy.retrain.train_rows, since
            )
            logs.append(
                f"{len(rows)} examples" + (f" observed since {since:%H:%M:%S}" if since else "")
            )
            try:
                data = training.dataset(spec, [(list(r["values"]), r["label"]) for r in rows])
                candidate = await asyncio.to_thread(
                    training.train, spec, data, policy.retrain.holdout_fraction
                )
            except training.TrainingRefused as exc:
                await self._finish(
                    known,
                    run_id,
                    trigger,
                    started,
                    "skipped",
                    str(exc),
                    logs="\n".join(logs),
                    rows=len(rows),
                )
                return
            logs.append(
                f"holdout metrics {candidate.metrics}; ONNX max diff {candidate.onnx_max_diff:.2e}"
            )
            champion = await self.registry.champion(spec.name)
            champion_metrics: dict[str, float] = {}
            paired: Paired | None = None
            if champion is not None and candidate.holdout is not None:
                holdout = candidate.holdout
                theirs, ours = await asyncio.to_thread(
                    lambda: (
                        training.onnx_probabilities(champion[1], holdout.x),
                        training.onnx_probabilities(candidate.onnx, holdout.x),
                    )
                )
                champion_metrics = training.evaluate(theirs, holdout.y)
                paired = Paired(
                    (ours.argmax(axis=1) == holdout.y).tolist(),
                    (theirs.argmax(axis=1) == holdout.y).tolist(),
                )
                logs.append(f"champion v{champion[0]} on the same holdout: {champion_metrics}")
            lineage = {
                "training_rows": len(rows),
                "example_ids_digest": digest([r["example_id"] for r in rows]),
                "observed_from": rows[0]["observed_at"].isoformat(),
                "observed_to": rows[-1]["observed_at"].isoformat(),
                "estimator": spec.estimator.class_path,
                "params": candidate.params,
                "seed": spec.estimator.seed,
                "trigger": trigger,
                "parent_version": champion[0] if champion else None,
                "project_version": known.version,
                "environment": training.environment(),
            }
            body: dict[str, Any] = {
                "run_id": run_id,
                "project_version": known.version,
                "metrics": candidate.metrics,
                "signature": candidate.signature,
                "profile": candidate.profile,
                "lineage": lineage,
            }
            if candidate.failure:
                body |= {"status": "failed", "failure_reason": candidate.failure}
            else:
                body |= {"status": "ready", "onnx_base64": encode(candidate.onnx)}
            registered = await self.registry.register(spec.name, body)
            version = int(registered["version"])
            if candidate.failure:
                await self._finish(
                    known,
                    run_id,
                    trigger,
                    started,
                    "failed",
                    candidate.failure,
                    logs="\n".join(logs),
                    rows=len(rows),
                    version=version,
                    metrics=candidate.metrics,
                    params=candidate.params,
                )
                return
            decision = promotion(
                policy.promotion,
                candidate.metrics,
                champion_metrics if champion else None,
                champion[0] if champion else None,
                paired,
            )
            if decision.promote:
                await self.registry.promote(
                    spec.name, version, f"{decision.reason} (run {run_id[:8]})"
                )
            logs.append(f"promotion: {decision.reason}")
            await self._finish(
                known,
                run_id,
                trigger,
                started,
                "succeeded",
                decision.reason,
                logs="\n".join(logs),
                rows=len(rows),
                version=version,
                metrics=candidate.metrics,
                champion=champion_metrics,
                promoted=decision.promote,
                params=candidate.params,
            )
        except Exception as exc:
            log.exception("run %s failed", run_id)
            await self._finish(
                known, run_id, trigger, started, "failed", f"{exc!r}", logs="\n".join(logs)
            )

    async def _finish(
        self,
        known: KnownProject,
        run_id: str,
        trigger: str,
        started: datetime,
        status: str,
        reason: str,
        *,
        logs: str,
        rows: int = 0,
        version: int | None = None,
        metrics: dict[str, float] | None = None,
        champion: dict[str, float] | None = None,
        promoted: bool = False,
        params: dict[str, Any] | None = None,
    ) -> None:
        event = TrainingRunFinished(
            run_id=run_id,
            project=known.spec.name,
            trigger=trigger,
            status=status,
            reason=reason,
            model_version=version,
            promoted=promoted,
            metrics=metrics or {},
            champion_metrics=champion or {},
            started_at=started,
            finished_at=datetime.now(UTC),
            training_rows=rows,
        )
        await self.repo.finish_run(event, params or {}, logs)
        log.info("run %s %s: %s", run_id, status, reason)

    async def wait(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
