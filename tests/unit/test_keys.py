"""Event ids derived from what an event is about, and the partition a key goes to."""

from __future__ import annotations

from uuid import UUID, uuid5

from aiokafka.partitioner import DefaultPartitioner

from conveyor_bus.bus import _partition
from conveyor_contracts.events import _DERIVED, derived_id


def test_a_derived_id_is_the_name_based_uuid_of_its_parts():
    namespace = UUID(bytes=_DERIVED)
    assert derived_id("conveyor/ingest", "r-1") == uuid5(namespace, "conveyor/ingest\x1fr-1").hex
    assert derived_id("conveyor/ingest", "r-1") == derived_id("conveyor/ingest", "r-1")
    assert derived_id("conveyor/ingest", "r-1") != derived_id("conveyor/ingest", "r-2")
    assert UUID(derived_id("a")).version == 5


def test_a_key_goes_to_the_partition_the_producer_would_choose():
    producer_choice = DefaultPartitioner()
    for n in (1, 3, 12):
        partitions = list(range(n))
        for i in range(500):
            key = f"customer-{i}".encode()
            assert _partition(key, partitions) == producer_choice(key, partitions, partitions)
    assert _partition(None, [0, 1, 2]) in (0, 1, 2)
