"""The bus's consumers, at the level of one subscriber and a stand-in client."""

from __future__ import annotations

import asyncio
import gc
import inspect
import weakref

from faststream.kafka.message import KafkaAckableMessage

from conveyor_bus import Bus, KafkaSettings
from conveyor_bus.bus import _message_ref
from conveyor_contracts import catalog


class IdleClient:
    """A consumer client with nothing to read: each fetch comes back empty at once."""

    def __init__(self) -> None:
        self.fetches: list[tuple[int, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict:
        self.fetches.append((timeout_ms, max_records))
        return {}


async def test_an_empty_fetch_is_followed_by_the_next_without_a_pause():
    # FastStream's batch subscriber sleeps its batch time-out after an empty fetch, so a record
    # that arrives then waits that long to be read; the bus's subscribers ask again at once.
    settings = KafkaSettings(kafka_batch_timeout_ms=60_000, kafka_max_batch=17)
    bus = Bus("test", settings)

    async def handler(batch):
        return None

    bus.consume(catalog.FEEDBACK_SUBMITTED, handler)
    (subscriber,) = bus.broker.subscribers
    client = IdleClient()
    async with asyncio.timeout(5):
        for _ in range(3):
            assert await subscriber.get_msg(client) == ()
    assert client.fetches == [(60_000, 17)] * 3


def test_faststreams_consume_loop_fetches_through_the_subscribers_get_msg():
    # The bus replaces `get_msg` on each subscriber; were FastStream's loop to fetch some other
    # way, the pause after an empty fetch would be back unseen.
    bus = Bus("test", KafkaSettings())

    async def handler(batch):
        return None

    bus.consume(catalog.FEEDBACK_SUBMITTED, handler)
    (subscriber,) = bus.broker.subscribers
    assert "get_msg" in vars(subscriber)
    assert "await self.get_msg(" in inspect.getsource(type(subscriber)._run_consume_loop)


async def test_a_batch_is_freed_by_reference_counting_once_handled():
    # FastStream keeps a message's decoded body on the message; the body the bus's decoder makes
    # must not refer back to it, or every batch (its hundreds of records) waits for the cycle
    # collector, which then walks them all: it took a seventh of serving's time once.
    records = (object(), object())
    message = KafkaAckableMessage(raw_message=records, body=[], consumer=None, message_id="m")
    message.set_decoder(_message_ref)
    body = await message.decode()
    handed_over = body()
    assert handed_over is message and handed_over.raw_message is records
    freed = weakref.ref(message)
    gc.disable()
    try:
        del message, handed_over
        assert freed() is None
    finally:
        gc.enable()
