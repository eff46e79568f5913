"""How far consumer groups are behind their topics: each partition's end minus the group's
committed offset, read from the broker without joining any group.

What a group has committed is the group's, not a process's: the figure is the same however many
replicas share the group, and it is there while none runs (a stopped consumer's backlog grows).
A partition the group never committed counts from its first record (the services read from the
earliest).

Both reads use aiokafka's consumer API: `committed()` from a consumer that names the group but
subscribes to nothing (the admin client's offset request is one Tansu answers in a form aiokafka
misreads), and `end_offsets()`. Some brokers (Tansu) report a partition's end as its last record
batch's first offset plus one; the end taken here is one past the last record found reading from
the reported end's record on (one short fetch per non-empty partition), so that a backlog in one
batch does not read as a lag of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from conveyor_contracts import CATALOG, catalog

# How long the search for the true ends waits for a partition's last records, at most.
END_READ_TIMEOUT_S = 2.0


def group_name(service: str, topic: str) -> str:
    """The consumer group a service reads `topic` in, unless its consumer names another: one
    group per service and topic, shared by the service's replicas."""
    return f"conveyor-{service}.{topic}"


def catalog_groups(service: str) -> dict[str, str]:
    """topic -> group of every topic the catalog says `service` consumes in a group (all but the
    changelog, which each replica reads whole): what a service that does not answer reads."""
    return {
        spec.name: group_name(service, spec.name)
        for spec in CATALOG
        if service in spec.consumers and spec is not catalog.REGISTRY_EVENTS
    }


@dataclass(frozen=True)
class GroupLag:
    """A consumer group's distance behind one topic: records not yet committed, per partition
    and in all."""

    group: str
    topic: str
    partitions: dict[int, int]

    @property
    def total(self) -> int:
        return sum(self.partitions.values())


async def consumer_lag(
    options: Mapping[str, Any], groups: Iterable[tuple[str, str]]
) -> list[GroupLag]:
    """The lag of each (group, topic) given, in that order (duplicates once). `options`: the
    keyword arguments of an aiokafka client of the broker (its address, TLS and SASL). The
    caller bounds the time (`asyncio.timeout`)."""
    wanted = list(dict.fromkeys(groups))
    starts, ends = await offsets(options, {topic for _, topic in wanted})
    committed = await asyncio.gather(
        *(
            _committed(options, group, {tp: s for tp, s in starts.items() if tp.topic == topic})
            for group, topic in wanted
        )
    )
    out = []
    for (group, topic), resume in zip(wanted, committed, strict=True):
        partitions = {
            tp.partition: max(0, ends[tp] - at)
            for tp, at in sorted(resume.items(), key=lambda item: item[0].partition)
        }
        out.append(GroupLag(group, topic, partitions))
    return out


async def offsets(
    options: Mapping[str, Any], topics: set[str]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Each partition of `topics`: the offset of its first record, and one past its last (topics
    the broker does not know have no partitions)."""
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        tps = [
            TopicPartition(topic, p)
            for topic in sorted(topics)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return {}, {}
        starts = dict(await consumer.beginning_offsets(tps))
        ends = dict(await consumer.end_offsets(tps))
        todo = {tp for tp, end in ends.items() if end > 0}
        consumer.assign(sorted(todo, key=lambda tp: (tp.topic, tp.partition)))
        for tp in todo:
            consumer.seek(tp, ends[tp] - 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + END_READ_TIMEOUT_S
        # The reported end is right when its record is the last one read; a broker that reports
        # short gives the rest of the batch in the same fetch. A partition whose record at the
        # reported end is gone (retention) keeps the reported end when the time is up.
        while todo and loop.time() < deadline:
            batch = await consumer.getmany(*todo, timeout_ms=100)
            for tp, records in batch.items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
                    todo.discard(tp)
        return starts, ends
    finally:
        await consumer.stop()


async def _committed(
    options: Mapping[str, Any], group: str, starts: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Where `group` resumes each partition: its committed offset, else the first record."""
    if not starts:
        return {}
    consumer = AIOKafkaConsumer(**options, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        out = {}
        for tp, start in starts.items():
            committed = await consumer.committed(tp)
            out[tp] = start if committed is None else committed
        return out
    finally:
        await consumer.stop()
