"""The catalog as Strimzi's `KafkaTopic` resources: where an operator owns the topics (services
started with `KAFKA_CREATE_TOPICS=false`), these create the same topics the services would —
partitions, retention, and each topic's dead-letter topic (one partition, kept forever).

    python -m conveyor_contracts.schemas strimzi --cluster conveyor-kafka > topics.yaml
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .catalog import CATALOG, FOREVER, TopicSpec

API_VERSION = "kafka.strimzi.io/v1beta2"
CLUSTER_LABEL = "strimzi.io/cluster"
DLQ_PARTITIONS = 1


def _topic(
    name: str,
    partitions: int,
    retention_ms: int,
    *,
    cluster: str,
    replicas: int,
    namespace: str | None,
    description: str,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {CLUSTER_LABEL: cluster, "app.kubernetes.io/part-of": "conveyor"},
        "annotations": {"description": description},
    }
    if namespace:
        metadata["namespace"] = namespace
    config: dict[str, Any] = {"retention.ms": retention_ms, "cleanup.policy": "delete"}
    if replicas >= 3:
        # An acknowledged record (the services produce with acks=all) is on two brokers at least.
        config["min.insync.replicas"] = 2
    return {
        "apiVersion": API_VERSION,
        "kind": "KafkaTopic",
        "metadata": metadata,
        "spec": {
            # The resource's name is the topic's (the catalog's names are valid resource names);
            # said again so that renaming the resource never renames the topic.
            "topicName": name,
            "partitions": partitions,
            "replicas": replicas,
            "config": config,
        },
    }


def kafka_topics(
    cluster: str,
    *,
    replicas: int = 3,
    namespace: str | None = None,
    specs: Iterable[TopicSpec] = CATALOG,
) -> list[dict[str, Any]]:
    """A `KafkaTopic` for every topic of the catalog and for its dead-letter topic."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    out = []
    for spec in specs:
        for name, partitions, retention, description in (
            (spec.name, spec.partitions, spec.retention_ms, spec.description),
            (
                spec.dlq,
                DLQ_PARTITIONS,
                FOREVER,
                f"What the consumers of {spec.name} could not take, with why.",
            ),
        ):
            out.append(
                _topic(
                    name,
                    partitions,
                    retention,
                    cluster=cluster,
                    replicas=replicas,
                    namespace=namespace,
                    description=description,
                )
            )
    return out
