from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Where the broker is. The same variable points at Tansu, or at real Apache Kafka."""

    model_config = SettingsConfigDict(extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of the Kafka brokers."
    )
    kafka_max_batch: int = Field(256, ge=1, description="Most records handled in one batch.")
    kafka_batch_timeout_ms: int = Field(50, ge=1, description="Longest wait to fill a batch.")
