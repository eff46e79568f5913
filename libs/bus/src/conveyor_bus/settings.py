from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Where the broker is. The same variable points at Tansu, or at real Apache Kafka."""

    model_config = SettingsConfigDict(extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of the Kafka brokers."
    )
    kafka_max_batch: int = Field(256, ge=1, description="Most records handled in one batch.")
    kafka_batch_timeout_ms: int = Field(50, ge=1, description="Longest wait to fill a batch.")
    kafka_fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        description="Longest a fetch waits for data. Kafka answers as soon as data arrives; "
        "a broker that answers only when the wait ends (Tansu) needs a short one.",
    )
    kafka_changelog_fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        description="The same, for a broadcast consumer of a changelog (at least the above): its "
        "records are rare, and a broker that answers only when the wait ends would be asked for "
        "them a hundred times a second by every replica.",
    )
    kafka_max_message_bytes: int = Field(
        1_000_000,
        ge=4096,
        description="Largest record a consumer takes (a larger one is dead-lettered unread) and "
        "largest dead letter it sends (its original value is cut to fit, saying how long it "
        "was): at most the broker's `message.max.bytes` (Apache Kafka's default, 1 MiB).",
    )
    kafka_linger_ms: int = Field(
        0, ge=0, description="How long the producer waits to fill a batch before sending it."
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="How long the broker waits for a group consumer's heartbeat before it gives "
        "the consumer's partitions to the others (after a crash, they wait this long). Apache "
        "Kafka accepts 6,000 to 1,800,000 by default (`group.min.session.timeout.ms`, "
        "`group.max.session.timeout.ms`). Tansu also holds each join for half of it.",
    )
    kafka_heartbeat_interval_ms: int = Field(
        3_000,
        ge=100,
        description="How often a group consumer tells the broker it is alive: at most a third of "
        "the session time-out, so that a late heartbeat or two costs it nothing.",
    )

    @model_validator(mode="after")
    def _heartbeats_within_a_session(self) -> Self:
        if self.kafka_heartbeat_interval_ms * 3 > self.kafka_session_timeout_ms:
            raise ValueError(
                f"kafka_heartbeat_interval_ms ({self.kafka_heartbeat_interval_ms}) is over a third "
                f"of kafka_session_timeout_ms ({self.kafka_session_timeout_ms})"
            )
        return self
