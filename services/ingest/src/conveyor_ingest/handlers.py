"""Records in: one validation path for Kafka and HTTP — the contract, then the quality checks."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from opentelemetry import metrics

from conveyor_bus import Delivery, Rejection
from conveyor_contracts.events import QualityReported, RecordSubmitted
from conveyor_contracts.records import Accepted, ContractViolation, contract_of
from conveyor_runtime import ProjectCache, UnknownProject

from .adapters.repository import RawLog
from .domain.quality import Finding
from .watch import Checked, QualityWatch

log = logging.getLogger(__name__)

RECORDS = metrics.get_meter("conveyor.ingest").create_counter(
    "conveyor.ingest.records",
    description="Records submitted, by project and outcome: accepted, duplicate (already in "
    "the raw log), invalid (contract), refused (quality, policy `reject`).",
)


@dataclass
class Outcome:
    accepted: list[str] = field(default_factory=list)
    duplicates: int = 0
    quality: QualityReported | None = None


class Candidate(NamedTuple):
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
        *,
        now: datetime | None = None,
    ) -> Accepted:
        """Raises UnknownProject or ContractViolation. `now` defaults to the clock (a batch
        reads it once for all its records)."""
        known = self.projects.require(project)
        return contract_of(known.spec).validate(
            fields,
            record_id=record_id,
            source=source,
            now=now or datetime.now(UTC),
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
        self,
        project: str,
        kept: Sequence[Candidate],
        refused: Sequence[Candidate] = (),
        *,
        after: Awaitable[object] | None = None,
    ) -> Outcome:
        """Store the kept records (flagged with their findings) and keep the refused ones among
        the rejects (stage `quality`); count everything checked into the project's quality.
        With `after`, what follows the commit (announcement, quality) waits for it."""
        known = self.projects.require(project)
        records = [
            c.record._replace(flags=tuple(map(str, c.findings))) if c.findings else c.record
            for c in kept
        ]
        ids, duplicates = await self.log.store(
            project, known.version, records, [c.source for c in kept], after=after
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
        """Check and store a batch from Kafka, a chunk at a time in a pipeline: while chunks are
        being stored (at most STORES_IN_FLIGHT at once, each in its own transaction), the next
        is checked. Each chunk's announcement and quality count wait for the chunk before it, so
        records are announced in the batch's order. The batch's offsets are committed once every
        chunk is stored: a failure redelivers the whole batch, and the raw log's ids make the
        replay change nothing (what a failed batch had stored and not announced, the sweep
        announces)."""
        rejections: list[Rejection] = []
        stores: list[asyncio.Future[None]] = []
        try:
            for start in range(0, len(batch), STORE_CHUNK):
                checked = await self._check_chunk(batch[start : start + STORE_CHUNK], rejections)
                if len(stores) >= STORES_IN_FLIGHT:
                    await stores[-STORES_IN_FLIGHT]
                previous = stores[-1] if stores else None
                stores.append(asyncio.ensure_future(self._store_chunk(checked, previous)))
                await asyncio.sleep(0)  # its first query goes out before the next chunk's work
            for store in stores:
                await store
        finally:
            if running := [s for s in stores if not s.done()]:
                # A chunk failed while others were being stored: let them end before the batch
                # is redelivered (their records are then found already there).
                await asyncio.wait(running)
            for store in stores:
                if not store.cancelled() and store.exception() is not None:
                    # The type only: a database's message may quote a record's values.
                    log.warning("storing a chunk failed: %s", type(store.exception()).__name__)
        return rejections

    async def _check_chunk(
        self, chunk: list[Delivery[RecordSubmitted]], rejections: list[Rejection]
    ) -> _Checked:
        """Contract and quality checks of a chunk (pure CPU, handing the loop to the chunk being
        stored every few records)."""
        out = _Checked()
        good: dict[str, list[tuple[Delivery[RecordSubmitted], Accepted]]] = defaultdict(list)
        now = datetime.now(UTC)  # once for the chunk, not per record
        for i, delivery in enumerate(chunk, 1):
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            event = delivery.event
            try:
                accepted = self.check(
                    event.project,
                    event.fields,
                    event.record_id,
                    event.source,
                    len(delivery.value),
                    now=now,
                )
            except (UnknownProject, ContractViolation) as exc:
                rejections.append(Rejection(delivery, str(exc), "validate"))
                out.invalid.append((event.project, event.source, str(exc), event.fields))
                RECORDS.add(1, {"project": event.project, "outcome": "invalid"})
                continue
            good[event.project].append((delivery, accepted))
        for project, items in good.items():
            candidates, reject = await self.inspect(
                project, [(a, d.event.source) for d, a in items]
            )
            kept, refused = out.projects[project]
            for (delivery, _), candidate in zip(items, candidates, strict=True):
                if reject and candidate.findings:
                    refused.append(candidate)
                    rejections.append(Rejection(delivery, quality_reason(candidate), "quality"))
                else:
                    kept.append(candidate)
        return out

    async def _store_chunk(self, checked: _Checked, previous: asyncio.Future[None] | None) -> None:
        await self.log.reject(checked.invalid)
        for project, (kept, refused) in checked.projects.items():
            await self.store(project, kept, refused, after=previous)
        if previous is not None:
            await previous  # in order, also when this chunk had nothing to store


# Chunks of a Kafka batch are stored while the next one is checked (see on_submitted): a few
# chunks a batch let Postgres's time overlap ingest's own, and two stores at once keep ingest
# from waiting on one (a chunk's store took longer than checking the next); the checks hand
# over the loop every YIELD_EVERY records, so the chunks being stored move on meanwhile.
STORE_CHUNK = 500
STORES_IN_FLIGHT = 2
YIELD_EVERY = 25


@dataclass
class _Checked:
    """A chunk's outcome: per project the records to store and those its quality refuses; the
    records that broke their contract."""

    projects: dict[str, tuple[list[Candidate], list[Candidate]]] = field(
        default_factory=lambda: defaultdict(lambda: ([], []))
    )
    invalid: list[tuple[str | None, str, str, object]] = field(default_factory=list)


def quality_reason(candidate: Candidate) -> str:
    return "quality: " + "; ".join(map(str, candidate.findings))
