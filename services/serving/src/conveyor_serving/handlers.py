"""Kafka edge of serving: model changes from the registry, enriched requests in, answers out."""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from pydantic_core import to_json

from conveyor_bus import (
    LATENCY_BUCKETS,
    Bus,
    Delivery,
    Encoded,
    Outgoing,
    Rejection,
    sampled,
    tracing,
)
from conveyor_contracts import DEADLINE, REPLY_TO, catalog
from conveyor_contracts.events import AliasMoved, PredictionEnriched, PredictionServed
from conveyor_contracts.project import ServingPolicy
from conveyor_runtime import ArtifactMismatch, NotInRegistry, ProjectCache, verify_artifact

from .adapters.onnx import OnnxSession
from .adapters.registry import ModelSource
from .domain.predictor import CHALLENGER, CHAMPION, LoadedModel, NoModel, Predictor, in_canary

log = logging.getLogger(__name__)

_meter = metrics.get_meter("conveyor.serving")
PREDICTIONS = _meter.create_counter(
    "conveyor.predictions",
    unit="{prediction}",
    description="Answers by project, model version, role (champion, canary, shadow) and status.",
)
SERVING_TIME = _meter.create_histogram(
    "conveyor.serving.duration",
    unit="s",
    description="Serving's own time from a batch's receipt to its answers, by project and version.",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
)
END_TO_END = _meter.create_histogram(
    "conveyor.prediction.duration",
    unit="s",
    description="From the application's request (requested_at) to serving's answer, by project "
    "(up to 8 answers a batch).",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
)


@dataclass(slots=True)
class Served:
    """A scored answer: PredictionServed with status `ok`, kept as plain values (what the
    metrics read) and serialized straight to its JSON — building the model only to dump it
    cost a fifth of serving's time per prediction."""

    request_id: str
    project: str
    entity_id: str
    model_version: int
    label: str
    probabilities: dict[str, float]
    feature_names: list[str]
    values: list[float]
    requested_at: datetime
    served_at: datetime
    latency_ms: float
    status: str = "ok"
    json: AnswerJSON | None = None  # what it shares with the answers scored with it

    def encoded(self) -> Encoded:
        """PredictionServed's own JSON (its field order; a unit test holds the bytes equal)."""
        return Encoded(PredictionServed.type_name, (self.json or AnswerJSON.of(self))(self))


class AnswerJSON:
    """PredictionServed's JSON for the answers of one onnxruntime call: what they share (project,
    version, served_at, latency, the model's feature names, the labels) encoded once, the rest
    answer by answer — a third of what one dict through `to_json` cost."""

    __slots__ = ("_after_entity", "_after_id", "_feature_names", "_labels", "_names", "_tail")

    def __init__(
        self,
        project: str,
        model_version: int,
        feature_names: list[str],
        served_at: datetime,
        latency_ms: float,
    ) -> None:
        self._after_id = b',"project":' + to_json(project) + b',"entity_id":'
        self._after_entity = (
            b',"status":"ok","error":null,"model_version":' + to_json(model_version) + b',"label":'
        )
        self._feature_names = feature_names
        self._names = b',"feature_names":' + to_json(feature_names) + b',"values":'
        self._tail = (
            b',"served_at":' + to_json(served_at) + b',"latency_ms":' + to_json(latency_ms) + b"}"
        )
        self._labels: dict[str, bytes] = {}

    @classmethod
    def of(cls, answer: Served) -> AnswerJSON:
        return cls(
            answer.project,
            answer.model_version,
            answer.feature_names,
            answer.served_at,
            answer.latency_ms,
        )

    def __call__(self, a: Served) -> bytes:
        label = self._labels.get(a.label)
        if label is None:
            label = self._labels[a.label] = to_json(a.label) + b',"probabilities":'
        names = (
            self._names
            if a.feature_names == self._feature_names
            else b',"feature_names":' + to_json(a.feature_names) + b',"values":'
        )
        return b"".join(
            (
                b'{"request_id":',
                to_json(a.request_id),
                self._after_id,
                to_json(a.entity_id),
                self._after_entity,
                label,
                to_json(a.probabilities),
                names,
                to_json(a.values),
                b',"requested_at":',
                to_json(a.requested_at),
                self._tail,
            )
        )


Answer = PredictionServed | Served  # errors are built (and validated) as the model itself
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name


class Serving:
    def __init__(
        self, predictor: Predictor, source: ModelSource, bus: Bus, projects: ProjectCache
    ) -> None:
        self.predictor = predictor
        self.projects = projects
        self.source = source
        self.bus = bus
        self._reply_topics: set[str] = set()  # reply-to topics seen to exist
        _meter.create_observable_gauge(
            "conveyor.model.version",
            callbacks=[self._served_versions],
            description="The version each alias of each project is served with.",
        )

    def _served_versions(self, _options: CallbackOptions) -> Iterable[Observation]:
        for project, served in self.predictor.loaded().items():
            yield Observation(served["version"], {"project": project, "alias": CHAMPION})
            if CHALLENGER in served:
                version = served[CHALLENGER]["version"]
                yield Observation(version, {"project": project, "alias": CHALLENGER})

    # --- hot-swap -------------------------------------------------------------------------------

    async def on_registry_events(self, batch: list[Delivery[Any]]) -> None:
        latest: dict[tuple[str, str], AliasMoved] = {}
        for d in batch:
            if isinstance(d.event, AliasMoved) and d.event.alias in (CHAMPION, CHALLENGER):
                # Replaying history: only the last move of each alias counts.
                latest[(d.event.project, d.event.alias)] = d.event
        for (project, alias), move in latest.items():
            if self.predictor.current(project, alias) == move.to_version:
                continue
            try:
                await self.load(project, move.to_version, move.sha256, alias)
            except (ArtifactMismatch, NotInRegistry) as exc:
                # Permanent for this version: keep serving the current model, never block the
                # changelog on it. (RegistryUnavailable propagates: the batch is redelivered.)
                log.error("not loading v%d of %s: %s", move.to_version, project, exc)

    async def load(
        self, project: str, version: int, expected_sha256: str, alias: str = CHAMPION
    ) -> LoadedModel:
        """Fetch, verify, load and warm up off the event loop, then swap in one assignment."""
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
        old = self.predictor.swap(model, alias)
        log.info("%s %s: v%d (was %s)", project, alias, version, old.version if old else None)
        return model

    # --- predictions ----------------------------------------------------------------------------

    async def on_enriched(self, batch: list[Delivery[PredictionEnriched]]) -> list[Rejection]:
        received = time.perf_counter()
        now = datetime.now(UTC)
        by_project: dict[str, list[Delivery[PredictionEnriched]]] = defaultdict(list)
        answers: list[tuple[Delivery[PredictionEnriched], Answer]] = []
        for d in batch:
            if (late := _past_deadline(d.headers, now)) is not None:
                answers.append((d, _error(d.event, late, received)))
            else:
                by_project[d.event.project].append(d)
        rejections: list[Rejection] = []
        shadow: list[tuple[Delivery[PredictionEnriched], Answer]] = []
        for project, deliveries in by_project.items():
            try:
                model = self.predictor.model(project)  # one reference for the whole batch
            except NoModel as exc:
                answers.extend((d, _error(d.event, str(exc), received)) for d in deliveries)
                continue
            policy = self._policy(project)
            challenger = self.predictor.challenger(project) if policy.challenger != "off" else None
            if challenger is not None and policy.challenger == "canary":
                sides = [in_canary(d.event.entity_id, policy.canary_share) for d in deliveries]
                canary = [d for d, inside in zip(deliveries, sides, strict=True) if inside]
                deliveries = [d for d, inside in zip(deliveries, sides, strict=True) if not inside]
                answers.extend(self._score(challenger, canary, received, rejections))
            answers.extend(self._score(model, deliveries, received, rejections))
            if challenger is not None and policy.challenger == "shadow":
                # What the challenger would have said; its misfits are not the request's fault.
                shadow.extend(
                    (d, a)
                    for d, a in self._score(challenger, deliveries, received, [])
                    if a.status == "ok"
                )
        outgoing = [_outgoing(d, answer) for d, answer in answers]
        await self.bus.publish_many(catalog.PREDICTIONS_RESPONSES, outgoing)
        _count(answers, self.predictor)
        if shadow:
            await self.bus.publish_many(
                catalog.PREDICTIONS_SHADOW, [_outgoing(d, a, "shadow") for d, a in shadow]
            )
            _count(shadow, self.predictor, "shadow")
        rejections.extend(await self._reply([d for d, _ in answers], outgoing))
        return rejections

    def _score(
        self,
        model: LoadedModel,
        deliveries: list[Delivery[PredictionEnriched]],
        received: float,
        rejections: list[Rejection],
    ) -> list[tuple[Delivery[PredictionEnriched], Answer]]:
        """One onnxruntime call for the deliveries; an error answer (and a rejection) for each
        that does not fit the model's signature."""
        if not deliveries:
            return []
        with tracing.stage("infer", deliveries, model=f"{model.project} v{model.version}"):
            scored = model.score([(d.event.feature_names, d.event.values) for d in deliveries])
        served_at = datetime.now(UTC)
        latency = (time.perf_counter() - received) * 1000
        json = AnswerJSON(model.project, model.version, model.feature_names, served_at, latency)
        out: list[tuple[Delivery[PredictionEnriched], Answer]] = []
        for d, result in zip(deliveries, scored, strict=True):
            e = d.event
            if isinstance(result, str):
                out.append((d, _error(e, result, received)))
                rejections.append(Rejection(d, result, "infer"))
                continue
            label, probabilities = result
            out.append(
                (
                    d,
                    Served(
                        e.request_id,
                        model.project,
                        e.entity_id,
                        model.version,
                        label,
                        probabilities,
                        e.feature_names,
                        e.values,
                        e.requested_at,
                        served_at,
                        latency,
                        json=json,
                    ),
                )
            )
        return out

    def _policy(self, project: str) -> ServingPolicy:
        known = self.projects.get(project)
        return known.spec.policies.serving if known is not None else ServingPolicy()

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


def _count(
    answers: list[tuple[Delivery[PredictionEnriched], Answer]],
    predictor: Predictor,
    role: str | None = None,
) -> None:
    """Answers per project, version, role and status; serving time per project and version."""
    groups: dict[tuple[str, int | None, str], list[float]] = defaultdict(list)
    if role is None:
        for _, a in sampled(answers):
            END_TO_END.record(
                (a.served_at - a.requested_at).total_seconds(), {"project": a.project}
            )
    for _, a in answers:
        groups[(a.project, a.model_version, a.status)].append(a.latency_ms)
    for (project, model_version, status), latencies in groups.items():
        champion = predictor.current(project, CHAMPION)
        played = role or ("champion" if model_version in (None, champion) else "canary")
        version = "" if model_version is None else str(model_version)
        attrs = {"project": project, "version": version, "role": played, "status": status}
        PREDICTIONS.add(len(latencies), attrs)
        SERVING_TIME.record(max(latencies) / 1000, {"project": project, "version": version})


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


def _outgoing(
    request: Delivery[PredictionEnriched], answer: Answer, kind: str = "served"
) -> Outgoing:
    """The answer keyed by request id, in the request's trace, with an id derived from the
    request's: a redelivered request yields an answer consumers can recognise as the same."""
    return Outgoing(
        request.event.request_id,
        answer.encoded() if isinstance(answer, Served) else answer,
        event_id=f"{request.event_id}/{kind}",
        cause=request.onward,
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
