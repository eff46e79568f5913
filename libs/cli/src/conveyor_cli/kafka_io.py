"""Small Kafka helpers for the CLI: produce events with their envelope, tail topics.

Each takes where the broker is and how to connect to it as the client library finds it (a
`conveyor_client.Config`: TLS and SASL included), or a bare address of a broker without either
(the embedded stack's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from conveyor_client import Config
from conveyor_client.kafka_security import check_connection
from conveyor_contracts import TopicSpec, envelope_for

CLIENT_ID = "conveyor-cli"
CONNECT_TIMEOUT_S = 30.0


def _config(kafka: Config | str) -> Config:
    return Config(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka


async def connected(kafka: Config | str) -> dict[str, Any]:
    """The options of the command's Kafka clients, once a first connection made with them
    worked: a setting the broker refuses fails here with the reason (KafkaSecurityError)."""
    config = _config(kafka)
    options = config.kafka_options(CLIENT_ID)
    await check_connection(options, config.kafka_security, timeout_s=CONNECT_TIMEOUT_S)
    return options


class Producer:
    def __init__(self, kafka: Config | str) -> None:
        self._kafka = kafka
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Producer:
        options = await connected(self._kafka)
        self._producer = AIOKafkaProducer(**options, acks="all", linger_ms=5)
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
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
        assert self._producer is not None, "used inside `async with`"
        return await self._producer.send(
            topic.name,
            event.model_dump_json().encode(),
            key=key.encode(),
            headers=[(k, v.encode()) for k, v in headers.items()],
        )

    async def flush(self) -> None:
        assert self._producer is not None, "used inside `async with`"
        await self._producer.flush()


async def tail(kafka: Config | str, topic: TopicSpec) -> AsyncIterator[Any]:
    """Every event on `topic` from the beginning, decoded; runs until cancelled."""
    consumer = AIOKafkaConsumer(
        **await connected(kafka), enable_auto_commit=False, auto_offset_reset="earliest"
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
