"""Services killed hard (SIGKILL) in the middle of a stream and started again: nothing is lost,
nothing is stored twice, nothing is announced twice, and what is computed is what an
uninterrupted run computes.

Each service runs as its own OS process (as `conveyor up` runs it) against the session's broker
and this test's database, so a kill leaves what a crashed machine would: what Postgres committed,
what the broker acknowledged, the consumer group's last commit. The kill is aimed at the moment a
crash tests most for announcements: part of the work stored, and the outbox relay waiting for the
acknowledgements of a batch it has produced but not yet marked published. Where what matters is
redelivery (serving, the trainer, the monitor), it is aimed at work done (answers out, rows
stored) for records the service's consumer group has not committed: they come again.

Restarts cost most of these tests' time: on the embedded broker a service joins its consumer
groups in ~3 s, in ~11 s after a kill (the dead member must expire first).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from conveyor_bus import ensure_topics
from conveyor_cli import infra
from conveyor_cli.stack import ServiceProcess, tail
from conveyor_contracts import ModelProject, TopicSpec, catalog, envelope_for
from conveyor_contracts.events import (
    FeatureRowComputed,
    FeedbackRecorded,
    FeedbackSubmitted,
    PredictionEnriched,
    PredictionServed,
    RecordAccepted,
    RecordSubmitted,
)
from tests.models import Model, make_model
from tests.support import Kafka, bearer, headers_of, unique_project, until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CUSTOMERS = 6
MERCHANTS = ("grocery", "fuel", "travel", "electronics", "online")
Probe = Callable[[], Awaitable[int]]


class Service:
    """One Conveyor service as a process of its own, which a test can kill and start again."""

    def __init__(
        self,
        name: str,
        kafka: infra.Broker,
        database_url: str,
        logs: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        port = infra.free_port()
        full = os.environ | kafka.client_env() | {"DATABASE_URL": database_url}
        full |= {"HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port), "LOG_LEVEL": "WARNING"}
        self.process = ServiceProcess(name, port, logs / f"{name}.log", full | (env or {}))

    @property
    def schema(self) -> str:
        return self.process.name  # each service keeps its tables in a schema of its name

    @property
    def url(self) -> str:
        return self.process.url

    def start(self) -> None:
        self.process.start()

    def kill(self) -> None:
        """SIGKILL: no stop hook runs, no offset is committed, no outbox row is marked."""
        assert self.process.proc is not None
        os.killpg(self.process.proc.pid, signal.SIGKILL)
        self.process.proc.wait(10)

    def check_alive(self) -> None:
        if not self.process.alive():
            raise AssertionError(f"{self.process.name} exited:\n{tail(self.process.log_path)}")


@asynccontextmanager
async def service(
    name: str,
    kafka: infra.Broker,
    database_url: str,
    logs: Path,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Service]:
    svc = Service(name, kafka, database_url, logs, env)
    try:
        yield svc
    finally:
        svc.process.stop()


class Topic:
    """The events of some projects on a topic, read from its beginning in the background while
    the test runs (with their headers). `ids` names each event by its field `id_field`."""

    def __init__(
        self, kafka: infra.Broker, topic: TopicSpec, *projects: str, id_field: str = "record_id"
    ) -> None:
        self.topic = topic
        self.id_field = id_field
        self.events: dict[str, list[tuple[Any, dict[str, str]]]] = defaultdict(list)
        self._projects = {p.encode(): p for p in projects}
        self._last_read = 0.0
        self._bootstrap = kafka.bootstrap_servers
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=int(kafka.client_env().get("KAFKA_FETCH_MAX_WAIT_MS", 500)),
        )

    async def __aenter__(self) -> Topic:
        await ensure_topics(self._bootstrap)  # as a service would: the first test may be first
        await self._consumer.start()
        tps = [TopicPartition(self.topic.name, p) for p in range(self.topic.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for r in (r for records in batch.values() for r in records):
                if r.value is None:
                    continue  # another test's hostile input (a tombstone) on the shared topic
                project = next((p for b, p in self._projects.items() if b in r.value), None)
                if project is None:
                    continue
                event = self.topic.adapter.validate_json(r.value)
                if event.project == project:
                    self.events[project].append((event, headers_of(r)))
                    self._last_read = loop.time()

    def ids(self, project: str) -> set[str]:
        return {getattr(e, self.id_field) for e, _ in self.events[project]}

    async def settled(self, project: str, ids: set[str]) -> list[tuple[Any, dict[str, str]]]:
        """Every event of `project` once each of `ids` has been read and nothing more has come
        for a second. Call it when the producer is done (its outbox drained): all it published
        was acknowledged, so is readable. (Not `Kafka.snapshot`: that stops at the end offsets the
        broker reports, and Tansu reports a high-water mark short of a partition's last
        multi-record batch; see `conveyor_bus.read_ranges`.)"""
        loop = asyncio.get_running_loop()

        def done() -> bool:
            if not self._task.done():
                return ids <= self.ids(project) and loop.time() - self._last_read > 1.0
            raise AssertionError(f"reading {self.topic.name} failed") from self._task.exception()

        await until(done, 30, f"every {project} event on {self.topic.name}")
        return list(self.events[project])


class Group:
    """Where a service's consumer group of a topic has committed, read without joining it (the
    client subscribes to nothing): what the service handled beyond that comes again after a
    kill."""

    def __init__(self, kafka: infra.Broker, service: str, topic: TopicSpec) -> None:
        self.partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        self._client = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=f"conveyor-{service}.{topic.name}",  # the bus's name for it
            enable_auto_commit=False,
        )

    async def __aenter__(self) -> Group:
        await self._client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.stop()

    async def uncommitted(self, handled: Iterable[tuple[int, int] | None]) -> bool:
        """Whether any of the `handled` (partition, offset)s is not committed yet."""
        committed = [await self._client.committed(tp) or 0 for tp in self.partitions]
        return any(h is not None and h[1] >= committed[h[0]] for h in handled)


async def count(db: asyncpg.Connection, table: str, project: str) -> int:
    """Rows of `project` in a service's table (0 until the service has created it)."""
    try:
        return int(await db.fetchval(f"SELECT count(*) FROM {table} WHERE project = $1", project))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0


async def unpublished(
    db: asyncpg.Connection, schema: str, limit: int | None = None, id_field: str = "record_id"
) -> list[str]:
    """Ids (`id_field`) of events a service owes, oldest first: its outbox's rows not marked
    published (the first 500 are the relay's batch in flight, if it has one), then the records
    its oldest announcement names (ingest's, conveyor_db.announce: the batch in flight, if any)."""
    owed: list[str] = []
    try:
        rows = await db.fetch(
            f"SELECT convert_from(value, 'UTF8')::jsonb ->> $2 AS owed "
            f"FROM {schema}.outbox "
            "WHERE published_at IS NULL ORDER BY id LIMIT $1",
            limit,
            id_field,
        )
        owed += [r["owed"] for r in rows]
        keys = await db.fetchval(f"SELECT keys FROM {schema}.announcements ORDER BY id LIMIT 1")
        owed += keys or []
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        pass
    return owed


async def relay_waiting(db: asyncpg.Connection, service: str) -> bool:
    """Whether the service, for 20 ms or more, has been waiting for the broker to acknowledge
    a batch it produced: its outbox relay's (or announcer's) transaction holds the rows it
    selected FOR UPDATE, not yet marked published, and some of the batch has most likely
    reached the topic."""
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = $1 AND state = 'idle in transaction' "
            # the relay's (announcer's) last statement on this connection before it produces
            "AND (query LIKE '%FROM outbox o LEFT JOIN outbox_attempts%FOR UPDATE%' "
            "OR query LIKE '%FROM announcements WHERE id = $1 FOR UPDATE%') "
            "AND clock_timestamp() - state_change >= interval '20 milliseconds'",
            f"conveyor-{service}",
        )
    )


@dataclass(frozen=True)
class Crash:
    done: int  # of the work, when the process died
    in_flight: set[str]  # ids of the relay's batch's events: produced, not marked published


async def kill_partway(
    svc: Service,
    db: asyncpg.Connection,
    progress: Probe,
    total: int,
    what: str,
    id_field: str = "record_id",
    timeout_s: float = 45,
    critical: Callable[[], Awaitable[bool]] | None = None,
) -> Crash:
    """SIGKILL `svc` part-way through `total`, at the moment a crash tests most (`critical`; by
    default, work stored and the outbox relay waiting for the acknowledgements of a batch it is
    producing), or, should that moment not be seen, at three fifths."""

    async def moment() -> bool:
        svc.check_alive()
        done = await progress()
        if done < total // 5:
            return False
        if done >= 3 * total // 5:
            return True
        return await (critical() if critical else relay_waiting(db, svc.schema))

    try:
        async with asyncio.timeout(timeout_s):
            while not await moment():
                await asyncio.sleep(0.002)  # the relay's wait lasts milliseconds
    except TimeoutError:
        raise AssertionError(f"{what}: not a fifth done after {timeout_s:g}s") from None
    svc.kill()
    # The relay takes the oldest unpublished events, at most 500, in id order; the announcer
    # its oldest note.
    crash = Crash(await progress(), set(await unpublished(db, svc.schema, 500, id_field)))
    assert crash.done < total, f"the kill came after all {total} {what}: not mid-stream"
    return crash


async def until_done(
    svc: Service, db: asyncpg.Connection, probe: Probe, n: int, what: str, timeout_s: float = 45
) -> None:
    """Wait until `probe()` counts `n` and the service's outbox is drained."""

    async def done() -> bool:
        svc.check_alive()
        return await probe() == n and not await unpublished(db, svc.schema, 1)

    await until(done, timeout_s, what)


async def produce(
    k: Kafka, topic: TopicSpec, events: list[tuple[str, Any]]
) -> list[tuple[int, int]]:
    """Produce (key, event) pairs with their envelopes, batched by the producer (waiting for each
    acknowledgement in turn would take longer than the rest of the test); returns where each
    event landed: (partition, offset)."""
    sent = []
    for key, event in events:
        headers = envelope_for(topic, event, source="test").to_headers()
        sent.append(
            await k.producer.send(
                topic.name,
                event.model_dump_json().encode(),
                key=key.encode(),
                headers=[(h, v.encode()) for h, v in headers.items()],
            )
        )
    await k.producer.flush()
    return [(m.partition, m.offset) for m in await asyncio.gather(*sent)]


def repeats(
    events: list[tuple[Any, dict[str, str]]], crash: Crash, id_field: str = "record_id"
) -> str:
    """What an assertion of "each record id once" says when it fails."""
    copies: dict[str, list[str | None]] = defaultdict(list)
    for e, h in events:
        copies[getattr(e, id_field)].append(h.get("ce_id"))
    twice = {rid: ce_ids for rid, ce_ids in copies.items() if len(ce_ids) > 1}
    same = sum(len(set(ce_ids)) == 1 for ce_ids in twice.values())
    return (
        f"{len(twice)} {id_field}s announced more than once ({len(events)} events in all; "
        f"{same} of the repeats carry the same ce_id twice), e.g. {dict(list(twice.items())[:2])}. "
        f"The kill came with {crash.done} done and the relay's batch of {len(crash.in_flight)} "
        f"events not marked published; {len(crash.in_flight & set(twice))} of those are the "
        f"repeats, {len(set(twice) - crash.in_flight)} repeats are from outside that batch."
    )


# --- feature ------------------------------------------------------------------------------------


def accepted_records(project: str, n: int) -> list[RecordAccepted]:
    """`n` records of a few customers, each customer's in event-time order (so no row is
    revised), close enough together that the hour-long aggregates and since_last have history;
    some unlabeled."""
    out = []
    for i in range(n):
        customer = f"c-{i % CUSTOMERS}"
        at = T0 + timedelta(seconds=20 * i + (i * 7) % 13)
        fields = {
            "customer": customer,
            "ts": at.isoformat(),
            "amount": float(1 + (i * 37) % 500) + 0.25,
            "merchant": MERCHANTS[(i // CUSTOMERS) % len(MERCHANTS)],
            "hour": at.hour,
            "foreign": i % 5 == 0,
        }
        if i % 9:
            fields["outcome"] = "fraud" if i % 13 == 0 else "legit"
        out.append(
            RecordAccepted(
                project=project,
                project_version=1,
                record_id=f"r-{i}",
                entity_id=customer,
                event_time=at,
                ingested_at=T0,
                fields=fields,
            )
        )
    return out


async def feature_state(db: asyncpg.Connection, project: str) -> tuple[dict[str, Any], set[Any]]:
    """The project's feature rows by record id, and its online store (each entity's records and
    its newest one), leaving out when things were written."""
    rows = await db.fetch(
        "SELECT record_id, entity_id, event_time, feature_names, values, label, revision "
        "FROM feature.rows WHERE project = $1",
        project,
    )
    online = await db.fetch(
        "SELECT 'event', entity_id, record_id, event_time, values::text FROM feature.entity_events "
        "WHERE project = $1 UNION ALL SELECT 'newest', entity_id, record_id, event_time, "
        "fields::text FROM feature.entity_state WHERE project = $1",
        project,
    )
    by_id = {r["record_id"]: {k: v for k, v in r.items() if k != "record_id"} for r in rows}
    return by_id, {tuple(r.values()) for r in online}


async def test_feature_killed_mid_stream_computes_what_an_uninterrupted_run_does(
    kafka, database_url, tmp_path
):
    n = 2000
    a = unique_project("kill-fa")
    b = a.model_copy(update={"name": a.name.replace("kill-fa", "kill-fb")})
    ids = {f"r-{i}" for i in range(n)}
    db = await asyncpg.connect(database_url)
    try:
        async with (
            Kafka(kafka.bootstrap_servers) as k,
            Topic(kafka, catalog.FEATURES_ROWS, a.name, b.name) as announced,
            service("feature", kafka, database_url, tmp_path) as feature,
        ):
            await k.apply(a)
            await k.apply(b)

            def rows_of(project: str) -> Probe:
                return lambda: count(db, "feature.rows", project)

            # One process serves A from start to end, then B until it is killed part-way: a
            # restarted consumer waits ~18 s to rejoin its group on the embedded broker. (This
            # test comes first so that it need not work through the ingest test's records.)
            await produce(
                k, catalog.RECORDS_ACCEPTED, [(r.entity_id, r) for r in accepted_records(a.name, n)]
            )
            feature.start()
            await until_done(feature, db, rows_of(a.name), n, f"all {n} rows of {a.name}")
            await produce(
                k, catalog.RECORDS_ACCEPTED, [(r.entity_id, r) for r in accepted_records(b.name, n)]
            )
            crash = await kill_partway(feature, db, rows_of(b.name), n, f"rows of {b.name}")
            feature.start()
            await until_done(feature, db, rows_of(b.name), n, f"all {n} rows of {b.name}")
            rows_a, online_a = await feature_state(db, a.name)
            rows_b, online_b = await feature_state(db, b.name)
            announced_a = await announced.settled(a.name, ids)
            announced_b = await announced.settled(b.name, ids)
    finally:
        await db.close()

    assert set(rows_a) == ids
    names = a.feature_names()  # history mattered: rows saw their customer's earlier records
    assert max(r["values"][names.index("payments_1h")] for r in rows_a.values()) > 1
    differing = sorted(rid for rid in ids if rows_a[rid] != rows_b.get(rid))
    assert not differing, (
        f"{len(differing)} rows differ, e.g. {differing[0]}: "
        f"{rows_a[differing[0]]} vs {rows_b.get(differing[0])}"
    )
    assert online_b == online_a
    assert {e.record_id for e, _ in announced_a} == ids and len(announced_a) == n
    assert {e.record_id for e, _ in announced_b} == ids
    assert len(announced_b) == n, repeats(announced_b, crash)


# --- ingest -------------------------------------------------------------------------------------


async def test_ingest_killed_mid_stream_stores_and_announces_each_record_once(
    kafka, database_url, tmp_path
):
    n = 5000
    spec = unique_project("kill-ing")
    name = spec.name
    ids = [f"{name}-{i}" for i in range(n)]  # raw_records is keyed by record id alone
    submitted = []
    for i, rid in enumerate(ids):
        customer = f"c-{i % CUSTOMERS}"
        fields = {
            "customer": customer,
            "ts": (T0 + timedelta(seconds=20 * i)).isoformat(),
            "amount": float(1 + i % 500),
            "merchant": MERCHANTS[i % len(MERCHANTS)],
            "hour": i % 24,
            "foreign": i % 7 == 0,
            "outcome": "fraud" if i % 11 == 0 else "legit",
        }
        submitted.append((customer, RecordSubmitted(project=name, record_id=rid, fields=fields)))
    db = await asyncpg.connect(database_url)
    try:
        async with (
            Kafka(kafka.bootstrap_servers) as k,
            Topic(kafka, catalog.RECORDS_ACCEPTED, name) as accepted,
            service("ingest", kafka, database_url, tmp_path) as ingest,
        ):
            await k.apply(spec)
            await produce(k, catalog.RECORDS_SUBMITTED, submitted)

            async def stored() -> int:
                return await count(db, "ingest.raw_records", name)

            ingest.start()
            crash = await kill_partway(ingest, db, stored, n, "records stored")
            ingest.start()
            await until_done(ingest, db, stored, n, f"all {n} records stored and relayed")
            events = await accepted.settled(name, set(ids))
            rows = await db.fetch(
                "SELECT record_id FROM ingest.raw_records WHERE project = $1", name
            )
            rejects = await count(db, "ingest.rejects", name)
            dead = [
                r
                for r in await k.snapshot(catalog.RECORDS_SUBMITTED.dlq)
                if name.encode() in r.value
            ]
    finally:
        await db.close()

    assert sorted(r["record_id"] for r in rows) == sorted(ids)
    assert rejects == 0 and dead == []
    assert all(isinstance(e, RecordAccepted) for e, _ in events)
    assert {e.record_id for e, _ in events} == set(ids)
    assert len(events) == n, repeats(events, crash)


# --- trainer ------------------------------------------------------------------------------------


async def test_trainer_killed_mid_stream_stores_each_example_once_where_it_was_read(
    kafka, database_url, tmp_path
):
    rows, labels = 3000, 1500
    spec = unique_project("kill-trn")
    name, names = spec.name, spec.feature_names()
    computed = [
        FeatureRowComputed(
            project=name,
            project_version=1,
            record_id=f"r-{i}",
            entity_id=f"c-{i % CUSTOMERS}",
            event_time=T0 + timedelta(seconds=20 * i),
            feature_names=names,
            values=[float((i * (j + 3)) % 17) for j in range(len(names))],
            label=None if i % 9 == 0 else ("fraud" if i % 13 == 0 else "legit"),
        )
        for i in range(rows)
    ]
    recorded = [
        FeedbackRecorded(
            feedback_id=f"fb-{i}",
            request_id=f"q-{i}",
            project=name,
            entity_id=f"c-{i % CUSTOMERS}",
            model_version=1,
            feature_names=names,
            values=[float((i * (j + 5)) % 11) for j in range(len(names))],
            predicted_label="legit",
            label="fraud" if i % 7 == 0 else "legit",
            correct=i % 7 != 0,
            predicted_at=T0 + timedelta(seconds=30 * i),
            labeled_at=T0 + timedelta(seconds=30 * i + 5),
        )
        for i in range(labels)
    ]
    db = await asyncpg.connect(database_url)
    try:
        async with (
            Kafka(kafka.bootstrap_servers) as k,
            service("trainer", kafka, database_url, tmp_path) as trainer,
            Group(kafka, "trainer", catalog.FEATURES_ROWS) as rows_group,
            Group(kafka, "trainer", catalog.FEEDBACK_RECORDED) as labels_group,
        ):
            # Before anything produces to them: the embedded broker would create a missing topic
            # with four partitions, not the catalog's three.
            await ensure_topics(kafka.bootstrap_servers)
            await k.apply(spec)
            # Where each example's event landed: the trainer must store exactly that.
            expected: dict[str, tuple[str, int, int]] = {}
            placed = await produce(k, catalog.FEATURES_ROWS, [(r.entity_id, r) for r in computed])
            for r, (partition, offset) in zip(computed, placed, strict=True):
                if r.label is not None:  # an unlabeled row is no example
                    expected[r.record_id] = (catalog.FEATURES_ROWS.name, partition, offset)
            placed = await produce(
                k, catalog.FEEDBACK_RECORDED, [(f.request_id, f) for f in recorded]
            )
            for f, (partition, offset) in zip(recorded, placed, strict=True):
                expected[f"feedback:{f.feedback_id}"] = (
                    catalog.FEEDBACK_RECORDED.name,
                    partition,
                    offset,
                )
            n = len(expected)

            async def stored() -> int:
                return await count(db, "trainer.examples", name)

            async def stored_not_committed() -> bool:
                """Examples stored from records the trainer's groups have not committed: they
                come again after a kill, and must change nothing."""
                last = await db.fetch(
                    'SELECT topic, "partition", max("offset") AS "offset" FROM trainer.examples '
                    'WHERE project = $1 GROUP BY topic, "partition"',
                    name,
                )
                return any(
                    [
                        await group.uncommitted(
                            [(r["partition"], r["offset"]) for r in last if r["topic"] == topic]
                        )
                        for topic, group in (
                            (catalog.FEATURES_ROWS.name, rows_group),
                            (catalog.FEEDBACK_RECORDED.name, labels_group),
                        )
                    ]
                )

            trainer.start()
            # The trainer joins four consumer groups (~3 s on the embedded broker, ~11 s after
            # a kill): deadlines to match.
            await kill_partway(
                trainer,
                db,
                stored,
                n,
                "examples stored",
                timeout_s=90,
                critical=stored_not_committed,
            )
            trainer.start()
            await until_done(trainer, db, stored, n, f"all {n} examples stored", timeout_s=90)
            got = await db.fetch(
                'SELECT example_id, source, topic, "partition", "offset" FROM trainer.examples '
                "WHERE project = $1",
                name,
            )
    finally:
        await db.close()

    assert len(got) == n
    where = {r["example_id"]: (r["topic"], r["partition"], r["offset"]) for r in got}
    wrong = sorted(i for i in expected if where.get(i) != expected[i])
    assert not wrong, (
        f"{len(wrong)} examples stored elsewhere than they were read, e.g. {wrong[0]}: "
        f"{where.get(wrong[0])} instead of {expected[wrong[0]]}"
    )
    assert sum(r["source"] == "feedback" for r in got) == labels


# --- feedback -----------------------------------------------------------------------------------


def served(project: str, names: list[str], i: int) -> PredictionServed:
    """Version 1's answer to request `i` of `project`: fraud for every seventh."""
    at = T0 + timedelta(seconds=i)
    return PredictionServed(
        request_id=f"{project}-q-{i}",
        project=project,
        entity_id=f"c-{i % CUSTOMERS}",
        status="ok",
        model_version=1,
        label="fraud" if i % 7 == 0 else "legit",
        probabilities={"legit": 0.5, "fraud": 0.5},
        feature_names=names,
        values=[float((i * (j + 3)) % 17) for j in range(len(names))],
        requested_at=at,
        served_at=at,
        latency_ms=1.0,
    )


async def test_feedback_killed_mid_stream_joins_and_announces_each_label_once(
    kafka, database_url, tmp_path
):
    n = 2000
    spec = unique_project("kill-fb")
    name, names = spec.name, spec.feature_names()
    answers = [served(name, names, i) for i in range(n)]
    # A label for every prediction, and for every tenth a correction later on: one row each.
    labels = [
        FeedbackSubmitted(
            feedback_id=f"{name}-f-{i}",
            project=name,
            request_id=a.request_id,
            label="fraud" if i % 5 == 0 else "legit",
            submitted_at=a.served_at + timedelta(minutes=5),
        )
        for i, a in enumerate(answers)
    ]
    labels += [
        FeedbackSubmitted(
            feedback_id=f"{name}-f-{i}-again",
            project=name,
            request_id=answers[i].request_id,
            label="legit",
            submitted_at=answers[i].served_at + timedelta(minutes=9),
        )
        for i in range(0, n, 10)
    ]
    ids = {f.feedback_id for f in labels}
    db = await asyncpg.connect(database_url)
    try:
        async with (
            Kafka(kafka.bootstrap_servers) as k,
            Topic(kafka, catalog.FEEDBACK_RECORDED, name, id_field="feedback_id") as recorded,
            service("feedback", kafka, database_url, tmp_path) as feedback,
        ):
            await k.apply(spec)
            # The first half of the predictions, then every label: those of the first half are
            # joined as they come, the others wait for their predictions, which come once they
            # all wait, so that the kill falls among joins of waiting labels.
            half = n // 2
            await produce(
                k, catalog.PREDICTIONS_RESPONSES, [(a.request_id, a) for a in answers[:half]]
            )
            await produce(k, catalog.FEEDBACK_SUBMITTED, [(f.request_id, f) for f in labels])
            early = {a.request_id for a in answers[:half]}
            first = sum(f.request_id in early for f in labels)

            async def joined() -> int:
                return await count(db, "feedback.labels", name)

            async def first_joined_rest_waiting() -> bool:
                feedback.check_alive()
                waiting = await count(db, "feedback.pending", name)
                return (await joined(), waiting) == (first, len(ids) - first)

            feedback.start()
            await until(first_joined_rest_waiting, 60, "the first half joined, the rest waiting")
            await produce(
                k, catalog.PREDICTIONS_RESPONSES, [(a.request_id, a) for a in answers[half:]]
            )

            async def joined_late() -> int:
                return await joined() - first

            crash = await kill_partway(
                feedback,
                db,
                joined_late,
                len(ids) - first,
                "waiting labels joined",
                id_field="feedback_id",
            )
            feedback.start()
            await until_done(feedback, db, joined, len(ids), f"all {len(ids)} labels joined")
            events = await recorded.settled(name, ids)
            rows = await db.fetch(
                "SELECT feedback_id, request_id, label, correct FROM feedback.labels "
                "WHERE project = $1",
                name,
            )
            waiting = await count(db, "feedback.pending", name)
            predictions = await count(db, "feedback.predictions", name)
            dead = [
                r
                for r in await k.snapshot(catalog.FEEDBACK_SUBMITTED.dlq)
                if name.encode() in r.value
            ]
    finally:
        await db.close()

    assert predictions == n and waiting == 0 and dead == []
    assert sorted(r["feedback_id"] for r in rows) == sorted(ids)
    predicted = {a.request_id: a.label for a in answers}
    given = {f.feedback_id: f for f in labels}
    for r in rows:  # each joined to its own prediction
        f = given[r["feedback_id"]]
        assert (r["request_id"], r["label"]) == (f.request_id, f.label)
        assert r["correct"] == (f.label == predicted[f.request_id])
    assert {e.feedback_id for e, _ in events} == ids
    assert len(events) == len(ids), repeats(events, crash, "feedback_id")


# --- monitor ------------------------------------------------------------------------------------


async def release(registry: Service, spec: ModelProject, model: Model) -> None:
    """Through the registry's API, as a person would: apply `spec`, register `model` as its
    version 1 and make that the champion (registry.events then tells the services)."""
    async with httpx.AsyncClient(base_url=registry.url, timeout=10, headers=bearer()) as http:

        async def answering() -> bool:
            registry.check_alive()
            try:
                return (await http.get("/healthz")).json().get("status") == "ok"
            except httpx.HTTPError:
                return False

        await until(answering, 60, "the registry answering")
        (await http.post("/projects", json=spec.model_dump(mode="json"))).raise_for_status()
        r = await http.post(f"/projects/{spec.name}/versions", json=model.registration("run-1"))
        assert r.raise_for_status().json()["version"] == 1
        move = {"version": 1, "reason": "the model under test"}
        (await http.put(f"/projects/{spec.name}/aliases/champion", json=move)).raise_for_status()


async def test_monitor_killed_mid_stream_observes_each_prediction_once_and_windows_it_once(
    kafka, database_url, tmp_path
):
    n = 3000
    spec = unique_project("kill-mon")
    name, names = spec.name, spec.feature_names()
    window = spec.policies.drift.window
    assert isinstance(window, int) and n // window >= 10
    model = make_model(spec)
    rng = np.random.default_rng(3)
    answers = []
    for i in range(n):
        # Values like the training sample's, labels as the model gives them: nothing drifts.
        values = rng.normal(size=len(names)).tolist()
        label = "fraud" if values[0] > 0 else "legit"
        answers.append(served(name, names, i).model_copy(update={"values": values, "label": label}))
    db = await asyncpg.connect(database_url)
    try:
        async with (
            Kafka(kafka.bootstrap_servers) as k,
            service("registry", kafka, database_url, tmp_path) as registry,
            service(
                "monitor", kafka, database_url, tmp_path, {"REGISTRY_URL": registry.url}
            ) as monitor,
            Group(kafka, "monitor", catalog.PREDICTIONS_RESPONSES) as group,
        ):
            registry.start()
            monitor.start()  # joining its groups while the registry starts
            await release(registry, spec, model)

            async def judging() -> bool:
                # The monitor cuts windows once it has the champion's reference (calibrated).
                monitor.check_alive()
                try:
                    return bool(
                        await db.fetchval(
                            "SELECT model_version = 1 FROM monitor.refs WHERE project = $1", name
                        )
                    )
                except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                    return False

            await until(judging, 90, "the monitor judging v1 against its reference")
            sent = await produce(
                k, catalog.PREDICTIONS_RESPONSES, [(a.request_id, a) for a in answers]
            )
            placed = dict(zip((a.request_id for a in answers), sent, strict=True))

            async def observed() -> int:
                return await count(db, "monitor.observations", name)

            async def observed_not_committed() -> bool:
                """The newest observations (a batch's worth) from records the monitor's group
                has not committed: they come again after a kill, and must change nothing."""
                newest = await db.fetch(
                    "SELECT request_id FROM monitor.observations WHERE project = $1 "
                    "ORDER BY seq DESC LIMIT 256",
                    name,
                )
                return await group.uncommitted(placed.get(r["request_id"]) for r in newest)

            await kill_partway(
                monitor, db, observed, n, "predictions observed", critical=observed_not_committed
            )
            monitor.start()
            await until_done(monitor, db, observed, n, f"all {n} predictions observed", 60)

            async def all_windowed() -> bool:
                # The last batch's evaluation follows the commit of its observations.
                monitor.check_alive()
                tested = await db.fetchval(
                    "SELECT coalesce(sum(size), 0) FROM monitor.windows WHERE project = $1 "
                    "AND model_version = 1 AND kind = 'data'",
                    name,
                )
                return bool(tested == n - n % window)

            await until(all_windowed, 30, "every full window tested")
            rows = await db.fetch(
                "SELECT request_id, model_version FROM monitor.observations WHERE project = $1",
                name,
            )
            sizes = [
                r["size"]
                for r in await db.fetch(
                    "SELECT size FROM monitor.windows WHERE project = $1 AND model_version = 1 "
                    "AND kind = 'data' ORDER BY id",
                    name,
                )
            ]
            cursor = await db.fetchval(
                "SELECT last_seq FROM monitor.cursors WHERE project = $1 AND model_version = 1 "
                "AND kind = 'data'",
                name,
            )
            behind = await db.fetchval(
                "SELECT count(*) FROM monitor.observations WHERE project = $1 "
                "AND model_version = 1 AND seq <= $2",
                name,
                cursor,
            )
    finally:
        await db.close()

    assert sorted(r["request_id"] for r in rows) == sorted(a.request_id for a in answers)
    assert {r["model_version"] for r in rows} == {1}
    # Each window a full one, and together they hold exactly the observations behind the
    # cursor: none tested twice, none skipped.
    assert sizes == [window] * (n // window)
    assert sum(sizes) == behind


# --- serving ------------------------------------------------------------------------------------


async def test_serving_killed_mid_stream_answers_every_request_under_one_id(
    kafka, database_url, tmp_path
):
    n, chunk = 3000, 100
    spec = unique_project("kill-srv")
    name, names = spec.name, spec.feature_names()
    rng = np.random.default_rng(4)
    requests = []
    for i in range(n):
        values = rng.normal(size=len(names)).tolist()
        values[0] = 3.0 if i % 3 else -3.0  # far from the boundary: the model says fraud if > 0
        at = datetime.now(UTC)
        requests.append(
            PredictionEnriched(
                request_id=f"{name}-q-{i}",
                project=name,
                project_version=1,
                entity_id=f"c-{i % CUSTOMERS}",
                requested_at=at,
                enriched_at=at,
                feature_names=names,
                values=values,
            )
        )
    ids = {r.request_id for r in requests}
    db = await asyncpg.connect(database_url)  # the registry's: serving keeps no state
    try:
        async with (
            Kafka(kafka.bootstrap_servers) as k,
            Topic(kafka, catalog.PREDICTIONS_RESPONSES, name, id_field="request_id") as answers,
            service("registry", kafka, database_url, tmp_path) as registry,
            service(
                "serving", kafka, database_url, tmp_path, {"REGISTRY_URL": registry.url}
            ) as serving,
            httpx.AsyncClient(base_url=serving.url, timeout=5) as http,
            Group(kafka, "serving", catalog.PREDICTIONS_ENRICHED) as group,
        ):
            registry.start()
            serving.start()  # joining its group while the registry starts
            await release(registry, spec, make_model(spec))

            async def serving_v1() -> bool:
                serving.check_alive()
                try:
                    models = (await http.get("/models")).json()
                except httpx.HTTPError:
                    return False
                return bool(models.get(name, {}).get("version") == 1)

            await until(serving_v1, 60, "serving v1")

            placed: dict[str, tuple[int, int]] = {}  # request id: (partition, offset)

            async def stream() -> None:
                # Serving drains a backlog of thousands in a fraction of a second: offered at a
                # pace instead, the kill finds it with answers out and requests still coming.
                for start in range(0, n, chunk):
                    # And never a fifth of them ahead of the answers read here, which a busy
                    # machine may read well after serving wrote them: the kill, due by three
                    # fifths read, then still comes mid-stream.
                    await until(
                        lambda ahead=start: ahead - len(answers.ids(name)) <= n // 5,
                        60,
                        "the answers read to keep up with the requests",
                    )
                    batch = requests[start : start + chunk]
                    sent = await produce(
                        k, catalog.PREDICTIONS_ENRICHED, [(r.entity_id, r) for r in batch]
                    )
                    placed.update(zip((r.request_id for r in batch), sent, strict=True))
                    await asyncio.sleep(0.05)  # pacing the offered load, not waiting on an outcome

            async def answered() -> int:
                return len(answers.ids(name))

            async def answered_not_committed() -> bool:
                return await group.uncommitted(map(placed.get, answers.ids(name)))

            streaming = asyncio.create_task(stream())
            try:
                await kill_partway(
                    serving, db, answered, n, "requests answered", critical=answered_not_committed
                )
                killed_at = datetime.now(UTC)
                serving.start()
                await streaming
            finally:
                streaming.cancel()
            await until(lambda: ids <= answers.ids(name), 60, f"all {n} requests answered")
            events = await answers.settled(name, ids)
    finally:
        await db.close()

    by_request: dict[str, list[tuple[PredictionServed, str | None]]] = defaultdict(list)
    for e, h in events:
        by_request[e.request_id].append((e, h.get("ce_id")))
    assert set(by_request) == ids
    # Answered again after a redelivery: the same event id, so consumers know it for a repeat.
    ce_ids = {rid: {ce_id for _, ce_id in copies} for rid, copies in by_request.items()}
    differing = {rid: c for rid, c in ce_ids.items() if len(c) != 1 or None in c}
    assert not differing, f"{len(differing)} requests answered under more than one id: {differing}"
    assert len({c for (c,) in ce_ids.values()}) == n  # and no two requests under one
    for r in requests:
        for a, _ in by_request[r.request_id]:
            assert (a.status, a.model_version) == ("ok", 1), a
            assert a.label == ("fraud" if r.values[0] > 0 else "legit") and a.values == r.values
    # Some requests were first answered by the restarted process: the kill came mid-stream.
    assert any(min(a.served_at for a, _ in c) > killed_at for c in by_request.values())
