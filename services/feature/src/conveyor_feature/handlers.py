"""Records update entity state and become feature rows; requests become feature vectors."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from conveyor_bus import Bus, Delivery, Outgoing, Rejection
from conveyor_contracts import catalog
from conveyor_contracts.events import PredictionEnriched, PredictionRequested, RecordAccepted
from conveyor_runtime import KnownProject, ProjectCache, UnknownProject

from .adapters.store import FeatureStore, NewRow, State
from .domain.features import (
    PastRecord,
    affected_by,
    event_time_of,
    featurize,
    kept_fields,
    revise,
    state_fields,
    status,
)

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
    def __init__(self, projects: ProjectCache, store: FeatureStore, bus: Bus) -> None:
        self.projects = projects
        self.store = store
        self.bus = bus
        self.newest: dict[str, datetime] = {}  # project → newest event time in the online state
        _meter.create_observable_gauge(
            "conveyor.feature.freshness",
            callbacks=[self._freshness],
            unit="s",
            description="Now minus the newest event time in a project's online state.",
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
        rejections: list[Rejection] = []
        by_project: dict[str, list[Delivery[PredictionRequested]]] = defaultdict(list)
        for d in batch:
            by_project[d.event.project].append(d)
        out: list[Outgoing] = []
        for project, deliveries in by_project.items():
            known = self.projects.get(project)
            if known is None:
                rejections.extend(
                    Rejection(d, f"unknown project {project!r}", "enrich") for d in deliveries
                )
                continue
            spec = known.spec
            now = datetime.now(UTC)
            ready: list[tuple[Delivery[PredictionRequested], str, datetime]] = []
            for d in deliveries:
                entity = d.event.fields.get(spec.entity_key)
                if entity is None:
                    rejections.append(Rejection(d, f"{spec.entity_key}: required", "enrich"))
                    continue
                try:
                    at = event_time_of(spec, d.event.fields, d.event.requested_at)
                except ValueError as exc:
                    rejections.append(Rejection(d, f"{spec.event_time_field}: {exc}", "enrich"))
                    continue
                if at.tzinfo is None:
                    rejections.append(
                        Rejection(
                            d, f"{spec.event_time_field}: a timestamp needs a time zone", "enrich"
                        )
                    )
                    continue
                ready.append((d, str(entity), at))
            histories = await self.store.histories(project, sorted({e for _, e, _ in ready}))
            plain = state_fields(spec)
            # A request may leave plain fields out: they come from the entity's online state
            # (its newest record) while that is within the project's TTL.
            lacking = sorted(
                {e for d, e, _ in ready if any(f not in d.event.fields for f in plain)}
            )
            states = await self.store.states(project, lacking) if lacking else {}
            names = spec.feature_names()
            for d, entity, at in ready:
                fields = d.event.fields
                state = states.get(entity)
                if state and status(at, state.event_time, spec.feature_ttl_s) == "present":
                    fields = state.fields | fields
                values = featurize(spec, fields, at, histories.get(entity, []))
                out.append(
                    Outgoing(
                        entity,
                        PredictionEnriched(
                            request_id=d.event.request_id,
                            project=project,
                            project_version=known.version,
                            entity_id=entity,
                            requested_at=d.event.requested_at,
                            enriched_at=now,
                            feature_names=names,
                            values=values,
                        ),
                        cause=d.onward,
                    )
                )
        await self.bus.publish_many(catalog.PREDICTIONS_ENRICHED, out)
        return rejections
