"""Records update entity state and become feature rows; requests become feature vectors."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from conveyor_bus import Bus, Delivery, Outgoing, Rejection
from conveyor_contracts import REPLY_TO, catalog, reply_refusal
from conveyor_contracts.events import (
    PredictionEnriched,
    PredictionRequested,
    PredictionServed,
    RecordAccepted,
)
from conveyor_contracts.records import MAX_INTEGER, id_problem
from conveyor_runtime import KnownProject, ProjectCache, UnknownProject

from .adapters.store import FeatureStore, NewRow, State
from .domain.features import (
    PastRecord,
    affected_by,
    featurize,
    kept_fields,
    revise,
    state_fields,
)
from .enrichment import Asked, enrich

log = logging.getLogger(__name__)
_meter = metrics.get_meter("conveyor.feature")
LATE = _meter.create_counter(
    "conveyor.feature.late_records",
    description="Records older than their project's allowed lateness behind their entity's "
    "newest record: they get their row, but rows already written are not revised.",
)


# Ingest may accept a project's first records a moment before this replica reads the project's
# announcement: how long a record of an unknown project waits for it before it is refused.
PROJECT_WAIT_S = 5.0


class Features:
    def __init__(
        self,
        projects: ProjectCache,
        store: FeatureStore,
        bus: Bus,
        *,
        reply_prefix: str = "replies.",
    ) -> None:
        self.projects = projects
        self.reply_prefix = reply_prefix
        self.store = store
        self.bus = bus
        self.newest: dict[str, datetime] = {}  # project → newest event time in the online state
        self._reply_topics: set[str] = set()  # reply-to topics seen to exist
        _meter.create_observable_gauge(
            "conveyor.feature.freshness",
            callbacks=[self._freshness],
            unit="s",
            description="Now minus the newest event time in a project's online state (also "
            "GET /projects/{p}/freshness on the feature service).",
        )

    def _freshness(self, _options: CallbackOptions) -> Iterable[Observation]:
        now = datetime.now(UTC)
        for project, newest in list(self.newest.items()):
            yield Observation((now - newest).total_seconds(), {"project": project})

    async def on_accepted(self, batch: list[Delivery[RecordAccepted]]) -> list[Rejection]:
        by_project: dict[str, list[Delivery[RecordAccepted]]] = defaultdict(list)
        for d in batch:
            by_project[d.event.project].append(d)
        rejections: list[Rejection] = []
        for project, deliveries in by_project.items():
            try:
                known = self.projects.get(project) or await self.projects.wait_for(
                    project, PROJECT_WAIT_S
                )
            except UnknownProject as exc:
                rejections.extend(Rejection(d, str(exc), "validate") for d in deliveries)
                continue
            await self._accept(known, [d.event for d in deliveries])
        return rejections

    async def _accept(self, known: KnownProject, records: list[RecordAccepted]) -> None:
        """Fold records into their entities' histories in event-time order; each new record gets
        its row, and a late one (within the allowed lateness) revises the later rows it changes."""
        spec, project = known.spec, known.spec.name
        keep, plain = kept_fields(spec), state_fields(spec)
        histories = await self.store.histories(project, sorted({r.entity_id for r in records}))
        names = spec.feature_names()
        rows: dict[str, NewRow] = {}
        states: dict[str, State] = {}
        to_revise: set[str] = set()  # ids of stored rows a late record changes
        for r in sorted(records, key=lambda r: (r.event_time, r.record_id)):
            history = histories.setdefault(r.entity_id, [])
            if any(p.record_id == r.record_id for p in history):
                continue  # redelivered: its row exists already
            newest = max((p.event_time for p in history), default=None)
            values = featurize(spec, r.fields, r.event_time, history)
            kept = {f: r.fields.get(f) for f in keep}
            past = PastRecord(r.record_id, r.event_time, kept)
            if newest is not None and r.event_time < newest:
                lateness = (newest - r.event_time).total_seconds()
                if lateness <= spec.allowed_lateness_s:
                    to_revise.update(i for i in affected_by(spec, past, history) if i not in rows)
                else:
                    LATE.add(1, {"project": project})
            history.append(past)
            label = r.fields.get(spec.label.field)
            rows[r.record_id] = NewRow(
                r.record_id,
                r.entity_id,
                r.event_time,
                kept,
                names,
                values,
                None if label is None else str(label),
            )
            # In event-time order, an entity's last record here is its newest of the batch; the
            # store keeps it only if it is newer than the entity's state.
            states[r.entity_id] = State(
                r.entity_id, r.record_id, r.event_time, {f: r.fields.get(f) for f in plain}
            )
        revised = await self._revisions(known, to_revise, histories)
        await self.store.append(
            project, known.version, list(rows.values()), revised, list(states.values())
        )
        if states:
            newest = max(x.event_time for x in states.values())
            known_newest = self.newest.get(project)
            if known_newest is None:  # first batch since start: the store has it, this included
                known_newest = await self.store.newest_event_time(project) or newest
            self.newest[project] = max(newest, known_newest)

    async def _revisions(
        self, known: KnownProject, to_revise: set[str], histories: dict[str, list[PastRecord]]
    ) -> list[NewRow]:
        """The stored rows late records changed, recomputed from the entities' full histories."""
        if not to_revise:
            return []
        spec = known.spec
        stored = await self.store.stored_rows(spec.name, sorted(to_revise))
        out = []
        for record_id, row in stored.items():
            if row.names != spec.feature_names():
                continue  # written under another feature layout: left as it was
            values = revise(spec, row.values, row.event_time, histories[row.entity_id])
            if values != row.values:
                out.append(
                    NewRow(
                        record_id,
                        row.entity_id,
                        row.event_time,
                        {},  # its record is in the history already: only the row changes
                        row.names,
                        values,
                        row.label,
                        row.revision + 1,
                    )
                )
        return out

    async def on_requests(self, batch: list[Delivery[PredictionRequested]]) -> list[Rejection]:
        """Enrich each request (`enrichment.enrich`, the use case the HTTP API shares); a request
        its project's data contract refuses is dead-lettered with the reason, and its
        application gets an error answer on predictions.responses."""
        received = time.perf_counter()
        refused: list[Rejection] = []
        entity_keys: dict[str, str] = {}  # project → its entity key, for the error answers
        by_project: dict[str, list[Delivery[PredictionRequested]]] = defaultdict(list)
        for d in batch:
            by_project[d.event.project].append(d)
        out: list[Outgoing] = []
        for project, deliveries in by_project.items():
            known = self.projects.get(project)
            if known is None:
                refused.extend(
                    Rejection(d, f"unknown project {project!r}", "enrich") for d in deliveries
                )
                continue
            spec = known.spec
            entity_keys[project] = spec.entity_key
            now = datetime.now(UTC)
            asked = [Asked(d.event.fields, d.event.requested_at, len(d.value)) for d in deliveries]
            names = spec.feature_names()
            for d, result in zip(deliveries, await enrich(spec, self.store, asked), strict=True):
                if isinstance(result, str):
                    refused.append(Rejection(d, result, "validate"))
                    continue
                out.append(
                    Outgoing(
                        result.entity_id,
                        PredictionEnriched(
                            request_id=d.event.request_id,
                            project=project,
                            project_version=known.version,
                            entity_id=result.entity_id,
                            requested_at=d.event.requested_at,
                            enriched_at=now,
                            feature_names=names,
                            values=result.values,
                        ),
                        # Derived from the request's id: a request redelivered after a crash is
                        # enriched under the same id, so serving's answer to it (whose id it
                        # derives from this one) is recognised as the same answer.
                        d.event_id + "/enriched",
                        cause=d.onward,
                    )
                )
        await self.bus.publish_many(catalog.PREDICTIONS_ENRICHED, out)
        if refused:
            await self._answer(refused, entity_keys, received)
        return refused

    async def _answer(
        self, refused: list[Rejection], entity_keys: dict[str, str], received: float
    ) -> None:
        """An error answer for each refused request, as serving answers: on predictions.responses
        (and the request's reply-to topic, when it names one that exists), keyed by request id,
        with an id derived from the request's. An application waiting for its answer learns
        why instead of waiting for its time-out."""
        served_at = datetime.now(UTC)
        latency_ms = (time.perf_counter() - received) * 1000
        answers: list[Outgoing] = []
        for rejection in refused:
            d: Delivery[PredictionRequested] = rejection.delivery
            key = entity_keys.get(d.event.project)
            entity = None if key is None else d.event.fields.get(key)
            answer = PredictionServed(
                request_id=d.event.request_id,
                project=d.event.project,
                # the entity as sent when it is an id, else none (it may be what was refused)
                entity_id=_as_id(entity),
                status="error",
                error=rejection.error,
                requested_at=d.event.requested_at,
                served_at=served_at,
                latency_ms=latency_ms,
            )
            answers.append(
                Outgoing(d.event.request_id, answer, d.event_id + "/served", cause=d.onward)
            )
        await self.bus.publish_many(catalog.PREDICTIONS_RESPONSES, answers)
        by_topic: dict[str, list[Outgoing]] = defaultdict(list)
        for rejection, outgoing in zip(refused, answers, strict=True):
            if topic := rejection.delivery.headers.get(REPLY_TO):
                by_topic[topic].append(outgoing)
        for topic, copies in by_topic.items():
            if topic not in self._reply_topics:
                refused_topic = reply_refusal(topic, self.reply_prefix)
                if refused_topic is not None or not await self.bus.topic_exists(topic):
                    continue  # the request is dead-lettered already
                self._reply_topics.add(topic)
            await self.bus.publish_many(catalog.PREDICTIONS_RESPONSES, copies, to=topic)


def _as_id(value: object) -> str:
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value) if isinstance(value, str) or abs(value) <= MAX_INTEGER else ""
        if id_problem(text) is None:
            return text
    return ""
