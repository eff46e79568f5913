"""Kafka edge of serving: model changes from the registry, enriched requests in, answers out."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from conveyor_bus import Bus, Delivery, Outgoing, Rejection
from conveyor_contracts import catalog
from conveyor_contracts.events import AliasMoved, PredictionEnriched, PredictionServed
from conveyor_runtime import ArtifactMismatch, NotInRegistry, verify_artifact

from .adapters.onnx import OnnxSession
from .adapters.registry import ModelSource
from .domain.predictor import LoadedModel, NoModel, Predictor

log = logging.getLogger(__name__)
CHAMPION = "champion"


class Serving:
    def __init__(self, predictor: Predictor, source: ModelSource, bus: Bus) -> None:
        self.predictor = predictor
        self.source = source
        self.bus = bus

    # --- hot-swap -------------------------------------------------------------------------------

    async def on_registry_events(self, batch: list[Delivery[Any]]) -> None:
        latest: dict[str, AliasMoved] = {}
        for d in batch:
            if isinstance(d.event, AliasMoved) and d.event.alias == CHAMPION:
                latest[d.event.project] = d.event  # replaying history: only the last one counts
        for move in latest.values():
            current = self.predictor.loaded().get(move.project)
            if current and current["version"] == move.to_version:
                continue
            try:
                await self.load(move.project, move.to_version, move.sha256)
            except (ArtifactMismatch, NotInRegistry) as exc:
                # Permanent for this version: keep serving the current model, never block the
                # changelog on it. (RegistryUnavailable propagates: the batch is redelivered.)
                log.error("not loading v%d of %s: %s", move.to_version, move.project, exc)

    async def load(self, project: str, version: int, expected_sha256: str) -> LoadedModel:
        info = await self.source.version(project, version)
        data, claimed = await self.source.artifact(project, version)
        actual = verify_artifact(data, f"{project} v{version}", expected_sha256, claimed)
        session = await OnnxSession.load(data)
        signature = info["signature"]
        model = LoadedModel(
            project,
            version,
            actual,
            list(signature["feature_names"]),
            list(signature["classes"]),
            session,
        )
        old = self.predictor.swap(model)
        log.info("serving %s v%d (was %s)", project, version, old.version if old else None)
        return model

    # --- predictions ----------------------------------------------------------------------------

    async def on_enriched(self, batch: list[Delivery[PredictionEnriched]]) -> list[Rejection]:
        received = time.perf_counter()
        by_project: dict[str, list[Delivery[PredictionEnriched]]] = defaultdict(list)
        for d in batch:
            by_project[d.event.project].append(d)
        answers: list[Outgoing] = []
        rejections: list[Rejection] = []
        for project, deliveries in by_project.items():
            try:
                model = self.predictor.model(project)  # one reference for the whole batch
            except NoModel as exc:
                answers.extend(_answer(d, _error(d.event, str(exc), received)) for d in deliveries)
                continue
            scored = model.score([(d.event.feature_names, d.event.values) for d in deliveries])
            served_at = datetime.now(UTC)
            latency = (time.perf_counter() - received) * 1000
            for d, result in zip(deliveries, scored, strict=True):
                e = d.event
                if isinstance(result, str):
                    answers.append(_answer(d, _error(e, result, received)))
                    rejections.append(Rejection(d, result, "infer"))
                    continue
                label, probabilities = result
                # Built from validated inputs and the model's own outputs: no re-validation.
                answer = PredictionServed.model_construct(
                    request_id=e.request_id,
                    project=project,
                    entity_id=e.entity_id,
                    status="ok",
                    model_version=model.version,
                    label=label,
                    probabilities=probabilities,
                    feature_names=e.feature_names,
                    values=e.values,
                    requested_at=e.requested_at,
                    served_at=served_at,
                    latency_ms=latency,
                )
                answers.append(_answer(d, answer))
        await self.bus.publish_many(catalog.PREDICTIONS_RESPONSES, answers)
        return rejections


def _answer(request: Delivery[PredictionEnriched], answer: PredictionServed) -> Outgoing:
    """The answer keyed by request id, in the request's trace, with an id derived from the
    request's: a redelivered request yields an answer consumers can recognise as the same."""
    return Outgoing(
        request.event.request_id,
        answer,
        event_id=f"{request.event_id}/served",
        cause=request.headers,
    )


def _error(e: PredictionEnriched, reason: str, received: float) -> PredictionServed:
    return PredictionServed(
        request_id=e.request_id,
        project=e.project,
        entity_id=e.entity_id,
        status="error",
        error=reason,
        feature_names=e.feature_names,
        values=e.values,
        requested_at=e.requested_at,
        served_at=datetime.now(UTC),
        latency_ms=(time.perf_counter() - received) * 1000,
    )
