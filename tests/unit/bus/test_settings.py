"""The consumers' group settings: what the validator refuses, and what the embedded broker hands
its clients."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conveyor_bus import KafkaSettings
from conveyor_cli.infra import TANSU, Broker


def test_a_heartbeat_over_a_third_of_the_session_time_out_is_refused():
    with pytest.raises(ValidationError, match="over a third of kafka_session_timeout_ms"):
        KafkaSettings(kafka_session_timeout_ms=6000, kafka_heartbeat_interval_ms=2500)
    assert KafkaSettings(kafka_session_timeout_ms=6000, kafka_heartbeat_interval_ms=2000)


def test_the_embedded_brokers_clients_read_a_shorter_session_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
):
    for name in ("KAFKA_SESSION_TIMEOUT_MS", "KAFKA_HEARTBEAT_INTERVAL_MS"):
        monkeypatch.delenv(name, raising=False)
    default = KafkaSettings()
    assert (default.kafka_session_timeout_ms, default.kafka_heartbeat_interval_ms) == (10_000, 3000)
    for name, value in Broker("127.0.0.1:9092", TANSU).client_env().items():
        monkeypatch.setenv(name, value)
    embedded = KafkaSettings()
    assert (embedded.kafka_session_timeout_ms, embedded.kafka_heartbeat_interval_ms) == (6000, 2000)
    assert Broker("127.0.0.1:9092", "configured").client_env() == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"
    }
