"""The first connection, the catalog's topics and their dead-letter topics (created idempotently,
or only checked where an operator owns them), and the reads that look back at a topic.

Each function takes the process's `KafkaSettings` (brokers, TLS, SASL) or, for a broker without
either, its bare address."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from conveyor_client.kafka_security import check_connection
from conveyor_contracts import CATALOG, TopicSpec

from .errors import TopicSetupError
from .settings import KafkaSettings

log = logging.getLogger(__name__)

Kafka = KafkaSettings | str


def client_options(kafka: Kafka, client_id: str) -> dict[str, Any]:
    """The keyword arguments of an aiokafka client of `kafka` (see KafkaSettings)."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka, "client_id": client_id}
    return kafka.client_options(client_id)


def _where(kafka: Kafka) -> str:
    return kafka if isinstance(kafka, str) else kafka.kafka_bootstrap_servers


def topic_names(specs: Iterable[TopicSpec] = CATALOG) -> dict[str, tuple[int, int]]:
    """Every topic to create: name -> (partitions, retention ms)."""
    out: dict[str, tuple[int, int]] = {}
    for spec in specs:
        out[spec.name] = (spec.partitions, spec.retention_ms)
        out[spec.dlq] = (1, -1)
    return out


async def prepare_topics(
    settings: KafkaSettings, specs: Iterable[TopicSpec] = CATALOG
) -> list[str]:
    """A service's first contact with the broker: connect as its clients will (a broker out of
    reach is awaited for `kafka_connect_timeout_s`; settings it refuses stop the service at once,
    the reason naming the setting), then create the missing topics, or, with
    `kafka_create_topics` off, check that every one exists. Returns the names created."""
    existing = await check_connection(
        settings.client_options("conveyor-admin"),
        settings.security,
        timeout_s=settings.kafka_connect_timeout_s,
    )
    wanted = topic_names(specs)
    if settings.kafka_create_topics:
        if all(name in existing for name in wanted):
            return []
        return await ensure_topics(settings, specs)
    if missing := [name for name in wanted if name not in existing]:
        raise TopicSetupError(
            f"{len(missing)} topics of the catalog are missing on "
            f"{settings.kafka_bootstrap_servers} and KAFKA_CREATE_TOPICS=false: "
            f"{', '.join(missing)} (create them with the operator's resources: "
            "python -m conveyor_contracts.schemas strimzi)"
        )
    return []


async def ensure_topics(
    kafka: Kafka, specs: Iterable[TopicSpec] = CATALOG, *, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    wanted = topic_names(specs)
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(**client_options(kafka, "conveyor-admin"))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in wanted if n not in existing]
            for name in missing:
                partitions, retention = wanted[name]
                try:
                    await admin.create_topics(
                        [
                            NewTopic(
                                name, partitions, 1, topic_configs={"retention.ms": str(retention)}
                            )
                        ]
                    )
                except TopicAlreadyExistsError:
                    pass  # another service created it first
            return missing
        except (KafkaError, OSError) as exc:
            last = exc
            log.warning("topic setup failed, retrying: %r", exc)
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise TopicSetupError(f"could not create topics on {_where(kafka)}: {last!r}") from last


async def create_topic(kafka: Kafka, name: str, partitions: int = 1) -> None:
    """Create one topic outside the catalog (an application's reply topic, a benchmark's)."""
    admin = AIOKafkaAdminClient(**client_options(kafka, "conveyor-admin"))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def end_offsets(kafka: Kafka, topic: str) -> dict[int, int]:
    """The offset the next record of each partition of `topic` will get (its high-water mark)."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka, "conveyor-offsets"), enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in sorted(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_ranges(
    kafka: Kafka,
    ranges: Iterable[tuple[str, int, int, int]],
    *,
    timeout_s: float = 30.0,
) -> list[tuple[str, int, int, bytes]]:
    """Every record in the given (topic, partition, first offset, last offset) ranges, as
    (topic, partition, offset, value), in offset order per partition. Raises `LookupError`
    when a range is no longer on the broker (retention deleted it, say) or cannot be read
    whole within `timeout_s`."""
    wanted = {TopicPartition(t, p): (first, last) for t, p, first, last in ranges}
    out: list[tuple[str, int, int, bytes]] = []
    if not wanted:
        return out
    consumer = AIOKafkaConsumer(
        **client_options(kafka, "conveyor-replay"), enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        starts = await consumer.beginning_offsets(list(wanted))
        for tp, (first, last) in wanted.items():
            if first < starts[tp]:
                raise LookupError(
                    f"{tp.topic}[{tp.partition}] starts at offset {starts[tp]}: "
                    f"{first}..{last} is gone"
                )
            consumer.seek(tp, first)
        # No check against the end offsets: a broker may report a high-water mark short of
        # its last multi-record batch (Tansu does); the read itself tells.
        todo = set(wanted)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while todo:
            if loop.time() > deadline:
                missing = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(todo))
                raise LookupError(f"{missing}: the recorded offsets were not all found")
            batch = await consumer.getmany(*todo, timeout_ms=200)
            for tp, records in batch.items():
                first, last = wanted[tp]
                for r in records:
                    if first <= r.offset <= last and r.value is not None:
                        out.append((tp.topic, tp.partition, r.offset, r.value))
            for tp in list(todo):
                if await consumer.position(tp) > wanted[tp][1]:  # gaps (markers) included
                    todo.discard(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return out


async def published_ids(
    kafka: Kafka,
    topic: str,
    ids: set[str],
    *,
    depth: int = 5000,
    timeout_s: float = 30.0,
) -> set[str]:
    """Which of the event ids (`ce_id` headers) are among the last `depth` records of each of
    `topic`'s partitions: what an outbox relay that crashed mid-publish already delivered.

    A partition is read until it stays quiet or until a record produced after the search began
    is read (what a stopped process delivered was produced before that): a topic that others
    keep writing to may never go quiet, and a restarted service runs this search before it
    reports itself started. The end offsets are no stopping point: a broker may report a
    high-water mark short of its last multi-record batch (Tansu does). `timeout_s` bounds the
    search: what it did not find is published again (the same ce_id, which consumers
    recognise)."""
    found: set[str] = set()
    if not ids:
        return found
    consumer = AIOKafkaConsumer(
        **client_options(kafka, "conveyor-outbox"), enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return found
        consumer.assign(tps)
        started_ms = time.time() * 1000
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, max(0, end - depth))
        todo = set(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        quiet = 0
        while todo and quiet < 3 and found != ids and loop.time() < deadline:
            batch = await consumer.getmany(*todo, timeout_ms=200)
            quiet = 0 if batch else quiet + 1
            for tp, records in batch.items():
                for r in records:
                    ce_id = dict(r.headers).get("ce_id")
                    if ce_id is not None and ce_id.decode() in ids:
                        found.add(ce_id.decode())
                if records and records[-1].timestamp > started_ms:
                    todo.discard(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return found
