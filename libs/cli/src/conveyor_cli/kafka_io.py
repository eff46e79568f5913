"""Small Kafka helpers for the CLI: produce events with their envelope, tail topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from conveyor_contracts import TopicSpec, envelope_for


class Producer:
    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, client_id="conveyor-cli"
        )

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(
        self,
        topic: TopicSpec,
        event: BaseModel,
        key: str,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue one event (with extra headers, such as a `traceparent`); returns the delivery
        future (await it, or `flush()`)."""
        headers = envelope_for(topic, event, source="conveyor/cli", extra=headers).to_headers()
        return await self._producer.send(
            topic.name,
            event.model_dump_json().encode(),
            key=key.encode(),
            headers=[(k, v.encode()) for k, v in headers.items()],
        )

    async def flush(self) -> None:
        await self._producer.flush()


async def tail(bootstrap_servers: str, topic: TopicSpec) -> AsyncIterator[Any]:
    """Every event on `topic` from the beginning, decoded; runs until cancelled."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="conveyor-cli",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic.name) or set()
        while not partitions:
            await consumer._client.force_metadata_update()  # topic created a moment ago
            partitions = consumer.partitions_for_topic(topic.name) or set()
        tps = [TopicPartition(topic.name, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    try:
                        yield topic.adapter.validate_json(record.value)
                    except ValueError:
                        continue  # not ours to judge: the services dead-letter bad messages
    finally:
        await consumer.stop()
