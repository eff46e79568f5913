"""The bus against the real broker: commit after effects, dead letters, redelivery on failure."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from conveyor_bus import Bus, Delivery, KafkaSettings, Rejection, ensure_topics
from conveyor_cli.infra import Broker
from conveyor_contracts import catalog
from conveyor_contracts.events import FeedbackSubmitted
from tests.support import headers_of

pytestmark = pytest.mark.integration


def _topic() -> catalog.TopicSpec:
    return replace(catalog.FEEDBACK_SUBMITTED, subject=f"test-{uuid.uuid4().hex[:8]}")


async def _read_all(bootstrap: str, topic: str, n: int, timeout_s: float = 20.0) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(out) < n:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    out.extend(records)
    finally:
        await consumer.stop()
    return out


async def _until(predicate, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_bad_messages_go_to_the_dead_letter_topic_and_good_ones_are_handled(kafka: Broker):
    topic = _topic()
    await ensure_topics(kafka.bootstrap_servers, [topic])
    settings = KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
    seen: list[str] = []

    async def handler(batch: list[Delivery[FeedbackSubmitted]]):
        rejections = []
        for d in batch:
            if d.event.label == "nonsense":
                rejections.append(Rejection(d, "label nonsense is not a class", "validate"))
            else:
                seen.append(d.event.feedback_id)
        return rejections

    bus = Bus(f"test-{uuid.uuid4().hex[:6]}", settings)
    bus.consume(topic, handler)
    producer = Bus("producer", settings)
    await producer.start()
    await bus.start()
    try:
        good = FeedbackSubmitted(project="p", request_id="r1", label="fraud")
        await producer.publish(topic, good, key="r1")
        await producer.publish_raw(topic.name, b"{not json", key="r2", headers={"ce_id": "bad-1"})
        await producer.publish_raw(
            topic.name, json.dumps({"project": "p"}).encode(), key="r3", headers={"ce_id": "bad-2"}
        )
        await producer.publish(
            topic, FeedbackSubmitted(project="p", request_id="r4", label="nonsense"), key="r4"
        )
        after = FeedbackSubmitted(project="p", request_id="r5", label="legit")
        await producer.publish(topic, after, key="r5")
        await _until(lambda: len(seen) == 2 and bus.dead_letters == 3)
        # r1 and r5 may sit on different partitions: no order between them.
        assert sorted(seen) == sorted([good.feedback_id, after.feedback_id])
        dead = await _read_all(kafka.bootstrap_servers, topic.dlq, 3)
        by_key = {r.key.decode(): r for r in dead}
        assert by_key["r2"].value == b"{not json"
        headers = {k: v.decode() for k, v in by_key["r3"].headers}
        assert headers["dlq_stage"] == "decode"
        assert "request_id: Field required" in headers["dlq_error"]
        assert "label: Field required" in headers["dlq_error"]
        assert headers["dlq_source_topic"] == topic.name
        assert headers["ce_id"] == "bad-2"
        r4 = {k: v.decode() for k, v in by_key["r4"].headers}
        assert r4["dlq_stage"] == "validate" and "nonsense" in r4["dlq_error"]
    finally:
        await bus.stop()
        await producer.stop()


async def test_the_consumers_join_their_groups_together(kafka: Broker):
    # A consumer's start lasts until its group is joined (seconds): one after another, a service
    # consuming three topics would take three joins to start.
    topics = [_topic() for _ in range(3)]
    await ensure_topics(kafka.bootstrap_servers, topics)
    settings = KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
    bus = Bus(f"test-{uuid.uuid4().hex[:6]}", settings)

    async def handler(batch: list[Delivery[FeedbackSubmitted]]) -> None:
        return None

    for topic in topics:
        bus.consume(topic, handler)
    assert sorted(bus.groups()) == sorted(t.name for t in topics)
    steps: list[str] = []
    for subscriber in bus.broker.subscribers:

        async def start(start=subscriber.start) -> None:
            steps.append("joining")
            await start()
            steps.append("joined")

        subscriber.start = start  # type: ignore[method-assign]
    await bus.start()
    try:
        assert steps == ["joining"] * 3 + ["joined"] * 3
    finally:
        await bus.stop()


@pytest.mark.parametrize("overlap", [1, 2])
async def test_a_failing_handler_commits_nothing_and_the_batch_is_redelivered(
    kafka: Broker, overlap: int
):
    topic = _topic()
    await ensure_topics(kafka.bootstrap_servers, [topic])
    settings = KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
    attempts: list[int] = []
    applied: set[str] = set()

    async def flaky(batch: list[Delivery[FeedbackSubmitted]]):
        attempts.append(len(batch))
        if len(attempts) == 1:
            raise RuntimeError("database briefly unavailable")
        applied.update(d.event.request_id for d in batch)

    group = f"g-{uuid.uuid4().hex[:6]}"
    bus = Bus("flaky", settings)
    bus.consume(topic, flaky, group=group, overlap=overlap)
    producer = Bus("producer", settings)
    await producer.start()
    try:
        for i in range(5):
            await producer.publish(
                topic, FeedbackSubmitted(project="p", request_id=f"r{i}", label="x"), key=f"r{i}"
            )
        await bus.start()
        await _until(lambda: applied == {f"r{i}" for i in range(5)})
        assert len(attempts) >= 2
        await bus.stop()
        # Offsets were committed after the effects: a new consumer in the group gets nothing.
        again: list[str] = []

        async def record(batch):
            again.extend(d.event.request_id for d in batch)

        bus2 = Bus("flaky", settings)
        bus2.consume(topic, record, group=group)
        await bus2.start()
        await producer.publish(
            topic, FeedbackSubmitted(project="p", request_id="last", label="x"), key="last"
        )
        await _until(lambda: "last" in again)
        assert again == ["last"]
        await bus2.stop()
    finally:
        await producer.stop()


async def test_overlapping_batches_are_committed_in_order_once_handled(kafka: Broker):
    """Batches of one record each, two at a time: while the first is held, the second is handled
    but neither is committed; once the first is done, both are."""
    topic = _topic()
    await ensure_topics(kafka.bootstrap_servers, [topic])
    settings = KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(batch: list[Delivery[FeedbackSubmitted]]):
        for d in batch:
            if d.event.request_id == "first":
                await release.wait()
            handled.append(d.event.request_id)

    group = f"g-{uuid.uuid4().hex[:6]}"
    bus = Bus("overlap", settings)
    bus.consume(topic, handler, group=group, max_records=1, overlap=2)
    producer = Bus("producer", settings)
    offsets = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group)
    await producer.start()
    await offsets.start()
    try:
        for request in ("first", "second"):  # one key: one partition, in this order
            await producer.publish(
                topic, FeedbackSubmitted(project="p", request_id=request, label="x"), key="k"
            )
        await offsets.topics()
        ids = offsets.partitions_for_topic(topic.name) or set()
        partitions = [TopicPartition(topic.name, p) for p in ids]

        async def committed() -> int:
            return sum([await offsets.committed(tp) or 0 for tp in partitions])

        await bus.start()
        await _until(lambda: handled == ["second"])
        # Absence cannot be waited for: the second's commit, were it sent on its own, would
        # have landed within this half second (a commit takes milliseconds here).
        await asyncio.sleep(0.5)
        assert await committed() == 0
        release.set()
        await _until(lambda: handled == ["second", "first"])
        async with asyncio.timeout(20):
            while await committed() != 2:
                await asyncio.sleep(0.1)
    finally:
        release.set()
        await bus.stop()
        await offsets.stop()
        await producer.stop()


async def test_a_header_that_is_not_utf8_does_not_stop_the_consumer(kafka: Broker):
    """A foreign producer's binary header value is read with replacement characters, and its
    record is handled like any other; the records around it too."""
    topic = _topic()
    await ensure_topics(kafka.bootstrap_servers, [topic])
    settings = KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
    seen: dict[str, dict[str, str]] = {}

    async def handler(batch: list[Delivery[FeedbackSubmitted]]) -> None:
        seen.update((d.event.request_id, d.headers) for d in batch)

    bus = Bus(f"test-{uuid.uuid4().hex[:6]}", settings)
    bus.consume(topic, handler)
    producer = Bus("producer", settings)
    await producer.start()
    await bus.start()
    try:
        for i, note in enumerate([b"plain", b"\xff\xfe binary", b"plain"]):
            event = FeedbackSubmitted(project="p", request_id=f"r{i}", label="fraud")
            await producer.send(
                topic.name,
                [(f"r{i}", event.model_dump_json().encode(), [("x-note", note)])],
            )
        await _until(lambda: len(seen) == 3)
        assert seen["r1"]["x-note"] == "\ufffd\ufffd binary"
        assert seen["r0"]["x-note"] == seen["r2"]["x-note"] == "plain"
        assert bus.dead_letters == 0
    finally:
        await bus.stop()
        await producer.stop()


async def _dead(bootstrap: str, topic: str, n: int) -> list:
    return [r for r in await _read_all(bootstrap, topic, n)]


@pytest.mark.parametrize("overlap", [1, 2])
async def test_a_message_the_handler_cannot_apply_is_found_and_dead_lettered_alone(
    kafka: Broker, overlap: int
):
    """A handler that fails for one message (not a transient failure): the batch is retried a
    few times, then split until that message fails alone; it is dead-lettered once, with the
    reason and the exception type, and every other message of the batch is applied."""
    topic = _topic()
    await ensure_topics(kafka.bootstrap_servers, [topic])
    settings = KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
    applied: set[str] = set()
    calls: list[int] = []

    async def handler(batch: list[Delivery[FeedbackSubmitted]]):
        calls.append(len(batch))
        if any(d.event.label == "poison" for d in batch):
            raise OverflowError("int too large to convert to float")
        applied.update(d.event.request_id for d in batch)

    producer = Bus("producer", settings)
    await producer.start()
    try:
        # One key: one partition, so the 40 messages can come in one batch.
        for i in range(40):
            label = "poison" if i == 17 else "x"
            event = FeedbackSubmitted(project="p", request_id=f"r{i}", label=label)
            await producer.publish(topic, event, key="k", event_id=f"id-{i}")
        bus = Bus("poison", settings)
        bus.consume(topic, handler, group=f"g-{uuid.uuid4().hex[:6]}", overlap=overlap)
        await bus.start()
        try:
            await _until(lambda: len(applied) == 39 and bus.dead_letters == 1)
        finally:
            await bus.stop()
        assert "r17" not in applied
        (dead,) = await _dead(kafka.bootstrap_servers, topic.dlq, 1)
        headers = headers_of(dead)
        assert headers["ce_id"] == "id-17"
        assert headers["dlq_stage"] == "handle"
        assert headers["dlq_exception"] == "OverflowError"
        assert "int too large" in headers["dlq_error"]
        assert bus.problems() == {}
        # Retried a few times whole, then split: never one call per message.
        assert len(calls) < 40
    finally:
        await producer.stop()


async def test_a_transient_failure_is_retried_in_place_not_dead_lettered(kafka: Broker):
    """The database down for a while: the batch is applied again and again until it works, the
    consumer says what it is waiting for meanwhile, and nothing is dead-lettered — not even a
    message that failed to decode, which is dead-lettered once before the handler ran."""
    import asyncpg

    topic = _topic()
    await ensure_topics(kafka.bootstrap_servers, [topic])
    settings = KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
    down = asyncio.Event()
    down.set()
    failures = 0
    applied: list[str] = []

    async def handler(batch: list[Delivery[FeedbackSubmitted]]):
        nonlocal failures
        if down.is_set():
            failures += 1
            raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
        applied.extend(d.event.request_id for d in batch)

    from conveyor_runtime.runtime import transient_failure

    bus = Bus("transient", settings, transient=transient_failure)
    bus.consume(topic, handler, group=f"g-{uuid.uuid4().hex[:6]}")
    producer = Bus("producer", settings)
    await producer.start()
    await bus.start()
    try:
        await producer.publish_raw(topic.name, b"{not json", key="k", headers={"ce_id": "bad"})
        for i in range(3):
            event = FeedbackSubmitted(project="p", request_id=f"r{i}", label="x")
            await producer.publish(topic, event, key="k")
        await _until(lambda: failures >= 5)
        (problem,) = bus.problems().values()
        assert "CannotConnectNowError" in problem
        assert bus.dead_letters == 1  # the undecodable one, once
        down.clear()
        await _until(lambda: len(applied) == 3)
        assert bus.problems() == {}
        assert bus.dead_letters == 1
        (dead,) = await _dead(kafka.bootstrap_servers, topic.dlq, 1)
        assert headers_of(dead)["dlq_stage"] == "decode"
    finally:
        await bus.stop()
        await producer.stop()


async def test_a_dead_letter_never_weighs_more_than_the_broker_takes(kafka: Broker):
    """A message over the consumer's size limit is dead-lettered unread, cut to fit the limit,
    with its original length said."""
    topic = _topic()
    await ensure_topics(kafka.bootstrap_servers, [topic])
    limit = 8192
    settings = KafkaSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers, kafka_max_message_bytes=limit
    )
    seen: list[str] = []

    async def handler(batch: list[Delivery[FeedbackSubmitted]]):
        seen.extend(d.event.request_id for d in batch)

    bus = Bus("sizes", settings)
    bus.consume(topic, handler, group=f"g-{uuid.uuid4().hex[:6]}")
    producer = Bus("producer", KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap_servers))
    await producer.start()
    await bus.start()
    try:
        event = FeedbackSubmitted(project="p", request_id="big", label="x")
        big = event.model_dump_json().replace('"x"', '"' + "x" * 20_000 + '"').encode()
        await producer.publish_raw(
            topic.name, big, key="k", headers={"ce_id": "big", "x-note": "n" * 5000}
        )
        await producer.publish(
            topic, FeedbackSubmitted(project="p", request_id="ok", label="x"), key="k"
        )
        await _until(lambda: seen == ["ok"] and bus.dead_letters == 1)
        (dead,) = await _dead(kafka.bootstrap_servers, topic.dlq, 1)
        headers = headers_of(dead)
        size = len(dead.value) + sum(len(k) + len(v) for k, v in dead.headers)
        assert size <= limit
        assert int(headers["dlq_truncated_bytes"]) == len(big)
        assert "over the limit" in headers["dlq_error"]
        assert dead.value == big[: len(dead.value)]
    finally:
        await bus.stop()
        await producer.stop()
