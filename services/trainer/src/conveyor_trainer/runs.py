"""A training run from start to finish: examples → fit → ONNX gate → register → promotion gate.

Also experiments (variants of the estimator trained on one snapshot of the examples, one after
another, never promoted on their own) and `reproduce` (read a version's training set again from
the recorded offset ranges, retrain, compare with the registered model on the holdout).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import warnings
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import numpy as np

from conveyor_auth import Actor
from conveyor_bus import KafkaSettings, read_ranges, tracing
from conveyor_contracts import ModelProject, catalog
from conveyor_contracts.events import TrainingRunFinished
from conveyor_contracts.project import EstimatorSpec
from conveyor_runtime import KnownProject

from .adapters.provenance import code_provenance
from .adapters.registry import Registry, encode
from .adapters.repository import ActiveRun, Repository
from .domain import training
from .domain.examples import (
    content_digest,
    ids_digest,
    materialize,
    offset_ranges,
    order_key,
    select,
)
from .domain.policy import Paired, promotion

log = logging.getLogger(__name__)

REPRODUCE_TOLERANCE = 1e-6
EXAMPLE_TOPICS = {t.name: t for t in (catalog.FEATURES_ROWS, catalog.FEEDBACK_RECORDED)}
EXPERIMENT_WAIT_S = 900.0  # how long a variant waits for a run another trigger started

_current_log: ContextVar[RunLog | None] = ContextVar("conveyor_run_log", default=None)


class RunLog(logging.Handler):
    """A run's log: its own lines, and every record logged — by the trainer or any library,
    Python warnings from fitting included — while the run works, in its task or in the
    threads it hands work to (they inherit the context)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        self.lines.append(f"{datetime.now(UTC):%H:%M:%S} {message}")

    def emit(self, record: logging.LogRecord) -> None:
        at = datetime.fromtimestamp(record.created, UTC)
        self.lines.append(f"{at:%H:%M:%S} {record.levelname} {record.name}: {record.getMessage()}")

    def __str__(self) -> str:
        return "\n".join(self.lines)

    @staticmethod
    def capture() -> None:
        """Route log records (and Python warnings, each time they occur) to the log of the run
        that is working when they are emitted."""
        root = logging.getLogger()
        if not any(isinstance(h, _RunLogRouter) for h in root.handlers):
            root.addHandler(_RunLogRouter(logging.INFO))
        # Again at each start: whatever swapped `warnings.showwarning` since (a test harness)
        # does not keep a run's warnings from its log.
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        warnings.filterwarnings("always", category=UserWarning)  # sklearn's, at each fit


class _RunLogRouter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if (run_log := _current_log.get()) is not None:
            run_log.emit(record)


class OverBudget(Exception):
    """The project's daily budget of runs is spent."""


@dataclass(frozen=True)
class Trigger:
    """What started a run: a person (over HTTP or the CLI), a request on Kafka, a drift
    episode, or a schedule."""

    kind: str  # person | request | drift | schedule
    by: str
    reason: str = ""
    episode_id: str | None = None
    request_id: str | None = None
    # Who the audit log records as having started it: a person or a request's sender (a drift
    # episode or a schedule is the platform's own doing, recorded on the run itself).
    actor: Actor | None = None

    @property
    def text(self) -> str:
        if self.kind == "drift":
            return f"drift episode {self.episode_id}"
        if self.kind == "request":
            return f"request {self.request_id} by {self.by}: {self.reason}"
        return f"{self.by}: {self.reason}"

    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "by": self.by,
            "reason": self.reason,
            "episode_id": self.episode_id,
            "request_id": self.request_id,
        }


@dataclass
class Snapshot:
    """The examples a run trains on, and what identifies them."""

    rows: list[asyncpg.Record]  # as selected, regression set included
    training: list[tuple[str, datetime, list[float], str]]  # id, observed_at, values, label
    sources: list[dict[str, Any]]
    regression: tuple[str, list[str]] | None = None

    @property
    def excluded(self) -> int:
        """Selected examples held back because they belong to the regression set."""
        return len(self.rows) - len(self.training)


class ReproduceFailed(Exception):
    """The recorded training set cannot be read again as it was."""


class Runs:
    """Starts runs (one per project at a time) and executes them in the background."""

    def __init__(
        self, repo: Repository, registry: Registry, kafka: KafkaSettings | None = None
    ) -> None:
        self.repo = repo
        self.registry = registry
        self.kafka = kafka  # where the training sets are read again (reproduce)
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(
        self,
        known: KnownProject,
        trigger: Trigger,
        since: datetime | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Open a run and execute it in the background; raises ActiveRun if one is going.
        The run is a span in the trace of what caused it (`traceparent`, else the active span:
        an HTTP request's, say); the version it registers and promotes continues it."""
        await self.check_budget(known)
        run_id = uuid4().hex
        await self._open(run_id, known, trigger, audit="run.start")
        episode_id = trigger.episode_id
        if episode_id is not None and not await self.repo.start_episode(episode_id, run_id):
            await self._finish(
                known,
                run_id,
                trigger.text,
                datetime.now(UTC),
                "skipped",
                "the episode already has its run",
                logs="",
            )
            return run_id
        self._spawn(self._traced(known, run_id, trigger, since, traceparent), run_id)
        return run_id

    async def _open(
        self,
        run_id: str,
        known: KnownProject,
        trigger: Trigger,
        experiment_id: str | None = None,
        variant: EstimatorSpec | None = None,
        status: str = "running",
        audit: str | None = None,
    ) -> None:
        """Open the run; `audit`: the action its trigger's actor is recorded as doing, with it."""
        entry = None
        if audit is not None and trigger.actor is not None:
            entry = trigger.actor.entry(
                audit,
                project=known.spec.name,
                target=f"run {run_id}"
                + (f" of experiment {experiment_id}" if experiment_id else ""),
                reason=trigger.reason,
            )
        await self.repo.open_run(
            run_id,
            known.spec.name,
            trigger.text,
            trigger.info(),
            experiment_id,
            variant.model_dump(mode="json") if variant else None,
            status,
            audit=entry,
        )

    async def check_budget(self, known: KnownProject, runs: int = 1) -> None:
        """Raise OverBudget unless `runs` more runs fit in the project's daily budget."""
        budget = known.spec.policies.retrain.max_runs_per_day
        used = await self.repo.runs_started_since(
            known.spec.name, datetime.now(UTC) - timedelta(days=1)
        )
        if used + runs > budget:
            raise OverBudget(
                f"daily budget: {used} of {budget} runs of {known.spec.name!r} started in the "
                f"last 24 hours" + (f"; {runs} asked for" if runs > 1 else "")
            )

    async def decline(
        self,
        known: KnownProject,
        trigger: Trigger,
        reason: str,
        experiment_id: str | None = None,
        variant: EstimatorSpec | None = None,
    ) -> str:
        """Record (and announce on trainer.runs) a run that did not train, and why."""
        run_id = uuid4().hex
        await self._open(run_id, known, trigger, experiment_id, variant, status="skipped")
        started = datetime.now(UTC)
        await self._finish(known, run_id, trigger.text, started, "skipped", reason, logs="")
        return run_id

    async def start_experiment(
        self, known: KnownProject, trigger: Trigger, variants: list[EstimatorSpec]
    ) -> tuple[str, str]:
        """Train each variant on one snapshot of the examples (the same rows, the same
        holdout), one run after another; variants are registered, never promoted by the run.
        Returns the experiment id and the first run's id; raises ActiveRun if one is going."""
        await self.check_budget(known, len(variants))
        experiment_id = uuid4().hex
        first = uuid4().hex
        await self._open(
            first, known, trigger, experiment_id, variants[0], audit="experiment.start"
        )
        self._spawn(self._experiment(known, trigger, variants, experiment_id, first), first)
        return experiment_id, first

    def _spawn(self, work: Any, run_id: str) -> None:
        task = asyncio.create_task(work, name=f"run-{run_id[:8]}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _experiment(
        self,
        known: KnownProject,
        trigger: Trigger,
        variants: list[EstimatorSpec],
        experiment_id: str,
        first: str,
    ) -> None:
        snapshot: Snapshot | None = None
        for i, variant in enumerate(variants):
            run_id = first
            if i:
                opened = await self._open_variant(known, trigger, variant, experiment_id)
                if opened is None:
                    await self.decline(
                        known,
                        trigger,
                        f"another run of the project held it for {EXPERIMENT_WAIT_S:.0f}s",
                        experiment_id,
                        variant,
                    )
                    continue
                run_id = opened
            snapshot = await self._execute(
                known, run_id, trigger, None, variant=variant, snapshot=snapshot
            )

    async def _open_variant(
        self, known: KnownProject, trigger: Trigger, variant: EstimatorSpec, experiment_id: str
    ) -> str | None:
        """Open the next variant's run; a run another trigger started between two variants
        finishes first (None if it does not within EXPERIMENT_WAIT_S)."""
        run_id = uuid4().hex
        deadline = asyncio.get_running_loop().time() + EXPERIMENT_WAIT_S
        while True:
            try:
                await self._open(run_id, known, trigger, experiment_id, variant)
                return run_id
            except ActiveRun:
                if asyncio.get_running_loop().time() > deadline:
                    return None
                await asyncio.sleep(1)

    async def _traced(
        self,
        known: KnownProject,
        run_id: str,
        trigger: Trigger,
        since: datetime | None,
        traceparent: str | None,
    ) -> None:
        with tracing.span(
            "training run",
            parent=traceparent,
            attributes={
                "conveyor.project": known.spec.name,
                "conveyor.run_id": run_id,
                "conveyor.trigger": trigger.text,
            },
        ):
            await self._execute(known, run_id, trigger, since)

    # --- one run --------------------------------------------------------------------------------

    async def _snapshot(self, spec: ModelProject, since: datetime | None) -> Snapshot:
        """The most recent examples (since `since`), minus the project's regression set."""
        names = spec.feature_names()
        rows = await self.repo.examples(spec.name, names, spec.policies.retrain.train_rows, since)
        regression = await self.repo.regression_set(spec.name)
        held = set(regression[1]) if regression else set()
        training_rows = [
            (r["example_id"], r["observed_at"], list(r["values"]), r["label"])
            for r in rows
            if r["example_id"] not in held
        ]
        return Snapshot(
            rows=rows,
            training=training_rows,
            sources=offset_ranges((r["topic"], r["partition"], r["offset"]) for r in rows),
            regression=regression,
        )

    async def _execute(
        self,
        known: KnownProject,
        run_id: str,
        trigger: Trigger,
        since: datetime | None,
        *,
        variant: EstimatorSpec | None = None,
        snapshot: Snapshot | None = None,
    ) -> Snapshot | None:
        started = datetime.now(UTC)
        spec = known.spec
        if variant is not None:
            spec = spec.model_copy(update={"estimator": variant})
        policy = spec.policies
        logs = RunLog()
        context = _current_log.set(logs)
        text = trigger.text
        version: int | None = None
        try:
            snapshot = snapshot or await self._snapshot(spec, since)
            rows = snapshot.training
            logs.note(
                f"{len(rows)} examples"
                + (f" observed since {since:%H:%M:%S}" if since else "")
                + (f" ({snapshot.excluded} held back: regression set)" if snapshot.excluded else "")
            )
            try:
                data = training.dataset(spec, [(v, label) for _, _, v, label in rows])
                # The version exists (pending) from here: its number is claimed by this run.
                pending = await self.registry.register(
                    spec.name,
                    {"run_id": run_id, "project_version": known.version, "status": "pending"},
                )
                version = int(pending["version"])
                await self.repo.set_run_version(run_id, version)
                candidate = await asyncio.to_thread(
                    training.train, spec, data, policy.retrain.holdout_fraction
                )
            except training.TrainingRefused as exc:
                if version is not None:
                    await self.fail_version(spec.name, version, f"training refused: {exc}")
                await self._finish(
                    known,
                    run_id,
                    text,
                    started,
                    "skipped",
                    str(exc),
                    logs=str(logs),
                    rows=len(rows),
                )
                return snapshot
            logs.note(
                f"holdout metrics {candidate.metrics}; ONNX max diff {candidate.onnx_max_diff:.2e}"
            )
            champion = await self.registry.champion(spec.name)
            champion_metrics: dict[str, float] = {}
            paired: Paired | None = None
            regression: tuple[dict[str, float], dict[str, float], int] | None = None
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
                logs.note(f"champion v{champion[0]} on the same holdout: {champion_metrics}")
                regression = await self._regression(spec, candidate.onnx, champion[1], snapshot)
                if regression is not None:
                    logs.note(
                        f"regression set {snapshot.regression[0][:8]} ({regression[2]} rows): "  # type: ignore[index]
                        f"candidate {regression[0]}, champion {regression[1]}"
                    )
            code = await asyncio.to_thread(code_provenance)
            lineage = self._lineage(
                known, spec, candidate, snapshot, trigger, variant, champion, since
            ) | {"code": code, "started_at": started.isoformat()}
            body: dict[str, Any] = {
                "metrics": candidate.metrics
                | ({f"regression_{k}": v for k, v in regression[0].items()} if regression else {}),
                "signature": candidate.signature,
                "profile": candidate.profile,
                "lineage": lineage,
                "input_example": self._input_example(spec, candidate),
                "evaluations": self._evaluations(
                    candidate, champion, champion_metrics, snapshot, regression
                ),
            }
            if candidate.failure:
                body |= {"status": "failed", "failure_reason": candidate.failure}
            else:
                body |= {"status": "ready", "onnx_base64": encode(candidate.onnx)}
            await self.registry.complete(spec.name, version, body)
            if candidate.failure:
                await self._finish(
                    known,
                    run_id,
                    text,
                    started,
                    "failed",
                    candidate.failure,
                    logs=str(logs),
                    rows=len(rows),
                    version=version,
                    metrics=candidate.metrics,
                    params=candidate.params,
                )
                return snapshot
            if snapshot.regression is None and candidate.holdout is not None:
                await self._pin_regression_set(spec, run_id, snapshot, len(candidate.holdout.y))
            decision = promotion(
                policy.promotion,
                candidate.metrics,
                champion_metrics if champion else None,
                champion[0] if champion else None,
                paired,
                regression[:2] if regression else None,
            )
            reason = decision.reason
            if variant is not None:
                reason = f"variant of an experiment, not promoted by the run (the gate: {reason})"
            elif decision.promote:
                await self.registry.promote(spec.name, version, f"{reason} (run {run_id[:8]})")
            elif decision.needs_approval:
                request = await self.registry.request_approval(
                    spec.name,
                    version,
                    f"{reason} (run {run_id[:8]})",
                    {
                        "run_id": run_id,
                        "metrics": candidate.metrics,
                        "champion_version": champion[0] if champion else None,
                        "champion_metrics": champion_metrics,
                    },
                )
                reason = f"{reason}: promotion request {request} awaits an approver"
            logs.note(f"promotion: {reason}")
            await self._finish(
                known,
                run_id,
                text,
                started,
                "succeeded",
                reason,
                logs=str(logs),
                rows=len(rows),
                version=version,
                metrics=candidate.metrics,
                champion=champion_metrics,
                promoted=decision.promote and variant is None,
                params=candidate.params,
            )
        except Exception as exc:
            log.exception("run %s failed", run_id)
            if version is not None:
                await self.fail_version(spec.name, version, f"the run failed: {exc!r}")
            await self._finish(
                known,
                run_id,
                text,
                started,
                "failed",
                f"{exc!r}",
                logs=str(logs),
                version=version,
            )
        finally:
            _current_log.reset(context)
        return snapshot

    async def fail_version(self, project: str, version: int, reason: str) -> None:
        """Best effort: a pending version whose run ended without a model is marked failed
        (the trainer's start-up does it again for runs a crash interrupted)."""
        try:
            await self.registry.complete(
                project, version, {"status": "failed", "failure_reason": reason[:2000]}
            )
        except Exception:
            log.exception("could not mark v%d of %s failed", version, project)

    async def _regression(
        self, spec: ModelProject, candidate: bytes, champion: bytes, snapshot: Snapshot
    ) -> tuple[dict[str, float], dict[str, float], int] | None:
        """Candidate's and champion's metrics on the fixed regression set, and its rows."""
        if snapshot.regression is None:
            return None
        rows = await self.repo.examples_by_id(
            spec.name, spec.feature_names(), snapshot.regression[1]
        )
        classes = spec.label.classes
        known = [
            (list(r["values"]), classes.index(r["label"])) for r in rows if r["label"] in classes
        ]
        if not known:
            return None
        x = np.asarray([v for v, _ in known], dtype=np.float32)
        y = np.asarray([c for _, c in known], dtype=np.int64)
        ours, theirs = await asyncio.to_thread(
            lambda: (
                training.onnx_probabilities(candidate, x),
                training.onnx_probabilities(champion, x),
            )
        )
        return training.evaluate(ours, y), training.evaluate(theirs, y), len(y)

    @staticmethod
    def _input_example(
        spec: ModelProject, candidate: training.Candidate, rows: int = 5
    ) -> list[dict[str, float]]:
        """The first holdout inputs, by feature name: what a request to the model looks like."""
        if candidate.holdout is None:
            return []
        names = spec.feature_names()
        return [dict(zip(names, map(float, x), strict=True)) for x in candidate.holdout.x[:rows]]

    @staticmethod
    def _evaluations(
        candidate: training.Candidate,
        champion: tuple[int, bytes] | None,
        champion_metrics: dict[str, float],
        snapshot: Snapshot,
        regression: tuple[dict[str, float], dict[str, float], int] | None,
    ) -> dict[str, dict[str, Any]]:
        """Metrics on named datasets, the champion's on the same rows beside the candidate's."""
        against = {"champion_version": champion[0] if champion else None}
        evaluations: dict[str, dict[str, Any]] = {
            "holdout": {
                "rows": 0 if candidate.holdout is None else len(candidate.holdout.y),
                "identity": "the newest rows of the training set (time-based split)",
                "metrics": candidate.metrics,
                "champion_metrics": champion_metrics,
            }
            | against
        }
        if regression is not None and snapshot.regression is not None:
            evaluations["regression_set"] = {
                "rows": regression[2],
                "identity": f"regression set {snapshot.regression[0]}",
                "metrics": regression[0],
                "champion_metrics": regression[1],
            } | against
        return evaluations

    async def _pin_regression_set(
        self, spec: ModelProject, run_id: str, snapshot: Snapshot, holdout_rows: int
    ) -> None:
        """The first successful run's holdout becomes the project's fixed regression set: the
        newest `holdout_rows` of the examples the dataset kept (those labeled with one of the
        project's classes)."""
        classes = set(spec.label.classes)
        kept = [example_id for example_id, _, _, label in snapshot.training if label in classes]
        ids = kept[-holdout_rows:]
        await self.repo.pin_regression_set(spec.name, ids_digest(ids)[:16], run_id, ids)

    def _lineage(
        self,
        known: KnownProject,
        spec: ModelProject,
        candidate: training.Candidate,
        snapshot: Snapshot,
        trigger: Trigger,
        variant: EstimatorSpec | None,
        champion: tuple[int, bytes] | None,
        since: datetime | None,
    ) -> dict[str, Any]:
        rows = snapshot.training
        oldest = min(
            (order_key(r["example_id"], r["observed_at"]) for r in snapshot.rows),
            default=None,
        )
        features = json.dumps(
            [f.model_dump(mode="json") for f in spec.features], sort_keys=True
        ).encode()
        return {
            "training_rows": len(rows),
            "training_set": {
                "sources": snapshot.sources,
                "boundary": {"observed_at": oldest[0].isoformat(), "example_id": oldest[1]}
                if oldest
                else None,
                "since": since.isoformat() if since else None,
                "rows": len(rows),
                "content_digest": content_digest(rows),
                "example_ids_digest": ids_digest(r[0] for r in rows),
                "regression_set": snapshot.regression[0] if snapshot.regression else None,
                "held_back": snapshot.excluded,
            },
            "observed_from": rows[0][1].isoformat() if rows else None,
            "observed_to": rows[-1][1].isoformat() if rows else None,
            "feature_names": spec.feature_names(),
            "features_sha256": hashlib.sha256(features).hexdigest(),
            "project_version": known.version,
            "estimator": spec.estimator.class_path,
            "estimator_spec": spec.estimator.model_dump(mode="json"),
            "params": candidate.params,
            "seed": spec.estimator.seed,
            "holdout_fraction": spec.policies.retrain.holdout_fraction,
            "holdout_rows": 0 if candidate.holdout is None else len(candidate.holdout.y),
            "variant": variant is not None,
            "trigger": trigger.info() | {"text": trigger.text},
            "parent_version": champion[0] if champion else None,
            "environment": training.environment(),
        }

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

    # --- reproduce ------------------------------------------------------------------------------

    async def reproduce(self, project: str, version: int) -> dict[str, Any]:
        """Read the version's training set again from its recorded offset ranges, check it is
        the same set (row count and content digest), retrain with the recorded spec, and compare
        the new model's probabilities with the registered model's on the holdout."""
        info, artifact = await self.registry.version(project, version)
        if artifact is None:
            raise ReproduceFailed(f"version {version} of {project!r} has no artifact")
        lineage = info["lineage"]
        recorded = lineage.get("training_set")
        if not recorded or not recorded.get("boundary"):
            raise ReproduceFailed(f"version {version} records no training set to read again")
        if any("unplaced" in s for s in recorded["sources"]):
            raise ReproduceFailed("some examples were stored before their offsets were recorded")
        spec = ModelProject.model_validate(
            await self.registry.project_spec(project, lineage["project_version"])
        )
        spec = spec.model_copy(
            update={"estimator": EstimatorSpec.model_validate(lineage["estimator_spec"])}
        )
        assert self.kafka is not None
        try:
            records = await read_ranges(
                self.kafka,
                [
                    (s["topic"], s["partition"], s["first_offset"], s["last_offset"])
                    for s in recorded["sources"]
                ],
            )
        except LookupError as exc:
            raise ReproduceFailed(f"the training set is no longer on the broker: {exc}") from exc
        examples = []
        for topic, partition, offset, value in records:
            try:
                event = EXAMPLE_TOPICS[topic].adapter.validate_json(value)
            except ValueError:
                continue  # dead-lettered when it was first read: never an example
            if (e := materialize(event, topic, partition, offset)) is not None:
                examples.append(e)
        boundary = recorded["boundary"]
        chosen = select(
            examples,
            project,
            lineage["feature_names"],
            (datetime.fromisoformat(boundary["observed_at"]), boundary["example_id"]),
        )
        if recorded["regression_set"]:
            held = await self.repo.regression_set_by_id(recorded["regression_set"])
            if held is None:
                raise ReproduceFailed(f"regression set {recorded['regression_set']} is unknown")
            held_ids = set(held)
            chosen = [e for e in chosen if e.example_id not in held_ids]
        rows = [(e.example_id, e.observed_at, e.values, e.label) for e in chosen]
        digest = content_digest(rows)
        if len(rows) != recorded["rows"] or digest != recorded["content_digest"]:
            raise ReproduceFailed(
                f"read {len(rows)} examples (digest {digest[:12]}…) from the recorded ranges; "
                f"the version trained on {recorded['rows']} ({recorded['content_digest'][:12]}…)"
            )
        data = training.dataset(spec, [(e.values, e.label) for e in chosen])
        candidate = await asyncio.to_thread(training.train, spec, data, lineage["holdout_fraction"])
        assert candidate.holdout is not None
        x = candidate.holdout.x
        ours, theirs = await asyncio.to_thread(
            lambda: (
                training.onnx_probabilities(candidate.onnx, x),
                training.onnx_probabilities(artifact, x),
            )
        )
        diff = float(np.abs(ours - theirs).max())
        return {
            "project": project,
            "version": version,
            "training_rows": len(rows),
            "content_digest": digest,
            "holdout_rows": len(candidate.holdout.y),
            "max_abs_diff": diff,
            "tolerance": REPRODUCE_TOLERANCE,
            "reproduced": diff <= REPRODUCE_TOLERANCE,
            "same_artifact": hashlib.sha256(candidate.onnx).hexdigest() == info["sha256"],
            "metrics": candidate.metrics,
            "registered_metrics": info["metrics"],
            "code": {
                "recorded": lineage.get("code"),
                "now": await asyncio.to_thread(code_provenance),
            },
            "environment": {"recorded": lineage.get("environment"), "now": training.environment()},
        }

    async def wait(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
