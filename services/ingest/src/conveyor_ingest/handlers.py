"""Records in: one validation path for Kafka and HTTP."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conveyor_bus import Delivery, Rejection
from conveyor_contracts.events import RecordSubmitted
from conveyor_runtime import ProjectCache, UnknownProject

from .adapters.repository import RawLog
from .domain.contract import Accepted, ContractViolation, validate


@dataclass
class Outcome:
    accepted: list[str] = field(default_factory=list)
    duplicates: int = 0


class Ingest:
    def __init__(self, projects: ProjectCache, log: RawLog) -> None:
        self.projects = projects
        self.log = log

    def check(self, project: str, fields: Any, record_id: str | None, source: str) -> Accepted:
        """Raises UnknownProject or ContractViolation."""
        known = self.projects.require(project)
        return validate(
            known.spec, fields, record_id=record_id, source=source, now=datetime.now(UTC)
        )

    async def store(self, project: str, records: list[Accepted], sources: list[str]) -> Outcome:
        version = self.projects.require(project).version
        ids, duplicates = await self.log.store(project, version, records, sources)
        return Outcome(ids, duplicates)

    async def on_submitted(self, batch: list[Delivery[RecordSubmitted]]) -> list[Rejection]:
        rejections: list[Rejection] = []
        rejected_rows: list[tuple[str | None, str, str, object]] = []
        good: dict[str, list[tuple[Accepted, str]]] = defaultdict(list)
        for delivery in batch:
            event = delivery.event
            try:
                accepted = self.check(event.project, event.fields, event.record_id, event.source)
            except (UnknownProject, ContractViolation) as exc:
                rejections.append(Rejection(delivery, str(exc), "validate"))
                rejected_rows.append((event.project, event.source, str(exc), event.fields))
                continue
            good[event.project].append((accepted, event.source))
        for project, items in good.items():
            await self.store(project, [a for a, _ in items], [s for _, s in items])
        await self.log.reject(rejected_rows)
        return rejections
