"""Event ids derived from what an event is about, and the partition a key goes to."""

from __future__ import annotations

import random
from uuid import RFC_4122, UUID, uuid5

from aiokafka.partitioner import DefaultPartitioner, murmur2

from conveyor_bus.partitioner import keyed_partitions, murmur2_many
from conveyor_contracts.events import _DERIVED, derived_id, new_id


def test_a_derived_id_is_the_name_based_uuid_of_its_parts():
    namespace = UUID(bytes=_DERIVED)
    assert derived_id("conveyor/ingest", "r-1") == uuid5(namespace, "conveyor/ingest\x1fr-1").hex
    assert derived_id("conveyor/ingest", "r-1") == derived_id("conveyor/ingest", "r-1")
    assert derived_id("conveyor/ingest", "r-1") != derived_id("conveyor/ingest", "r-2")
    assert UUID(derived_id("a")).version == 5


def test_a_new_id_is_a_random_uuid4():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for each in list(ids)[:50]:
        parsed = UUID(each)
        assert parsed.hex == each and parsed.version == 4
        assert parsed.variant == RFC_4122


def test_a_key_goes_to_the_partition_the_producer_would_choose():
    producer_choice = DefaultPartitioner()
    keys = [f"customer-{i}".encode() for i in range(500)]
    for n in (1, 3, 12):
        partitions = list(range(n))
        assert keyed_partitions(keys, partitions) == [
            producer_choice(key, partitions, partitions) for key in keys
        ]
    # Among the topic's partitions, whatever their numbers.
    assert keyed_partitions(keys[:50], [4, 7]) == [
        producer_choice(key, [4, 7], [4, 7]) for key in keys[:50]
    ]


def test_the_batch_hash_is_kafkas_murmur2_bit_for_bit():
    """Every length (each tail of 0-3 bytes, the empty key) and every byte value."""
    rng = random.Random(7)
    keys = [b""] + [rng.randbytes(rng.randint(1, 41)) for _ in range(3000)]
    keys += [bytes([b]) * 5 for b in range(256)]
    assert murmur2_many(keys).tolist() == [murmur2(key) for key in keys]
