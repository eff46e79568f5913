"""Kafka edge of serving: model changes from the registry, enriched requests in, answers out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import numpy as np
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
from conveyor_contracts import DEADLINE, REPLY_TO, catalog, reply_refusal
from conveyor_contracts.events import (
    AliasMoved,
    ModelLoadFailed,
    PredictionEnriched,
    PredictionServed,
    derived_id,
)
from conveyor_contracts.project import ServingPolicy
from conveyor_runtime import ProjectCache, verify_artifact

from .adapters.onnx import OnnxSession
from .adapters.registry import ModelSource
from .domain.predictor import (
    CHALLENGER,
    CHAMPION,
    LoadedModel,
    NoModel,
    Predictor,
    UnusableModel,
    in_canary,
)
from .loading import ModelLoader

log = logging.getLogger(__name__)

# Projects `Serving.summary()` names one by one (what a status probe shows); the rest are counted.
SUMMARY_PROJECTS = 50

_meter = metrics.get_meter("conveyor.serving")
PREDICTIONS = _meter.create_counter(
    "conveyor.predictions",
    unit="{prediction}",
    description="Answers by project, model version, role (champion, canary, shadow) and status "
    "(ok, error).",
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


class AnswerJSON:
    """PredictionServed's JSON for the answers of one onnxruntime call: what they share (project,
    version, served_at, latency, the model's feature names, the labels) encoded once, the rest
    answer by answer — a third of what one dict through `to_json` cost, and no model built only
    to be dumped (that cost a fifth of serving's time per prediction). A unit test holds the bytes
    equal to the model's own."""

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

    def __call__(
        self, request: PredictionEnriched, label: str, probabilities: dict[str, float]
    ) -> bytes:
        """The answer to `request`: `label`, with `probabilities` per class."""
        encoded_label = self._labels.get(label)
        if encoded_label is None:
            encoded_label = self._labels[label] = to_json(label) + b',"probabilities":'
        names = (
            self._names
            if request.feature_names == self._feature_names
            else b',"feature_names":' + to_json(request.feature_names) + b',"values":'
        )
        return b"".join(
            (
                b'{"request_id":',
                to_json(request.request_id),
                self._after_id,
                to_json(request.entity_id),
                self._after_entity,
                encoded_label,
                to_json(probabilities),
                names,
                to_json(request.values),
                b',"requested_at":',
                to_json(request.requested_at),
                self._tail,
            )
        )


class Answers:
    """The answers to a batch of requests, in order (scored ones as their JSON, errors as the
    model itself), and what the metrics count of them: per project, version and status, how many
    and the slowest serving time."""

    __slots__ = ("_groups", "events", "received", "requests", "served_at")

    def __init__(self, received: float) -> None:
        self.received = received  # perf_counter at the batch's receipt
        self.requests: list[Delivery[PredictionEnriched]] = []
        self.events: list[PredictionServed | Encoded] = []
        self.served_at: list[datetime] = []
        self._groups: dict[tuple[str, int | None, str], list[float]] = {}  # [count, slowest ms]

    def __len__(self) -> int:
        return len(self.requests)

    def error(self, request: Delivery[PredictionEnriched], reason: str) -> None:
        answer = _error(request.event, reason, self.received)
        self.requests.append(request)
        self.events.append(answer)
        self.served_at.append(answer.served_at)
        self._tally((answer.project, None, "error"), 1, answer.latency_ms)

    def scored(
        self,
        model: LoadedModel,
        requests: list[Delivery[PredictionEnriched]],
        events: list[Encoded],
        served_at: datetime,
        latency_ms: float,
    ) -> None:
        self.requests += requests
        self.events += events
        self.served_at += repeat(served_at, len(requests))
        self._tally((model.project, model.version, "ok"), len(requests), latency_ms)

    def _tally(self, group: tuple[str, int | None, str], n: int, latency_ms: float) -> None:
        counted = self._groups.get(group)
        if counted is None:
            self._groups[group] = [n, latency_ms]
        else:
            counted[0] += n
            counted[1] = max(counted[1], latency_ms)

    def outgoing(self, kind: str) -> list[Outgoing]:
        """The answers keyed by request id, in their requests' traces, with ids derived from the
        requests': a redelivered request yields an answer consumers can recognise as the same."""
        suffix = "/" + kind
        return [
            Outgoing(d.event.request_id, event, d.event_id + suffix, cause=d.onward)
            for d, event in zip(self.requests, self.events, strict=True)
        ]

    def count(self, predictor: Predictor, role: str | None = None) -> None:
        """Answers per project, version, role and status; serving time per project and version;
        end-to-end time of a few answers (not of shadow ones, which no application waits for)."""
        if role is None:
            for i in sampled(range(len(self.requests))):
                e = self.requests[i].event
                seconds = (self.served_at[i] - e.requested_at).total_seconds()
                END_TO_END.record(seconds, {"project": e.project})
        for (project, model_version, status), (n, slowest_ms) in self._groups.items():
            champion = predictor.current(project, CHAMPION)
            played = role or ("champion" if model_version in (None, champion) else "canary")
            version = "" if model_version is None else str(model_version)
            attrs = {"project": project, "version": version, "role": played, "status": status}
            PREDICTIONS.add(int(n), attrs)
            SERVING_TIME.record(slowest_ms / 1000, {"project": project, "version": version})


SERVED = PredictionServed.type_name
HTTP_EDGE = "http"  # where a request scored by `Serving.answer` came from, for its Delivery


class NotServed(Exception):
    """A request that got no answer from a model: none is loaded for its project, or the model
    cannot take its features (the reason says which)."""


class Serving:
    def __init__(
        self,
        predictor: Predictor,
        source: ModelSource,
        bus: Bus,
        projects: ProjectCache,
        *,
        reply_prefix: str = "replies.",
    ) -> None:
        self.predictor = predictor
        self.reply_prefix = reply_prefix
        self.projects = projects
        self.source = source
        self.bus = bus
        self.loader = ModelLoader(predictor, self.fetch, self.announce)
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

    def summary(self) -> dict[str, Any]:
        """What serving serves, per project (the first `SUMMARY_PROJECTS` by name): the
        champion's version, and the challenger's with its mode (`shadow`, `canary` with its
        share, `off`: loaded, answering nothing) when one is loaded; per alias whose newest
        version did not load, that version (`failed`). `more`: the projects left out."""
        projects: dict[str, dict[str, Any]] = {}
        for project, served in self.predictor.loaded().items():
            entry = projects[project] = {CHAMPION: served["version"]}
            if CHALLENGER in served:
                policy = self._policy(project)
                entry[CHALLENGER] = served[CHALLENGER]["version"]
                entry["mode"] = policy.challenger
                if policy.challenger == "canary":
                    entry["canary_share"] = policy.canary_share
        for (project, alias), failure in self.loader.failed().items():
            projects.setdefault(project, {}).setdefault("failed", {})[alias] = failure["version"]
        names = sorted(projects)
        shown = {name: projects[name] for name in names[:SUMMARY_PROJECTS]}
        return {"projects": shown, "more": len(names) - len(shown)}

    # --- hot-swap -------------------------------------------------------------------------------

    async def on_registry_events(self, batch: list[Delivery[Any]]) -> None:
        """Note what each alias should serve; the loader loads it in the background. Nothing
        here waits on a registry or an artifact, so nothing here can stall the changelog."""
        self.loader.moved(
            d.event
            for d in batch
            if isinstance(d.event, AliasMoved) and d.event.alias in (CHAMPION, CHALLENGER)
        )

    async def fetch(self, project: str, version: int, expected_sha256: str) -> LoadedModel:
        """Fetch, verify, load and warm up off the event loop: a model ready to swap in.
        Raises RegistryUnavailable when worth retrying; anything else means it does not load."""
        info = await self.source.version(project, version)
        data, claimed = await self.source.artifact(project, version)
        actual = verify_artifact(data, f"{project} v{version}", expected_sha256, claimed)
        feature_names, classes = _signature(info)
        session = await OnnxSession.load(data)
        if session.n_inputs != len(feature_names):
            raise UnusableModel(
                f"the signature names {len(feature_names)} features, "
                f"the model takes {session.n_inputs}"
            )
        model = LoadedModel(project, version, actual, feature_names, classes, session)
        # Scored once as requests will be: a model whose outputs do not fit its signature's
        # classes fails here, not on the first request.
        zeros = np.zeros((1, len(feature_names)), dtype=np.float32)
        await asyncio.to_thread(model.predict, zeros)
        return model

    async def announce(self, failure: ModelLoadFailed) -> None:
        # The id is a function of what failed where: a report sent again after a lost
        # acknowledgement is recognised by the registry as the one it has.
        event_id = derived_id(
            failure.type, failure.project, str(failure.version), failure.alias, failure.replica
        )
        await self.bus.publish(
            catalog.SERVING_EVENTS, failure, key=failure.project, event_id=event_id
        )

    # --- predictions ----------------------------------------------------------------------------

    async def on_enriched(self, batch: list[Delivery[PredictionEnriched]]) -> list[Rejection]:
        received = time.perf_counter()
        now = datetime.now(UTC)
        by_project: dict[str, list[Delivery[PredictionEnriched]]] = defaultdict(list)
        answers = Answers(received)
        for d in batch:
            if (late := _past_deadline(d.headers, now)) is not None:
                answers.error(d, late)
            else:
                by_project[d.event.project].append(d)
        rejections: list[Rejection] = []
        shadow = Answers(received)
        for project, deliveries in by_project.items():
            self._route(project, deliveries, answers, shadow, rejections)
        outgoing = answers.outgoing("served")
        await self.bus.publish_many(catalog.PREDICTIONS_RESPONSES, outgoing)
        answers.count(self.predictor)
        if shadow:
            await self.bus.publish_many(catalog.PREDICTIONS_SHADOW, shadow.outgoing("shadow"))
            shadow.count(self.predictor, "shadow")
        rejections.extend(await self._reply(answers.requests, outgoing))
        return rejections

    def _route(
        self,
        project: str,
        deliveries: list[Delivery[PredictionEnriched]],
        answers: Answers,
        shadow: Answers,
        rejections: list[Rejection],
    ) -> None:
        """Score one project's requests as its serving policy says: the champion's answers (a
        canary's share of entities the challenger's instead) to `answers`, a shadow
        challenger's to `shadow`; without a model, an error answer each."""
        try:
            model = self.predictor.model(project)  # one reference for the whole batch
        except NoModel as exc:
            for d in deliveries:
                answers.error(d, str(exc))
            return
        policy = self._policy(project)
        challenger = self.predictor.challenger(project) if policy.challenger != "off" else None
        if challenger is not None and policy.challenger == "canary":
            sides = [in_canary(d.event.entity_id, policy.canary_share) for d in deliveries]
            canary = [d for d, inside in zip(deliveries, sides, strict=True) if inside]
            deliveries = [d for d, inside in zip(deliveries, sides, strict=True) if not inside]
            self._score(challenger, canary, answers, rejections)
        self._score(model, deliveries, answers, rejections)
        if challenger is not None and policy.challenger == "shadow":
            # What the challenger would have said; its misfits are not the request's fault.
            self._score(challenger, deliveries, shadow, None)

    async def answer(self, request: PredictionEnriched, received: float, event_id: str) -> bytes:
        """One request that came over HTTP, scored as `on_enriched` scores a batch (`_route`),
        its answer published on predictions.responses (a shadow challenger's on
        predictions.shadow) and returned as that event's JSON.

        `received`: perf_counter when the request arrived; `event_id`: the answer's id is
        `event_id + "/served"` (the shadow's `/shadow`), so a request sent again is the same
        event downstream. Raises NotServed (nothing published) when it is not scored."""
        # The request as if it had come from Kafka: its trace (the HTTP request's) goes on with
        # the answers, as a Kafka request's does.
        headers = tracing.context_headers() | {"ce_id": event_id}
        d = Delivery(request, headers, request.entity_id, HTTP_EDGE, 0, 0, b"")
        answers, shadow = Answers(received), Answers(received)
        self._route(request.project, [d], answers, shadow, [])
        (event,) = answers.events
        if not isinstance(event, Encoded):
            raise NotServed(event.error or "not scored")
        await self.bus.publish_many(catalog.PREDICTIONS_RESPONSES, answers.outgoing("served"))
        answers.count(self.predictor)
        if shadow:
            await self.bus.publish_many(catalog.PREDICTIONS_SHADOW, shadow.outgoing("shadow"))
            shadow.count(self.predictor, "shadow")
        return event.value

    def _score(
        self,
        model: LoadedModel,
        deliveries: list[Delivery[PredictionEnriched]],
        answers: Answers,
        rejections: list[Rejection] | None,
    ) -> None:
        """One onnxruntime call for the deliveries; an error answer (and a rejection) for each
        that does not fit the model's signature (`rejections` None: no answer for those)."""
        if not deliveries:
            return
        with tracing.stage("infer", deliveries, model=f"{model.project} v{model.version}"):
            scored = model.score([(d.event.feature_names, d.event.values) for d in deliveries])
        served_at = datetime.now(UTC)
        latency = (time.perf_counter() - answers.received) * 1000
        json = AnswerJSON(model.project, model.version, model.feature_names, served_at, latency)
        fit: list[Delivery[PredictionEnriched]] = []
        events: list[Encoded] = []
        for d, result in zip(deliveries, scored, strict=True):
            if isinstance(result, str):
                if rejections is not None:
                    answers.error(d, result)
                    rejections.append(Rejection(d, result, "infer"))
                continue
            fit.append(d)
            events.append(Encoded(SERVED, json(d.event, *result)))
        answers.scored(model, fit, events, served_at, latency)

    def _policy(self, project: str) -> ServingPolicy:
        known = self.projects.get(project)
        return known.spec.policies.serving if known is not None else ServingPolicy()

    async def _reply(
        self, requests: list[Delivery[PredictionEnriched]], outgoing: list[Outgoing]
    ) -> list[Rejection]:
        """Copies of answers to the topics their requests named in `ce_replyto`. A topic that is
        not allowed (`reply_refusal`) or does not exist is the request's fault: a dead letter,
        not a retry. Existence is checked without creating the topic."""
        by_topic: dict[str, list[tuple[Delivery[PredictionEnriched], Outgoing]]] = defaultdict(list)
        for d, out in zip(requests, outgoing, strict=True):
            if topic := d.headers.get(REPLY_TO):
                by_topic[topic].append((d, out))
        refused: list[Rejection] = []
        for topic, pairs in by_topic.items():
            if topic not in self._reply_topics:
                reason = reply_refusal(topic, self.reply_prefix)
                if reason is None and not await self.bus.topic_exists(topic):
                    reason = f"reply-to topic {topic[:100]!r} does not exist"
                if reason is not None:
                    refused.extend(Rejection(d, reason, "reply") for d, _ in pairs)
                    continue
                self._reply_topics.add(topic)
            await self.bus.publish_many(
                catalog.PREDICTIONS_RESPONSES, [o for _, o in pairs], to=topic
            )
        return refused


def _signature(info: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The feature names and classes of a version's signature, or UnusableModel saying what is
    missing."""
    signature = info.get("signature")
    if not isinstance(signature, dict) or not signature:
        raise UnusableModel("the version has no signature")
    names, classes = signature.get("feature_names"), signature.get("classes")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UnusableModel("the signature has no feature_names (a list of names)")
    if not isinstance(classes, list) or not classes:
        raise UnusableModel("the signature has no classes")
    return list(names), [str(c) for c in classes]


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
