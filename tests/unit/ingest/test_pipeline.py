"""A Kafka batch is stored a chunk at a time, in order, while the next chunk is checked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor_bus import Bus, Delivery
from conveyor_contracts.events import ProjectApplied, RecordSubmitted
from conveyor_contracts.records import Accepted, Contract
from conveyor_examples import load_project
from conveyor_examples.fraud.traffic import FraudTraffic
from conveyor_ingest import handlers
from conveyor_ingest.adapters.repository import RawLog
from conveyor_ingest.handlers import Ingest
from conveyor_ingest.watch import QualityWatch
from conveyor_runtime import ProjectCache

INVALID = {7, 612, 1100}  # one in each of three chunks


class FakeLog(RawLog):
    """Records what was announced, in which order, and how many stores ran at once; a store
    takes some turns of the loop, as its round trips to Postgres would, then waits for the
    store before it (`after`) and announces."""

    def __init__(self, events: list[tuple[str, Any]], fail_at: int | None = None) -> None:
        self.events = events
        self.stored: list[str] = []  # announced, in order
        self.rejected: list[tuple[str | None, str, str, object]] = []
        self.fail_at = fail_at
        self.running = 0
        self.most_at_once = 0
        self.calls = 0

    async def store(
        self,
        project: str,
        project_version: int,
        records: list[Accepted],
        sources: list[str],
        *,
        after=None,
    ) -> tuple[list[str], int]:
        self.calls += 1
        call = self.calls
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.events.append(("store", call))
        try:
            for _ in range(40 if call % 2 else 5):  # odd chunks slower: order is not luck
                await asyncio.sleep(0)
                self.events.append(("turn", call))
            if call == self.fail_at:
                raise ConnectionError("the database went away")
            if after is not None:
                await after
            self.stored += [r.record_id for r in records]
            self.events.append(("stored", call))
            return [r.record_id for r in records], 0
        finally:
            self.running -= 1

    async def reject(self, rows, stage: str = "contract") -> None:
        self.rejected += rows

    async def profile(self, project: str) -> dict[str, Any] | None:
        return None

    async def sample(self, project: str, n: int, *, newest: bool) -> list[dict[str, Any]]:
        return []


class FakeBus(Bus):
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        pass


def batch(n: int) -> list[Delivery[RecordSubmitted]]:
    traffic = FraudTraffic(seed=3)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        fields = traffic.payment(start + timedelta(seconds=i), drifted=False).fields
        if i in INVALID:
            fields = fields | {"hour": 30}
        event = RecordSubmitted(project="fraud", record_id=f"r-{i}", source="t", fields=fields)
        value = event.model_dump_json().encode()
        out.append(Delivery(event, {}, fields["customer"], "records", 0, i, value))
    return out


class LoggedContract(Contract):
    """The fraud contract, noting each record it checks."""

    events: list[tuple[str, Any]]

    def validate(self, fields: Any, *, record_id: str | None, **kwargs: Any) -> Accepted:
        assert record_id is not None
        self.events.append(("check", int(record_id.removeprefix("r-"))))
        return super().validate(fields, record_id=record_id, **kwargs)


def ingest(log: FakeLog, events: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Ingest:
    projects = ProjectCache()
    spec = load_project("fraud")
    projects.apply(ProjectApplied(project=spec.name, project_version=1, spec=spec))
    contract = LoggedContract(spec)
    contract.events = events
    monkeypatch.setattr(handlers, "contract_of", lambda _spec: contract)
    return Ingest(projects, log, QualityWatch(log, FakeBus("ingest")))


async def test_chunks_are_stored_in_order_while_the_next_is_checked(monkeypatch):
    events: list[tuple[str, Any]] = []
    log = FakeLog(events)
    deliveries = batch(1234)

    rejections = await ingest(log, events, monkeypatch).on_submitted(deliveries)

    valid = [f"r-{i}" for i in range(1234) if i not in INVALID]
    assert log.stored == valid  # every valid record announced once, in the batch's order
    assert log.calls == -(-1234 // handlers.STORE_CHUNK)
    assert log.most_at_once == handlers.STORES_IN_FLIGHT
    assert sorted(r.delivery.offset for r in rejections) == sorted(INVALID)
    assert all("hour: 30 is above the maximum 23" in r.error for r in rejections)
    assert len(log.rejected) == len(INVALID)
    # The first chunk's store moved on while the second chunk was being checked: some of its
    # turns fall between checks of the second chunk.
    chunk = handlers.STORE_CHUNK
    second = [
        at for at, (kind, i) in enumerate(events) if kind == "check" and chunk <= i < 2 * chunk
    ]
    turns = [at for at, e in enumerate(events) if e == ("turn", 1)]
    assert any(second[0] < at < second[-1] for at in turns)


async def test_a_failed_chunk_fails_the_batch_and_nothing_after_it_is_announced(monkeypatch):
    events: list[tuple[str, Any]] = []
    log = FakeLog(events, fail_at=2)

    with pytest.raises(ConnectionError):
        await ingest(log, events, monkeypatch).on_submitted(batch(1234))

    # The third chunk, stored beside the second, waited for it and announced nothing.
    assert log.calls == 3
    assert log.stored == [f"r-{i}" for i in range(handlers.STORE_CHUNK) if i not in INVALID]
    assert log.running == 0
