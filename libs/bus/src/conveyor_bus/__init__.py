"""Conveyor's Kafka bus: one broker per service, batch consumers with dead letters, topics."""

from . import tracing
from .bus import (
    LATENCY_BUCKETS,
    Bus,
    Delivery,
    Encoded,
    Outgoing,
    Rejection,
    sampled,
    send_batches,
)
from .errors import BusError, PublishError, TopicSetupError
from .failures import Backoff, Retry, Transient, any_of, broker_transient
from .lag import GroupLag, catalog_groups, consumer_lag, group_name
from .settings import KafkaSettings
from .topics import (
    client_options,
    create_topic,
    end_offsets,
    ensure_topics,
    prepare_topics,
    published_ids,
    read_ranges,
    topic_names,
)

__all__ = [
    "LATENCY_BUCKETS",
    "Backoff",
    "Bus",
    "BusError",
    "Delivery",
    "Encoded",
    "GroupLag",
    "KafkaSettings",
    "Outgoing",
    "PublishError",
    "Rejection",
    "Retry",
    "TopicSetupError",
    "Transient",
    "any_of",
    "broker_transient",
    "catalog_groups",
    "client_options",
    "consumer_lag",
    "create_topic",
    "end_offsets",
    "ensure_topics",
    "group_name",
    "prepare_topics",
    "published_ids",
    "read_ranges",
    "sampled",
    "send_batches",
    "topic_names",
    "tracing",
]
