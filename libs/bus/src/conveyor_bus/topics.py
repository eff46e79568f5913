"""Create the catalog's topics and their dead-letter topics, idempotently."""

from __future__ import annotations

import asyncio
import logging
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
