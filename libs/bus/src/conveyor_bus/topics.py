"""Create the catalog's topics and their dead-letter topics, idempotently."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from conveyor_contracts import CATALOG, TopicSpec

from .errors import TopicSetupError

log = logging.getLogger(__name__)


def topic_names(specs: Iterable[TopicSpec] = CATALOG) -> dict[str, tuple[int, int]]:
    """Every topic to create: name -> (partitions, retention ms)."""
    out: dict[str, tuple[int, int]] = {}
    for spec in specs:
        out[spec.name] = (spec.partitions, spec.retention_ms)
        out[spec.dlq] = (1, -1)
    return out


async def ensure_topics(
    bootstrap_servers: str, specs: Iterable[TopicSpec] = CATALOG, *, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    wanted = topic_names(specs)
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="conveyor-admin")
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
    raise TopicSetupError(f"could not create topics on {bootstrap_servers}: {last!r}") from last


async def create_topic(bootstrap_servers: str, name: str, partitions: int = 1) -> None:
    """Create one topic outside the catalog (an application's reply topic, a benchmark's)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="conveyor-admin")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """The offset the next record of each partition of `topic` will get (its high-water mark)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in sorted(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_ranges(
    bootstrap_servers: str,
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
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, client_id="conveyor-replay"
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
    bootstrap_servers: str,
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
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, client_id="conveyor-outbox"
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
