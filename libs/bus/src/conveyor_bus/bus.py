"""The bus: publish events with their envelope; consume them in bounded batches.

A consumer handles one batch at a time (at most `max_records`), so in-flight work is bounded and
consumption simply waits while a batch is being handled. Within a batch:

1. every record is decoded against its topic's schema, once; one that cannot be parsed or
   validated (or is larger than `kafka_max_message_bytes`) is sent to `<topic>.dlq` with its
   original bytes and headers plus the error, the exception type, the stage and the source
   coordinates — it never stops the consumer;
2. the handler applies the valid ones (its effects must be durable when it returns) and may reject
   individual deliveries, which are dead-lettered the same way. A handler that raises is handled
   as failures.py says: a transient failure (database or broker unavailable) is retried in place
   for as long as it lasts, with the consumer reported not ready (`Bus.problems`); any other is
   retried a few times, then the batch is split to find the message that fails alone, which is
   dead-lettered — never the partition stopped, never its neighbours dead-lettered with it;
3. only then is the offset committed. A batch given up at a stop is not committed: it is
   delivered again, so handlers must be idempotent (they are: see each service's idempotency
   key).

A consumer whose batches are independent of each other can let a few overlap (`overlap=N`):
the next batch is decoded and handled while the ones before it wait on their acknowledgements.
Each is still committed only once it is handled, in order, after every batch before it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, repeat
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.message import KafkaAckableMessage
from faststream.security import (
    BaseSecurity,
    SASLOAuthBearer,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)
from opentelemetry import metrics
from pydantic import BaseModel, ValidationError

from conveyor_contracts import FORWARDED_HEADERS, TopicSpec, decode_headers, shared_headers
from conveyor_contracts.events import COORDINATES, DerivesId, new_id, utcnow

from . import tracing
from .errors import PublishError
from .failures import (
    MAX_ATTEMPTS,
    Backoff,
    Transient,
    bounded,
    broker_transient,
    describe,
    exception_name,
    halves,
)
from .lag import group_name
from .partitioner import keyed_partitions
from .settings import KafkaSettings

log = logging.getLogger(__name__)

# A record batch's size (the producer's default is 16 KiB: thirty-odd events of ours a batch);
# a quarter of Kafka's default largest message (`message.max.bytes`, 1 MiB).
BATCH_BYTES = 256 * 1024

# Recorded through the OpenTelemetry API: a no-op until the process installs a meter provider.
_meter = metrics.get_meter("conveyor.bus")
# Seconds, from half a millisecond to ten seconds: one set for every latency histogram.
LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
CONSUMED = _meter.create_counter(
    "conveyor.messages.consumed", unit="{message}", description="Records read, by topic."
)
PRODUCED = _meter.create_counter(
    "conveyor.messages.produced",
    unit="{message}",
    description="Records the broker acknowledged, by topic.",
)
DEAD_LETTERS = _meter.create_counter(
    "conveyor.dead_letters",
    unit="{message}",
    description="Records sent to <topic>.dlq, by source topic and the stage that refused them "
    "(decode, validate, quality, enrich, infer, reply, join, handle).",
)
BATCH_SIZE = _meter.create_histogram(
    "conveyor.batch.size",
    unit="{message}",
    description="Records per handled batch.",
    explicit_bucket_boundaries_advisory=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
)
BATCH_TIME = _meter.create_histogram(
    "conveyor.batch.duration",
    unit="s",
    description="Time to decode, handle and commit one batch.",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
)
STAGE_TIME = _meter.create_histogram(
    "conveyor.stage.duration",
    unit="s",
    description="Time per stage of a consumer, by topic and stage: queue_wait (per record, from "
    "its Kafka timestamp to the batch's arrival; up to 8 records a batch), decode and handle (per "
    "batch).",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
)
LAG = _meter.create_gauge(
    "conveyor.consumer.lag",
    unit="{message}",
    description="Records a consumer has yet to read, by topic and partition, after each batch: "
    "a growing lag means the service falls behind.",
)
IN_FLIGHT = _meter.create_up_down_counter(
    "conveyor.in_flight",
    unit="{message}",
    description="Records being handled now (bounded by the batch size).",
)
REBALANCES = _meter.create_counter(
    "conveyor.consumer.rebalances",
    unit="{rebalance}",
    description="Rebalances of its consumer group this consumer took part in (each ends with "
    "an assignment to every member), by topic.",
)

T = TypeVar("T")

# How often the list of the broker's topics is read at most (topic_exists).
TOPICS_REFRESH_S = 1.0

# At a stop, how long overlapping batches under way get to finish and commit.
STOP_GRACE_S = 10.0

PER_BATCH_SAMPLE = 8


def sampled(items: Sequence[T], k: int = PER_BATCH_SAMPLE) -> Sequence[T]:
    """At most `k` items spread evenly over `items`: for per-record histograms, whose every
    recording costs microseconds a busy consumer cannot spend on each record."""
    if len(items) <= k:
        return items
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


DLQ_HEADERS = (
    "dlq_error",
    "dlq_exception",
    "dlq_stage",
    "dlq_source_topic",
    "dlq_source_partition",
    "dlq_source_offset",
    "dlq_consumer_group",
    "dlq_failed_at",
)


NO_TRACE: Mapping[str, str] = MappingProxyType({})  # a record consumed outside any span


class Delivery(NamedTuple, Generic[T]):
    """One decoded record and where it came from. (A named tuple: immutable, and built for
    every record consumed at a third of a frozen dataclass's cost.)"""

    event: T
    headers: dict[str, str]
    key: str | None
    topic: str
    partition: int
    offset: int
    value: bytes
    trace: Mapping[str, str] = NO_TRACE

    def __repr__(self) -> str:
        return (
            f"Delivery(event={self.event!r}, key={self.key!r}, "
            f"at={self.topic}/{self.partition}/{self.offset})"
        )

    @property
    def onward(self) -> dict[str, str]:
        """The headers an answer to this record carries on: its own, with this hop's trace
        context (when spans are recorded) in place of the one it came with."""
        return {**self.headers, **self.trace} if self.trace else self.headers

    @property
    def event_id(self) -> str:
        """The CloudEvents id (falls back to the record's coordinates for foreign producers)."""
        return self.headers.get("ce_id") or f"{self.topic}/{self.partition}/{self.offset}"


class Encoded(NamedTuple):
    """An event its producer serialized itself: the JSON of an event model whose `type_name` it
    names, for hot paths where building the model only to dump it cost more than the rest (the
    producer's tests hold the bytes equal to the model's own). A named tuple: one is built per
    answer."""

    type_name: str
    value: bytes


class Outgoing(NamedTuple):
    """One event to produce. `cause` is the headers of the message it answers: its trace context,
    deadline and reply-to travel on. `event_id` is a deterministic id (a redelivered input then
    yields the same id)."""

    key: str | None
    event: BaseModel | Encoded
    event_id: str | None = None
    extra: dict[str, str] | None = None
    cause: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Rejection:
    """A delivery the handler refuses: it goes to the dead-letter topic with the reason (and,
    as its exception type, what the handler names: the check that refused it)."""

    delivery: Delivery[Any]
    error: str
    stage: str = "validate"
    exception: str = "Rejection"


class Assignment(ConsumerRebalanceListener):
    """The partitions a group consumer's group gave it: None until the group first assigns it
    (an empty set once it has, when the group has more members than the topic partitions).
    Kept through a rebalance until the next assignment: a rebalance is no reason to be taken
    out of service. Every assignment is counted (`conveyor_consumer_rebalances_total`): every
    member of a group takes part in each of its rebalances, so a member present throughout
    counts them all."""

    def __init__(self, topic: str) -> None:
        self.partitions: frozenset[int] | None = None
        self._attrs = {"topic": topic}

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.partitions = frozenset(tp.partition for tp in assigned)
        REBALANCES.add(1, self._attrs)


class MessageTooLarge(ValueError):
    """A record over the consumer's `kafka_max_message_bytes`: refused before it is parsed."""


class _GivenUp(Exception):
    """A batch left unfinished because the bus is stopping: not committed, delivered again."""


BatchHandler = Callable[[list[Delivery[Any]]], Awaitable[Iterable[Rejection] | None]]
Positions = Callable[[list[tuple[int, int]]], None]


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        ]
        return "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"


class Bus:
    """Consumes through the service's FastStream Kafka broker; produces through an aiokafka
    producer of its own (see publishing, below)."""

    def __init__(
        self,
        service: str,
        settings: KafkaSettings | None = None,
        *,
        broker: KafkaBroker | None = None,
        transient: Transient | None = None,
    ) -> None:
        """`transient` tells the failures worth retrying in place from those a message causes
        (see failures.py); the broker's own are known without it."""
        self.service = service
        self.transient = transient or broker_transient
        self.settings = settings or KafkaSettings()
        # No telemetry middleware: the bus records its own spans (tracing.py), one per record in
        # the record's trace, and only when the OTEL_* variables install a tracer provider. No
        # dependency injection either: a batch handler takes the message from the decoder, as
        # the body (injecting it ran a worker thread per batch; see `_message_ref`).
        self.broker = broker or KafkaBroker(
            logger=logging.getLogger(f"conveyor.{service}.kafka"),
            apply_types=False,
            # Where an operator owns the topics, a subscriber must not try to create its own
            # (the service's user may not, and its start-up checked they exist).
            allow_auto_create_topics=self.settings.kafka_create_topics,
            **broker_options(self.settings.client_options(f"conveyor-{service}")),
        )
        self.dead_letters = 0
        self._failing: dict[str, str] = {}  # consumer → the transient failure it retries now
        self._gate: asyncio.Event | None = None
        self._overlapping: list[set[asyncio.Future[bool]]] = []  # batches handled, not committed
        self._stopping = False
        self._producer: AIOKafkaProducer | None = None
        self._tracing = False
        self._topics: set[str] = set()  # topics seen to exist (topic_exists)
        self._topics_read_at = -TOPICS_REFRESH_S
        self._assignments: dict[str, Assignment] = {}  # group consumer → its partitions
        self._groups: dict[str, str] = {}  # topic → the consumer group it is read in
        self._admin: AIOKafkaAdminClient | None = None  # kept connected: broker_problem

    def problems(self) -> dict[str, str]:
        """The consumers retrying a transient failure now, each with what failed: while there
        are any, the service is not ready."""
        return dict(self._failing)

    def assignments(self) -> dict[str, list[int] | None]:
        """Each group consumer's partitions; None for one its group has not assigned yet."""
        return {
            title: None if a.partitions is None else sorted(a.partitions)
            for title, a in self._assignments.items()
        }

    def groups(self) -> dict[str, str]:
        """The consumer group each topic read in a group is read in (what a lag-based
        autoscaler or a lag report watches)."""
        return dict(self._groups)

    async def broker_problem(self, topic: str, timeout_s: float) -> str | None:
        """None when the broker answers a metadata request about `topic` within `timeout_s`
        (over a connection the bus keeps: no new handshake each time); else what failed."""
        if self._admin is None:
            return "not connected"
        try:
            async with asyncio.timeout(timeout_s):
                await self._admin.describe_topics([topic])
        except (TimeoutError, KafkaError, OSError) as exc:
            return exception_name(exc)
        return None

    def hold_until(self, gate: asyncio.Event) -> None:
        """Group consumers handle nothing until `gate` is set (broadcast consumers run at once):
        a service first catches up with its changelog, then takes work."""
        self._gate = gate

    async def start(self) -> None:
        self._tracing = tracing.enabled()
        self._stopping = False
        self._producer = AIOKafkaProducer(
            **self.settings.client_options(f"conveyor-{self.service}"),
            acks="all",
            linger_ms=self.settings.kafka_linger_ms,
            max_batch_size=BATCH_BYTES,
        )
        await self._producer.start()
        self._admin = AIOKafkaAdminClient(
            **self.settings.client_options(f"conveyor-{self.service}-health")
        )
        await self._admin.start()
        # The consumers start together: a group consumer's start lasts until the broker has
        # assigned it partitions, a group join of seconds (Kafka's initial rebalance delay; half
        # the session time-out on Tansu), which the broker's own start waits out one consumer
        # after another.
        await self.broker.connect()
        starts = [asyncio.ensure_future(s.start()) for s in self.broker.subscribers]
        try:
            await asyncio.gather(*starts)
        except BaseException:
            for start in starts:
                start.cancel()
            await asyncio.gather(*starts, return_exceptions=True)
            raise

    async def stop(self) -> None:
        # Overlapping batches take no new work, and those under way finish and commit (what
        # they leave undone is delivered again, to this service or to another replica).
        self._stopping = True
        if running := [f for window in self._overlapping for f in window]:
            await asyncio.wait(running, timeout=STOP_GRACE_S)
        await self.broker.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    # --- publishing -----------------------------------------------------------------------------
    # Produced straight through aiokafka: the framework's per-message publish path (middlewares,
    # a span per message) cost more than everything else serving does per prediction.

    async def publish(
        self,
        topic: TopicSpec,
        event: BaseModel,
        *,
        key: str | None,
        event_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Produce one event and wait for the broker's acknowledgement."""
        await self.publish_many(topic, [Outgoing(key, event, event_id, headers)])

    async def publish_many(
        self, topic: TopicSpec, items: Sequence[Outgoing], *, to: str | None = None
    ) -> None:
        """Produce events (the producer batches them) and wait until every one is acknowledged.
        `to` sends them, as `topic`'s events, to another topic (an application's reply-to)."""
        if not items:
            return
        shared = shared_headers(
            items[0].event.type_name,  # type: ignore[union-attr]
            f"conveyor/{self.service}",
            utcnow(),
            topic.dataschema,
        )
        current = tracing.context_headers()  # the active span's, when there is one
        destination = to or topic.name
        # Headers in the client's (name, bytes) form, the batch's shared ones encoded once.
        common = [(k, v.encode()) for k, v in shared.items()]
        active = [(k, v.encode()) for k, v in current.items()]
        messages = []
        with tracing.stage("encode", topic=destination):
            for item in items:
                headers = [*common, ("ce_id", (item.event_id or new_id()).encode())]
                if item.extra:  # set by the caller: they replace what is there
                    headers = [(k, v) for k, v in headers if k not in item.extra]
                    headers += [(k, v.encode()) for k, v in item.extra.items()]
                if item.cause is not None:
                    cause = item.cause
                    if not cause.keys().isdisjoint(FORWARDED_HEADERS):
                        headers += [(h, cause[h].encode()) for h in FORWARDED_HEADERS if h in cause]
                else:
                    headers += active
                event = item.event
                value = (
                    event.value if isinstance(event, Encoded) else event.model_dump_json().encode()
                )
                messages.append((item.key, value, headers))
        with tracing.stage("produce", topic=destination):
            await self.send(destination, messages)

    async def topic_exists(self, topic: str, timeout_s: float = 5.0) -> bool:
        """Whether the broker has `topic`, asked without creating it: a producer's metadata
        request may create a missing topic (where the broker auto-creates topics), so the list
        of topics is read through the admin API — at most once a second, a miss included."""
        if topic in self._topics:
            return True
        now = time.monotonic()
        if now - self._topics_read_at < TOPICS_REFRESH_S:
            return False
        self._topics_read_at = now
        admin = AIOKafkaAdminClient(
            **self.settings.client_options(f"conveyor-{self.service}-admin")
        )
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
                self._topics = set(await admin.list_topics())
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("could not list the broker's topics: %r", exc)
        finally:
            await admin.close()
        return topic in self._topics

    async def publish_raw(
        self, topic: str, value: bytes, *, key: str | bytes | None, headers: dict[str, str]
    ) -> None:
        await self.send(topic, [(key, value, headers)])

    async def send(
        self,
        topic: str,
        messages: Sequence[tuple[str | bytes | None, bytes, Mapping[str, str] | Sequence[Any]]],
    ) -> None:
        """Produce (key, value, headers) messages and wait for every acknowledgement; headers
        as in `send_batches`."""
        if self._producer is None:
            raise PublishError(f"publish to {topic} before the bus started")
        try:
            await send_batches(self._producer, topic, messages)
        except KafkaError as exc:
            raise PublishError(f"publish to {topic} failed: {exc!r}") from exc
        PRODUCED.add(len(messages), {"topic": topic})

    async def dead_letter(
        self,
        delivery: Delivery[Any],
        error: str,
        stage: str,
        group: str | None,
        *,
        exception: str = "",
    ) -> None:
        """Send `delivery` to its topic's dead-letter topic with why, cut to what the broker
        accepts (`failures.bounded`). Logged without the reason: a reason names the values
        that failed, and record values stay out of logs."""
        reason = error.replace("\x00", "\ufffd")[:4000]
        own = {
            "dlq_error": reason,
            "dlq_exception": exception,
            "dlq_stage": stage,
            "dlq_source_topic": delivery.topic,
            "dlq_source_partition": str(delivery.partition),
            "dlq_source_offset": str(delivery.offset),
            # A broadcast consumer has no group: its service names it (every replica of every
            # service reads a changelog, and each dead-letters what it cannot read).
            "dlq_consumer_group": group or f"conveyor-{self.service} (broadcast)",
            "dlq_failed_at": datetime.now(UTC).isoformat(),
        }
        value, headers = bounded(
            delivery.value,
            {**delivery.headers, **own},
            self.settings.kafka_max_message_bytes,
            own,
        )
        key = delivery.key[:1024] if delivery.key else delivery.key  # counted in the limit too
        await self.publish_raw(delivery.topic + ".dlq", value, key=key, headers=headers)
        self.dead_letters += 1
        DEAD_LETTERS.add(1, {"topic": delivery.topic, "stage": stage})
        log.warning(
            "dead letter",
            extra={
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "stage": stage,
                "exception": exception,
            },
        )
        log.debug("dead letter at %s: %s", delivery, reason[:500])

    # --- consuming ------------------------------------------------------------------------------

    def consume(
        self,
        topic: TopicSpec,
        handler: BatchHandler,
        *,
        group: str | None = None,
        broadcast: bool = False,
        max_records: int | None = None,
        consumed: Positions | None = None,
        overlap: int = 1,
    ) -> None:
        """Register a batch consumer of `topic`.

        `broadcast=True` reads the whole topic in every replica (no group, nothing committed): for
        changelogs such as `registry.events` that every replica must see from the start.
        `consumed` is told the (partition, offset) of every record of a batch once it is handled,
        dead letters included. `overlap` batches at most are handled at once (see the module's
        doc): for a group consumer whose batches do not depend on each other.
        """
        if overlap > 1 and (broadcast or consumed is not None):
            raise ValueError("only a group consumer's batches can overlap")
        # One group per service and topic: each subscription rebalances on its own, and a
        # replica's consumers of different topics never share a group's assignment.
        group_id = None if broadcast else (group or group_name(self.service, topic.name))
        fetch_wait = self.settings.kafka_fetch_max_wait_ms
        if broadcast:
            fetch_wait = max(fetch_wait, self.settings.kafka_changelog_fetch_max_wait_ms)
        largest = self.settings.kafka_max_message_bytes
        # Events whose producers may leave their id out get one derived from where they were
        # read (events.DerivesId); the others are validated without a context to build.
        derives_ids = isinstance(topic.schema, type) and issubclass(topic.schema, DerivesId)

        async def parse(records: tuple[Any, ...]) -> KafkaAckableMessage:
            """The batch as FastStream's own parser makes it, without decoding every record's
            headers into a dict: each record's headers are decoded once, in `run`, where a value
            that is not UTF-8 is read with replacement characters. (FastStream's strict decoding
            failed the whole batch on such a value, and the consumer with it.)"""
            first, last = records[0], records[-1]
            return KafkaAckableMessage(
                raw_message=records,
                body=[],
                consumer=subscriber.consumer,  # started by the time a batch arrives
                message_id=f"{first.offset}-{last.offset}-{first.timestamp}",
            )

        title = f"{self.service}:{topic.name}"
        assignment = None
        if group_id is not None:
            assignment = self._assignments[title] = Assignment(topic.name)
            self._groups[topic.name] = group_id
        subscriber = self.broker.subscriber(
            topic.name,
            group_id=group_id,
            listener=assignment,
            batch=True,
            max_records=max_records or self.settings.kafka_max_batch,
            batch_timeout_ms=self.settings.kafka_batch_timeout_ms,
            fetch_max_wait_ms=fetch_wait,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL if broadcast or overlap > 1 else AckPolicy.NACK_ON_ERROR,
            title=title,
            parser=parse,
            decoder=_message_ref,
        )
        subscriber.get_msg = _fetcher(subscriber)  # type: ignore[method-assign,assignment]
        attrs = {"topic": topic.name}
        queue_wait = attrs | {"stage": "queue_wait"}
        decode_time = attrs | {"stage": "decode"}
        handle_time = attrs | {"stage": "handle"}

        window: set[asyncio.Future[bool]] = set()
        self._overlapping.append(window)
        newest: asyncio.Future[bool] | None = None  # the batch the next one commits after

        async def on_batch(body: weakref.ref[KafkaMessage]) -> None:
            nonlocal newest
            message = body()
            assert message is not None  # FastStream holds it while it calls the handler
            if not broadcast and self._gate is not None:
                await self._gate.wait()
            if overlap == 1:
                await run(message)
                return
            while len(window) >= overlap:
                await asyncio.wait(window, return_when=asyncio.FIRST_COMPLETED)
            if self._stopping:
                return  # not committed: delivered again
            batch = asyncio.ensure_future(run(message, after=newest))
            window.add(batch)
            batch.add_done_callback(window.discard)
            newest = batch

        async def run(message: KafkaMessage, after: asyncio.Future[bool] | None = None) -> bool:
            """Handle a batch and commit it; False when it was given up at a stop (nothing
            committed, and the batches after it commit nothing either)."""
            records = message.raw_message
            records = records if isinstance(records, tuple) else (records,)
            started = time.perf_counter()
            arrived_ms = time.time() * 1000
            for record in sampled(records):
                if record.timestamp:
                    STAGE_TIME.record(max(0.0, arrived_ms - record.timestamp) / 1000, queue_wait)
            heads = [decode_headers(record.headers or ()) for record in records]
            IN_FLIGHT.add(len(records), attrs)
            try:
                if self._tracing:
                    spans = tracing.batch_spans(self.service, topic.name, records, heads)
                    with spans as traces:
                        await handle(records, heads, traces)
                else:
                    await handle(records, heads, repeat(NO_TRACE))
            except _GivenUp:
                if overlap == 1 and not broadcast:
                    raise  # FastStream rewinds the consumer: delivered again
                return False
            finally:
                IN_FLIGHT.add(-len(records), attrs)
            ends = _last_offsets(records)
            if overlap > 1:
                if after is not None and not await after:
                    return False  # in order: an earlier batch was given up
                await commit(ends)
            elif not broadcast:
                await message.ack()
            CONSUMED.add(len(records), attrs)
            BATCH_SIZE.record(len(records), attrs)
            BATCH_TIME.record(time.perf_counter() - started, attrs)
            _record_lag(message, ends)
            if consumed is not None:
                consumed([(r.partition, r.offset) for r in records])
            return True

        async def handle(
            records: tuple[ConsumerRecord, ...],
            heads: list[dict[str, str]],
            traces: Iterable[Mapping[str, str]],
        ) -> None:
            """Decode the records once (each with its decoded headers and its trace context),
            dead-letter those that do not decode, and apply the rest (see `apply`)."""
            good: list[Delivery[Any]] = []
            decoding = time.perf_counter()
            validate = topic.adapter.validate_json
            # `traces` repeats an empty context when nothing is traced
            for record, headers, trace in zip(records, heads, traces, strict=False):
                key, value = record.key, record.value
                key = key.decode("utf-8", "replace") if type(key) is bytes else key
                if type(value) is not bytes:  # a tombstone (null): invalid, as JSON null
                    value = json.dumps(value).encode()
                failure: BaseException | None = None
                event = None
                if len(value) > largest:
                    reason = f"message of {len(value)} bytes is over the limit of {largest}"
                    failure = MessageTooLarge(reason)
                else:
                    try:
                        event = (
                            validate(
                                value,
                                context={
                                    COORDINATES: (record.topic, record.partition, record.offset)
                                },
                            )
                            if derives_ids
                            else validate(value)
                        )
                    except (ValidationError, ValueError) as exc:
                        failure = exc
                delivery = Delivery(
                    event,
                    headers,
                    key,
                    record.topic,
                    record.partition,
                    record.offset,
                    value,
                    trace,
                )
                if failure is not None:
                    await dead_letter(delivery, _error_text(failure), "decode", failure)
                    continue
                good.append(delivery)
            tracing.decoded()
            handling = time.perf_counter()
            STAGE_TIME.record(handling - decoding, decode_time)
            if good:
                await apply(good, MAX_ATTEMPTS)
            STAGE_TIME.record(time.perf_counter() - handling, handle_time)

        async def apply(batch: list[Delivery[Any]], attempts: int) -> None:
            """Hand `batch` to the handler and dead-letter what it rejects. A transient failure
            is retried in place for as long as it lasts (the consumer is reported not ready
            meanwhile); any other is retried `attempts` times in all, then the batch is split
            in halves, each applied on its own, until the message that fails alone is
            dead-lettered with the reason (see failures.py)."""
            backoff = Backoff()
            tried = 0
            while True:
                try:
                    rejections = await handler(batch)
                except Exception as exc:
                    if self._stopping:
                        raise _GivenUp from exc
                    if self.transient(exc):
                        self._failing[title] = describe(exc)[:300]
                        delay = backoff.next()
                        log.warning(
                            "%s: transient failure (%s); batch of %d again in %.1fs",
                            title,
                            exception_name(exc),
                            len(batch),
                            delay,
                        )
                        await asyncio.sleep(delay)
                        continue
                    tried += 1
                    log.warning(
                        "%s: batch of %d failed (%s), attempt %d of %d",
                        title,
                        len(batch),
                        exception_name(exc),
                        tried,
                        attempts,
                    )
                    log.debug("%s: the failure", title, exc_info=True)
                    if tried < attempts:
                        await asyncio.sleep(backoff.next())
                        continue
                    if len(batch) == 1:
                        await dead_letter(batch[0], describe(exc), "handle", exc)
                    else:
                        for half in halves(batch):
                            await apply(half, 1)
                    return
                break
            self._failing.pop(title, None)
            for rejection in rejections or ():
                await dead_letter(
                    rejection.delivery, rejection.error, rejection.stage, rejection.exception
                )

        async def dead_letter(
            delivery: Delivery[Any], reason: str, stage: str, exception: BaseException | str
        ) -> None:
            """One dead letter, however long the broker takes to accept it."""
            backoff = Backoff()
            name = exception if isinstance(exception, str) else exception_name(exception)
            while True:
                try:
                    await self.dead_letter(delivery, reason, stage, group_id, exception=name)
                    return
                except Exception as exc:
                    if self._stopping:
                        raise _GivenUp from exc
                    self._failing[title] = f"dead letter not accepted: {describe(exc)[:300]}"
                    log.warning("%s: a dead letter failed (%s)", title, exception_name(exc))
                    await backoff.sleep()

        async def commit(ends: dict[TopicPartition, int]) -> None:
            """Commit the batch's own offsets (the consumer's position is already past the
            batches after it)."""
            assert subscriber.consumer is not None  # started by the time a batch arrives
            try:
                await subscriber.consumer.commit({tp: end + 1 for tp, end in ends.items()})
            except KafkaError as exc:  # e.g. its partitions were reassigned: delivered again
                log.warning("commit on %s failed: %r", topic.name, exc)

        subscriber(on_batch)


async def send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Sequence[tuple[str | bytes | None, bytes, Mapping[str, str] | Sequence[Any]]],
) -> None:
    """Produce (key, value, headers) messages and wait for every acknowledgement; headers are a
    mapping of strings or the client's own (name, bytes) pairs.

    The messages are laid into record batches here, one run per partition (keyed as the
    producer would: murmur2 of the key, hashed for the whole batch at once in `partitioner`),
    and each batch handed to the producer whole: one future a batch instead of one a message,
    which cost more than the rest of a relay."""
    partitions = sorted(await producer.partitions_for(topic))
    raw_keys = [key.encode() if isinstance(key, str) else key for key, _, _ in messages]
    keyed = [k for k in raw_keys if k is not None]
    chosen = iter(keyed_partitions(keyed, partitions) if keyed else ())
    runs: dict[int, list[tuple[bytes | None, bytes, Sequence[Any]]]] = {}
    for raw_key, (_, value, headers) in zip(raw_keys, messages, strict=True):
        raw_headers: Sequence[Any] = (
            headers
            if type(headers) is list  # the client's own form (its batch builder takes a list)
            else [(k, v.encode()) for k, v in headers.items()]
            if isinstance(headers, Mapping)
            else list(headers)
        )
        # A message without a key goes anywhere, as with the clients.
        partition = random.choice(partitions) if raw_key is None else next(chosen)
        runs.setdefault(partition, []).append((raw_key, value, raw_headers))
    futures = []
    for partition, run in runs.items():
        batch = producer.create_batch()
        for raw_key, value, raw_headers in run:
            if batch.append(key=raw_key, value=value, timestamp=None, headers=raw_headers):
                continue
            # Full: send it, and start the next with this message (a message larger than a
            # batch goes alone, as the producer would send it).
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=raw_key, value=value, timestamp=None, headers=raw_headers)
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)


def broker_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """FastStream's KafkaBroker arguments for the options every aiokafka client of the process
    is made with (KafkaSettings.client_options): it takes TLS and SASL as a security object,
    which it turns back into those same options for its consumers and its producer."""
    protocol = options.get("security_protocol", "PLAINTEXT")
    context = options.get("ssl_context")
    tls = protocol in ("SSL", "SASL_SSL")
    out: dict[str, Any] = {
        "bootstrap_servers": options["bootstrap_servers"],
        "client_id": options["client_id"],
    }
    if protocol == "PLAINTEXT":
        return out
    if protocol == "SSL":
        out["security"] = BaseSecurity(ssl_context=context, use_ssl=True)
        return out
    mechanism = options["sasl_mechanism"]
    if mechanism == "OAUTHBEARER":
        out["security"] = SASLOAuthBearer(ssl_context=context, use_ssl=tls)
        out["sasl_oauth_token_provider"] = options["sasl_oauth_token_provider"]
        return out
    kinds = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    out["security"] = kinds[mechanism](
        options["sasl_plain_username"],
        options["sasl_plain_password"],
        ssl_context=context,
        use_ssl=tls,
    )
    return out


def _last_offsets(records: tuple[Any, ...]) -> dict[TopicPartition, int]:
    """Each partition's last offset in a batch (a fetch hands over each partition's records in
    offset order): what a commit and the lag need, found in one pass, with one TopicPartition a
    partition rather than one a record."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[r.topic, r.partition] = r.offset
    return {TopicPartition(topic, partition): end for (topic, partition), end in last.items()}


def _record_lag(message: KafkaMessage, ends: dict[TopicPartition, int]) -> None:
    """Lag per partition from the high-water marks the client saw in its last fetch."""
    consumer = getattr(message, "consumer", None)
    if consumer is None:
        return
    for tp, end in ends.items():
        highwater = consumer.highwater(tp)
        if highwater is not None:
            LAG.set(highwater - end - 1, {"topic": tp.topic, "partition": str(tp.partition)})


def _fetcher(
    subscriber: Any,
) -> Callable[[AIOKafkaConsumer], Awaitable[tuple[ConsumerRecord, ...]]]:
    """The subscriber's fetch, without FastStream's pause after an empty one: its batch
    subscriber sleeps `batch_timeout_ms` whenever `getmany` comes back empty, so a record that
    arrived just after an idle spell waited up to that long before it was read (serving's p50 at
    5 requests/s was 30 ms, against 9 ms at 50/s). `getmany` already returns as soon as records
    are there and waits up to the time-out when there are none; the loop simply asks again."""
    timeout_ms, max_records = subscriber.batch_timeout_ms, subscriber.max_records

    async def get_msg(consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord, ...]:
        fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return tuple(chain.from_iterable(fetched.values()))

    return get_msg


async def _message_ref(message: KafkaMessage) -> weakref.ref[KafkaMessage]:
    """The body a batch handler is called with: a weak reference to the message itself (a
    message keeps its decoded body, and a body that was the message made each batch a cycle,
    its 500 records freed only by the collector: 1.4 CPU-s in a drain of 150,000). Each record
    is decoded against its topic's schema in `run`, where a failure is a dead letter
    (FastStream's own decoding would fail the whole batch instead)."""
    return weakref.ref(message)
