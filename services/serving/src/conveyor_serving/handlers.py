"""Kafka edge of serving: model changes from the registry, enriched requests in, answers out."""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from conveyor_bus import Bus, Delivery, Outgoing, Rejection
from conveyor_contracts import DEADLINE, REPLY_TO, catalog
from conveyor_contracts.events import AliasMoved, PredictionEnriched, PredictionServed
from conveyor_runtime import ArtifactMismatch, NotInRegistry, verify_artifact

from .adapters.onnx import OnnxSession
from .adapters.registry import ModelSource
from .domain.predictor import LoadedModel, NoModel, Predictor

log = logging.getLogger(__name__)
CHAMPION = "champion"
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name


class Serving:
    def __init__(self, predictor: Predictor, source: ModelSource, bus: Bus) -> None:
        self.predictor = predictor
        self.source = source
        self.bus = bus
        self._reply_topics: set[str] = set()  # reply-to topics seen to exist

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
        now = datetime.now(UTC)
        by_project: dict[str, list[Delivery[PredictionEnriched]]] = defaultdict(list)
        answers: list[tuple[Delivery[PredictionEnriched], PredictionServed]] = []
        for d in batch:
            if (late := _past_deadline(d.headers, now)) is not None:
                answers.append((d, _error(d.event, late, received)))
            else:
                by_project[d.event.project].append(d)
        rejections: list[Rejection] = []
        for project, deliveries in by_project.items():
            try:
                model = self.predictor.model(project)  # one reference for the whole batch
            except NoModel as exc:
                answers.extend((d, _error(d.event, str(exc), received)) for d in deliveries)
                continue
            scored = model.score([(d.event.feature_names, d.event.values) for d in deliveries])
            served_at = datetime.now(UTC)
            latency = (time.perf_counter() - received) * 1000
            for d, result in zip(deliveries, scored, strict=True):
                e = d.event
                if isinstance(result, str):
                    answers.append((d, _error(e, result, received)))
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
                answers.append((d, answer))
        outgoing = [_outgoing(d, answer) for d, answer in answers]
        await self.bus.publish_many(catalog.PREDICTIONS_RESPONSES, outgoing)
        rejections.extend(await self._reply([d for d, _ in answers], outgoing))
        return rejections

    async def _reply(
        self, requests: list[Delivery[PredictionEnriched]], outgoing: list[Outgoing]
    ) -> list[Rejection]:
        """Copies of answers to the topics their requests named in `ce_replyto`. A topic that is
        not a valid name or does not exist is the request's fault: a dead letter, not a retry."""
        by_topic: dict[str, list[tuple[Delivery[PredictionEnriched], Outgoing]]] = defaultdict(list)
        for d, out in zip(requests, outgoing, strict=True):
            if topic := d.headers.get(REPLY_TO):
                by_topic[topic].append((d, out))
        refused: list[Rejection] = []
        for topic, pairs in by_topic.items():
            if topic not in self._reply_topics:
                if not TOPIC_NAME.fullmatch(topic) or not await self.bus.topic_exists(topic):
                    reason = f"reply-to topic {topic!r} does not exist"
                    refused.extend(Rejection(d, reason, "reply") for d, _ in pairs)
                    continue
                self._reply_topics.add(topic)
            await self.bus.publish_many(
                catalog.PREDICTIONS_RESPONSES, [o for _, o in pairs], to=topic
            )
        return refused


def _past_deadline(headers: dict[str, str], now: datetime) -> str | None:
    """ "deadline exceeded" when the request's deadline has passed (an unreadable one says so)."""
    raw = headers.get(DEADLINE)
    if raw is None:
        return None
    try:
        deadline = datetime.fromisoformat(raw)
    except ValueError:
        return f"unreadable {DEADLINE} header {raw[:40]!r}: expected an RFC 3339 time"
    if deadline.tzinfo is None:
        return f"{DEADLINE} header {raw[:40]!r} has no time zone"
    return f"deadline exceeded ({raw})" if now > deadline else None


def _outgoing(request: Delivery[PredictionEnriched], answer: PredictionServed) -> Outgoing:
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
