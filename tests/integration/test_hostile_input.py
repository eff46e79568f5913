"""Hostile input on every topic a service takes from outside: malformed messages of every kind
the platform has met (and random bytes and random JSON), followed by good ones.

A case passes only when every bad message is dead-lettered exactly once, with a reason and an
exception type; every good one is processed; and the consumer group's lag returns to zero — a
poison message costs one dead letter, never the partition. Messages are told apart by where
they were written (partition, offset), which a dead letter names in its `dlq_source_*` headers,
so the shared topics' other traffic never confuses the count.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from conveyor_bus import end_offsets
from conveyor_cli import infra
from conveyor_contracts import TopicSpec, catalog
from conveyor_contracts.events import (
    AliasMoved,
    FeedbackSubmitted,
    PredictionEnriched,
    PredictionRequested,
    RecordSubmitted,
    StartTraining,
)
from tests.models import make_model
from tests.support import Kafka, running, unique_project, until

pytestmark = pytest.mark.integration

SEED = 22
# A small limit, so an oversized message is cheap to send: over it, a record is dead-lettered
# unread, and no dead letter is larger.
MAX_MESSAGE = 64 * 1024
HUGE = "x" * 16_384


@dataclass
class Sent:
    """What a case wrote to its topic: (partition, offset) → the message's kind."""

    bad: dict[tuple[int, int], str] = field(default_factory=dict)
    good: dict[tuple[int, int], str] = field(default_factory=dict)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value but an object with the event's fields: numbers, strings, lists, objects
    of random keys, nested."""
    kind = rng.randrange(6 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([rng.randint(-(10**30), 10**30), rng.uniform(-1e9, 1e9)])
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(20)))
    if kind == 3:
        return []
    if kind == 4:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(1, 5))]
    return {f"k{rng.randrange(100)}": random_json(rng, depth + 1) for _ in range(3)}


def universal_bad(
    rng: random.Random, topic: TopicSpec, valid: dict[str, Any]
) -> list[tuple[str, bytes | None]]:
    """Malformed messages any consumer must refuse: random bytes, random JSON, a tombstone,
    JSON tokens no JSON parser should take as a number, each required field missing or of the
    wrong type, an id with a NUL or of 16 KB, and a message over the size limit."""
    out: list[tuple[str, bytes | None]] = []
    for i in range(6):
        out.append(
            (f"random bytes {i}", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
        )
    for i in range(6):
        value = random_json(rng)
        if isinstance(value, dict):
            value = [value]
        out.append((f"random JSON {i}", json.dumps(value).encode()))
    out.append(("tombstone", None))
    out.append(("empty object", b"{}"))
    out.append(("not JSON at all", b"{'single': 'quotes'}"))
    out.append(("truncated", json.dumps(valid).encode()[:-3]))
    required = set(topic.adapter.json_schema().get("required", ()))
    for name, value in valid.items():
        if name in required:
            missing = {k: v for k, v in valid.items() if k != name}
            out.append((f"{name} missing", json.dumps(missing).encode()))
        wrong = [1, [2]] if isinstance(value, dict) else {"wrong": ["type"]}
        out.append((f"{name} of the wrong type", json.dumps(valid | {name: wrong}).encode()))
    for name in ("project", "request_id", "feedback_id"):
        if name in valid:
            out.append((f"NUL in {name}", json.dumps(valid | {name: "a\u0000b"}).encode()))
            out.append((f"16 KB {name}", json.dumps(valid | {name: HUGE}).encode()))
    padded = json.dumps(valid | {"padding": "p" * (MAX_MESSAGE + 10)}).encode()
    out.append(("over the size limit", padded))
    return out


class Writer:
    """Writes a case's messages with CloudEvents headers and notes where each one landed."""

    def __init__(self, bootstrap: str, topic: TopicSpec) -> None:
        self.topic = topic
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", max_request_size=4 * MAX_MESSAGE
        )
        self.sent = Sent()

    async def __aenter__(self) -> Writer:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def write(self, kind: str, value: bytes | None, key: str, *, bad: bool) -> None:
        headers = {
            "ce_id": uuid.uuid4().hex,
            "ce_type": "test.hostile",
            "ce_source": "test",
            "ce_specversion": "1.0",
        }
        meta = await self.producer.send_and_wait(
            self.topic.name,
            value,
            key=key.encode(),
            headers=[(k, v.encode()) for k, v in headers.items()],
        )
        (self.sent.bad if bad else self.sent.good)[meta.partition, meta.offset] = kind


async def dead_letters(bootstrap: str, topic: TopicSpec, group: str) -> Counter[tuple[int, int]]:
    """How often each (partition, offset) of `topic` was dead-lettered by `group`, with every
    dead letter's reason and exception type checked."""
    found: Counter[tuple[int, int]] = Counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await end_offsets(bootstrap, topic.dlq)
        tps = [TopicPartition(topic.dlq, p) for p, end in ends.items() if end > 0]
        if not tps:
            return found
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        done = False
        while not done:
            batch = await consumer.getmany(timeout_ms=500)
            done = not batch
            for records in batch.values():
                for r in records:
                    h = {k: v.decode() for k, v in r.headers}
                    if (
                        h.get("dlq_source_topic") != topic.name
                        or h.get("dlq_consumer_group") != group
                    ):
                        continue
                    assert h["dlq_error"].strip() and h["dlq_exception"], h
                    assert (
                        len(r.value or b"") + sum(len(k) + len(v) for k, v in r.headers)
                        <= MAX_MESSAGE
                    )
                    found[int(h["dlq_source_partition"]), int(h["dlq_source_offset"])] += 1
    finally:
        await consumer.stop()
    return found


async def lag(bootstrap: str, topic: TopicSpec, group: str) -> int:
    """Records of `topic` the group has not committed yet."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await end_offsets(bootstrap, topic.name)
        behind = 0
        for partition, end in ends.items():
            committed = await consumer.committed(TopicPartition(topic.name, partition)) or 0
            behind += max(0, end - committed)
        return behind
    finally:
        await consumer.stop()


async def check(
    kafka: infra.Broker,
    writer: Writer,
    group: str,
    processed: Callable[[], Awaitable[int]],
    *,
    lagging: bool = True,
) -> None:
    """Every good message processed, every bad one dead-lettered once, lag back to zero (a
    broadcast consumer commits nothing: `lagging=False`)."""
    bootstrap, topic, sent = kafka.bootstrap_servers, writer.topic, writer.sent
    await until(
        lambda: _equals(processed, len(sent.good)), 90, f"{len(sent.good)} good {topic.name}"
    )

    missing: list[str] = []

    async def all_dead() -> bool:
        found = await dead_letters(bootstrap, topic, group)
        missing[:] = [kind for at, kind in sent.bad.items() if found[at] < 1]
        return not missing

    try:
        await until(all_dead, 60, f"the dead letters of {topic.name}")
    except AssertionError:
        raise AssertionError(f"{topic.name}: not dead-lettered: {missing}") from None
    if lagging:
        await until(lambda: _zero(lag(bootstrap, topic, group)), 60, f"{group}'s lag to be 0")
    found = await dead_letters(bootstrap, topic, group)
    twice = {sent.bad[at]: n for at, n in found.items() if at in sent.bad and n != 1}
    assert not twice, f"dead-lettered more than once: {twice}"
    good_dead = [sent.good[at] for at in found if at in sent.good]
    assert not good_dead, f"good messages dead-lettered: {good_dead}"


async def _equals(probe: Callable[[], Awaitable[int]], n: int) -> bool:
    got = await probe()
    assert got <= n, f"{got} effects of {n} good messages: something applied twice"
    return got == n


async def _zero(value: Awaitable[int]) -> bool:
    return await value == 0


def _settings(cls: Any, kafka: infra.Broker, **more: Any) -> Any:
    return cls(
        kafka_bootstrap_servers=kafka.bootstrap_servers, kafka_max_message_bytes=MAX_MESSAGE, **more
    )


# --- records.submitted → ingest ------------------------------------------------------------------


def good_fields(i: int) -> dict[str, Any]:
    return {
        "customer": f"c-{i % 7}",
        "ts": datetime(2026, 12, 1, 10, i % 60, tzinfo=UTC).isoformat(),
        "amount": 10.0 + i,
        "merchant": "fuel",
        "hour": 10,
        "foreign": False,
    }


async def test_records_submitted(kafka, database_url):
    from conveyor_ingest.bootstrap import IngestSettings, bootstrap

    rng = random.Random(SEED)
    spec = unique_project("hostile-rec")
    name = spec.name
    valid = RecordSubmitted(project=name, record_id="v", fields=good_fields(0)).model_dump(
        mode="json"
    )
    semantic = {
        "ts 1e30": good_fields(1) | {"ts": 1e30},
        "NaN amount": good_fields(2) | {"amount": float("nan")},
        "NUL in a string": good_fields(3) | {"merchant": "fu\u0000el"},
        "NUL in a field name": good_fields(4) | {"amo\u0000unt": 1.0},
        "16 KB entity key": good_fields(5) | {"customer": HUGE},
        "400-digit amount": good_fields(6) | {"amount": 10**400},
        "wrong type": good_fields(7) | {"hour": "ten"},
        "catastrophic pattern input": good_fields(8) | {"customer": "c-" + "1" * 5000 + "!"},
    }
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        runtime = bootstrap(_settings(IngestSettings, kafka, database_url=database_url))
        async with (
            running(runtime),
            Writer(kafka.bootstrap_servers, catalog.RECORDS_SUBMITTED) as w,
        ):
            for kind, value in universal_bad(rng, catalog.RECORDS_SUBMITTED, valid):
                await w.write(kind, value, key=kind, bad=True)
            for kind, fields in semantic.items():
                event = {"project": name, "record_id": f"bad-{kind}", "fields": fields}
                await w.write(kind, json.dumps(event).encode(), key=kind, bad=True)
            await w.write(
                "unknown project",
                json.dumps(valid | {"project": "no-such-project-here"}).encode(),
                key="u",
                bad=True,
            )
            await w.write(
                "16 KB record id",
                json.dumps(valid | {"record_id": HUGE}).encode(),
                key="r",
                bad=True,
            )
            ids = [f"good-{i}" for i in range(30)]
            for i, record_id in enumerate(ids):
                event = RecordSubmitted(project=name, record_id=record_id, fields=good_fields(i))
                await w.write(
                    record_id, event.model_dump_json().encode(), key=f"c-{i % 7}", bad=False
                )

            async def stored() -> int:
                assert runtime.db is not None
                return int(
                    await runtime.db.pool.fetchval(
                        "SELECT count(*) FROM raw_records "
                        "WHERE project = $1 AND record_id = ANY($2)",
                        name,
                        ids,
                    )
                )

            await check(kafka, w, "conveyor-ingest.records.submitted.v1", stored)


# --- predictions.requests → feature -------------------------------------------------------------


class Answers:
    """Counts, in the background, the records of `topic` written from now on that carry one of
    `ids` as their request id (an effect seen twice is counted twice)."""

    def __init__(self, kafka: infra.Broker, topic: TopicSpec, ids: set[str]) -> None:
        self.topic, self.ids, self.seen = topic, ids, 0
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False
        )

    async def __aenter__(self) -> Answers:
        await self._consumer.start()
        tps = [TopicPartition(self.topic.name, p) for p in range(self.topic.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # the position is resolved now, before anything is written
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            for records in (await self._consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    try:
                        self.seen += json.loads(r.value).get("request_id") in self.ids
                    except (ValueError, AttributeError, TypeError):
                        continue

    async def count(self) -> int:
        return self.seen


async def test_predictions_requests(kafka, database_url):
    from conveyor_feature.bootstrap import FeatureSettings, bootstrap

    rng = random.Random(SEED + 1)
    spec = unique_project("hostile-req")
    name = spec.name
    valid = PredictionRequested(project=name, fields=good_fields(0)).model_dump(mode="json")
    semantic = {
        "NUL in the entity key": good_fields(1) | {"customer": "c-\u00001"},
        "400-digit amount": good_fields(2) | {"amount": 10**400},
        "amount as text": good_fields(3) | {"amount": "abc"},
        "NaN amount": good_fields(4) | {"amount": float("nan")},
        "unknown field": good_fields(5) | {"colour": "red"},
        "16 KB entity key": good_fields(6) | {"customer": HUGE},
        "ts 1e30": good_fields(7) | {"ts": 1e30},
        "no entity key": {k: v for k, v in good_fields(8).items() if k != "customer"},
    }
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        runtime = bootstrap(_settings(FeatureSettings, kafka, database_url=database_url))
        topic = catalog.PREDICTIONS_REQUESTS
        async with running(runtime), Writer(kafka.bootstrap_servers, topic) as w:
            for kind, value in universal_bad(rng, topic, valid):
                await w.write(kind, value, key=kind, bad=True)
            for kind, fields in semantic.items():
                event = {"project": name, "request_id": f"bad-{kind}", "fields": fields}
                await w.write(kind, json.dumps(event).encode(), key=kind, bad=True)
            unknown = valid | {"project": "no-such-project-here"}
            await w.write("unknown project", json.dumps(unknown).encode(), key="u", bad=True)
            ids = {f"{name}-good-{i}" for i in range(30)}
            async with Answers(kafka, catalog.PREDICTIONS_ENRICHED, ids) as enriched:
                for i, request_id in enumerate(sorted(ids)):
                    event = PredictionRequested(
                        project=name, request_id=request_id, fields=good_fields(i)
                    )
                    await w.write(request_id, event.model_dump_json().encode(), key="c", bad=False)
                await check(kafka, w, "conveyor-feature.predictions.requests.v1", enriched.count)


# --- feedback.submitted → feedback --------------------------------------------------------------


async def test_feedback_submitted(kafka, database_url):
    from conveyor_feedback.bootstrap import FeedbackSettings, bootstrap

    rng = random.Random(SEED + 2)
    spec = unique_project("hostile-fb")
    name = spec.name
    valid = FeedbackSubmitted(project=name, request_id="r", label="fraud").model_dump(mode="json")
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        runtime = bootstrap(_settings(FeedbackSettings, kafka, database_url=database_url))
        topic = catalog.FEEDBACK_SUBMITTED
        async with running(runtime), Writer(kafka.bootstrap_servers, topic) as w:
            for kind, value in universal_bad(rng, topic, valid):
                await w.write(kind, value, key=kind, bad=True)
            for kind, change in {
                "unknown project": {"project": "no-such-project-here"},
                "a label that is no class": {"label": "maybe"},
                "NUL in the label": {"label": "fr\u0000aud"},
                "16 KB label": {"label": HUGE},
            }.items():
                await w.write(kind, json.dumps(valid | change).encode(), key=kind, bad=True)
            ids = [f"{name}-fb-{i}" for i in range(30)]
            for i, feedback_id in enumerate(ids):
                event = FeedbackSubmitted(
                    feedback_id=feedback_id, project=name, request_id=f"q-{i}", label="legit"
                )
                await w.write(
                    feedback_id, event.model_dump_json().encode(), key=f"q-{i}", bad=False
                )

            async def waiting() -> int:
                assert runtime.db is not None
                return int(
                    await runtime.db.pool.fetchval(
                        "SELECT count(*) FROM pending WHERE feedback_id = ANY($1)", ids
                    )
                )

            await check(kafka, w, "conveyor-feedback.feedback.submitted.v1", waiting)


# --- trainer.requests → trainer -----------------------------------------------------------------


async def test_trainer_requests(kafka, database_url):
    from conveyor_trainer.bootstrap import TrainerSettings, bootstrap
    from tests.integration.test_trainer import FakeRegistry

    rng = random.Random(SEED + 3)
    spec = unique_project("hostile-tr")
    name = spec.name
    registry = FakeRegistry()
    registry.specs.append(spec)
    valid = StartTraining(project=name, reason="r").model_dump(mode="json")
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        settings = _settings(TrainerSettings, kafka, database_url=database_url)
        runtime = bootstrap(settings, registry=registry)
        topic = catalog.TRAINER_REQUESTS
        async with running(runtime), Writer(kafka.bootstrap_servers, topic) as w:
            for kind, value in universal_bad(rng, topic, valid):
                await w.write(kind, value, key=kind, bad=True)
            unknown = valid | {"project": "no-such-project-here"}
            await w.write("unknown project", json.dumps(unknown).encode(), key="u", bad=True)
            await w.write(
                "16 KB reason",
                json.dumps(valid | {"reason": HUGE * 8}).encode(),
                key="r",
                bad=True,
            )
            ids = [f"{name}-tr-{i}" for i in range(3)]
            for request_id in ids:
                event = StartTraining(request_id=request_id, project=name, reason="hostile")
                await w.write(request_id, event.model_dump_json().encode(), key=name, bad=False)

            async def recorded() -> int:
                assert runtime.db is not None
                return int(
                    await runtime.db.pool.fetchval(
                        "SELECT count(*) FROM requests WHERE request_id = ANY($1)", ids
                    )
                )

            await check(kafka, w, "conveyor-trainer.trainer.requests.v1", recorded)


# --- predictions.enriched → serving -------------------------------------------------------------


async def test_predictions_enriched(kafka):
    from conveyor_serving.bootstrap import ServingSettings, bootstrap
    from tests.integration.test_serving import FakeSource

    rng = random.Random(SEED + 4)
    spec = unique_project("hostile-srv")
    name, names = spec.name, spec.feature_names()
    model = make_model(spec)
    now = datetime.now(UTC)

    def request(request_id: str, **change: Any) -> dict[str, Any]:
        event = PredictionEnriched(
            request_id=request_id,
            project=name,
            project_version=1,
            entity_id="e",
            requested_at=now,
            enriched_at=now,
            feature_names=names,
            values=[0.5] * len(names),
        ).model_dump(mode="json")
        return event | change

    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        move = AliasMoved(
            project=name,
            alias="champion",
            from_version=None,
            to_version=1,
            sha256=model.sha256,
            actor="test",
            reason="test",
        )
        await k.send(catalog.REGISTRY_EVENTS, move, key=name)
        runtime = bootstrap(_settings(ServingSettings, kafka), source=FakeSource({1: model}))
        topic = catalog.PREDICTIONS_ENRICHED
        async with running(runtime), Writer(kafka.bootstrap_servers, topic) as w:
            for kind, value in universal_bad(rng, topic, request("v")):
                await w.write(kind, value, key=kind, bad=True)
            for kind, change in {
                "feature names of another model": {"feature_names": ["a"] * len(names)},
                "a value short": {"values": [0.5] * (len(names) - 1)},
                "an infinite value": {"values": [1e308 * 10] + [0.5] * (len(names) - 1)},
            }.items():
                raw = json.dumps(request(f"bad-{kind}", **change)).replace("Infinity", "1e999")
                await w.write(kind, raw.encode(), key="e", bad=True)
            ids = {f"{name}-q-{i}" for i in range(30)}
            async with Answers(kafka, catalog.PREDICTIONS_RESPONSES, ids) as answers:
                for request_id in sorted(ids):
                    value = json.dumps(request(request_id)).encode()
                    await w.write(request_id, value, key="e", bad=False)
                await check(kafka, w, "conveyor-serving.predictions.enriched.v1", answers.count)


# --- predictions.responses → feedback and monitor -----------------------------------------------


async def test_predictions_responses(kafka, postgres):
    from conveyor_feedback.bootstrap import FeedbackSettings
    from conveyor_feedback.bootstrap import bootstrap as feedback
    from conveyor_monitor.bootstrap import MonitorSettings
    from conveyor_monitor.bootstrap import bootstrap as monitor
    from tests.integration.test_monitor import FakeProfiles

    rng = random.Random(SEED + 5)
    spec = unique_project("hostile-ans")
    name, names = spec.name, spec.feature_names()
    now = datetime.now(UTC).isoformat()

    def answer(request_id: str, **change: Any) -> dict[str, Any]:
        event = {
            "request_id": request_id,
            "project": name,
            "entity_id": "e",
            "status": "ok",
            "model_version": 1,
            "label": "legit",
            "probabilities": {"legit": 0.9, "fraud": 0.1},
            "feature_names": names,
            "values": [0.5] * len(names),
            "requested_at": now,
            "served_at": now,
            "latency_ms": 1.0,
        }
        return event | change

    databases = [await infra.create_database(postgres.url, "hostile") for _ in range(2)]
    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        one = feedback(_settings(FeedbackSettings, kafka, database_url=databases[0]))
        other = monitor(
            _settings(MonitorSettings, kafka, database_url=databases[1]),
            profiles=FakeProfiles(names),
        )
        topic = catalog.PREDICTIONS_RESPONSES
        async with running(one), running(other), Writer(kafka.bootstrap_servers, topic) as w:
            for kind, value in universal_bad(rng, topic, answer("v")):
                await w.write(kind, value, key=kind, bad=True)
            for kind, change in {
                "NUL in the label": {"label": "le\u0000git"},
                "a version beyond int32": {"model_version": 2**40},
            }.items():
                await w.write(
                    kind, json.dumps(answer(f"bad-{kind}", **change)).encode(), key="e", bad=True
                )
            ids = [f"{name}-a-{i}" for i in range(30)]
            for request_id in ids:
                await w.write(
                    request_id, json.dumps(answer(request_id)).encode(), key="e", bad=False
                )

            async def stored(runtime: Any, table: str) -> int:
                return int(
                    await runtime.db.pool.fetchval(
                        f"SELECT count(*) FROM {table} WHERE request_id = ANY($1)", ids
                    )
                )

            await check(
                kafka,
                w,
                "conveyor-feedback.predictions.responses.v1",
                lambda: stored(one, "predictions"),
            )
            await check(
                kafka,
                w,
                "conveyor-monitor.predictions.responses.v1",
                lambda: stored(other, "observations"),
            )


# --- registry.events: a changelog every replica reads whole --------------------------------------


async def test_registry_events(kafka, database_url):
    """Poison on the changelog costs each reader one dead letter, and the projects applied
    after it are still learned."""
    from conveyor_ingest.bootstrap import IngestSettings, bootstrap

    rng = random.Random(SEED + 6)
    spec = unique_project("hostile-log")
    valid = {
        "type": "project_applied",
        "project": spec.name,
        "project_version": 1,
        "spec": spec.model_dump(mode="json"),
    }
    runtime = bootstrap(_settings(IngestSettings, kafka, database_url=database_url))
    topic = catalog.REGISTRY_EVENTS
    async with running(runtime), Writer(kafka.bootstrap_servers, topic) as w:
        bad = universal_bad(rng, topic, valid)
        bad.append(("an unknown type", json.dumps(valid | {"type": "project_deleted"}).encode()))
        for kind, value in bad:
            await w.write(kind, value, key=spec.name, bad=True)
        await w.write("project applied", json.dumps(valid).encode(), key=spec.name, bad=False)

        async def learned() -> int:
            return int(spec.name in runtime.projects.versions())

        await check(kafka, w, "conveyor-ingest (broadcast)", learned, lagging=False)


# --- records.accepted → feature -----------------------------------------------------------------


async def test_records_accepted(kafka, database_url):
    from conveyor_feature.bootstrap import FeatureSettings, bootstrap

    rng = random.Random(SEED + 7)
    spec = unique_project("hostile-acc")
    name = spec.name

    def accepted(record_id: str, i: int, **change: Any) -> dict[str, Any]:
        fields = good_fields(i)
        event = {
            "project": name,
            "project_version": 1,
            "record_id": record_id,
            "entity_id": fields["customer"],
            "event_time": fields["ts"],
            "ingested_at": fields["ts"],
            "fields": fields,
            "flags": [],
        }
        return event | change

    async with Kafka(kafka.bootstrap_servers) as k:
        await k.apply(spec)
        runtime = bootstrap(_settings(FeatureSettings, kafka, database_url=database_url))
        topic = catalog.RECORDS_ACCEPTED
        async with running(runtime), Writer(kafka.bootstrap_servers, topic) as w:
            for kind, value in universal_bad(rng, topic, accepted("v", 0)):
                await w.write(kind, value, key=kind, bad=True)
            for kind, change in {
                "16 KB entity id": {"entity_id": HUGE},
                "a year beyond 9999": {"event_time": "10000-01-01T00:00:00+00:00"},
            }.items():
                value = json.dumps(accepted(f"bad-{kind}", 1, **change)).encode()
                await w.write(kind, value, key="c-1", bad=True)
            ids = [f"{name}-r-{i}" for i in range(30)]
            for i, record_id in enumerate(ids):
                value = json.dumps(accepted(record_id, i)).encode()
                await w.write(record_id, value, key=f"c-{i % 7}", bad=False)

            async def rows() -> int:
                assert runtime.db is not None
                return int(
                    await runtime.db.pool.fetchval(
                        "SELECT count(*) FROM rows WHERE project = $1 AND record_id = ANY($2)",
                        name,
                        ids,
                    )
                )

            await check(kafka, w, "conveyor-feature.records.accepted.v1", rows)
