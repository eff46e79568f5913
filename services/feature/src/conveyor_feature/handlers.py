"""Records update entity state and become feature rows; requests become feature vectors."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime

from conveyor_bus import Bus, Delivery, Outgoing, Rejection
from conveyor_contracts import catalog
from conveyor_contracts.events import PredictionEnriched, PredictionRequested, RecordAccepted
from conveyor_runtime import ProjectCache

from .adapters.store import FeatureStore, NewRow
from .domain.features import PastRecord, event_time_of, featurize, kept_fields

log = logging.getLogger(__name__)


class ProjectNotYetKnown(RuntimeError):
    """Ingest accepted records of a project this replica has not heard of yet: retry later."""


class Features:
    def __init__(self, projects: ProjectCache, store: FeatureStore, bus: Bus) -> None:
        self.projects = projects
        self.store = store
        self.bus = bus

    async def on_accepted(self, batch: list[Delivery[RecordAccepted]]) -> None:
        by_project: dict[str, list[RecordAccepted]] = defaultdict(list)
        for d in batch:
            by_project[d.event.project].append(d.event)
        for project, records in by_project.items():
            known = self.projects.get(project)
            if known is None:
                raise ProjectNotYetKnown(project)
            spec, keep = known.spec, kept_fields(known.spec)
            histories = await self.store.histories(project, sorted({r.entity_id for r in records}))
            names = spec.feature_names()
            rows = []
            for r in sorted(records, key=lambda r: r.event_time):
                history = histories.setdefault(r.entity_id, [])
                if any(p.record_id == r.record_id for p in history):
                    continue  # redelivered: its row exists already
                values = featurize(spec, r.fields, r.event_time, history)
                kept = {f: r.fields.get(f) for f in keep}
                history.append(PastRecord(r.record_id, r.event_time, kept))
                label = r.fields.get(spec.label.field)
                rows.append(
                    NewRow(
                        r.record_id,
                        r.entity_id,
                        r.event_time,
                        kept,
                        names,
                        values,
                        None if label is None else str(label),
                    )
                )
            await self.store.append(project, known.version, rows)

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
            names = spec.feature_names()
            for d, entity, at in ready:
                values = featurize(spec, d.event.fields, at, histories.get(entity, []))
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
