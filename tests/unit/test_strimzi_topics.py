"""The catalog as Strimzi KafkaTopic resources: every topic and its dead-letter topic, with the
partitions and retention the services would create them with."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import yaml

from conveyor_bus import topic_names
from conveyor_contracts import CATALOG
from conveyor_contracts.schemas import main
from conveyor_contracts.strimzi import kafka_topics


def test_every_topic_the_services_would_create_is_a_kafka_topic():
    topics = kafka_topics("conveyor-kafka", replicas=3, namespace="conveyor")
    wanted = topic_names(CATALOG)  # what ensure_topics creates: name -> (partitions, retention)
    assert {
        t["spec"]["topicName"]: (t["spec"]["partitions"], t["spec"]["config"]["retention.ms"])
        for t in topics
    } == wanted
    for topic in topics:
        assert topic["kind"] == "KafkaTopic"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "conveyor-kafka"
        assert topic["metadata"]["namespace"] == "conveyor"
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == 2


def test_a_single_broker_gets_no_in_sync_minimum_it_could_not_meet():
    (first, *_) = kafka_topics("dev", replicas=1)
    assert "min.insync.replicas" not in first["spec"]["config"]
    assert "namespace" not in first["metadata"]


def test_the_command_writes_the_same_resources_as_yaml():
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["strimzi", "--cluster", "prod-kafka", "--replicas", "3"]) == 0
    assert list(yaml.safe_load_all(out.getvalue())) == kafka_topics("prod-kafka", replicas=3)
