"""The client's Kafka side: one producer, and one reply topic of its own that every prediction
request of the client names in `ce_replyto`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from . import _wire
from .config import Config
from .errors import ConfigurationError, InvalidArgument, Unavailable
from .kafka_security import KafkaSecurityError, check_connection

log = logging.getLogger("conveyor_client")

CLIENT_ID = "conveyor-client"
# Answers are useful for a request's deadline, seconds; an hour keeps them long enough for a
# reader that fell behind, and a reply topic left by a client that died does not grow for long.
REPLY_RETENTION_MS = 3_600_000
START_TIMEOUT_S = 30.0  # a broker that does not answer within it is unavailable
# The services copy an answer to a reply topic only once they have seen the topic in the
# broker's list, which each reads at most once a second, a miss included: a request sent sooner
# after the topic's creation could find it "missing" (and be dead-lettered unanswered). Past this
# long after the topic is listed, every service's next look reads the list anew and finds it.
SERVICES_TOPIC_REFRESH_S = 1.0
LISTED_MARGIN_S = 0.1


class Kafka:
    """Started on first use, stopped by `close()`. Every method runs on the loop that started
    the client's first Kafka call."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._producer: AIOKafkaProducer | None = None
        self._replies: Replies | None = None
        self._lock = asyncio.Lock()
        self._checked = False

    @property
    def reply_topic(self) -> str | None:
        return None if self._replies is None else self._replies.topic

    def _options(self) -> dict[str, Any]:
        return self.config.kafka_options(CLIENT_ID)

    async def _check(self) -> None:
        """Before the first client starts: connect as they will, so that settings the broker
        refuses (TLS, SASL) fail with the reason and the setting to look at, at once, rather
        than as a client that never starts."""
        if self._checked:
            return
        try:
            await check_connection(
                self._options(),
                self.config.kafka_security,
                timeout_s=START_TIMEOUT_S,
                wait=False,  # a broker out of reach is Unavailable now: the caller may retry
                brokers="bootstrap_servers",
            )
        except KafkaSecurityError as exc:
            if exc.retryable:
                raise Unavailable(str(exc)) from exc
            raise ConfigurationError(str(exc)) from exc
        self._checked = True

    async def producer(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                await self._check()
                # The application's own settings (`kafka`) may change how it batches.
                producer = AIOKafkaProducer(**{"acks": "all", "linger_ms": 5} | self._options())
                await _start(producer.start(), producer.stop, "the producer")
                self._producer = producer
            return self._producer

    async def send(
        self,
        topic: _wire.Topic,
        messages: Sequence[tuple[str | None, bytes, Mapping[str, str]]],
    ) -> None:
        """Send (key, value, headers) messages and wait until the broker has each (acks=all)."""
        producer = await self.producer()
        try:
            futures = [
                await producer.send(
                    topic.name,
                    value,
                    key=None if key is None else key.encode(),
                    headers=_wire.kafka_headers(headers),
                )
                for key, value, headers in messages
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise Unavailable(f"sending to {topic.name}: {type(exc).__name__}: {exc}") from exc

    async def replies(self) -> Replies:
        async with self._lock:
            if self._replies is not None and self._replies.broken is not None:
                await self._replies.close()  # its reader failed: a new topic and reader
                self._replies = None
            if self._replies is None:
                await self._check()
                replies = Replies(self._options(), self.config)
                await replies.start()
                self._replies = replies
            return self._replies

    async def close(self) -> None:
        async with self._lock:
            if self._replies is not None:
                await self._replies.close()
                self._replies = None
            if self._producer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await self._producer.stop()
                self._producer = None


class Replies:
    """A topic of this client's own (`<reply prefix><random id>`, one partition), read from its
    start without a consumer group, and the requests waiting for their answers on it. Deleted on
    close."""

    def __init__(self, options: dict[str, Any], config: Config) -> None:
        self.topic = _wire.reply_topic(config.reply_prefix)
        self._options = options
        self._fetch_max_wait_ms = config.fetch_max_wait_ms
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._created = False
        self.broken: BaseException | None = None

    async def start(self) -> None:
        """Create the topic, and read it from its start; on any failure nothing is left (the
        topic deleted again)."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        admin = AIOKafkaAdminClient(**self._options)
        try:
            await _start(admin.start(), admin.close, "the admin client")
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            self.topic,
                            1,
                            1,
                            topic_configs={"retention.ms": str(REPLY_RETENTION_MS)},
                        )
                    ]
                )
            except KafkaError as exc:
                raise Unavailable(f"creating the reply topic {self.topic}: {exc!r}") from exc
            self._created = True
            await self._listed(admin)
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()
        consumer = AIOKafkaConsumer(
            **self._options
            | {
                "group_id": None,
                "enable_auto_commit": False,
                "auto_offset_reset": "earliest",
                "fetch_max_wait_ms": self._fetch_max_wait_ms,
            }
        )
        await _start(consumer.start(), consumer.stop, "the reply consumer")
        self._consumer = consumer
        partition = TopicPartition(self.topic, 0)
        consumer.assign([partition])
        # The topic is new and only this client's answers come to it: read from its start, the
        # position is known before any request is sent, and no answer can come before it.
        await consumer.seek_to_beginning(partition)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await consumer.position(partition)
        except (TimeoutError, KafkaError) as exc:
            raise Unavailable(f"reading the reply topic {self.topic}: {exc!r}") from exc
        self._reader = asyncio.create_task(self._read(consumer), name=f"replies {self.topic}")

    async def _listed(self, admin: AIOKafkaAdminClient) -> None:
        """Return once the services can see the new topic (SERVICES_TOPIC_REFRESH_S)."""
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                # The broker's state, polled: nothing in this process could signal it.
                while self.topic not in await admin.list_topics():  # noqa: ASYNC110
                    await asyncio.sleep(LISTED_MARGIN_S)
        except (TimeoutError, KafkaError) as exc:
            raise Unavailable(f"the reply topic {self.topic} is not listed: {exc!r}") from exc
        await asyncio.sleep(SERVICES_TOPIC_REFRESH_S + LISTED_MARGIN_S)

    def expect(self, request_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future of the answer to `request_id`: register before sending the request."""
        if self.broken is not None:
            raise Unavailable(f"the reply topic {self.topic} cannot be read: {self.broken!r}")
        if request_id in self._waiting:
            raise InvalidArgument(f"request {request_id!r} is already waiting for its answer")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        self._deliver(record.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker gone for good, an unreadable partition
            log.warning("reply topic %s can no longer be read: %r", self.topic, exc)
            self.broken = exc
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(Unavailable(f"reading {self.topic}: {exc!r}"))
            self._waiting.clear()

    def _deliver(self, value: bytes | None) -> None:
        """Hand an answer to the request waiting for it. An answer no one waits for any more
        (its caller's deadline passed) and a value that is not an answer are dropped."""
        try:
            answer = json.loads(value or b"")
            request_id = answer["request_id"]
        except (ValueError, TypeError, KeyError):
            log.debug("not an answer on %s: %r", self.topic, (value or b"")[:100])
            return
        future = self._waiting.pop(request_id, None) if isinstance(request_id, str) else None
        if future is not None and not future.done():
            future.set_result(answer)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(Unavailable("the client was closed"))
        self._waiting.clear()
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()
            self._consumer = None
        if self._created:
            await self._delete()

    async def _delete(self) -> None:
        admin = AIOKafkaAdminClient(**self._options)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await admin.start()
                await admin.delete_topics([self.topic])
            self._created = False
        except (TimeoutError, KafkaError, OSError) as exc:
            # Not the caller's failure: the topic expires with its retention.
            log.warning("could not delete the reply topic %s: %r", self.topic, exc)
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await admin.close()


async def _start(starting: Any, stop: Any, what: str) -> None:
    """Await a Kafka client's start; Unavailable when the broker cannot be reached in time."""
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            await starting
    except (TimeoutError, KafkaError, OSError) as exc:
        with contextlib.suppress(Exception):
            await stop()
        raise Unavailable(f"starting {what}: {type(exc).__name__}: {exc}") from exc
