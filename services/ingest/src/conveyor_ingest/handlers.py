"""Records in: one validation path for Kafka and HTTP — the contract, then the quality checks."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics

from conveyor_bus import Delivery, Rejection
from conveyor_contracts.events import QualityReported, RecordSubmitted
from conveyor_runtime import ProjectCache, UnknownProject

from .adapters.repository import RawLog
from .domain.contract import Accepted, ContractViolation, validate
from .domain.quality import Finding
from .watch import Checked, QualityWatch

RECORDS = metrics.get_meter("conveyor.ingest").create_counter(
    "conveyor.ingest.records",
    description="Records submitted, by project and outcome: accepted, duplicate, invalid "
    "(contract), refused (quality, policy `reject`).",
)


@dataclass
class Outcome:
    accepted: list[str] = field(default_factory=list)
    duplicates: int = 0
    quality: QualityReported | None = None


@dataclass(frozen=True)
class Candidate:
    """A record that met its contract, where it came from, and what the quality checks found."""

    record: Accepted
    source: str
    findings: list[Finding]


class Ingest:
    def __init__(self, projects: ProjectCache, log: RawLog, watch: QualityWatch) -> None:
        self.projects = projects
        self.log = log
        self.watch = watch

    def check(
        self,
        project: str,
        fields: Any,
        record_id: str | None,
        source: str,
        size_at_most: int | None = None,
    ) -> Accepted:
        """Raises UnknownProject or ContractViolation."""
        known = self.projects.require(project)
        return validate(
            known.spec,
            fields,
            record_id=record_id,
            source=source,
            now=datetime.now(UTC),
            size_at_most=size_at_most,
        )

    async def inspect(
        self, project: str, records: list[tuple[Accepted, str]]
    ) -> tuple[list[Candidate], bool]:
        """The quality findings of each record, and whether the project rejects on findings."""
        known = self.projects.require(project)
        checker = await self.watch.checker(known)
        candidates = [Candidate(r, s, checker.findings(r.fields)) for r, s in records]
        return candidates, known.spec.policies.quality.on_finding == "reject"

    async def store(
        self, project: str, kept: Sequence[Candidate], refused: Sequence[Candidate] = ()
    ) -> Outcome:
        """Store the kept records (flagged with their findings) and keep the refused ones among
        the rejects (stage `quality`); count everything checked into the project's quality."""
        known = self.projects.require(project)
        records = [
            dataclasses.replace(c.record, flags=tuple(map(str, c.findings)))
            if c.findings
            else c.record
            for c in kept
        ]
        ids, duplicates = await self.log.store(
            project, known.version, records, [c.source for c in kept]
        )
        new = set(ids)
        checked = [
            Checked(c.record.fields, c.findings, False) for c in kept if c.record.record_id in new
        ] + [Checked(c.record.fields, c.findings, True) for c in refused]
        report = await self.watch.observe(known, await self.watch.checker(known), checked)
        await self.log.reject(
            [(project, c.source, quality_reason(c), c.record.fields) for c in refused],
            stage="quality",
        )
        for outcome, n in (
            ("accepted", len(ids)),
            ("duplicate", duplicates),
            ("refused", len(refused)),
        ):
            if n:
                RECORDS.add(n, {"project": project, "outcome": outcome})
        return Outcome(ids, duplicates, report)

    async def on_submitted(self, batch: list[Delivery[RecordSubmitted]]) -> list[Rejection]:
        rejections: list[Rejection] = []
        invalid: list[tuple[str | None, str, str, object]] = []
        good: dict[str, list[tuple[Delivery[RecordSubmitted], Accepted]]] = defaultdict(list)
        for delivery in batch:
            event = delivery.event
            try:
                accepted = self.check(
                    event.project, event.fields, event.record_id, event.source, len(delivery.value)
                )
            except (UnknownProject, ContractViolation) as exc:
                rejections.append(Rejection(delivery, str(exc), "validate"))
                invalid.append((event.project, event.source, str(exc), event.fields))
                RECORDS.add(1, {"project": event.project, "outcome": "invalid"})
                continue
            good[event.project].append((delivery, accepted))
        await self.log.reject(invalid)
        for project, items in good.items():
            candidates, reject = await self.inspect(
                project, [(a, d.event.source) for d, a in items]
            )
            kept, refused = [], []
            for (delivery, _), candidate in zip(items, candidates, strict=True):
                if reject and candidate.findings:
                    refused.append(candidate)
                    rejections.append(Rejection(delivery, quality_reason(candidate), "quality"))
                else:
                    kept.append(candidate)
            await self.store(project, kept, refused)
        return rejections


def quality_reason(candidate: Candidate) -> str:
    return "quality: " + "; ".join(map(str, candidate.findings))
